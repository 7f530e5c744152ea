"""What every root benchmark's main() does: refuse without root, turn SIGTERM/SIGHUP into a
clean interrupt (so its finalizers stop and remove what it started), print the report and
keep it, with the raw figures, as JSON in the results directory."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Dict


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_benchmark(name: str, needs: str, args, run: Callable[[object], Dict],
                  report: Callable[[Dict], str]) -> int:
    if os.geteuid() != 0:
        print(f"{name}: needs root ({needs})", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        r = run(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; everything it started is stopped and removed", file=sys.stderr)
        return 130
    text = report(r)
    print(text)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / time.strftime(f"{name}-%Y%m%d-%H%M%S.json")
    r["report"] = text.splitlines()
    r["args"] = vars(args)
    path.write_text(json.dumps(r, indent=1, default=str) + "\n")
    print(f"\nresults: {path}")
    return 0


def bench_daemon(bus, config: Dict, command_prefix=None):
    """A test-harness daemon on the shipped config plus `config`. Benchmarks compare configured
    variants on purpose (records on/off, tc/tcx, the API's listener), so every key they set is
    declared as what they are about; the tests' shipped-config rule stays strict for tests."""
    from tests.support.config_rule import leaf_paths
    from tests.support.daemon import DaemonProcess

    return DaemonProcess(bus, config, about=tuple(leaf_paths(config)), command_prefix=command_prefix)
