"""netwatchctl: ask the running netwatchd, like resolvectl asks resolved.

    netwatchctl status
    netwatchctl summary (--pid PID | --command NAME) [--duration SEC]
    netwatchctl connections [--pid PID] [--limit N]
Human tables by default, --json for scripts. Exit codes are stable:
    0 ok, 1 the daemon refused the request (its message is shown), 2 usage,
    3 netwatchd is not running or the bus is unreachable, 4 access denied by the bus policy.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, Dict, List

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_DENIED = 0, 1, 2, 3, 4

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


def render_status(props: Dict[str, Any]) -> str:
    started = props.get("StartedAtUSec", 0)
    return "\n".join([
        f"      Version: {props.get('Version', '?')}",
        f"      Started: {format_time(started) if started else '?'}",
        f"       Config: {props.get('ConfigFile', '?')}",
        f"     Programs: {', '.join(props.get('ProgramsAttached', [])) or 'none'}",
        f"     Connects: {props.get('ConnectAttempts', 0)} attempts seen",
        f"  Events lost: {props.get('EventsLost', 0)}",
        f"  Untracked processes: {props.get('ProcessesUntracked', 0)}",
    ])


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
    for sp in sub.choices.values():  # --json after the verb too
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return p.parse_args(argv)


def run(args) -> int:
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
        if e.name in NOT_RUNNING_ERRORS:
            print(f"netwatchctl: netwatchd is not running or not reachable: {e.message}", file=sys.stderr)
            return EXIT_NOT_RUNNING
        print(f"netwatchctl: {e.message}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
