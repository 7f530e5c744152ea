"""The stand-in service of the alert D-Bus tests (alert_service.py), run and read line by line
(tests/support/processes.py), stopped by its pid even when a test fails; and new devices for a
tick's observation."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from tests.support.config_rule import merge, shipped_config_with
from tests.support.daemon import PrivateSystemBus
from tests.support.processes import LineProcess

HERE = Path(__file__).resolve().parent


# The stand-in's time, compressed: learning over at once, every key warm after one tick.
STAND_IN_TIME = {"alerts": {"learning_period_sec": 0, "warmup_ticks": 1}}


class AlertService(LineProcess):
    """alert_service.py as root on `bus`; ready when it owns the name. Its config is the shipped
    one with STAND_IN_TIME and the test's `overrides`, within the rule (`about`, as for
    DaemonProcess); `alerting=False`: a daemon without an alert pipeline."""

    def __init__(self, bus: PrivateSystemBus, state_dir: Path, overrides: Optional[Dict] = None, about=(),
                 alerting: bool = True) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        config = Path(state_dir) / "netwatchd.yaml"
        config.write_text(yaml.safe_dump(shipped_config_with(merge(STAND_IN_TIME, overrides or {}), about)))
        super().__init__([sys.executable, str(HERE / "alert_service.py"), str(state_dir), str(config),
                          *([] if alerting else ["--no-alerting"])], bus, ends_on_stdin_eof=True)
        self.wait_line("ready", timeout=30)

    def command(self, command: Dict) -> List[Dict]:
        """Sends one command; the alerts it raised, as alert dicts (Alert.to_dict)."""
        since = len(self.out)
        self.send(json.dumps(command))
        done = self.wait_line("done", since)
        return [json.loads(line[len("alert "):]) for line in self.out[since:done] if line.startswith("alert ")]

    def tick(self, **observation) -> List[Dict]:
        """One tick with `observation`; with new devices, the next (empty) tick too, since the
        detector reports a new device a tick after it is first seen (alerting/address_moves.py)."""
        observation.setdefault("time_usec", time.time_ns() // 1000)
        raised = self.command({"tick": observation})
        if observation.get("new_devices"):
            raised += self.command({"tick": {"time_usec": observation["time_usec"] + 1000}})
        return raised


def new_devices(n: int, start: int = 0) -> List[Dict]:
    """n new devices for one tick's observation, with locally unique, non-randomized MACs; 32 a
    port at most (veth-test<i // 32>), so that no port sees the shipped mac_flood_new_macs (64)
    in a window: devices joining, not a MAC flood (tests/integration/test_hostile_lan.py has one)."""
    return [{"mac": "00:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255), "randomized": False,
             "vendor": "Xensource, Inc.", "interface": f"veth-test{i // 32}", "ipv4": [f"10.9.{i >> 8 & 255}.{i & 255}"],
             "ipv6": []} for i in range(start, start + n)]
