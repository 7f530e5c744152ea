"""netwatchd as bench/device_bench.py drives it: its config, its programs and links on the
benchmark's interfaces, and its device counters over D-Bus."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

import yaml  # noqa: E402

import bpf_stats  # noqa: E402
from tests.support.daemon import DaemonProcess, unvariant  # noqa: E402

TCX_INGRESS, TCX_EGRESS = 46, 47
TICK_SEC = 0.25


from device_link import Link  # noqa: E402


# -- netwatchd --------------------------------------------------------------------------------
def daemon_config(link: Link, attached: bool) -> Dict:
    names = [s.port for s in link.stations] if attached else [link.unused_name]
    return {"tick_interval_sec": TICK_SEC, "devices": {"interfaces": names}}


def our_links(daemon: DaemonProcess, link: Link) -> Dict[int, bpf_stats.TcxLink]:
    """netwatchd's TCX links on our ports, by link id (fdinfo of the daemon's fds)."""
    ours = {s.ifindex for s in link.stations}
    return {l.link_id: l for l in bpf_stats.tcx_links(daemon.pid) if l.ifindex in ours}


def write_config_atomically(daemon: DaemonProcess, config: Dict) -> None:
    """The daemon's config file replaced in one rename: a reload never reads it half written
    (an empty file is a valid config -- devices on `auto`, every interface of the host)."""
    config = dict(config, state_directory=str(daemon.dir / "state"))
    tmp = daemon.config_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, daemon.config_path)


def set_attached(daemon: DaemonProcess, link: Link, attached: bool, timeout: float = 15) -> None:
    """Rewrite the config and SIGHUP: the daemon attaches to every port, or lets go of all of
    them. Returns once the reload is done (READY=1 after it) and the kernel shows the links."""
    since = len(daemon.notify.messages)
    write_config_atomically(daemon, daemon_config(link, attached))
    daemon.signal(signal.SIGHUP)
    alive = lambda: daemon.proc.poll() is None  # noqa: E731
    reloading = daemon.notify.index_of("RELOADING=1", since, timeout, alive)
    if reloading < 0 or daemon.notify.index_of("READY=1", reloading, timeout, alive) < 0:
        raise RuntimeError("netwatchd did not finish reloading:\n" + daemon.log()[-3000:])
    want = 2 * len(link.stations) if attached else 0
    deadline = time.monotonic() + timeout
    while len(our_links(daemon, link)) != want:
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"netwatchd did not {'attach' if attached else 'detach'} within {timeout} s:\n"
                               + daemon.log()[-3000:])
        time.sleep(0.05)


def watched_elsewhere(daemon: DaemonProcess, link: Link) -> List[str]:
    """Interfaces other than our ports the daemon ever logged it watched (should be none)."""
    ours = {s.port for s in link.stations}
    names = [line.rsplit(" ", 1)[-1] for line in daemon.log().splitlines() if "watching devices on " in line]
    return sorted({n for n in names if n not in ours})


def our_programs(daemon: DaemonProcess, link: Link) -> Dict[str, bpf_stats.Prog]:
    """nw_tc_ingress / nw_tc_egress by the hook their links are on (one program per direction)."""
    by_type: Dict[int, set] = {TCX_INGRESS: set(), TCX_EGRESS: set()}
    progs = {}
    for l in our_links(daemon, link).values():
        by_type[l.attach_type].add(l.prog.id)
        progs[l.prog.id] = l.prog
    out = {}
    for name, t in (("nw_tc_ingress", TCX_INGRESS), ("nw_tc_egress", TCX_EGRESS)):
        if len(by_type[t]) != 1:
            raise RuntimeError(f"expected one netwatchd program on {name}'s hooks, found {sorted(by_type[t])}")
        out[name] = progs[by_type[t].pop()]
    return out


def hook_chains(link: Link) -> Dict[str, List[int]]:
    """What runs on each hook of our ports, in order (program ids), whoever attached it."""
    return {f"{s.port} {hook}": bpf_stats.tcx_chain(s.ifindex, t)
            for s in link.stations for hook, t in (("ingress", TCX_INGRESS), ("egress", TCX_EGRESS))}


def foreign_programs(link: Link, known: set) -> Dict[str, List[int]]:
    return {hook: [i for i in ids if i not in known] for hook, ids in hook_chains(link).items()
            if any(i not in known for i in ids)}


def device_counters(daemon: DaemonProcess, mac: str) -> Dict[str, int]:
    r = daemon.busctl("--json=short", "call", "org.netwatchd.Netwatchd1", "/org/netwatchd/Netwatchd1",
                      "org.netwatchd.Netwatchd1.Manager", "GetDevice", "s", mac, check=False)
    if r.returncode != 0:
        if "NoSuchDevice" in r.stderr or "No such device" in r.stderr or "no device" in r.stderr.lower():
            return {}
        raise RuntimeError(f"GetDevice {mac}: {r.stderr.strip()}")
    return dict(unvariant(json.loads(r.stdout)["data"][0])["counters"])


def settled_counters(daemon: DaemonProcess, link: Link, timeout: float = 15) -> Dict[str, Dict[str, int]]:
    """Every station's counters once the daemon has read the kernel's after the last packet:
    two ticks' wait, then the same answer three polls a tick apart."""
    time.sleep(2 * TICK_SEC)
    last, same = None, 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = {s.label: device_counters(daemon, s.mac) for s in link.stations}
        same = same + 1 if now == last else 0
        if same >= 2:
            return now
        last = now
        time.sleep(TICK_SEC)
    raise RuntimeError(f"device counters still changing after {timeout} s")


def dbus_property(daemon: DaemonProcess, name: str) -> object:
    try:
        return daemon.get_property(name)
    except subprocess.CalledProcessError:
        return None


