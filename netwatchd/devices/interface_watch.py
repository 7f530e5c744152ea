"""Keeps the classifier attached to the interfaces the configuration asks for, as they come,
go, go down and come back; a refused attach is said once and tried again every tick. A listed
interface that is not Ethernet (a tun appearing under a listed name) is never attached: said
once, and again only if it goes away and comes back so."""
from __future__ import annotations

import logging
from typing import Callable, Dict, List

from netwatchd.interfaces import choose, refused

log = logging.getLogger(__name__)


class InterfaceWatcher:
    def __init__(self, probe, list_interfaces: Callable[[], Dict]):
        self.probe = probe
        self.list_interfaces = list_interfaces
        self._refused: set = set()  # interfaces whose attach failed, logged once
        self._not_ethernet: set = set()  # listed interfaces that are not Ethernet, logged once

    def names(self) -> List[str]:
        return [name for name, _ in self.probe.attached()]

    def refresh(self, patterns) -> None:
        """Attach to interfaces that appeared, let go of those that vanished."""
        available = self.list_interfaces()
        wanted = choose(patterns, available)
        not_ethernet = refused(patterns, available)
        for name, problem in not_ethernet.items():
            if name not in self._not_ethernet:
                log.warning("devices.interfaces: %s; not watching it", problem)
        self._not_ethernet = set(not_ethernet)
        current = dict(self.probe.attached())
        for name, ifindex in list(current.items()):
            if name in wanted and wanted[name].ifindex == ifindex:
                continue
            self.probe.detach(name, ifindex)
            now = available.get(name)
            if now is None or now.ifindex != ifindex:
                log.warning("interface %s is gone; will watch it again when it returns", name)
            elif not now.up:
                log.warning("interface %s is down; will watch it again when it is up", name)
            else:
                log.info("no longer watching %s (devices.interfaces changed)", name)
        for name, iface in wanted.items():
            if current.get(name) == iface.ifindex:
                continue
            try:
                self.probe.attach(iface)
                self._refused.discard(name)
                log.info("watching devices on %s", name)
            except OSError as e:  # vanished in between, or refused: try again next tick
                if name not in self._refused:  # say it once, not every tick
                    log.warning("cannot watch %s: %s (will keep trying)", name, e)
                    self._refused.add(name)
