"""Issue 4's acceptance, end to end, as root: the real kernel (connect tracepoints, the TC
classifier on veth bridge ports), network namespaces, a real systemd-journald, a real
dbus-daemon, and netwatchd as systemd would run it.

The world (tests/support/world.py, set up by `world` below):
  srv     the peer everyone talks to: a UDP echo and a TCP sink; the scan's target
  cisco, pi       quiet background: a datagram every 0.2 s and a TCP connect every 0.4 s to srv
  scan    the same background; runs nmap later (under a name of this run's own, nws<tag>)
  mover   the same background (UDP only); changes its MAC later
  newdev, rand1, rand2, rand3     made at the start with eth0 DOWN: silent, so absent while the
          daemon learns; each "joins" in its scenario by setting eth0 up (plugging the cable in).
          Their bridge ports are up and watched from the start, so joining is seen at once.
  local commands: background processes in the host namespace named nwa<tag><letter> (COMMANDS),
          each making BG_RATE refused connects per second to 127.0.0.1 (a port bound and never
          listened on), told to change rate on stdin.

The config is the shipped config/netwatchd.yaml with only time compressed:
  tick_interval_sec 0.5     long enough to be stable on a shared 2-core machine, short enough to
                            keep the module at about two minutes; "within 2 ticks" is counted in
                            the daemon's own ticks, read back from its replay history
  learning_period_sec 8     the background devices all appear in the first second; the late
                            devices stay silent (eth0 down) until their scenario, after it
  warmup_ticks 12           the background commands start with the daemon: warm after ~6 s
  devices.interfaces        the LAN's bridge ports, so every device:/ip: subject is ours
Every threshold is as shipped (consecutive_ticks 2, the burst rule, process_connect_floor 50,
cold_connect_rate 1000, ...), so what these tests see is what a user gets. Two tests change a
key they are about, by a reload: alerts.randomized_macs (once, ignore, alert) and
alerts.process_connect_floor; a restart keeps what a reload changed, as it would for a user.
Assertions are about our subjects only (the daemon watches only our bridge ports, so every
device:/ip: subject is ours; command: subjects are ours when named nwa<tag>*/nws<tag>, the
latter the scan's nmap, run under that name): other people's processes on this machine are traced too and may raise
alerts of their own.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from tests.support.config_rule import shipped
from tests.support.daemon import unvariant
from tests.support.lan import TCP_SINK, UDP_ECHO, mac_tail, randomized_mac
from tests.support.oracles import readme_alert_kinds
from tests.support.processes import Subscriber
from tests.support.traffic import QUIET_DEVICE, RATE_COMMAND
from tests.support.world import World

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "systemd" / "netwatchd.catalog"
SETTLE_TICKS = 3  # after the expected alert, this long for anything else to show up
STORM, MODERATE = 4000, 80  # connects per second: ~2000 a tick (a burst) and ~40 (the shipped floor is 50)
SCAN_PORTS = 3000  # one nmap scan: its ~3000 connect() calls in a tick make nmap a command alert too
TICKS_TAKEN: Dict[str, int] = {}  # scenario -> ticks from the action to its alert (printed at the end)


TICK = 0.5
STORE_INTERVAL = 1.0  # inventory, baselines and tick history written this often (both save intervals)
BG_RATE = 8  # connects per second of each background command: 4 per tick
ECHO_PORT, SINK_PORT = 7000, 7001
# What the tests change in the alerts section: time only (the shipped config otherwise).
ALERTS = {"learning_period_sec": 8, "warmup_ticks": 12}
SHIPPED_ALERTS = shipped()["alerts"]  # which the assertions are about
BACKGROUND = ("cisco", "pi", "scan", "mover")
LATE = ("newdev", "rand1", "rand2", "rand3")
COMMANDS = {  # letter -> what the command is for
    "s": "the storm after warm-up",
    "r": "the storm right after a restart",
    "m": "a moderate burst under the first floor",
    "n": "the same burst after a reload lowered the floor",
    "b": "the same burst after a broken file was rejected",
}

@pytest.fixture(scope="module")
def world(make_world):
    w = make_world("nwa", journal=True, tools=("nmap",))
    w.alerts_cfg = dict(ALERTS)
    w.journal.install_catalog(CATALOG)
    srv = w.lan.add_node("srv", "00:1b:21:" + mac_tail())  # Intel
    w.lan.add_node("cisco", "00:00:0c:" + mac_tail())
    w.lan.add_node("pi", "b8:27:eb:" + mac_tail())
    w.lan.add_node("scan", "00:50:56:" + mac_tail())  # VMware
    w.lan.add_node("mover", "00:16:3e:" + mac_tail())  # Xen
    w.lan.add_node("newdev", "00:0c:29:" + mac_tail(), down=True)  # VMware; unplugged until its scenario
    for name in ("rand1", "rand2", "rand3"):
        w.lan.add_node(name, randomized_mac(), down=True)
    w.lan.start(srv, sys.executable, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
    w.lan.start(srv, sys.executable, "-c", TCP_SINK, str(SINK_PORT), ready="ready")
    w.nmap = w.link(f"nws{w.tag}", shutil.which("nmap") or "/usr/bin/nmap")  # nmap under a name of this run's own
    w.subscriber = Subscriber(w.bus)  # before the daemon: sees every AlertRaised
    w.procs.append(w.subscriber)
    w.storm_usec = 0  # when the first storm's alert was raised (replay finds it again)
    w.start_daemon(config(w), about=("devices.interfaces",))
    for name in BACKGROUND:
        tcp = SINK_PORT if name in ("cisco", "pi", "scan") else 0
        w.lan.start(w.node(name), sys.executable, "-c", QUIET_DEVICE, srv.ipv4, str(ECHO_PORT), str(tcp))
    w.commands = {letter: w.python(RATE_COMMAND, BG_RATE, name=w.command(letter)) for letter in COMMANDS}
    yield w
    print("\nticks from action to alert:", TICKS_TAKEN)


def config(w: World) -> Dict:
    """The shipped config with time compressed; devices.interfaces lists the LAN's bridge ports, so
    that every device:/ip: subject is ours (the host's own interfaces carry other people's
    devices); the alerts settings as the tests' reloads left them."""
    return {"state_directory": str(w.state), "tick_interval_sec": TICK,
            "devices": {"interfaces": w.lan.ports(), "store_interval_sec": STORE_INTERVAL},
            "alerts": {"state_save_interval_sec": STORE_INTERVAL, **w.alerts_cfg}}


def set_rate(w: World, letter: str, rate: int) -> None:
    w.commands[letter].ask(f"rate {rate}", f"rate {rate}")


def udp(w: World, name: str) -> None:
    w.lan.send_udp(w.node(name), [f"{w.node('srv').ipv4}:{ECHO_PORT}"], 1)


def plug_in(w: World, name: str) -> None:
    """The device's cable goes in: eth0 up, then it talks to srv (and ARPs for it)."""
    w.lan.ns(w.node(name), "ip", "link", "set", "eth0", "up")
    udp(w, name)


def signals(w: World) -> List[List[str]]:
    return w.subscriber.signals_after_sync()


def tick_times(w: World, until_usec: int, timeout: float = 10) -> List[int]:
    return [obs.time_usec for obs in w.ticks(until_usec, timeout)]


def dump(alerts: List[Dict]) -> str:
    return json.dumps([{k: a[k] for k in ("kind", "subject", "timestamp_usec", "message")} for a in alerts], indent=1)


# -- helpers -----------------------------------------------------------------------------------

def mine(w: World, subject: str) -> bool:
    kind, _, name = subject.partition(":")
    if subject == "randomized-macs" or kind in ("device", "ip"):
        return True
    return kind == "command" and (name.startswith(f"nwa{w.tag}") or name == f"nws{w.tag}")


class Mark:
    """What had been raised before an action (alerts by id, AlertRaised signals by count)."""

    def __init__(self, w: World):
        self.ids = {a["id"] for a in w.alerts()}
        self.signals = len(signals(w))
        self.lines = len(w.subscriber.out)
        self.usec = time.time_ns() // 1000


def new_alerts(w: World, mark: Mark) -> List[Dict]:
    return [a for a in w.alerts() if a["id"] not in mark.ids and mine(w, a["subject"])]


def new_signals(w: World, mark: Mark) -> List[List[str]]:
    return [s for s in signals(w)[mark.signals:] if mine(w, s[2])]


def ticks_between(w: World, after_usec: int, until_usec: int) -> int:
    """How many of the daemon's ticks ran in (after, until]."""
    return sum(1 for t in tick_times(w, until_usec) if after_usec < t <= until_usec)


def expect(w: World, mark: Mark, kind: str, subject: str, scenario: str, timeout: float = 10,
           also=(), max_ticks: int = 2, since_usec=0) -> Dict:
    """Exactly the alerts of ours since `mark`: one of `kind` on `subject` (and those in `also`,
    (kind, subject) pairs), each seen as AlertRaised, within `max_ticks` ticks of the action
    (mark.usec, or since_usec -- a value, or a function called once the alerts are in -- the
    moment just before the first tick that saw it); returns the
    ListAlerts record of the first."""
    wanted_pairs = [(kind, subject), *also]
    for pair in wanted_pairs:
        def wanted(line: str, pair=pair) -> bool:
            return line.startswith("signal ") and tuple(json.loads(line[len("signal "):])[1:]) == pair

        try:
            w.subscriber.wait_line(wanted, since=mark.lines, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"no {pair[0]} on {pair[1]}; alerts of ours since: {dump(new_alerts(w, mark))}\n"
                                 f"{w.daemon_log()}") from None
    w.wait_ticks(time.time_ns() // 1000, SETTLE_TICKS, timeout=20)  # for anything else to show up
    raised = new_alerts(w, mark)
    assert sorted((a["kind"], a["subject"]) for a in raised) == sorted(wanted_pairs), dump(raised)
    since_usec = since_usec() if callable(since_usec) else since_usec
    assert sorted(new_signals(w, mark)) == sorted([a["id"], a["kind"], a["subject"]] for a in raised)
    for alert in raised:
        ticks = ticks_between(w, since_usec or mark.usec, alert["timestamp_usec"])
        TICKS_TAKEN[f"{scenario}: {alert['kind']}"] = ticks
        assert 1 <= ticks <= max_ticks, f"{scenario}: {alert['kind']} came {ticks} ticks after the action"
    return next(a for a in raised if (a["kind"], a["subject"]) == (kind, subject))


def first_seen(w: World, mark: Mark, mac: str):
    """For expect(): just before the first tick that saw `mac` as a new device -- latency counts
    from there, not from plugging the link in (which takes a while on a busy machine)."""
    def since() -> int:
        seen = [obs.time_usec for obs in w.ticks(time.time_ns() // 1000)
                if obs.time_usec > mark.usec and any(d["mac"] == mac for d in obs.new_devices)]
        return seen[0] - 1 if seen else mark.usec
    return since


def expect_nothing(w: World, mark: Mark, ticks: int) -> None:
    """Nothing of ours raised over the `ticks` ticks the daemon processed after `mark`."""
    w.wait_ticks(mark.usec, ticks, timeout=20)
    assert new_alerts(w, mark) == [], dump(new_alerts(w, mark))
    assert new_signals(w, mark) == []


def devices(w: World) -> Dict[str, Dict]:
    return {r["mac"]: r for r in map(unvariant, w.d.call("ListDevices")[0])}


def storm(w: World, letter: str, rate: int, kind: str = "connect_rate", scenario: str = "",
          max_ticks: int = 2) -> Dict:
    mark = Mark(w)
    set_rate(w, letter, rate)
    try:
        return expect(w, mark, kind, f"command:{w.command(letter)}", scenario or f"burst {letter}",
                      max_ticks=max_ticks)
    finally:
        set_rate(w, letter, BG_RATE)


def assert_warmed_up(w: World, alert: Dict) -> None:
    """A connect_rate alert judged against a learnt baseline: "normal X, score Y", X the
    background's 4 a tick; and at least the floor observed. When the burst's first tick caught
    only part of it, under the floor, that part was learnt as normal (alpha of it) and the alert
    came a tick later."""
    assert "(normal " in alert["message"] and ", score " in alert["message"], alert["message"]
    floor = w.alerts_cfg.get("process_connect_floor", SHIPPED_ALERTS["process_connect_floor"])
    assert 1 <= alert["baseline"] <= 2 * BG_RATE * TICK + SHIPPED_ALERTS["ewma_alpha"] * floor, alert
    assert alert["observed"] >= floor, alert
    assert alert["score"] >= SHIPPED_ALERTS["z_threshold"], alert


def reload(w: World, about, **alerts) -> None:
    """A reload that changes `alerts`, which the calling test is about (it names them in `about`)."""
    w.alerts_cfg.update(alerts)
    w.d.reload(config(w), about=about)


# -- 1. the background alone -------------------------------------------------------------------

def test_background_alone_raises_nothing_and_devices_seen_while_learning_never_alert(world):
    w = world
    assert w.d.get_property("Learning") is True
    deadline = time.monotonic() + 3 * ALERTS["learning_period_sec"]
    while w.d.get_property("Learning"):
        assert time.monotonic() < deadline, "still learning"
        time.sleep(0.2)
    mark = Mark(w)
    expect_nothing(w, mark, ticks=8)  # warm by now (12 ticks since the commands started)
    seen = devices(w)
    for name in ("srv", "cisco", "pi", "scan", "mover"):
        assert w.node(name).mac in seen, f"{name} was not seen while learning"
    for name in ("newdev", "rand1", "rand2", "rand3"):
        assert w.node(name).mac not in seen, f"{name} should still be unplugged"
    everything = [a for a in w.alerts() if mine(w, a["subject"])]
    assert everything == [], dump(everything)  # not during learning or warm-up either
    assert [s for s in signals(w) if mine(w, s[2])] == []


# -- 2. each action, exactly its alert ---------------------------------------------------------

def test_a_new_device_joining_is_new_device(world):
    w = world
    node = w.node("newdev")
    mark = Mark(w)
    plug_in(w, "newdev")
    alert = expect(w, mark, "new_device", f"device:{node.mac}", "new device", since_usec=first_seen(w, mark, node.mac))
    assert alert["details"]["mac"] == node.mac and alert["details"]["randomized"] == "false"
    assert alert["details"]["interface"] == node.port and alert["details"]["vendor"].startswith("VMware")


def test_a_device_changing_its_mac_but_keeping_its_ip_is_address_change(world):
    w = world
    node = w.node("mover")
    old, new = node.mac, "00:16:3e:" + mac_tail()
    mark = Mark(w)
    w.lan.ns(node, "ip", "link", "set", "eth0", "address", new)  # the kernel forgets its ARP cache
    udp(w, "mover")  # so this ARPs for srv, from the new MAC with the old IP
    node.mac = new  # from now on the device is this MAC (its namespace, its IP: the same device)
    alert = expect(w, mark, "address_change", f"ip:{node.ipv4}", "MAC change")
    assert alert["details"] == {"ip": node.ipv4, "old_mac": old, "new_mac": new, "flip_flop": "false"}
    assert alert["message"] == f"{node.ipv4} moved from {old} to {new}"


def test_nmap_connect_scan_is_fan_out_on_the_scanner_and_connect_rate_on_the_nmap_command(world):
    """On the shipped defaults a 3000-port connect scan is two alerts: fan_out on the scanning
    device, and connect_rate on the command nmap, whose connect() calls this host traces too
    (tracepoints are system-wide, namespaces or not): a command never seen before, far above
    cold_connect_rate in one tick."""
    w = world
    scan, srv = w.node("scan"), w.node("srv")
    peers_before = devices(w)[scan.mac]["peers"]
    lost_before = w.d.get_property("DeviceEventsLost")
    mark = Mark(w)
    # -n: no reverse DNS (there is no name server on our LAN); the rest as a user would type it
    r = w.lan.ns(scan, w.nmap, "-sT", "-Pn", "-n", "-p", f"1-{SCAN_PORTS}", srv.ipv4, timeout=60)
    assert f"{SCAN_PORTS} closed tcp ports" in r.stdout, r.stdout
    # latency counts from the first tick that saw the scan, not from nmap's start-up (seconds
    # on a busy machine, before the first SYN)
    saw = [obs.time_usec for obs in w.ticks(time.time_ns() // 1000)
           if obs.time_usec > mark.usec and obs.device_new_ports.get(scan.mac)]
    alert = expect(w, mark, "fan_out", f"device:{scan.mac}", "nmap scan", also=[("connect_rate", f"command:nws{w.tag}")],
                   since_usec=saw[0] - 1)
    assert alert["details"]["mac"] == scan.mac
    assert int(alert["details"]["new_ports"]) == alert["observed"] >= SHIPPED_ALERTS["burst_fan_out"]
    assert "the shape of a scan" in alert["message"]
    # every port scanned is one first-seen pattern of the scanner's, none lost on the way
    assert devices(w)[scan.mac]["peers"] - peers_before == SCAN_PORTS
    assert w.d.get_property("DeviceEventsLost") == lost_before


def test_a_connect_storm_from_a_local_command_is_connect_rate(world):
    w = world
    alert = storm(w, "s", STORM, scenario="connect storm")
    assert_warmed_up(w, alert)
    assert alert["details"]["command"] == w.command("s")
    assert alert["details"]["pids"] == str(w.commands["s"].pid)
    assert int(alert["details"]["failed"]) == int(alert["observed"])  # every connect was refused
    w.storm_usec = alert["timestamp_usec"]


def test_randomized_macs_follow_the_policy_once_ignore_alert(world):
    w = world
    mark = Mark(w)
    plug_in(w, "rand1")  # policy "once": one alert for all of them, on randomized-macs
    alert = expect(w, mark, "new_device", "randomized-macs", "randomized, once",
                   since_usec=first_seen(w, mark, w.node("rand1").mac))
    assert alert["details"]["mac"] == w.node("rand1").mac and alert["details"]["randomized"] == "true"

    reload(w, about=("alerts.randomized_macs",), randomized_macs="ignore")
    mark = Mark(w)
    plug_in(w, "rand2")
    expect_nothing(w, mark, ticks=4)
    seen = devices(w)[w.node("rand2").mac]  # seen all right, and flagged: only not alerted
    assert seen["randomized"] is True

    reload(w, about=("alerts.randomized_macs",), randomized_macs="alert")
    mark = Mark(w)
    plug_in(w, "rand3")
    alert = expect(w, mark, "new_device", f"device:{w.node('rand3').mac}", "randomized, alert",
                   since_usec=first_seen(w, mark, w.node("rand3").mac))
    assert "randomized MAC" in alert["message"]


# -- 3. where alerts are read ------------------------------------------------------------------

EXPECTED_SO_FAR = ["new_device", "address_change", "fan_out", "connect_rate", "connect_rate", "new_device",
                   "new_device"]


def test_alerts_in_journald_on_the_bus_in_listalerts_and_netwatchctl(world):
    w = world
    ours = [a for a in w.alerts() if mine(w, a["subject"])]
    assert sorted(a["kind"] for a in ours) == sorted(EXPECTED_SO_FAR), dump(ours)
    assert sorted(s for s in signals(w) if mine(w, s[2])) == sorted([a["id"], a["kind"], a["subject"]] for a in ours)
    kinds = readme_alert_kinds()  # the README's table: what users filter the journal by
    for a in ours:
        (entry,) = w.journal.wait_for(f"NETWATCHD_ALERT_ID={a['id']}")
        assert (entry["MESSAGE_ID"], int(entry["PRIORITY"])) == kinds[a["kind"]], entry
        assert a["priority"] == kinds[a["kind"]][1]
        assert entry["SYSLOG_IDENTIFIER"] == "netwatchd" and entry["_PID"] == str(w.d.pid)
        # the README's NETWATCHD_* fields: the alert's own values, each detail as NETWATCHD_<KEY>
        assert (entry["MESSAGE"], entry["NETWATCHD_KIND"], entry["NETWATCHD_SUBJECT"]) == (
            a["message"], a["kind"], a["subject"])
        for field in ("observed", "baseline", "score"):
            assert float(entry[f"NETWATCHD_{field.upper()}"]) == pytest.approx(a[field], abs=1e-6), (field, entry)
        for key, value in a["details"].items():
            assert entry[f"NETWATCHD_{key.upper()}"] == value, (key, entry)
    scan = next(a for a in ours if a["kind"] == "fan_out")
    explained = w.journal.journalctl("-x", "-o", "short", f"NETWATCHD_ALERT_ID={scan['id']}").stdout
    assert "░░ Subject:" in explained and scan["subject"] in explained, explained

    r = w.ctl("--json", "alerts", "--limit", "1000")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    listed = {rec["id"]: rec for rec in json.loads(r.stdout)}
    for a in ours:
        assert {k: listed[a["id"]][k] for k in ("kind", "subject", "message")} == \
            {k: a[k] for k in ("kind", "subject", "message")}
    text = w.ctl("alerts", "--limit", "1000").stdout
    assert all(a["subject"] in text for a in ours), text
    counts = w.d.get_property("AlertCounts")  # every alert the daemon raised, ours and others'
    everything = w.alerts()
    assert counts == {kind: sum(1 for a in everything if a["kind"] == kind) for kind in readme_alert_kinds()}


# -- 4. restart --------------------------------------------------------------------------------

def test_restart_after_learning_neither_realerts_nor_relearns(world):
    w = world
    mark = Mark(w)  # alerts.json keeps the ids: anything new after the restart is not in it
    assert w.d.stop() == 0  # SIGTERM
    stopped_usec = time.time_ns() // 1000
    # on the same state directory, with what the reloads before changed (alerts.randomized_macs)
    w.start_daemon(config(w), about=("devices.interfaces", "alerts.randomized_macs"))
    restarted_usec = time.time_ns() // 1000
    assert w.d.get_property("Learning") is False
    for name in ("cisco", "pi", "scan", "mover", "newdev", "rand1", "rand2", "rand3"):
        udp(w, name)  # every device is on the wire again, to a classifier that knows none of them
    expect_nothing(w, mark, ticks=4)
    seen = devices(w)
    for name in w.lan.nodes:
        assert seen[w.node(name).mac]["last_seen_usec"] > restarted_usec, f"{name} not seen since the restart"
    # The first tick after the start is one tick's worth of connects, not all of those made
    # while the daemon was starting (seconds), which the baselines would have learnt as one tick
    first = next(obs for obs in w.ticks(restarted_usec) if obs.time_usec > stopped_usec)
    counts = {w.command(c): first.command_connects.get(w.command(c), 0) for c in COMMANDS}
    assert max(counts.values()) <= 2 * BG_RATE * TICK, counts
    alert = storm(w, "r", STORM, scenario="storm after restart")
    assert_warmed_up(w, alert)  # no warm-up again: cold_connect_rate would have hidden it
    assert w.d.get_property("Learning") is False


# -- 5. reload ---------------------------------------------------------------------------------

def test_reload_changes_thresholds_from_the_next_tick_and_a_broken_file_is_rejected(world):
    w = world
    mark = Mark(w)  # the shipped floor 50: a moderate burst (~40 a tick) is far above normal but too small
    set_rate(w, "m", MODERATE)
    try:
        expect_nothing(w, mark, ticks=4)
    finally:
        set_rate(w, "m", BG_RATE)

    reload(w, about=("alerts.process_connect_floor",), process_connect_floor=20)
    # a moderate deviation is no burst: it needs consecutive_ticks (2) full ticks after the
    # partial one it started in, so 3 ticks
    alert = storm(w, "n", MODERATE, scenario="burst after reload", max_ticks=3)  # the same burst, another command
    assert_warmed_up(w, alert)  # the baselines were kept through the reload

    good = config(w)
    broken = json.loads(json.dumps(good))
    broken["alerts"].update(process_connect_floor=100000, ewma_alpha=5)  # 5 is out of range
    since = w.journal.entries("SYSLOG_IDENTIFIER=netwatchd")
    w.d.reload(yaml.safe_dump(broken))
    assert w.d.proc.poll() is None
    rejected = [e["MESSAGE"] for e in w.journal.entries("SYSLOG_IDENTIFIER=netwatchd")[len(since):]]
    assert any("reload rejected" in m and "alerts.ewma_alpha" in m for m in rejected), rejected
    alert = storm(w, "b", MODERATE, scenario="burst after broken reload", max_ticks=3)  # floor 20 still holds
    assert_warmed_up(w, alert)
    w.d.write_config(good, about=("alerts.process_connect_floor",))  # good again on disk (not reloaded)


# -- 6. replay ---------------------------------------------------------------------------------

def replay_config(w: World, name: str, **alerts) -> str:
    """The running config, `alerts` changed, in a file of its own."""
    cfg = config(w)
    cfg["alerts"].update(alerts)
    path = w.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def replay(w: World, config: str, at_least_ticks: int) -> List[Dict]:
    """`netwatchctl --json replay --config FILE`: the alerts it prints."""
    r = w.ctl("--json", "replay", "--config", config)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines[-1]["summary"]["ticks"] >= at_least_ticks, lines[-1]
    return lines[:-1]


def test_replay_over_the_recorded_history(world):
    w = world
    newest = max(a["timestamp_usec"] for a in w.alerts())
    ticks = len(tick_times(w, newest))  # once the history has reached the newest alert
    commands = {w.command(c) for c in "srmnb"}
    as_running = replay_config(w, "running")
    running = [a for a in replay(w, as_running, ticks)
               if a["kind"] == "connect_rate" and a["subject"].startswith("command:")]
    found = {a["subject"][len("command:"):] for a in running} & commands
    # every storm and burst, including the one the daemon did not report under its floor then (m)
    assert found == commands, dump(running)
    (s,) = [a for a in running if a["subject"] == f"command:{w.command('s')}"]
    assert abs(s["timestamp_usec"] - w.storm_usec) <= 2 * TICK * 1e6  # the same storm
    high = replay(w, replay_config(w, "high", process_connect_floor=1000000), ticks)
    assert [a for a in high if a["kind"] == "connect_rate" and mine(w, a["subject"])] == []
    r = w.ctl("replay", "--config", as_running)  # as an operator reads it
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("replayed "), r.stdout
    assert f"command:{w.command('s')}" in r.stdout and "connect_rate" in r.stdout.splitlines()[-1], r.stdout
