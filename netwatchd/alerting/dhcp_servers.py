"""DHCP servers (pure): who answers DHCP on each segment, and the alerts when that changes.

A device answering DHCP -- a misconfigured router, or an attacker handing out itself as the
gateway or the DNS server to sit in the middle -- is the classic LAN incident (dhcp_probe,
dhcpdump). Each tick's observation carries the OFFERs and ACKs devices sent
(TickObservation.dhcp_replies: the frame's source MAC is the server). Per segment -- an
interface (a bridge port is one) and a VLAN -- the servers seen answering are learnt with the
router and DNS servers they hand out:

  - during the learning period after the very first start (AlertingCore.learning: everything
    on the LAN is first-seen then) every server is learnt without an alert;
  - after it, a server not known on its segment is one `dhcp_server_new` alert (subject
    `device:<server MAC>`: its MAC and IP, the router and DNS it offers, the interface);
  - a known server handing out another router or other DNS servers is one `dhcp_server_change`
    (old and new values). A reply that leaves an option out (an ACK to an INFORM often does)
    changes nothing: only what a reply says is compared;
  - each (kind, subject) alerts at most once per alerts.cooldown_sec; a change within it is
    learnt silently, as a cooldown does for every kind.

Who can forge it: any device can send an OFFER from any source MAC, so a flood of made-up servers
is cheap. Two bounds keep it from burying the journal and the table:
  - at most SEGMENT_BUDGET DHCP alerts (both kinds) per interface within a cooldown (within a
    tick when the cooldown is 0). What finds the budget spent is neither reported nor learnt,
    only counted (`unreported`): a real rogue server hidden in a flood is reported once the
    budget is back, if it still answers; the forged MACs, answering once, never are;
  - at most `capacity` (MAX_SERVERS) servers are remembered in all; beyond, the one seen least
    recently is forgotten (counted in `forgotten`), and alerts again as new if it comes back.
Alerts that are off (alerts.enabled, alerts.dhcp_servers) still learn, as the baselines do.

What was learnt, the cooldowns and the budgets' alert times are in `state()` (numpy arrays, in
the detector's saved state through AlertingCore), so a restart neither forgets the servers nor
reports them again, and a replay over recorded ticks decides the same.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Tuple

import numpy as np

from netwatchd.alerting.alerts import Alert, AlertIds

MAX_SERVERS = 256  # servers remembered in all segments together
SEGMENT_BUDGET = 4  # DHCP alerts per interface within one cooldown

Reply = Dict[str, Any]  # a TickObservation.dhcp_replies entry
ServerKey = Tuple[str, int, str]  # (interface, vlan, server MAC)


@dataclass
class Server:
    """What a known server last handed out."""

    ip: str
    router: str
    dns: Tuple[str, ...]
    seen_usec: int


def _words(values) -> str:
    return ", ".join(values) or "none"


class DhcpServers:
    def __init__(self, capacity: int = MAX_SERVERS):
        self.capacity = capacity
        self.servers: "OrderedDict[ServerKey, Server]" = OrderedDict()  # least recently seen first
        self.last_alert_usec: Dict[Tuple[str, str], int] = {}  # (kind, subject) -> its last alert
        self.alerted: Dict[str, Deque[int]] = {}  # interface -> its recent alerts' times
        self.forgotten = 0  # servers pushed out by `capacity`
        self.unreported = 0  # new servers and changes that found their interface's budget spent

    def tick(self, replies: List[Reply], now: int, learning: bool, ids: AlertIds, alerting: bool,
             cooldown_sec: int) -> List[Alert]:
        """This tick's replies learnt; the alerts they raise (none while learning or off)."""
        window = max(cooldown_sec * 1_000_000, 1)  # a cooldown of 0: the budget is per tick
        self._forget_spent(now, window)
        alerts: List[Alert] = []
        for reply in replies:
            alerts += self._reply(reply, now, learning or not alerting, ids, window)
        return alerts

    def _reply(self, reply: Reply, now: int, silent: bool, ids: AlertIds, window: int) -> List[Alert]:
        key = (str(reply.get("interface", "")), int(reply.get("vlan", 0)), str(reply["server_mac"]))
        ip, router, dns = str(reply.get("server_ip", "")), str(reply.get("router", "")), tuple(reply.get("dns", ()))
        known = self.servers.get(key)
        if known is None:
            offered = Server(ip, router, dns, now)
            if silent:
                self._learn(key, offered)
                return []
            return self._alert(key, offered, None, now, ids, window)
        offered = Server(ip or known.ip, router or known.router, dns or known.dns, now)
        if (offered.router, offered.dns) == (known.router, known.dns) or silent:
            self._learn(key, offered)
            return []
        return self._alert(key, offered, known, now, ids, window)

    def _alert(self, key: ServerKey, offered: Server, known, now: int, ids: AlertIds, window: int) -> List[Alert]:
        """A new server (`known` None) or a change: alerted and learnt if the interface's budget
        allows, else neither (counted)."""
        kind = "dhcp_server_new" if known is None else "dhcp_server_change"
        subject = f"device:{key[2]}"
        last = self.last_alert_usec.get((kind, subject))
        if last is not None and now - last < window:
            self._learn(key, offered)  # cooling down: learnt, as every kind's repeats are
            return []
        budget = self.alerted.setdefault(key[0], deque())
        if len(budget) >= SEGMENT_BUDGET:
            self.unreported += 1
            return []
        budget.append(now)
        self.last_alert_usec[(kind, subject)] = now
        self._learn(key, offered)
        return [server_alert(ids.next(), key, offered, known, now)]

    def _learn(self, key: ServerKey, server: Server) -> None:
        self.servers.pop(key, None)
        self.servers[key] = server
        while len(self.servers) > self.capacity:
            self.servers.popitem(last=False)
            self.forgotten += 1

    def _forget_spent(self, now: int, window: int) -> None:
        """Budgets and cooldowns that can no longer hold anything back."""
        for interface, times in list(self.alerted.items()):
            while times and now - times[0] >= window:
                times.popleft()
            if not times:
                del self.alerted[interface]
        for pair, last in list(self.last_alert_usec.items()):
            if now - last >= window:
                del self.last_alert_usec[pair]

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        keys, servers = list(self.servers), list(self.servers.values())
        cooldowns = list(self.last_alert_usec.items())
        budget = [(interface, t) for interface, times in self.alerted.items() for t in times]
        return {
            "dhcp.if": np.asarray([k[0] for k in keys], dtype=str),
            "dhcp.vlan": np.asarray([k[1] for k in keys], dtype=np.int64),
            "dhcp.mac": np.asarray([k[2] for k in keys], dtype=str),
            "dhcp.ip": np.asarray([s.ip for s in servers], dtype=str),
            "dhcp.router": np.asarray([s.router for s in servers], dtype=str),
            "dhcp.dns": np.asarray([" ".join(s.dns) for s in servers], dtype=str),
            "dhcp.seen": np.asarray([s.seen_usec for s in servers], dtype=np.int64),
            "dhcp.cooldown.kind": np.asarray([c[0][0] for c in cooldowns], dtype=str),
            "dhcp.cooldown.subject": np.asarray([c[0][1] for c in cooldowns], dtype=str),
            "dhcp.cooldown.usec": np.asarray([c[1] for c in cooldowns], dtype=np.int64),
            "dhcp.budget.if": np.asarray([b[0] for b in budget], dtype=str),
            "dhcp.budget.usec": np.asarray([b[1] for b in budget], dtype=np.int64),
        }

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        if "dhcp.mac" not in state:  # saved before DHCP servers were learnt: nothing known
            return
        rows = zip(state["dhcp.if"], state["dhcp.vlan"], state["dhcp.mac"], state["dhcp.ip"], state["dhcp.router"],
                   state["dhcp.dns"], state["dhcp.seen"])
        for interface, vlan, mac, ip, router, dns, seen in rows:
            self._learn((str(interface), int(vlan), str(mac)), Server(str(ip), str(router), tuple(str(dns).split()),
                                                                     int(seen)))
        for kind, subject, usec in zip(state["dhcp.cooldown.kind"], state["dhcp.cooldown.subject"],
                                       state["dhcp.cooldown.usec"]):
            self.last_alert_usec[(str(kind), str(subject))] = int(usec)
        for interface, usec in zip(state["dhcp.budget.if"], state["dhcp.budget.usec"]):
            self.alerted.setdefault(str(interface), deque()).append(int(usec))


def server_alert(alert_id: str, key: ServerKey, offered: Server, known, now: int) -> Alert:
    """The alert for a new server (`known` None) or a known one's change of router or DNS."""
    interface, vlan, mac = key
    where = f"{interface or '?'}{f' VLAN {vlan}' if vlan else ''}"
    details = {"mac": mac, "ip": offered.ip, "interface": interface, "vlan": str(vlan), "router": offered.router,
               "dns": " ".join(offered.dns)}
    if known is None:
        message = (f"new DHCP server {mac} ({offered.ip or 'no address'}) on {where}: it offers router "
                   f"{offered.router or 'none'}, DNS {_words(offered.dns)}")
        return Alert(alert_id, "dhcp_server_new", f"device:{mac}", now, message, observed=1.0, details=details)
    details.update(old_router=known.router, old_dns=" ".join(known.dns))
    message = (f"DHCP server {mac} ({offered.ip or 'no address'}) on {where} changed what it offers: router "
               f"{known.router or 'none'} -> {offered.router or 'none'}, DNS {_words(known.dns)} -> "
               f"{_words(offered.dns)}")
    return Alert(alert_id, "dhcp_server_change", f"device:{mac}", now, message, observed=1.0, details=details)
