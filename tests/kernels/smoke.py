"""The kernel-matrix smoke run: netwatchd on the DEFAULT configuration (only time compressed:
tick, learning period, store interval) against the running kernel, checked end to end.

    .venv/bin/python tests/kernels/smoke.py        (as root; in a VM of tests/kernels/vm.py, or on the host)

Steps: a private system bus; a veth pair whose far end is a namespace of our own (the "device",
an Intel MAC, sending UDP datagrams to a neighbour pinned with a static ARP entry, so nothing
leaves the pair and the host side needs no address); netwatchd started with exactly the unit's
capabilities, memlock limit and no_new_privs (tests/kernels/unit_sandbox.py, read from
systemd/netwatchd.service) and timed exec -> READY; whether a tracepoint's perf event opens
without CAP_SYS_ADMIN (why the unit keeps it: README, "Kernels"); a child with a unique command
name making known connect()s (TCP accepted and refused, IPv6, a unix socket: the sockaddr
fallback of kernels < 5.15, an unconnected UDP send); then Summary exact, ListConnections records
exact, the device with its exact UDP counter in ListDevices, one new_device alert in ListAlerts;
on kernels < 5.15 the sys_enter_connect fallback named in KernelFallbacks; connect outcomes and
handshake latency against a peer 20 ms away through netem (tests/kernels/smoke_connects.py:
blocking, asyncio and curl connects, refused, timed out, EALREADY, reset after accept; skipped,
and said so, on a kernel without netem outside a VM); peak RSS and BPF memory within two thirds
of the unit's MemoryMax=; and a clean stop that leaves none of our programs, filters or qdiscs
behind. Prints one `SMOKE {json}` line; exit 0 when every check passed.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.daemon import DaemonProcess, PrivateSystemBus, unvariant  # noqa: E402
from tests.kernels import smoke_connects, unit_sandbox  # noqa: E402

TICK = 0.5  # time compressed; everything else is config/netwatchd.yaml's default
DATAGRAMS = 7

CHILD = r'''
import json, os, socket, sys
plan = json.loads(sys.argv[1])
truth = []
def connect(kind, fam, typ, addr):
    s = socket.socket(fam, typ)
    rc = s.connect_ex(addr)
    truth.append({"call": kind, "return_code": -rc if rc else 0})
    return s
keep = [connect("tcp_accepted", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", plan["tcp4"])),
        connect("tcp_refused", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", plan["closed"])),
        connect("tcp6_accepted", socket.AF_INET6, socket.SOCK_STREAM, ("::1", plan["tcp6"])),
        connect("unix_stream", socket.AF_UNIX, socket.SOCK_STREAM, plan["unix"])]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x", ("127.0.0.1", plan["udp"]))
truth.append({"call": "udp_send", "return_code": 0})
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "truth": truth}))
'''

# (kind, family, transport, destination or None = the unix path, port key)
EXPECTED = {
    "tcp_accepted": ("connect", "inet", "tcp", "127.0.0.1", "tcp4"),
    "tcp_refused": ("connect", "inet", "tcp", "127.0.0.1", "closed"),
    "tcp6_accepted": ("connect", "inet6", "tcp", "::1", "tcp6"),
    "unix_stream": ("connect", "unix", "other", None, None),
    "udp_send": ("udp_send", "inet", "udp", "127.0.0.1", "udp"),
}


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr.strip()}")
    return r


class Checks:
    def __init__(self) -> None:
        self.results: list = []

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        self.results.append({"check": name, "ok": bool(ok), "detail": str(detail)[:2000]})
        print(f"{'PASS' if ok else 'FAIL'} {name} {str(detail)[:300]}", flush=True)
        return ok


class Pair:
    """host-side veth `nwk<suffix>` (watched, no address), far end `eth0` in namespace `nwk<suffix>`."""

    def __init__(self) -> None:
        s = secrets.token_hex(3)
        self.host, self.ns, self.peer_if = f"nwk{s}", f"nwk{s}", f"nwp{s}"
        self.mac = "00:1b:21:" + ":".join(f"{b:02x}" for b in os.urandom(3))
        self.ip, self.neighbour = "10.213.7.2", "10.213.7.1"

    def create(self) -> None:
        sh(f"ip netns add {self.ns}")
        sh(f"ip link add {self.host} type veth peer name {self.peer_if} netns {self.ns}")
        for where, dev in (("", self.host), (f"ip netns exec {self.ns} ", self.peer_if)):
            sh(f"{where}sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1", check=False)  # no NDP/MLD chatter
        host_mac = Path(f"/sys/class/net/{self.host}/address").read_text().strip()
        sh(f"ip -n {self.ns} link set {self.peer_if} address {self.mac}")
        sh(f"ip -n {self.ns} addr add {self.ip}/24 dev {self.peer_if}")
        sh(f"ip -n {self.ns} link set {self.peer_if} up && ip link set {self.host} up")
        # the neighbour is pinned: no ARP, and every datagram goes into our veth and nowhere else
        sh(f"ip -n {self.ns} neigh replace {self.neighbour} lladdr {host_mac} dev {self.peer_if} nud permanent")
        route = sh(f"ip -n {self.ns} route get {self.neighbour}").stdout
        if f"dev {self.peer_if}" not in route:
            raise RuntimeError(f"route to {self.neighbour} leaves our pair: {route}")

    def send_udp(self, count: int) -> None:
        code = ("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                f"[s.sendto(b'nw'*20,('{self.neighbour}',9999)) for _ in range({count})]")
        sh(f"ip netns exec {self.ns} {sys.executable} -c \"{code}\"")

    def cleanup(self) -> None:
        sh(f"ip link del {self.host}", check=False)
        sh(f"ip netns del {self.ns}", check=False)


def kernel_before(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return (int(release[0]), int(release[1])) < (major, minor)


def memory_kib(pid: int) -> dict:
    """VmHWM (peak RSS) and VmRSS of the daemon, and the BPF memory its program and map fds hold
    (fdinfo `memlock`: charged to the unit's cgroup besides RSS on kernels >= 5.11)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1])
    memlock = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            for line in open(f"/proc/{pid}/fdinfo/{fd}"):
                if line.startswith("memlock:"):
                    memlock += int(line.split()[1])
        except OSError:
            continue
    out["bpf_memlock"] = memlock // 1024
    return out


def our_prog_ids(pid: int) -> set:
    """BPF programs the daemon holds (its fds), so the stop check is about ours only."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            for line in open(f"/proc/{pid}/fdinfo/{fd}"):
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def prog_exists(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True).returncode == 0


def wait(fn, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def echo_log(daemon: DaemonProcess, stop: threading.Event) -> None:
    """The daemon's log as it grows, stamped with seconds since exec: where a slow kernel spends
    its start-up shows in the test report."""
    pos = 0
    while not stop.is_set():
        try:
            with open(daemon.log_path, errors="replace") as f:
                f.seek(pos)
                text = f.read()
                pos = f.tell()
        except OSError:
            text = ""
        for line in text.splitlines():
            print(f"  [{time.monotonic() - daemon.exec_time:6.1f}s] {line[:200]}", flush=True)
        stop.wait(0.5)


def run(c: Checks, info: dict) -> None:
    """The shipped config, time compressed, and devices.interfaces naming the veth's host end
    (the VM's or host's other interfaces are not this test's devices)."""
    tmp = Path(tempfile.mkdtemp(prefix="nwk-smoke-"))
    pair = Pair()
    bus = PrivateSystemBus()
    daemon = None
    servers = []
    stop_echo = threading.Event()
    try:
        pair.create()
        bus.start()
        config = {"state_directory": str(tmp / "state"), "tick_interval_sec": TICK,
                  "alerts": {"learning_period_sec": 0},
                  "devices": {"interfaces": [pair.host], "store_interval_sec": 0.5}}
        # under exactly the unit's capabilities, memlock limit and no_new_privs: what the unit
        # allows is proven on every kernel of the matrix (tests/kernels/unit_sandbox.py)
        unit = unit_sandbox.UNIT.read_text()
        daemon = DaemonProcess(bus, config, about=("devices.interfaces",),
                               command_prefix=unit_sandbox.command_prefix(unit))
        threading.Thread(target=echo_log, args=(daemon, stop_echo), daemon=True).start()
        daemon.start(timeout=600)
        info["exec_to_ready_sec"] = round(daemon.ready_time - daemon.exec_time, 1)
        at_ready = memory_kib(daemon.pid)
        info["peak_rss_at_ready_mib"] = round(at_ready["VmHWM"] / 1024, 1)
        caps = unit_sandbox.process_caps(daemon.pid)
        wanted = unit_sandbox.wanted_caps(unit)
        info["capabilities"] = unit_sandbox.names(caps["CapEff"])
        info["memlock_limit"] = "unlimited" if unit_sandbox.can_raise_limits() else unit_sandbox.memlock_limit()
        c.check("runs with exactly the unit's capabilities (effective = permitted = bounding set)",
                caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == unit_sandbox.capability_mask(wanted)
                and caps["CapInh"] == caps["CapAmb"] == 0,
                {k: unit_sandbox.names(v) for k, v in caps.items()})
        info["kernel"] = daemon.get_property("KernelRelease")
        info["fallbacks"] = daemon.get_property("KernelFallbacks")
        info["programs"] = daemon.get_property("ProgramsAttached")
        c.check("ready", True, f"exec -> READY {info['exec_to_ready_sec']} s")
        # what CAP_SYS_ADMIN is in the unit for (README, "Kernels"): bcc opens a perf event for each
        # tracepoint, which Debian's kernels refuse without it at their perf_event_paranoid of 3
        info["perf_event_paranoid"] = unit_sandbox.perf_event_paranoid()
        without = [cap for cap in wanted if cap != "sys_admin"]
        info["tracepoint_without_sys_admin"] = unit_sandbox.tracepoint_open_with(without)
        c.check("a tracepoint's perf event without CAP_SYS_ADMIN: opens at perf_event_paranoid <= 2, else "
                "opens or EACCES", info["tracepoint_without_sys_admin"] == "ok" or (
                    info["tracepoint_without_sys_admin"] == "EACCES" and info["perf_event_paranoid"] > 2),
                f"perf_event_paranoid {info['perf_event_paranoid']}: {info['tracepoint_without_sys_admin']}")
        c.check("device programs attached", any(p.startswith(f"nw_tc_ingress@{pair.host}") for p in info["programs"]),
                info["programs"])

        # -- the device ----------------------------------------------------------------------
        pair.send_udp(DATAGRAMS)
        devs = wait(lambda: {r["mac"]: r for r in map(unvariant, daemon.call("ListDevices")[0])
                             if r["counters"].get("tx_udp_packets", 0) >= DATAGRAMS}, 30) or {}
        time.sleep(3 * TICK)
        devs = {r["mac"]: r for r in map(unvariant, daemon.call("ListDevices")[0])}
        dev = devs.get(pair.mac, {})
        c.check("ListDevices: the device, its interface and exact UDP count",
                dev.get("interface") == pair.host and dev.get("counters", {}).get("tx_udp_packets") == DATAGRAMS
                and dev.get("vendor", "").startswith("Intel"),
                {k: dev.get(k) for k in ("mac", "interface", "vendor")} | {"tx_udp_packets": dev.get("counters", {}).get("tx_udp_packets")})
        alerts = wait(lambda: [unvariant(a) for a in daemon.call("ListAlerts", "u", 0)[0]
                               if unvariant(a)["kind"] == "new_device" and unvariant(a)["subject"] == f"device:{pair.mac}"], 20)
        c.check("ListAlerts: one new_device alert for it", len(alerts or []) == 1,
                [a["message"] for a in alerts or []])

        # -- connects ------------------------------------------------------------------------
        tcp4 = socket.create_server(("127.0.0.1", 0))
        tcp6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix_path = str(tmp / "nw.sock")
        unix.bind(unix_path)
        unix.listen(4)
        servers += [tcp4, tcp6, udp, closed, unix]
        plan = {"tcp4": tcp4.getsockname()[1], "tcp6": tcp6.getsockname()[1], "udp": udp.getsockname()[1],
                "closed": closed.getsockname()[1], "unix": unix_path}
        name = "nwk" + secrets.token_hex(5)
        python = tmp / name
        shutil.copy(os.path.realpath(sys.executable), python)
        out = subprocess.run([str(python), "-c", CHILD, json.dumps(plan)], capture_output=True, text=True, timeout=120)
        child = json.loads(out.stdout)
        truth = child["truth"]
        s = unvariant(daemon.call("Summary", "usu", child["pid"], "", 60)[0])
        got = (s["total_attempts"], s["succeeded"], s["failed"], s["in_progress"], s["udp_sends"])
        c.check("Summary exact", got == (4, 3, 1, 0, 1), s["message"])
        s = unvariant(daemon.call("Summary", "usu", 0, name, 60)[0])
        c.check("Summary by command exact", (s["total_attempts"], s["udp_sends"]) == (4, 1), s["message"])
        records = [unvariant(r) for r in daemon.call("ListConnections", "uu", child["pid"], 0)[0]]
        problems = []
        if len(records) != len(truth):
            problems.append(f"{len(records)} records for {len(truth)} calls")
        for record, call in zip(records, reversed(truth)):  # newest first
            kind, family, transport, dest, port_key = EXPECTED[call["call"]]
            want = (kind, family, transport, dest or unix_path, plan[port_key] if port_key else 0,
                    call["return_code"], name)
            have = (record["kind"], record["family"], record["transport"], record["destination"], record["port"],
                    record["return_code"], record["command"])
            if have != want:
                problems.append(f"{call['call']}: {have} != {want}")
        c.check("ListConnections records exact (unix path included)", not problems, problems or len(records))
        if kernel_before(5, 15):  # no bpf_task_pt_regs: the sockaddr is noted at sys_enter_connect
            c.check("KernelFallbacks: the sys_enter_connect sockaddr path (Linux < 5.15)",
                    any("sys_enter_connect" in f for f in info["fallbacks"]), info["fallbacks"])

        # -- connect outcomes and handshake latency, 20 ms away through netem ------------------
        try:
            smoke_connects.check(c, daemon, tmp, info)
        except Exception as e:  # the stop checks below still run
            c.check("connect outcomes and latency ran to the end", False,
                    f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")

        # -- memory: the peak (bcc's compile at start) and the BPF maps against MemoryMax --------
        used = memory_kib(daemon.pid)
        info["peak_rss_mib"] = round(used["VmHWM"] / 1024, 1)
        info["rss_mib"] = round(used["VmRSS"] / 1024, 1)
        info["bpf_memlock_mib"] = round(used["bpf_memlock"] / 1024, 1)
        info["fds"] = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        limit = unit_sandbox.memory_max_bytes(unit)
        if limit:
            need = (used["VmHWM"] + used["bpf_memlock"]) * 1024
            c.check("peak RSS + BPF memory within 2/3 of the unit's MemoryMax",
                    need <= limit * 2 // 3, f"{need / 2**20:.0f} MiB of MemoryMax {limit / 2**20:.0f} MiB")

        # -- stop ----------------------------------------------------------------------------
        ours = our_prog_ids(daemon.pid)
        rc = daemon.stop(timeout=120)
        c.check("clean stop", rc == 0, f"exit {rc}")
        left = sorted(i for i in ours if prog_exists(i))
        c.check("no program of ours left", bool(ours) and not left, f"held {sorted(ours)}, left {left}")
        filters = sh(f"tc filter show dev {pair.host} ingress; tc filter show dev {pair.host} egress", check=False).stdout
        qdiscs = sh(f"tc qdisc show dev {pair.host}", check=False).stdout
        tcx = sh(f"bpftool net show dev {pair.host}", check=False).stdout
        c.check("no filter, clsact qdisc or TCX link of ours left",
                not filters.strip() and "clsact" not in qdiscs and "nw_tc_" not in tcx, filters + qdiscs + tcx)
        log = daemon.log()
        noise = [line for line in log.splitlines() if "warning:" in line.lower() and ".h:" in line]
        c.check("no compiler warnings in the daemon's output", not noise, noise[:6])
        info["log_tail"] = log.splitlines()[-12:]
    finally:
        stop_echo.set()
        for s_ in servers:
            s_.close()
        if daemon is not None:
            daemon.cleanup()
        bus.stop()
        pair.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    c = Checks()
    info: dict = {"release": os.uname().release}
    t0 = time.monotonic()
    try:
        run(c, info)
    except Exception as e:
        c.check("smoke ran to the end", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")
    info["seconds"] = round(time.monotonic() - t0, 1)
    info["checks"] = c.results
    ok = bool(c.results) and all(r["ok"] for r in c.results)
    info["ok"] = ok
    print("SMOKE " + json.dumps(info), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
