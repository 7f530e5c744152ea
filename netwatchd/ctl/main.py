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
import json
import os
import signal
import sys

from netwatchd.ctl.render import (
    pattern_json,
    render_alerts,
    render_connections,
    render_device,
    render_devices,
    render_message,
    render_pattern,
    render_status,
    render_watched_alert,
    watched_alert_json,
)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_DENIED, EXIT_NO_SUCH_DEVICE = 0, 1, 2, 3, 4, 5

NOT_RUNNING_ERRORS = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoServer",
    "org.freedesktop.DBus.Error.NoReply",
}


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
    from netwatchd.ctl.replay import HELP

    r = sub.add_parser("replay", help="alerts a config would have raised over the recorded history",
                       description=HELP)
    r.add_argument("--config", required=True, metavar="FILE", help="netwatchd.yaml to try (its alerts section)")
    r.add_argument("--state-dir", metavar="DIR", help="where the history is (default: the config's "
                   "state_directory, else $STATE_DIRECTORY, else /var/lib/netwatchd)")


def run(args) -> int:
    if args.command == "replay":
        from netwatchd.ctl.replay import run_replay

        return run_replay(args.config, args.state_dir, args.json)
    from netwatchd.ctl import bus_client

    if args.command == "status":
        props = bus_client.get_all_properties()
        print(json.dumps(props, indent=2, sort_keys=True) if args.json else render_status(props))
    elif args.command == "summary":
        for name, value in (("--pid", args.pid), ("--duration", args.duration)):
            if value is not None and value < 0:
                print(f"netwatchctl: {name} must not be negative", file=sys.stderr)
                return EXIT_USAGE
        (answer,) = bus_client.call("Summary", "usu", args.pid or 0, args.comm or "", args.duration)
        print(json.dumps(answer, indent=2, sort_keys=True) if args.json else render_message(answer["message"]))
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
        devices = bus_client.list_devices()
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
    from netwatchd.ctl import bus_client

    def on_alert(*alert) -> None:
        print(watched_alert_json(*alert) if as_json else render_watched_alert(*alert), flush=True)

    def on_pattern(*pattern) -> None:
        print(pattern_json(*pattern) if as_json else render_pattern(*pattern), flush=True)

    def on_note(text: str) -> None:
        print(f"netwatchctl: {render_message(text)}", file=sys.stderr, flush=True)

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
    from netwatchd.ctl.bus_client import BusCallError

    try:
        return run(args)
    except BusCallError as e:
        if e.name == "org.freedesktop.DBus.Error.AccessDenied":
            print("netwatchctl: access denied by the bus policy: only root and members of group "
                  f"netwatchd may query netwatchd ({render_message(e.message)})", file=sys.stderr)
            return EXIT_DENIED
        if e.name == "org.netwatchd.Netwatchd1.Error.NoSuchDevice":
            print(f"netwatchctl: {render_message(e.message)}", file=sys.stderr)
            return EXIT_NO_SUCH_DEVICE
        if e.name in NOT_RUNNING_ERRORS:
            print(f"netwatchctl: netwatchd is not running or not reachable: {render_message(e.message)}",
                  file=sys.stderr)
            return EXIT_NOT_RUNNING
        print(f"netwatchctl: {render_message(e.message)}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
