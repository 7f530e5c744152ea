"""Which interfaces to watch: the system read in one function, the choice made in another.

The classifier reads Ethernet headers (MACs, then the EtherType), so only interfaces whose
frames carry them can be watched: ARPHRD_ETHER (/sys/class/net/<name>/type 1), which is
ethernet, veth, bridge ports, bond slaves, VLANs, macvlan/ipvlan and tap. A tun or WireGuard
interface (type 65534 none), an IP tunnel (ipip, sit, gre) or loopback hands it IP packets,
whose bytes it would take for MAC addresses.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Union

SYS_NET = "/sys/class/net"
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
ARPHRD_ETHER = 1
# include/uapi/linux/if_arp.h, by the names `ip link` shows them (link/<name>), for the types a
# host is likely to have; any other is shown by its number alone.
LINK_TYPE_NAMES = {
    1: "ether", 24: "ieee1394", 32: "infiniband", 256: "slip", 280: "can", 512: "ppp", 519: "rawip",
    768: "ipip", 769: "tunnel6", 772: "loopback", 776: "sit", 778: "gre", 801: "ieee802.11",
    803: "ieee802.11/radiotap", 804: "ieee802.15.4", 823: "gre6", 824: "netlink", 825: "6lowpan",
    65534: "none", 65535: "void",
}


@dataclass(frozen=True)
class Interface:
    name: str
    ifindex: int
    up: bool
    loopback: bool
    master_of_ports: bool  # a bridge or bond: its ports carry the devices' own frames
    link_type: int = ARPHRD_ETHER  # /sys/class/net/<name>/type: ARPHRD_*


def not_ethernet(iface: Interface) -> Optional[str]:
    """Why the classifier cannot watch `iface`, or None if its frames carry Ethernet headers."""
    if iface.link_type == ARPHRD_ETHER:
        return None
    name = LINK_TYPE_NAMES.get(iface.link_type)
    kind = f"type {iface.link_type} {name}" if name else f"type {iface.link_type}"
    return f"{iface.name} is not an Ethernet interface ({kind}): the device watcher reads Ethernet headers"


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
            with open(os.path.join(base, "type")) as f:
                link_type = int(f.read())
        except (OSError, ValueError):
            continue
        master = os.path.isdir(os.path.join(base, "bridge")) or os.path.isdir(os.path.join(base, "bonding"))
        out[name] = Interface(name, ifindex, bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK), master, link_type)
    return out


def choose(setting: Union[str, Iterable[str]], available: Dict[str, Interface]) -> Dict[str, Interface]:
    """`auto`: every up Ethernet interface except loopback and bridge/bond masters (their ports
    are watched instead: a frame between two devices crosses the ports, never the master).
    A list: those of its names that exist now, are up and are Ethernet (`refused` says why a
    listed one that exists is not)."""
    if setting == "auto":
        return {n: i for n, i in available.items()
                if i.up and not i.loopback and not i.master_of_ports and i.link_type == ARPHRD_ETHER}
    return {n: available[n] for n in setting
            if n in available and available[n].up and available[n].link_type == ARPHRD_ETHER}


def refused(setting: Union[str, Iterable[str]], available: Dict[str, Interface]) -> Dict[str, str]:
    """The interfaces a list names that exist now and are not Ethernet, each with the reason.
    `auto` names none: it passes over them without a word."""
    if setting == "auto":
        return {}
    return {n: problem for n in setting if n in available and (problem := not_ethernet(available[n]))}
