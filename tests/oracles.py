"""Expected values from outside the code under test: the README's documented tables, read as a
user reads them. Tests compare the code's constants against these, never with themselves."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Tuple

README = Path(__file__).resolve().parents[1] / "README.md"


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
