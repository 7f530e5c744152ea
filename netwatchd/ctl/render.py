"""What netwatchctl prints: human tables and lines from the daemon's answers (plain dicts, as
the bus client returns them). No I/O here, so tests feed it answers directly.

Every string from an answer goes through `shown` before it reaches the terminal: the daemon
escapes what processes and devices chose (netwatchd.text), and this is the second line, so that
even a daemon (or a bus peer) that sent raw control characters cannot drive the terminal. JSON
output needs no pass: json.dumps escapes every control and non-ASCII character."""
from __future__ import annotations

import datetime
import json
import time
from typing import Any, Dict, List, Optional, Tuple

from netwatchd.text import printable


def shown(value: Any) -> str:
    """A field as the terminal gets it: no control or format character, the daemon's escapes
    (backslashes) left as they are."""
    return printable(str(value), escape_backslash=False)


def format_time(usec: int) -> str:
    return datetime.datetime.fromtimestamp(usec / 1e6).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def render_table(rows: List[List[str]], headers: List[str]) -> str:
    rows = [[shown(c) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def split_duration(seconds: float) -> Tuple[int, int, int, int]:
    """Whole (days, hours, minutes, seconds) of a duration; negative (a clock step) counts as 0."""
    days, rest = divmod(int(round(max(0.0, seconds))), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return days, hours, minutes, secs


def format_uptime(seconds: float) -> str:
    days, hours, minutes, secs = split_duration(int(max(0, seconds)))
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def format_duration(seconds: float) -> str:
    """A span in its largest units: 45s, 3m05s, 2h03m04s, 1d02h03m."""
    d, h, m, s = split_duration(seconds)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def render_status(props: Dict[str, Any], now_usec: int = 0) -> str:
    started = props.get("StartedAtUSec", 0)
    now_usec = now_usec or int(datetime.datetime.now().timestamp() * 1e6)
    totals = props.get("ProtocolTotals", {})
    return "\n".join([
        f"      Version: {shown(props.get('Version', '?'))}",
        f"      Started: {format_time(started) if started else '?'}"
        + (f" (up {format_uptime((now_usec - started) / 1e6)})" if started else ""),
        f"       Config: {shown(props.get('ConfigFile', '?'))}",
        f"     Programs: {shown(', '.join(props.get('ProgramsAttached', []))) or 'none'}",
        f"       Kernel: {shown(props.get('KernelRelease', '?'))}"
        + (f" ({shown('; '.join(props['KernelFallbacks']))})" if props.get("KernelFallbacks") else ""),
        f"   Interfaces: {shown(', '.join(props.get('Interfaces', []))) or 'none'}",
        f"     Connects: {props.get('ConnectAttempts', 0)} attempts seen",
        f"      Devices: {props.get('DeviceCount', 0)}",
        f"      Packets: {shown(', '.join(f'{p} {n}' for p, n in totals.items() if n)) or 'none yet'}",
        f"  Events lost: {props.get('EventsLost', 0)} connect records, {props.get('DeviceEventsLost', 0)} device events,"
        f" {props.get('MalformedFrames', 0)} malformed frames",
        f"  Untracked processes: {props.get('ProcessesUntracked', 0)}",
    ] + render_dropped(props) + render_alert_status(props) + render_fleet(props))


def render_fleet(props: Dict[str, Any]) -> List[str]:
    """Who this host is to a fleet and how delivery to Alertmanager goes."""
    lines = []
    if props.get("HostId"):
        segments = ", ".join(f"{name} {seg}" for name, seg in props.get("Segments", {}).items())
        said = f" (segments: {shown(segments)})" if segments else ""
        lines.append(f"      Host id: {shown(props['HostId'])}{said}")
    if "FleetDelivery" not in props:
        return lines
    fleet = dict(props["FleetDelivery"])
    if not fleet:
        return lines + ["        Fleet: off (fleet.alertmanager_urls is empty)"]
    failed = [f"{n} {key[len('failed '):]}" for key, n in sorted(fleet.items()) if key.startswith("failed ")]
    lines.append(f"        Fleet: {fleet.get('firing', 0)} alerts firing, {fleet.get('spooled', 0)} spooled, "
                 f"{fleet.get('delivered', 0)} delivered, {fleet.get('dropped', 0)} dropped (spool full)")
    if failed:
        lines.append(f"  Failed sends: {shown('; '.join(failed))}")
    return lines


# What Dropped's keys say, in the order said (a key this netwatchctl does not know is shown as is).
DROPPED_WORDS = {
    "devices_evicted": "devices evicted (inventory full)",
    "devices_expired": "idle devices forgotten",
    "kernel_device_entries_evicted": "kernel device-map evictions",
    "device_snippets_throttled": "snippets beyond a device's budget",
    "dns_answers_unsolicited": "DNS answers nobody asked for (ignored)",
    "dns_questions_dropped": "DNS questions unanswered when dropped",
    "baseline_keys_pruned": "idle baselines pruned",
    "baseline_keys_evicted": "baselines evicted (alerts.max_baseline_keys)",
    "baseline_keys_refused": "new baselines refused (alerts.max_baseline_keys)",
    "beacon_pairs_dropped": "beacon pairs dropped (beacons.max_pairs)",
    "dhcp_replies_dropped": "DHCP server replies beyond 64 a tick",
    "dhcp_servers_forgotten": "DHCP servers forgotten (256 remembered)",
    "dhcp_servers_unreported": "DHCP servers or changes beyond an interface's alert budget",
    "dns_domains_over": "DNS names beyond a device's 64 domains a tick",
    "dns_windows_dropped": "DNS anomaly windows dropped (16384 per kind)",
    "device_probes_dropped": "probes beyond 512 a device a tick",
    "scan_pairs_dropped": "scan-window pairs dropped (4096 a device, 2^20 in all)",
    "fleet_alerts_dropped": "alerts dropped before Alertmanager had them (fleet.spool_max_alerts)",
}


def render_dropped(props: Dict[str, Any]) -> List[str]:
    """What the daemon's bounded tables dropped to stay bounded: one line, nonzero counts only."""
    if "Dropped" not in props:  # a daemon from before the bounds were counted
        return []
    dropped = props["Dropped"]
    order = [k for k in DROPPED_WORDS if k in dropped] + sorted(k for k in dropped if k not in DROPPED_WORDS)
    said = [f"{dropped[k]} {DROPPED_WORDS.get(k, k)}" for k in order if dropped[k]]
    return [f"      Dropped: {shown(', '.join(said)) or 'nothing'}"]


def render_alert_status(props: Dict[str, Any]) -> List[str]:
    if "AlertCounts" not in props:  # a daemon from before alerts
        return []
    counts = props["AlertCounts"]
    if not counts:
        return ["       Alerts: off (alerts.enabled is false)"]
    per_kind = shown(", ".join(f"{kind} {n}" for kind, n in counts.items()))
    learning = "yes (new devices are learnt without alerts)" if props.get("Learning") else "no"
    return [f"       Alerts: {props.get('AlertsRaised', sum(counts.values()))} raised: {per_kind}",
            f"     Learning: {learning}"]


def render_alerts(records: List[Dict[str, Any]]) -> str:
    if not records:
        return "No alerts."
    rows = [[format_time(r["timestamp_usec"]), r["kind"], r["subject"], r["message"]] for r in records]
    return render_table(rows, ["TIME", "KIND", "SUBJECT", "MESSAGE"])


def render_watched_alert(alert_id: str, kind: str, subject: str, record: Optional[Dict[str, Any]]) -> str:
    """One line per AlertRaised; with its time and message when ListAlerts still had the record."""
    alert_id, kind, subject = shown(alert_id), shown(kind), shown(subject)
    if record is None:
        return f"{format_time(time.time_ns() // 1000)}  {alert_id}  {kind}  {subject}"
    return f"{format_time(record['timestamp_usec'])}  {alert_id}  {kind}  {subject}  {shown(record['message'])}"


def watched_alert_json(alert_id: str, kind: str, subject: str, record: Optional[Dict[str, Any]]) -> str:
    return json.dumps(record if record is not None else {"id": alert_id, "kind": kind, "subject": subject},
                      sort_keys=True)


def render_pattern(mac: str, peer: str, port: int, transport: str, name: str) -> str:
    """One line per PatternSeen: when it arrived, the device and where it went for the first time."""
    where = shown(f"[{peer}]:{port}" if ":" in peer else f"{peer}:{port}")
    return f"{format_time(time.time_ns() // 1000)}  {shown(mac)}  {shown(transport)}  {where}  {shown(name) or '-'}"


def pattern_json(mac: str, peer: str, port: int, transport: str, name: str) -> str:
    return json.dumps({"timestamp_usec": time.time_ns() // 1000, "mac": mac, "peer": peer, "port": port,
                       "transport": transport, "name": name}, sort_keys=True)


def format_latency(usec: int) -> str:
    """SYN sent -> established (or -> failure); "-" when there was no TCP handshake to time."""
    if not usec:
        return "-"
    if usec < 1000:
        return f"{usec}us"
    return f"{usec / 1000:.1f}ms" if usec < 1_000_000 else f"{usec / 1e6:.2f}s"


def render_connections(records: List[Dict[str, Any]], truncated: bool) -> str:
    rows = []
    for r in records:
        dest = r["destination"]
        if r["family"] in ("inet", "inet6") and r["port"]:
            dest = f"[{dest}]:{r['port']}" if r["family"] == "inet6" else f"{dest}:{r['port']}"
        error = r.get("end_error") or r["error"]  # how it ended, else what connect() said (EINPROGRESS)
        result = f"{r['outcome']} ({error})" if error and r["outcome"] != "succeeded" else r["outcome"]
        rows.append([format_time(r["timestamp_usec"]), r["pid"], r["command"], r["uid"], r["kind"],
                     r["transport"], dest or "-", format_latency(r.get("latency_usec", 0)), result])
    text = render_table(rows, ["TIME", "PID", "COMMAND", "UID", "KIND", "TRANSPORT", "DESTINATION", "LATENCY",
                               "RESULT"])
    if truncated:
        text += "\n(more records match; raise --limit to see them)"
    return text


def _total(counters: Dict[str, int], unit: str, direction: str) -> int:
    return sum(v for k, v in counters.items() if k.startswith(direction + "_") and k.endswith("_" + unit))


def render_devices(devices: List[Dict[str, Any]]) -> str:
    rows = []
    for d in devices:
        c = d.get("counters", {})
        addresses = ", ".join(d["ipv4"] + d["ipv6"]) or "-"
        vendor = d["vendor"] or ("(randomized)" if d["randomized"] else "-")
        rows.append([d["mac"], vendor[:28], d["hostname"] or "-", addresses, d["interface"] or "-",
                     _total(c, "packets", "tx"), _total(c, "packets", "rx"), d["tcp_syns"],
                     format_time(d["last_seen_usec"]) if d["last_seen_usec"] else "-"])
    return render_table(rows, ["MAC", "VENDOR", "HOSTNAME", "ADDRESSES", "IFACE", "TX PKTS", "RX PKTS",
                               "SYNS", "LAST SEEN"])


def render_device(d: Dict[str, Any]) -> str:
    c = d.get("counters", {})
    lines = [
        f"          MAC: {shown(d['mac'])}{'  (randomized)' if d['randomized'] else ''}",
        f"       Vendor: {shown(d['vendor']) or '-'}",
        f"     Hostname: {shown(d['hostname']) or '-'}"
        + (f" (from {shown(d['hostname_source'])})" if d['hostname'] else ""),
        f"         IPv4: {shown(', '.join(d['ipv4'])) or '-'}",
        f"         IPv6: {shown(', '.join(d['ipv6'])) or '-'}",
        f"    Interface: {shown(d['interface']) or '-'}{' vlan ' + shown(d['vlan']) if d['vlan'] else ''}",
        f"   First seen: {format_time(d['first_seen_usec']) if d['first_seen_usec'] else '-'}",
        f"    Last seen: {format_time(d['last_seen_usec']) if d['last_seen_usec'] else '-'}",
        f" TCP attempts: {shown(d['tcp_syns'])}   peers: {shown(d['peers'])}",
        f"    DNS names: {shown(', '.join(d['dns_names'])) or '-'}",
        f"   HTTP hosts: {shown(', '.join(d['http_hosts'])) or '-'}",
        f"    TLS names: {shown(', '.join(d['tls_names'])) or '-'}",
    ]
    rows = []
    for proto in ("arp", "ipv4", "ipv6", "tcp", "udp", "icmp", "icmpv6", "other"):
        values = [c.get(f"{dr}_{proto}_{u}", 0) for dr in ("tx", "rx") for u in ("packets", "bytes")]
        if any(values):
            rows.append([proto, *values])
    if rows:
        lines.append("")
        lines.append(render_table(rows, ["PROTOCOL", "TX PKTS", "TX BYTES", "RX PKTS", "RX BYTES"]))
    if d["http_requests"]:
        lines.append("")
        lines.append(render_table([list(r) for r in d["http_requests"]], ["METHOD", "HOST", "PATH"]))
    if d["recent_peers"]:
        lines.append("")
        lines.append(render_table([[a, p, t, n or "-"] for a, p, t, n in d["recent_peers"]],
                                  ["PEER", "PORT", "TRANSPORT", "NAME"]))
    return "\n".join(lines)


def render_message(text: str) -> str:
    """A message line from the daemon (Summary's answer, an error) as the terminal gets it."""
    return shown(text)
