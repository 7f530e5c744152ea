"""Detection latency in ticks per scenario (issue 10), measured by the scenario suite on the real
kernel with the shipped config (only time compressed): from the first tick whose observation saw
the event to the tick of its alert, both included -- 1 is the tick that saw it.

    sudo .venv/bin/python bench/alert_latency.py     (root: namespaces, BPF; ~2 min)

Runs tests/integration/test_alert_scenarios.py, prints the table and writes
bench/results/alert_latency-<time>.json. Exit 1 if the suite failed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="nwd-latency-")) / "latency.json"
    env = dict(os.environ, NETWATCHD_LATENCY_OUT=str(out))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/integration/test_alert_scenarios.py"],
                       cwd=REPO, env=env)
    if not out.exists():
        print("the suite wrote no latencies")
        return 1
    data = json.loads(out.read_text())
    sys.path[:0] = [str(REPO)]
    from tests.support.oracles import ALERT_SCENARIOS as EXPECTED

    print(f"\ntick {data['tick_sec']} s; storms took {data['storm_sec']}")
    print(f"  {'scenario':<44} {'expected (kind, subject)':<40} {'allowed':>8} {'measured':>9}")
    for name, (kind, subject, most) in EXPECTED.items():
        got = data["latency_ticks"].get(name, "-")
        if kind == "nothing" and got == 0:
            got = "none"
        what = "nothing" if kind == "nothing" else f"{kind} on {subject}"
        allowed = f"{most} quiet" if kind == "nothing" else f"<= {most}"
        print(f"  {name:<44} {what:<40} {allowed:>8} {got!s:>9}")
    RESULTS.mkdir(exist_ok=True)
    saved = RESULTS / f"alert_latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    saved.write_text(json.dumps({"suite_passed": r.returncode == 0, **data}, indent=2) + "\n")
    print(f"\nwrote {saved.relative_to(REPO)}")
    return 0 if r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
