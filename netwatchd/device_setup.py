"""Builds the device watcher from its parts (classifier, vendor db, SQLite inventory) and takes
it down again. Kept out of daemon.py so the process model stays readable."""
from __future__ import annotations

import logging
import os
from typing import Optional

from netwatchd.config import DaemonConfig, state_directory
from netwatchd.devices.monitor import DeviceMonitor
from netwatchd.store.inventory import CorruptStoreError, InventoryStore, StoreError, move_aside
from netwatchd.devices.vendors import VendorDb
from netwatchd.store.patterns import open_patterns

log = logging.getLogger(__name__)

INVENTORY_FILE = "inventory.sqlite3"


def open_store(cfg: DaemonConfig) -> Optional[InventoryStore]:
    """The inventory in the state directory. A corrupt file is kept aside and a new one started,
    so a bad file costs the history, never the daemon; a file we cannot use for another reason
    (permissions, a newer schema, a full disk) is left untouched and we run without persistence."""
    path = os.path.join(state_directory(cfg), INVENTORY_FILE)
    try:
        try:
            return InventoryStore.open(path)
        except CorruptStoreError as e:
            kept = move_aside(path)
            log.error("inventory %s is unusable (%s); kept it as %s and started a new one", path, e.problem, kept)
            return InventoryStore.open(path)
    except StoreError as e:
        log.error("inventory not persisted this run: %s", e)
        return None


def start_devices(cfg: DaemonConfig, probe=None) -> DeviceMonitor:
    from netwatchd.kernel.device_probe import DeviceProbe

    probe = probe or DeviceProbe(cfg.devices, cfg.beacons.max_device_pairs if cfg.beacons.enabled else 0,
                                 state_dir=state_directory(cfg))
    probe.start()
    patterns = None
    try:
        store = open_store(cfg)
        monitor = DeviceMonitor(probe, cfg.devices, VendorDb.load(), store)
        patterns = open_patterns(state_directory(cfg), cfg.devices.max_patterns)
        if patterns is not None:  # before any interface is attached: nothing is new twice
            known = patterns.newest(cfg.devices.max_patterns)
            log.info("%d known patterns loaded into the classifier", probe.remember_patterns(known))
            monitor.add_pattern_listener(patterns.seen)
            monitor.save_hooks.append(patterns.flush)
            monitor.close_hooks.append(patterns.close)
        monitor.refresh_interfaces()
    except Exception:
        if patterns is not None:
            patterns.close()
        probe.stop()
        raise
    log.info("device inventory: %d devices known, watching %s", len(monitor.devices),
             ", ".join(monitor.interfaces()) or "no interface yet")
    return monitor


def stop_devices(monitor: DeviceMonitor) -> None:
    try:
        try:  # what arrived since the last poll and tick: a clean stop loses no count
            monitor.poll()
            monitor.collect()
        finally:
            monitor.save(everything=True)
    finally:
        if monitor.store is not None:
            monitor.store.close()
        for close in monitor.close_hooks:
            try:
                close()
            except Exception:  # noqa: BLE001 - the probe must still stop
                log.exception("closing %s failed", close)
        monitor.probe.stop()
