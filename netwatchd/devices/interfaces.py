"""Which interfaces to watch: the system read in one function, the choice made in another."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, Union

SYS_NET = "/sys/class/net"
IFF_UP = 0x1
IFF_LOOPBACK = 0x8


@dataclass(frozen=True)
class Interface:
    name: str
    ifindex: int
    up: bool
    loopback: bool
    master_of_ports: bool  # a bridge or bond: its ports carry the devices' own frames


def read_interfaces(root: str = SYS_NET) -> Dict[str, Interface]:
    """The interfaces as /sys shows them now; one that vanishes while being read is skipped."""
    out = {}
    try:
        names = os.listdir(root)
    except OSError:
        return out
    for name in names:
        base = os.path.join(root, name)
        try:
            with open(os.path.join(base, "ifindex")) as f:
                ifindex = int(f.read())
            with open(os.path.join(base, "flags")) as f:
                flags = int(f.read(), 16)
        except (OSError, ValueError):
            continue
        master = os.path.isdir(os.path.join(base, "bridge")) or os.path.isdir(os.path.join(base, "bonding"))
        out[name] = Interface(name, ifindex, bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK), master)
    return out


def choose(setting: Union[str, Iterable[str]], available: Dict[str, Interface]) -> Dict[str, Interface]:
    """`auto`: every up interface except loopback and bridge/bond masters (their ports are
    watched instead: a frame between two devices crosses the ports, never the master).
    A list: those of its names that exist now and are up."""
    if setting == "auto":
        return {n: i for n, i in available.items() if i.up and not i.loopback and not i.master_of_ports}
    return {n: available[n] for n in setting if n in available and available[n].up}
