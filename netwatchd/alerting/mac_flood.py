"""MAC flooding (pure): many new MACs in a short time on one interface is one alert, not one
new_device each.

macof and its kind send frames from thousands of forged source MACs to overflow switches' MAC
tables (the switch then floods every frame to every port: a way to sniff). Each forged MAC is a
"new device": without this, 5000 of them were 5000 alerts, burying whatever came next. So, per
interface (a bridge port is one: the flood's MACs all come through the attacker's port):

  - a flood is at least `mac_flood_new_macs` new MACs within the last `mac_flood_window_ticks`
    ticks; it raises one `mac_flood` alert per interface per cooldown, with the count, the
    window and a few of its MACs;
  - a new MAC is decided a tick after it is first seen (address_moves.py holds it): if its
    interface is flooding then, it is *flood-born* -- no new_device of its own;
  - a flood-born MAC that keeps talking (TickObservation.devices_confirmed: frames in a second
    tick, which one forged frame never is) is a real device that joined during the flood: it
    gets its new_device then, marked `during_mac_flood`. If more than RELEASE_MAX of them on one
    interface confirm in one tick, that is the flood replaying itself, not devices joining: they
    stay flood-born.
A device on another interface, or one joining after the window has passed, is reported exactly
as on a quiet LAN.

State (the windows, the flood-born MACs: at most MAX_FLOOD_BORN) is in the detector's saved
state, and a replay over recorded ticks decides the same.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List

import numpy as np

RELEASE_MAX = 8  # flood-born MACs of one interface that may confirm in one tick and be reported
MAX_FLOOD_BORN = 65536  # flood-born MACs remembered (the oldest forgotten first)
SAMPLES = 8  # MACs named in the alert

NewDevice = Dict[str, Any]  # TickObservation.new_devices entry (+ "seen_usec")


@dataclass
class Flood:
    """What a flooding interface's alert says."""

    interface: str
    count: int  # new MACs in the window
    randomized: int  # of them, locally administered
    samples: List[str] = field(default_factory=list)


class MacFloods:
    def __init__(self) -> None:
        self.windows: Dict[str, Deque[int]] = {}  # interface -> new MACs per tick, newest last
        self._randomized: Dict[str, Deque[int]] = {}
        self._samples: Dict[str, Deque[str]] = {}
        self.flood_born: "OrderedDict[str, str]" = OrderedDict()  # mac -> interface

    def count(self, interface: str) -> int:
        window = self.windows.get(interface)
        return sum(window) if window else 0

    def step(self, new_devices: List[NewDevice], window_ticks: int, threshold: int) -> List[Flood]:
        """This tick's new MACs into each interface's window; the interfaces flooding now."""
        per_if: Dict[str, List[NewDevice]] = {}
        for d in new_devices:
            per_if.setdefault(d.get("interface", ""), []).append(d)
        for interface in set(self.windows) | set(per_if):
            devices = per_if.get(interface, [])
            window = self.windows.setdefault(interface, deque(maxlen=window_ticks))
            if window.maxlen != window_ticks:  # a reload changed the window
                window = self.windows[interface] = deque(window, maxlen=window_ticks)
            randomized = self._randomized.setdefault(interface, deque(maxlen=window_ticks))
            if randomized.maxlen != window_ticks:
                randomized = self._randomized[interface] = deque(randomized, maxlen=window_ticks)
            window.append(len(devices))
            randomized.append(sum(1 for d in devices if d.get("randomized")))
            samples = self._samples.setdefault(interface, deque(maxlen=SAMPLES))
            samples.extend(d["mac"] for d in devices[: SAMPLES])
            if not any(window):  # a quiet interface costs nothing
                for table in (self.windows, self._randomized, self._samples):
                    table.pop(interface, None)
        return [Flood(i, self.count(i), sum(self._randomized[i]), list(self._samples[i]))
                for i in sorted(self.windows) if self.count(i) >= threshold]

    def sort(self, ready: List[NewDevice], threshold: int) -> List[NewDevice]:
        """Of the new devices decided now, those to report; the ones whose interface is flooding
        become flood-born instead."""
        report = []
        for d in ready:
            interface = d.get("interface", "")
            if self.count(interface) >= threshold:
                self.flood_born.pop(d["mac"], None)
                self.flood_born[d["mac"]] = interface
                while len(self.flood_born) > MAX_FLOOD_BORN:
                    self.flood_born.popitem(last=False)
            else:
                report.append(d)
        return report

    def released(self, confirmed: List[NewDevice]) -> List[NewDevice]:
        """The flood-born devices among those that kept talking this tick, to report now."""
        by_if: Dict[str, List[NewDevice]] = {}
        for d in confirmed:
            interface = self.flood_born.get(d["mac"])
            if interface is not None:
                by_if.setdefault(interface, []).append(d)
        out = []
        for interface, devices in sorted(by_if.items()):
            if len(devices) > RELEASE_MAX:
                continue  # the flood's own MACs talking again: still the flood
            for d in devices:
                del self.flood_born[d["mac"]]
                out.append(dict(d, during_mac_flood=True))
        return out

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        interfaces = sorted(self.windows)
        return {"flood.born_mac": np.asarray(list(self.flood_born), dtype=str),
                "flood.born_if": np.asarray(list(self.flood_born.values()), dtype=str),
                "flood.if": np.asarray(interfaces, dtype=str),
                "flood.window": np.asarray([",".join(map(str, self.windows[i])) for i in interfaces], dtype=str)}

    def load_state(self, state: Dict[str, np.ndarray], window_ticks: int) -> None:
        if "flood.born_mac" in state:
            self.flood_born = OrderedDict(zip(map(str, state["flood.born_mac"]), map(str, state["flood.born_if"])))
        if "flood.if" in state:
            for interface, counts in zip(state["flood.if"], state["flood.window"]):
                values = [int(c) for c in str(counts).split(",") if c]
                self.windows[str(interface)] = deque(values, maxlen=window_ticks)
                self._randomized[str(interface)] = deque([0] * len(values), maxlen=window_ticks)
                self._samples[str(interface)] = deque(maxlen=SAMPLES)
