"""Expected values from outside the code under test: the README's documented tables, read as a
user reads them. Tests compare the code's constants against these, never with themselves."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Tuple

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_alert_kinds() -> Dict[str, Tuple[str, int]]:
    """{kind: (MESSAGE_ID, PRIORITY)} from the README's `| Kind | MESSAGE_ID | PRIORITY |` table."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*Kind\s*\|\s*MESSAGE_ID\s*\|\s*PRIORITY", line))
    kinds = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        kind, message_id, priority = [c.strip().strip("`") for c in line.strip("|").split("|")][:3]
        kinds[kind] = (message_id, int(priority.split()[0]))
    return kinds


def readme_tc_filter() -> Tuple[int, int]:
    """(handle, priority) of our clsact filters, as the README's "Kernels" section states them."""
    m = re.search(r"our filters sit at handle `(0x[0-9a-f]+)`, priority (\d+)", README.read_text())
    return int(m.group(1), 16), int(m.group(2))


# The README's table "What raises which alert (the scenario suite)", written out: scenario ->
# (kind, subject pattern, most ticks allowed; for "nothing", the quiet ticks judged).
# tests/integration/test_alert_scenarios.py plays them, bench/alert_latency.py prints them.
ALERT_SCENARIOS = {
    "background: steady, jittered, ramping": ("nothing", "", 12),
    "nmap -sT, 300 ports, ~20 ms": ("fan_out", "device:{scan}", 2),
    "SYN storm, 3000 to one closed port, ~0.1 s": ("connect_rate", "device:{flood}", 2),
    "local command, 4000 connect() in <1 s": ("connect_rate", "command:{cmd_s}", 2),
    "MAC change, ARP first": ("address_change", "ip:{mover4_v4}", 2),
    "MAC change, NDP first": ("address_change", "ip:{mover6_v4}", 2),
    "ARP spoofing with flip-flops": ("address_change", "ip:{victim_v4}", 2),
    "randomized MAC joins": ("new_device", "randomized-macs", 2),
    "restart": ("nothing", "", 12),
}
