"""`netwatchctl replay`: the alerts a config would have raised over the recorded tick history.

Reads the history file directly (no daemon needed; it may be running and writing meanwhile).
The daemon writes its history every few hundred ticks and whenever it saves state, so the
newest ticks may not be in the file yet.
Exit codes (sysexits.h): 0 ok, 66 no usable history, 78 the config file is unusable.
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Optional, TextIO

from netwatchd.ctl.render import format_duration, format_time, render_alerts

if TYPE_CHECKING:  # the parser imports this module for HELP: numpy and yaml only when replaying
    from netwatchd.alerting.replay import ReplaySummary

EXIT_OK, EXIT_NO_HISTORY, EXIT_CONFIG = 0, 66, 78

HELP = ("run a fresh detector with the alerts and beacons sections of --config over the recorded per-tick history "
        "and print the alerts it would have raised. Nothing is learnt beforehand: baselines warm up "
        "over the first recorded ticks, and the new-device learning period counts from the first "
        "recorded tick.")


def render_summary(s: ReplaySummary) -> str:
    if not s.ticks:
        return "replayed 0 ticks: the history is empty"
    kinds = ", ".join(f"{k} {n}" for k, n in s.alerts_per_kind.items())
    return (f"replayed {s.ticks} ticks from {format_time(s.first_usec)} to {format_time(s.last_usec)} "
            f"({format_duration((s.last_usec - s.first_usec) / 1e6)}): "
            f"{s.alerts} alert{'' if s.alerts == 1 else 's'}{' (' + kinds + ')' if kinds else ''}")


def run_replay(config_path: str, state_dir: Optional[str], as_json: bool,
               out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from netwatchd.store.state_files import history_path
    from netwatchd.config import ConfigError, load_config, state_directory
    from netwatchd.alerting.replay import ReplaySpan, ReplaySummary, replay
    from netwatchd.store.tick_history import HistoryError, TickHistory

    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        print(f"netwatchctl: {e}", file=err)
        return EXIT_CONFIG
    path = history_path(state_dir or state_directory(cfg))
    span = ReplaySpan()
    try:
        with TickHistory.open_readonly(path) as history:
            alerts = replay(span.count(history.read()), cfg.alerts, cfg.beacons)
    except HistoryError as e:
        print(f"netwatchctl: cannot replay: {e}", file=err)
        return EXIT_NO_HISTORY
    summary = ReplaySummary.of(span, alerts)
    if as_json:
        for a in alerts:
            print(json.dumps(a.to_dict(), sort_keys=True), file=out)
        print(json.dumps({"summary": summary.to_dict()}, sort_keys=True), file=out)
    else:
        if alerts:
            print(render_alerts([a.to_dict() for a in alerts]), file=out)
        print(render_summary(summary), file=out)
    return EXIT_OK
