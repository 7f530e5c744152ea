"""The clsact path of the TC classifier (devices.tc_attach: tc) on the real kernel: it shares an
interface with another program's clsact filter without ever touching it, and cleans up exactly
its own filters -- on stop, and after a SIGKILL on the next start, finding them by program name
wherever they sit. Also: the whole device test module passes over clsact.

A veth pair: the watched end in the host namespace (no address), the "device" end in a
namespace of the test's own, sending UDP to a neighbour pinned by a static ARP entry.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, require_root_and_bcc, require_tools
from tests.kernels.smoke import Pair
from tests.support import wait_for
from tests.support.daemon import DaemonProcess, unvariant
from tests.support.oracles import readme_tc_filter
from tests.support.world import World

pytestmark = pytest.mark.root

FOREIGN_PREF = 7  # someone else's classic-BPF filter (returns 0: "no match", the packet goes on)
FILTER_HANDLE, FILTER_PRIORITY = readme_tc_filter()  # ours, as the README states them


def tc_filters(dev: str, direction: str) -> list:
    out = subprocess.run(["tc", "-j", "filter", "show", "dev", dev, direction], capture_output=True, text=True).stdout
    return [f for f in json.loads(out or "[]") if "options" in f]


def ours(dev: str, direction: str) -> list:
    return [(f["pref"], f["options"]["handle"]) for f in tc_filters(dev, direction)
            if f["options"].get("prog", {}).get("name") == f"nw_tc_{direction}"]


def foreign(dev: str, direction: str) -> list:
    return [f for f in tc_filters(dev, direction) if f["pref"] == FOREIGN_PREF]


def qdiscs(dev: str) -> list:
    out = subprocess.run(["tc", "-j", "qdisc", "show", "dev", dev], capture_output=True, text=True).stdout
    return [q["kind"] for q in json.loads(out or "[]")]


@pytest.fixture
def world(bus):
    """A veth pair and the session's bus; the test's daemons, on the pair's host end."""
    require_root_and_bcc()
    require_tools("ip", "tc", "bpftool")
    pair = Pair()
    try:
        pair.create()
        with World(bus, "nwtc") as w:
            w.pair, w.sent = pair, 0
            yield w
    finally:
        pair.cleanup()


def add_foreign_filters(w: World) -> dict:
    dev = w.pair.host
    subprocess.run(["tc", "qdisc", "add", "dev", dev, "clsact"], check=True)
    for direction in ("ingress", "egress"):
        subprocess.run(["tc", "filter", "add", "dev", dev, direction, "pref", str(FOREIGN_PREF), "handle", "7",
                        "bpf", "bytecode", "1,6 0 0 0,", "classid", "1:7"], check=True)
    return {d: foreign(dev, d) for d in ("ingress", "egress")}


def start(w: World, tc_attach: str = "tc") -> DaemonProcess:
    """A daemon about devices.tc_attach, on devices.interfaces = the pair's host end only."""
    return w.start_daemon({"tick_interval_sec": 0.2, "devices": {"interfaces": [w.pair.host], "tc_attach": tc_attach,
                                                                   "store_interval_sec": 0.5}},
                          about=("devices.interfaces", "devices.tc_attach"))


def counted(w: World, d: DaemonProcess, n: int = 5) -> int:
    """Sends n datagrams from the device; its tx_udp_packets once the daemon has them all (or 10 s on)."""
    w.pair.send_udp(n)
    w.sent += n

    def got() -> int:
        devs = {r["mac"]: r for r in map(unvariant, d.call("ListDevices")[0])}
        return devs.get(w.pair.mac, {}).get("counters", {}).get("tx_udp_packets", 0)
    try:
        return wait_for(lambda: got() >= w.sent and got(), 10, "the datagrams counted", interval=0.2)
    except AssertionError:
        return got()


def pin_our_program_elsewhere(d: DaemonProcess, dev: str) -> None:
    """A leftover of ours at a position that is not our usual one (as an older version might
    have left): our ingress program, pinned, added again at pref 3 handle 3."""
    prog_id = next(f["options"]["prog"]["id"] for f in tc_filters(dev, "ingress")
                   if f["options"].get("prog", {}).get("name") == "nw_tc_ingress")
    pin = f"/sys/fs/bpf/nwtest_{os.getpid()}_{prog_id}"
    subprocess.run(["bpftool", "prog", "pin", "id", str(prog_id), pin], check=True)
    try:
        subprocess.run(["tc", "filter", "add", "dev", dev, "ingress", "pref", "3", "handle", "3", "bpf", "da",
                        "pinned", pin], check=True)
    finally:
        os.unlink(pin)


def test_another_programs_filter_is_untouched_before_during_after_and_across_a_sigkill(world):
    dev = world.pair.host
    before = add_foreign_filters(world)
    assert all(before.values())

    d = start(world)
    assert f"nw_tc_ingress@{dev} (clsact)" in d.get_property("ProgramsAttached")
    assert {dir_: ours(dev, dir_) for dir_ in ("ingress", "egress")} == {
        "ingress": [(FILTER_PRIORITY, hex(FILTER_HANDLE))], "egress": [(FILTER_PRIORITY, hex(FILTER_HANDLE))]}
    assert {dir_: foreign(dev, dir_) for dir_ in ("ingress", "egress")} == before  # during
    assert counted(world, d) == world.sent  # counting, next to the other filter

    pin_our_program_elsewhere(d, dev)
    d.signal(signal.SIGKILL)
    d.proc.wait(10)
    # a SIGKILL leaves the filters behind (nothing owns them), the other one untouched
    assert ours(dev, "ingress") == sorted([(3, "0x3"), (FILTER_PRIORITY, hex(FILTER_HANDLE))])
    assert {dir_: foreign(dev, dir_) for dir_ in ("ingress", "egress")} == before

    d2 = start(world)
    log = d2.log()
    assert log.count("removed a leftover nw_tc_") == 3, log  # both of ingress (by name, any position) + egress
    assert {dir_: ours(dev, dir_) for dir_ in ("ingress", "egress")} == {
        "ingress": [(FILTER_PRIORITY, hex(FILTER_HANDLE))], "egress": [(FILTER_PRIORITY, hex(FILTER_HANDLE))]}
    assert {dir_: foreign(dev, dir_) for dir_ in ("ingress", "egress")} == before
    assert counted(world, d2) >= 5  # the restarted daemon counts (its counters start from the kernel's new maps)

    assert d2.stop() == 0
    assert ours(dev, "ingress") == [] and ours(dev, "egress") == []
    assert {dir_: foreign(dev, dir_) for dir_ in ("ingress", "egress")} == before  # after
    assert "clsact" in qdiscs(dev)  # not ours: it stays
    shown = subprocess.run(f"tc filter show dev {dev} ingress; tc filter show dev {dev} egress", shell=True,
                           capture_output=True, text=True).stdout
    assert "nw_tc_" not in shown and f"pref {FILTER_PRIORITY}" not in shown, shown


@pytest.mark.parametrize("restart_with", ["tc", "auto"])
def test_a_clsact_qdisc_we_created_goes_with_us_even_after_a_sigkill(world, restart_with):
    """Restarted on clsact again, or on `auto` (TCX on a 6.6+ host): the leftovers go either way."""
    dev = world.pair.host
    assert "clsact" not in qdiscs(dev)
    d = start(world)
    assert "clsact" in qdiscs(dev)
    assert counted(world, d) == world.sent
    d.signal(signal.SIGKILL)
    d.proc.wait(10)
    assert "clsact" in qdiscs(dev) and ours(dev, "ingress")

    d2 = start(world, restart_with)
    assert "removed a leftover nw_tc_ingress" in d2.log()
    assert counted(world, d2) >= 5
    assert d2.stop() == 0
    assert "clsact" not in qdiscs(dev), qdiscs(dev)
    assert tc_filters(dev, "ingress") == [] and tc_filters(dev, "egress") == []


@pytest.mark.timeout(960)  # the whole device module again, within its own 900 s
def test_the_device_tests_pass_over_clsact():
    """tests/integration/test_devices.py, every test, with devices.tc_attach: tc."""
    require_root_and_bcc()
    env = dict(os.environ, NETWATCHD_TEST_TC_ATTACH="tc")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                        "tests/integration/test_devices.py"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "skipped" not in summary and "passed" in summary, summary


def test_forcing_tc_reaches_every_device_test_daemon(monkeypatch):
    """What makes test_the_device_tests_pass_over_clsact mean clsact: the harness's config
    (this test is about devices.tc_attach, on devices.interfaces of its own)."""
    import yaml

    monkeypatch.setenv("NETWATCHD_TEST_TC_ATTACH", "tc")
    d = DaemonProcess(bus=None, config={"devices": {"interfaces": ["eth9"]}},
                      about=("devices.interfaces", "devices.tc_attach"))
    try:
        devices = yaml.safe_load(d.config_path.read_text())["devices"]
        assert (devices["interfaces"], devices["tc_attach"]) == (["eth9"], "tc")
        d.write_config({"devices": {"interfaces": ["eth9"], "tc_attach": "tcx"}})  # a test's own choice wins
        assert yaml.safe_load(d.config_path.read_text())["devices"]["tc_attach"] == "tcx"
    finally:
        d.cleanup()
