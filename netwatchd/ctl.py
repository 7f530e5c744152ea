"""netwatchctl: ask the running netwatchd, like resolvectl asks resolved.

    netwatchctl status
    netwatchctl summary (--pid PID | --command NAME) [--duration SEC]
    netwatchctl connections [--pid PID] [--limit N]
    netwatchctl devices
    netwatchctl device MAC-OR-IP
    netwatchctl alerts [--limit N]
    netwatchctl watch [--patterns]     AlertRaised (or, with --patterns, each first-seen
                                       device/peer/port/protocol) as it happens, until Ctrl-C
    netwatchctl replay --config FILE [--state-dir DIR]   (reads the history file, no daemon needed)
Human tables by default, --json for scripts. Exit codes are stable:
    0 ok, 1 the daemon refused the request (its message is shown), 2 usage,
    3 netwatchd is not running or the bus is unreachable, 4 access denied by the bus policy,
    5 no such device; replay: 66 no usable history, 78 unusable config file.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_DENIED, EXIT_NO_SUCH_DEVICE = 0, 1, 2, 3, 4, 5

NOT_RUNNING_ERRORS = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoServer",
    "org.freedesktop.DBus.Error.NoReply",
}


def format_time(usec: int) -> str:
    return datetime.datetime.fromtimestamp(usec / 1e6).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def render_table(rows: List[List[str]], headers: List[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def format_uptime(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def render_status(props: Dict[str, Any], now_usec: int = 0) -> str:
    started = props.get("StartedAtUSec", 0)
    now_usec = now_usec or int(datetime.datetime.now().timestamp() * 1e6)
    totals = props.get("ProtocolTotals", {})
    return "\n".join([
        f"      Version: {props.get('Version', '?')}",
        f"      Started: {format_time(started) if started else '?'}"
        + (f" (up {format_uptime((now_usec - started) / 1e6)})" if started else ""),
        f"       Config: {props.get('ConfigFile', '?')}",
        f"     Programs: {', '.join(props.get('ProgramsAttached', [])) or 'none'}",
        f"       Kernel: {props.get('KernelRelease', '?')}"
        + (f" ({'; '.join(props['KernelFallbacks'])})" if props.get("KernelFallbacks") else ""),
        f"   Interfaces: {', '.join(props.get('Interfaces', [])) or 'none'}",
        f"     Connects: {props.get('ConnectAttempts', 0)} attempts seen",
        f"      Devices: {props.get('DeviceCount', 0)}",
        f"      Packets: {', '.join(f'{p} {n}' for p, n in totals.items() if n) or 'none yet'}",
        f"  Events lost: {props.get('EventsLost', 0)} connect records, {props.get('DeviceEventsLost', 0)} device events,"
        f" {props.get('MalformedFrames', 0)} malformed frames",
        f"  Untracked processes: {props.get('ProcessesUntracked', 0)}",
    ] + render_alert_status(props))


def render_alert_status(props: Dict[str, Any]) -> List[str]:
    if "AlertCounts" not in props:  # a daemon from before alerts
        return []
    counts = props["AlertCounts"]
    if not counts:
        return ["       Alerts: off (alerts.enabled is false)"]
    per_kind = ", ".join(f"{kind} {n}" for kind, n in counts.items())
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
    if record is None:
        return f"{format_time(time.time_ns() // 1000)}  {alert_id}  {kind}  {subject}"
    return f"{format_time(record['timestamp_usec'])}  {alert_id}  {kind}  {subject}  {record['message']}"


def watched_alert_json(alert_id: str, kind: str, subject: str, record: Optional[Dict[str, Any]]) -> str:
    return json.dumps(record if record is not None else {"id": alert_id, "kind": kind, "subject": subject},
                      sort_keys=True)


def render_pattern(mac: str, peer: str, port: int, transport: str, name: str) -> str:
    """One line per PatternSeen: when it arrived, the device and where it went for the first time."""
    where = f"[{peer}]:{port}" if ":" in peer else f"{peer}:{port}"
    return f"{format_time(time.time_ns() // 1000)}  {mac}  {transport}  {where}  {name or '-'}"


def pattern_json(mac: str, peer: str, port: int, transport: str, name: str) -> str:
    return json.dumps({"timestamp_usec": time.time_ns() // 1000, "mac": mac, "peer": peer, "port": port,
                       "transport": transport, "name": name}, sort_keys=True)


def render_connections(records: List[Dict[str, Any]], truncated: bool) -> str:
    rows = []
    for r in records:
        dest = r["destination"]
        if r["family"] in ("inet", "inet6") and r["port"]:
            dest = f"[{dest}]:{r['port']}" if r["family"] == "inet6" else f"{dest}:{r['port']}"
        result = r["outcome"] if not r["error"] else f"{r['outcome']} ({r['error']})"
        rows.append([format_time(r["timestamp_usec"]), r["pid"], r["command"], r["uid"], r["kind"],
                     r["transport"], dest or "-", result])
    text = render_table(rows, ["TIME", "PID", "COMMAND", "UID", "KIND", "TRANSPORT", "DESTINATION", "RESULT"])
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
        f"          MAC: {d['mac']}{'  (randomized)' if d['randomized'] else ''}",
        f"       Vendor: {d['vendor'] or '-'}",
        f"     Hostname: {d['hostname'] or '-'}{' (from ' + d['hostname_source'] + ')' if d['hostname'] else ''}",
        f"         IPv4: {', '.join(d['ipv4']) or '-'}",
        f"         IPv6: {', '.join(d['ipv6']) or '-'}",
        f"    Interface: {d['interface'] or '-'}{' vlan ' + str(d['vlan']) if d['vlan'] else ''}",
        f"   First seen: {format_time(d['first_seen_usec']) if d['first_seen_usec'] else '-'}",
        f"    Last seen: {format_time(d['last_seen_usec']) if d['last_seen_usec'] else '-'}",
        f" TCP attempts: {d['tcp_syns']}   peers: {d['peers']}",
        f"    DNS names: {', '.join(d['dns_names']) or '-'}",
        f"   HTTP hosts: {', '.join(d['http_hosts']) or '-'}",
        f"    TLS names: {', '.join(d['tls_names']) or '-'}",
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


def parse_args(argv):
    p = argparse.ArgumentParser(prog="netwatchctl", description="Query the running netwatchd.")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="daemon status")
    s = sub.add_parser("summary", help="connect() attempts of one process or command")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--pid", type=int)
    who.add_argument("--command", dest="comm")
    s.add_argument("--duration", type=int, default=60, help="seconds, 1..3600 (default 60)")
    c = sub.add_parser("connections", help="recent connect() calls, newest first")
    c.add_argument("--pid", type=int, default=0)
    c.add_argument("--limit", type=int, default=0, help="at most N (default 100, max 1000)")
    sub.add_parser("devices", help="devices seen on the monitored interfaces")
    dv = sub.add_parser("device", help="one device, by MAC or IP address")
    dv.add_argument("address", help="MAC (aa:bb:cc:dd:ee:ff) or IPv4/IPv6 address")
    al = sub.add_parser("alerts", help="recent alerts, newest first")
    al.add_argument("--limit", type=int, default=0, help="at most N (default 100, max 1000)")
    w = sub.add_parser("watch", help="print alerts as they are raised, until Ctrl-C")
    w.add_argument("--patterns", action="store_true",
                   help="print each first-seen (device, peer, port, protocol, name) instead of alerts")
    add_replay_parser(sub)
    for sp in sub.choices.values():  # --json after the verb too
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return p.parse_args(argv)


def add_replay_parser(sub) -> None:
    from .replay_cli import HELP

    r = sub.add_parser("replay", help="alerts a config would have raised over the recorded history",
                       description=HELP)
    r.add_argument("--config", required=True, metavar="FILE", help="netwatchd.yaml to try (its alerts section)")
    r.add_argument("--state-dir", metavar="DIR", help="where the history is (default: the config's "
                   "state_directory, else $STATE_DIRECTORY, else /var/lib/netwatchd)")


def run(args) -> int:
    if args.command == "replay":
        from .replay_cli import run_replay

        return run_replay(args.config, args.state_dir, args.json)
    from . import bus_client

    if args.command == "status":
        props = bus_client.get_all_properties()
        print(json.dumps(props, indent=2, sort_keys=True) if args.json else render_status(props))
    elif args.command == "summary":
        for name, value in (("--pid", args.pid), ("--duration", args.duration)):
            if value is not None and value < 0:
                print(f"netwatchctl: {name} must not be negative", file=sys.stderr)
                return EXIT_USAGE
        (answer,) = bus_client.call("Summary", "usu", args.pid or 0, args.comm or "", args.duration)
        print(json.dumps(answer, indent=2, sort_keys=True) if args.json else answer["message"])
    elif args.command == "connections":
        if args.pid < 0 or args.limit < 0:
            print("netwatchctl: --pid and --limit must not be negative", file=sys.stderr)
            return EXIT_USAGE
        records, truncated = bus_client.call("ListConnections", "uu", args.pid, args.limit)
        if args.json:
            print(json.dumps({"connections": records, "truncated": truncated}, indent=2, sort_keys=True))
        else:
            print(render_connections(records, truncated))
    elif args.command == "devices":
        (devices,) = bus_client.call("ListDevices")
        print(json.dumps(devices, indent=2, sort_keys=True) if args.json else render_devices(devices))
    elif args.command == "device":
        (device,) = bus_client.call("GetDevice", "s", args.address)
        print(json.dumps(device, indent=2, sort_keys=True) if args.json else render_device(device))
    elif args.command == "alerts":
        if args.limit < 0:
            print("netwatchctl: --limit must not be negative", file=sys.stderr)
            return EXIT_USAGE
        (records,) = bus_client.call("ListAlerts", "u", args.limit)
        print(json.dumps(records, indent=2, sort_keys=True) if args.json else render_alerts(records))
    elif args.command == "watch":
        return watch(args.json, args.patterns)
    return EXIT_OK


def watch(as_json: bool, patterns: bool = False) -> int:
    """Until SIGINT/SIGTERM (exit 0); a reader that goes away (`| head -1`) also ends it quietly."""
    from . import bus_client

    def on_alert(*alert) -> None:
        print(watched_alert_json(*alert) if as_json else render_watched_alert(*alert), flush=True)

    def on_pattern(*pattern) -> None:
        print(pattern_json(*pattern) if as_json else render_pattern(*pattern), flush=True)

    def on_note(text: str) -> None:
        print(f"netwatchctl: {text}", file=sys.stderr, flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if patterns:
            await bus_client.watch_patterns(on_pattern, on_note, stop)
        else:
            await bus_client.watch_alerts(on_alert, on_note, stop)

    try:
        asyncio.run(main())
    except BrokenPipeError:
        # stdout's reader left; point stdout at /dev/null so the interpreter's final flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from .bus_client import BusCallError

    try:
        return run(args)
    except BusCallError as e:
        if e.name == "org.freedesktop.DBus.Error.AccessDenied":
            print("netwatchctl: access denied by the bus policy: only root and members of group "
                  f"netwatchd may query netwatchd ({e.message})", file=sys.stderr)
            return EXIT_DENIED
        if e.name == "org.netwatchd.Netwatchd1.Error.NoSuchDevice":
            print(f"netwatchctl: {e.message}", file=sys.stderr)
            return EXIT_NO_SUCH_DEVICE
        if e.name in NOT_RUNNING_ERRORS:
            print(f"netwatchctl: netwatchd is not running or not reachable: {e.message}", file=sys.stderr)
            return EXIT_NOT_RUNNING
        print(f"netwatchctl: {e.message}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
