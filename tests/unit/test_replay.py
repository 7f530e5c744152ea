"""What-if replay: a fresh detector over synthetic histories, and `netwatchctl replay` end to end
on a history file written by TickHistory."""
import dataclasses
import io
import json

import numpy as np
import pytest

from netwatchd.store.state_files import history_path
from netwatchd.config import AlertsConfig
from netwatchd.ctl.main import main as ctl_main
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.replay import ReplaySpan, replay
from netwatchd.ctl.replay import EXIT_CONFIG, EXIT_NO_HISTORY, run_replay
from netwatchd.store.tick_history import TickHistory

T0 = 1_700_000_000_000_000
TICK = 1_000_000
DEVICES = [f"02:00:00:00:00:{i:02x}" for i in range(1, 6)]
COMMANDS = ["curl", "apt", "sshd", "firefox"]

# Short warm-up and cooldown so a synthetic history of a few hundred ticks exercises everything.
CFG = AlertsConfig(warmup_ticks=30, learning_period_sec=0, cooldown_sec=0, consecutive_ticks=2)


def quiet(n_ticks: int, seed: int = 1):
    """Background: every device and command a few connects a tick (Poisson)."""
    rng = np.random.default_rng(seed)
    for n in range(n_ticks):
        yield TickObservation(
            time_usec=T0 + n * TICK,
            device_connects={mac: int(rng.poisson(3)) for mac in DEVICES},
            device_new_peers={mac: int(rng.poisson(0.2)) for mac in DEVICES},
            command_connects={c: int(rng.poisson(4)) for c in COMMANDS},
        )


def with_storm(observations, command: str, start: int, length: int, rate: int):
    for n, obs in enumerate(observations):
        if start <= n < start + length:
            obs.command_connects[command] = rate
            obs.command_pids[command] = [4242]
        yield obs


def with_bumps(observations, start: int, every: int, sizes):
    """One tick each, command by command `every` ticks apart, of different heights above normal."""
    for n, obs in enumerate(observations):
        i, rest = divmod(n - start, every)
        if n >= start and rest == 0 and i < len(sizes):
            obs.command_connects[COMMANDS[i]] = sizes[i]
        yield obs


def test_quiet_history_gives_no_alert():
    assert replay(quiet(400), CFG) == []


def test_storm_gives_connect_rate_on_the_storming_command():
    alerts = replay(with_storm(quiet(400), "curl", start=200, length=5, rate=900), dataclasses.replace(CFG, cooldown_sec=600))
    assert [(a.kind, a.subject) for a in alerts] == [("connect_rate", "command:curl")]
    a = alerts[0]
    assert a.timestamp_usec == T0 + 201 * TICK  # the second anomalous tick in a row
    assert a.observed == 900 and a.baseline < 10 and a.score > CFG.z_threshold
    assert a.details["pids"] == "4242"


def test_lower_z_threshold_gives_more_alerts():
    # normal ~4 +- 2 a tick: the bumps score ~28, ~33, ~58 and ~98
    history = list(with_bumps(quiet(400), start=100, every=40, sizes=(60, 70, 120, 200)))
    one_tick = dataclasses.replace(CFG, consecutive_ticks=1, process_connect_floor=10)
    strict = replay(history, dataclasses.replace(one_tick, z_threshold=80.0))
    loose = replay(history, dataclasses.replace(one_tick, z_threshold=20.0))
    assert [a.subject for a in strict] == ["command:firefox"]
    assert [a.subject for a in loose] == ["command:curl", "command:apt", "command:sshd", "command:firefox"]
    assert all(a.kind == "connect_rate" for a in loose)


def test_learning_period_counts_from_the_first_recorded_tick():
    def history():
        for obs in quiet(100):
            if obs.time_usec in (T0 + 10 * TICK, T0 + 90 * TICK):
                obs.new_devices = [{"mac": f"00:11:22:33:44:{obs.time_usec // TICK % 100:02d}", "vendor": "x"}]
            yield obs

    alerts = replay(history(), dataclasses.replace(CFG, learning_period_sec=50))
    assert [(a.kind, a.timestamp_usec) for a in alerts] == [("new_device", T0 + 91 * TICK)]  # held a tick


def test_empty_history():
    span = ReplaySpan()
    assert replay(span.count([]), CFG) == [] and span.ticks == 0


# -- netwatchctl replay ---------------------------------------------------------------------------
def write_config(tmp_path, text: str) -> str:
    path = tmp_path / "netwatchd.yaml"
    path.write_text(text)
    return str(path)


def record(state_dir, observations):
    with TickHistory.open(history_path(str(state_dir)), keep=100_000) as h:
        for obs in observations:
            h.record(obs)


GOOD_CONFIG = """\
alerts:
  warmup_ticks: 30
  learning_period_sec: 0
  cooldown_sec: 600
"""


def test_cli_prints_alerts_and_summary(tmp_path, capsys):
    record(tmp_path / "state", with_storm(quiet(400), "apt", start=300, length=4, rate=5000))
    config = write_config(tmp_path, GOOD_CONFIG + f"state_directory: {tmp_path / 'state'}\n")
    assert ctl_main(["replay", "--config", config]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["TIME", "KIND", "SUBJECT", "MESSAGE"]
    assert "connect_rate" in out[1] and "command:apt" in out[1] and "5000 connect() calls" in out[1]
    assert out[-1].startswith("replayed 400 ticks from ") and out[-1].endswith("(6m39s): 1 alert (connect_rate 1)")


def test_cli_json_one_object_per_line(tmp_path, capsys):
    record(tmp_path, with_storm(quiet(400), "apt", start=300, length=4, rate=5000))
    config = write_config(tmp_path, GOOD_CONFIG)
    assert ctl_main(["replay", "--config", config, "--state-dir", str(tmp_path), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["kind"], x["subject"]) for x in lines[:-1]] == [("connect_rate", "command:apt")]
    assert lines[-1]["summary"] == {"ticks": 400, "first_usec": T0, "last_usec": T0 + 399 * TICK,
                                    "span_sec": 399.0, "alerts": 1, "alerts_per_kind": {"connect_rate": 1}}


def test_cli_state_dir_from_environment(tmp_path, capsys, monkeypatch):
    record(tmp_path, quiet(50))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert ctl_main(["replay", "--config", write_config(tmp_path, GOOD_CONFIG)]) == 0
    assert capsys.readouterr().out.startswith("replayed 50 ticks from ")


@pytest.mark.parametrize("text, message", [
    ("alerts:\n  z_threshold: 0.5\n", "alerts.z_threshold"),
    ("alerts:\n  no_such_key: 1\n", "alerts.no_such_key"),
    ("alerts: [\n", "malformed YAML"),
])
def test_cli_bad_config_is_one_line_and_exit_78(tmp_path, text, message):
    record(tmp_path, quiet(10))
    err, out = io.StringIO(), io.StringIO()
    code = run_replay(write_config(tmp_path, text), str(tmp_path), False, out=out, err=err)
    assert code == EXIT_CONFIG == 78
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netwatchctl: ") and message in lines[0]
    assert out.getvalue() == ""


def test_cli_missing_config_file(tmp_path, capsys):
    assert ctl_main(["replay", "--config", str(tmp_path / "nope.yaml"), "--state-dir", str(tmp_path)]) == 78
    assert "cannot read" in capsys.readouterr().err


def test_cli_missing_history_is_a_clear_error(tmp_path, capsys):
    code = ctl_main(["replay", "--config", write_config(tmp_path, GOOD_CONFIG), "--state-dir", str(tmp_path / "empty")])
    assert code == EXIT_NO_HISTORY != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "history.sqlite3: no such file" in err
    assert not (tmp_path / "empty").exists()


def test_cli_corrupt_history(tmp_path, capsys):
    (tmp_path / "history.sqlite3").write_bytes(b"garbage" * 100)
    code = ctl_main(["replay", "--config", write_config(tmp_path, GOOD_CONFIG), "--state-dir", str(tmp_path)])
    assert code == EXIT_NO_HISTORY
    assert "not a database" in capsys.readouterr().err
