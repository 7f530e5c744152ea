"""The device-path benchmarks of issue 3, each a ratio of figures measured side by side in one run.

    .venv/bin/python bench/device_bench.py            (make bench-devices; as root; about 2 minutes)
    .venv/bin/python bench/device_bench.py --quick    (smoke check: short phases, < 30 s)

  1. BPF ns per packet of netwatchd's classifier (nw_tc_ingress + nw_tc_egress, bpf_stats)
     against floor classifiers attached in the same run on the same interfaces: one that bumps
     a per-CPU counter, one that bumps a counter keyed by the device's MAC in a hash, and a
     reference that emits a ring-buffer record per packet with the default wakeup.
  2. Packets per second the devices send with netwatchd attached vs not, alternating phases in
     one run (and, for scale, with the reference classifier attached instead), on two paths:
     across the bridge to the sink, and straight into the host over one veth pair.
  3. Per-device UDP packet counts (D-Bus GetDevice) against each sender's own count, with every
     device on both paths sending at full speed at once.

The link: a bridge in the host namespace; device namespaces and a sink namespace hang off it by
veth pairs. netwatchd watches every port (as `interfaces: auto` would): a frame from a device
crosses nw_tc_ingress on that device's port (tx of the device) and nw_tc_egress on the sink's
port (rx of the sink). Devices send 60-byte UDP frames (sendmmsg, one sender process per device)
to a socket in the sink that is never read. ARP and the sink's bridge entry are static and IPv6
is off, so the link carries nothing but the senders' UDP.
The direct path: one more device namespace whose veth peer is a plain host interface (no
bridge, no address); its frames go to a MAC nobody has, so the host drops them on arrival
(PACKET_OTHERHOST, right after our ingress hook): the cheapest path a frame can take, the
highest packet rate, the most our classifier can slow a sender down. Two sender processes there.

Names carry this process's id; every namespace, link and process started here is removed here
(by name and by pid), on error, Ctrl-C and SIGTERM too. Traffic stays on these links: the bridge
has no address and no other port, and the direct port's frames die on arrival.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

import yaml  # noqa: E402

import bpf_stats  # noqa: E402
from bench_main import run_benchmark  # noqa: E402
from connect_bench import cpu_sec, host_info, progress, shielded_cleanup, verdict  # noqa: E402
from device_floors import FloorClassifiers  # noqa: E402
from tests.harness import DaemonProcess, PrivateSystemBus, unvariant  # noqa: E402

RESULTS = BENCH / "results"
GOAL_BPF_X_FLOOR = 3.0
GOAL_RATE_RATIO = 0.95
TCX_INGRESS, TCX_EGRESS = 46, 47
SINK_PORT = 40009
TICK_SEC = 0.25
SUBNET = "10.213.7"  # inside the namespaces only
SUBNET_DIRECT = "10.213.8"


# -- the link ---------------------------------------------------------------------------------
def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


@dataclass
class Station:
    """A namespace on the link: its veth (eth0 inside) and the host side of the pair (`port`)."""
    label: str
    netns: str
    port: str  # host side of the veth pair: a bridge port, or a plain interface (direct)
    mac: str
    ip: str
    bridged: bool = True
    dst_ip: str = ""  # where its senders send (static neighbour entry)
    dst_mac: str = ""
    ifindex: int = 0  # of the port, in the host namespace


class Link:
    def __init__(self, n_devices: int) -> None:
        tag = f"{os.getpid():x}"[-5:]
        self.tag = tag
        self.bridge = f"nwdb{tag}br"
        labels = [chr(ord("a") + i) for i in range(n_devices)]
        pid_bytes = os.getpid().to_bytes(4, "big")
        self.devices = [self._station(label, i + 1, pid_bytes) for i, label in enumerate(labels)]
        self.sink = self._station("s", 200, pid_bytes)
        for d in self.devices:
            d.dst_ip, d.dst_mac = self.sink.ip, self.sink.mac
        # the direct device: its own subnet, sending to an address whose MAC nobody has
        self.direct = self._station("d", 100, pid_bytes)
        self.direct.ip, self.direct.bridged = f"{SUBNET_DIRECT}.1", False
        self.direct.dst_ip = f"{SUBNET_DIRECT}.254"
        self.direct.dst_mac = self._station("x", 254, pid_bytes).mac
        self.created_netns: List[str] = []
        self.created_links: List[str] = []

    def _station(self, label: str, n: int, pid_bytes: bytes) -> Station:
        # locally administered unicast MACs: 02:6e:PID:PID:PID:n
        mac = "02:6e:" + ":".join(f"{b:02x}" for b in pid_bytes[1:]) + f":{n:02x}"
        return Station(label, f"nwdbench-{self.tag}-{label}", f"nwdb{self.tag}{label}", mac, f"{SUBNET}.{n}")

    @property
    def stations(self) -> List[Station]:
        return self.devices + [self.sink, self.direct]

    @property
    def senders(self) -> List[Station]:
        return self.devices + [self.direct]

    @property
    def unused_name(self) -> str:
        """An interface name that does not exist: the `interfaces` setting that detaches us."""
        return f"nwdb{self.tag}off"

    def up(self) -> "Link":
        for name in [self.bridge] + [s.port for s in self.stations]:
            if os.path.exists(f"/sys/class/net/{name}"):
                raise RuntimeError(f"interface {name} exists already")
        sh("ip", "link", "add", self.bridge, "type", "bridge", "stp_state", "0")
        self.created_links.append(self.bridge)
        _no_ipv6(self.bridge)
        for s in self.stations:
            sh("ip", "netns", "add", s.netns)
            self.created_netns.append(s.netns)
            sh("ip", "netns", "exec", s.netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "link", "add", s.port, "type", "veth", "peer", "name", "eth0", "address", s.mac,
               "netns", s.netns)
            self.created_links.append(s.port)
            _no_ipv6(s.port)
            if s.bridged:
                sh("ip", "link", "set", s.port, "master", self.bridge)
            sh("ip", "link", "set", s.port, "up")
            sh("ip", "-n", s.netns, "link", "set", "lo", "up")
            sh("ip", "-n", s.netns, "addr", "add", f"{s.ip}/24", "dev", "eth0")
            sh("ip", "-n", s.netns, "link", "set", "eth0", "up")
            with open(f"/sys/class/net/{s.port}/ifindex") as f:
                s.ifindex = int(f.read())
        sh("ip", "link", "set", self.bridge, "up")
        # static: no ARP on the link, no flooding of the sink's frames to the other ports
        sh("bridge", "fdb", "replace", self.sink.mac, "dev", self.sink.port, "master", "static")
        for d in self.senders:
            sh("ip", "-n", d.netns, "neigh", "replace", d.dst_ip, "lladdr", d.dst_mac, "dev", "eth0", "nud",
               "permanent")
        return self

    def down(self) -> None:
        for netns in reversed(self.created_netns):  # takes the veth pair with it
            sh("ip", "netns", "del", netns, check=False)
        for name in reversed(self.created_links):
            if os.path.exists(f"/sys/class/net/{name}"):
                sh("ip", "link", "del", name, check=False)
        self.created_netns, self.created_links = [], []

    def __enter__(self) -> "Link":
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc) -> None:
        self.down()

    def drops(self) -> Dict[str, int]:
        """Where a frame a device sent could be lost before our ingress hook: the sending veth
        (tx_dropped), the host port (rx_dropped) and the per-CPU backlog (softnet_stat)."""
        out = {"softnet_backlog": softnet_dropped()}
        for d in self.senders:
            inner = link_stats(d.netns, "eth0")
            outer = link_stats(None, d.port)
            out[f"{d.label}_veth_tx_dropped"] = inner["tx"]["dropped"]
            out[f"{d.label}_port_rx_dropped"] = outer["rx"]["dropped"]
        return out


def _no_ipv6(ifname: str) -> None:
    path = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
    if os.path.exists(path):
        with open(path, "w") as f:
            f.write("1")


def link_stats(netns: Optional[str], ifname: str) -> Dict:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-s", "-j", "link", "show", ifname]
    return json.loads(sh(*cmd).stdout)[0]["stats64"]


def softnet_dropped() -> int:
    """Frames dropped because a CPU's backlog was full (second column of softnet_stat)."""
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f)


# -- the senders ------------------------------------------------------------------------------
def build_sender(workdir: str) -> Tuple[List[str], str]:
    """udp_flood.c compiled with the system's cc; the Python fallback when there is none."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        binary = os.path.join(workdir, "udp_flood")
        sh(cc, "-O2", "-Wall", "-o", binary, str(BENCH / "udp_flood.c"))
        return [binary], "C, sendmmsg in batches of 64"
    progress("no C compiler: Python senders (socket.send; a far lower packet rate)")
    return [sys.executable, str(BENCH / "udp_flood.py")], "Python socket.send (no C compiler found)"


@dataclass
class Phase:
    name: str
    sent: Dict[str, int]  # device label -> datagrams sent
    errors: int
    sec: float
    processes: int = 0
    cpu_sec: float = 0.0  # run time of the sender processes (softirq work done in their context included)
    ksoftirqd_sec: float = 0.0  # softirq work deferred to ksoftirqd (anyone's) meanwhile
    monitor_cpu_sec: float = 0.0  # the watching process(es): netwatchd, the reference's consumer
    path: str = ""  # bridge | direct
    daemon_cpu_sec: float = 0.0
    foreign: Optional[Dict[str, List[int]]] = None  # programs others attached to our ports

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def rate(self) -> float:
        return self.total / self.sec if self.sec > 0 else 0.0

    @property
    def rate_per_cpu(self) -> float:
        """Packets per CPU-second of senders, ksoftirqd and monitor together: the rate reached
        per core, however many cores the other users of the machine leave us."""
        cpu = self.cpu_sec + self.ksoftirqd_sec + self.monitor_cpu_sec
        return self.total / cpu if cpu > 0 else 0.0

    def as_dict(self) -> Dict:
        return {"name": self.name, "sent": self.sent, "total": self.total, "errors": self.errors, "sec": self.sec,
                "processes": self.processes, "path": self.path, "packets_per_sec": self.rate,
                "cpu_sec": self.cpu_sec, "ksoftirqd_sec": self.ksoftirqd_sec,
                "monitor_cpu_sec": self.monitor_cpu_sec, "packets_per_cpu_sec": self.rate_per_cpu, "daemon_cpu_sec": self.daemon_cpu_sec,
                "foreign_programs": self.foreign or {}}


def run_time_sec(pid: int) -> float:
    """CPU time a task has run, ns resolution (/proc/PID/schedstat). Without IRQ time accounting
    (this kernel: CONFIG_IRQ_TIME_ACCOUNTING off) it includes the softirq work done while the task
    was on the CPU: for a sender on a veth, the whole receive path of its frames."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        return 0.0


def process_run_time_sec(pid: int) -> float:
    """run_time_sec of every thread of a process."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    total = 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except OSError:
            continue
    return total


def ksoftirqd_pids() -> List[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        out.append(int(name))
            except OSError:
                continue
    return out


class Senders:
    """Sender processes in the device namespaces (one per bridged device, `direct_procs` in the
    direct one) and the sink, each started and stopped by pid."""

    def __init__(self, command: List[str], link: Link, direct_procs: int) -> None:
        self.command, self.link, self.direct_procs = command, link, direct_procs
        self.procs: List[Tuple[str, subprocess.Popen]] = []  # (device label, process)
        self.sink: Optional[subprocess.Popen] = None

    def _spawn(self, netns: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", netns, *self.command, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    def start(self) -> "Senders":
        self.sink = self._spawn(self.link.sink.netns, "sink", str(SINK_PORT))
        if self.sink.stdout.readline().strip() != "ready":
            raise RuntimeError(f"sink did not start (exit {self.sink.wait()})")
        for d in self.link.senders:
            for _ in range(1 if d.bridged else self.direct_procs):
                p = self._spawn(d.netns, "send", d.dst_ip, str(SINK_PORT))
                self.procs.append((d.label, p))
                if not p.stdout.readline():
                    raise RuntimeError(f"sender of device {d.label} did not start (exit {p.wait()})")
        return self

    def run(self, name: str, mode: str, arg: int, labels: Optional[List[str]] = None,
            monitors: Sequence[int] = ()) -> Phase:
        """The senders of `labels` (default: all) at once: `n COUNT` datagrams each, or `t MSEC`
        of sending each. The CPU time of `monitors` (processes watching the traffic) is read too."""
        chosen = [(label, p) for label, p in self.procs if labels is None or label in labels]
        soft = ksoftirqd_pids()
        cpu0, soft0 = sum(run_time_sec(p.pid) for _, p in chosen), sum(run_time_sec(pid) for pid in soft)
        mon0 = sum(process_run_time_sec(pid) for pid in monitors)
        for _, p in chosen:
            p.stdin.write(f"{mode} {arg}\n")
            p.stdin.flush()
        replies = []
        for label, p in chosen:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"sender of device {label} ended (exit {p.wait()})")
            replies.append((label, json.loads(line)))
        cpu = sum(run_time_sec(p.pid) for _, p in chosen) - cpu0
        softirq = sum(run_time_sec(pid) for pid in soft) - soft0
        monitor = sum(process_run_time_sec(pid) for pid in monitors) - mon0
        sent: Dict[str, int] = {}
        for label, reply in replies:
            sent[label] = sent.get(label, 0) + reply["sent"]
        t0 = min(reply["t0"] for _, reply in replies)
        t1 = max(reply["t1"] for _, reply in replies)
        return Phase(name, sent, sum(reply["errors"] for _, reply in replies), t1 - t0, processes=len(chosen),
                     cpu_sec=cpu, ksoftirqd_sec=softirq, monitor_cpu_sec=monitor)

    def stop(self) -> None:
        for p in [p for _, p in self.procs] + ([self.sink] if self.sink else []):
            if p.poll() is None:
                try:
                    p.stdin.close()  # the senders and the sink leave on EOF
                except OSError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()
        self.procs, self.sink = [], None

    def __enter__(self) -> "Senders":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


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


# -- the figures ------------------------------------------------------------------------------
def bpf_phase(senders: Senders, daemon: DaemonProcess, floors: FloorClassifiers, link: Link, msec: int) -> Dict:
    """Ours, the floors and the reference on every port at once, stats on; `msec` of traffic
    from the bridged devices, then `msec` from the direct device, each read separately."""
    ours = our_programs(daemon, link)
    yard = {fn: bpf_stats.prog_of_fd(floors.pid, fd) for fn, fd in floors.fds.items()}
    named = {**ours, **yard}
    floors.attach(["floor_count", "floor_mac", "ref_ring"], [s.ifindex for s in link.stations])
    out: Dict = {}
    try:
        known = {p.id: name for name, p in named.items()}
        out["hooks"] = {hook: [known.get(i, f"foreign prog {i}") for i in ids] for hook, ids in hook_chains(link).items()}
        with bpf_stats.StatsEnabled():
            for path, labels in (("bridge", [d.label for d in link.devices]), ("direct", [link.direct.label])):
                consumed0 = floors.read_consumed()
                before = bpf_stats.read_counters(named.values())
                phase = senders.run("bpf", "t", msec, labels)
                time.sleep(0.05)  # the backlogs drain
                after = bpf_stats.read_counters(named.values())
                out[path] = bpf_figures(before, after, named, phase)
                out[path]["reference_records_consumed"] = floors.read_consumed() - consumed0
    finally:
        floors.detach()
    return out


def bpf_figures(before: Dict, after: Dict, named: Dict[str, bpf_stats.Prog], phase: Phase) -> Dict:
    per = {name: bpf_stats.per_run(before, after, p) for name, p in named.items()}
    packets = per["floor_count_in"]["runs"]  # every frame that entered a port from a namespace

    def per_packet(names: List[str]) -> Optional[float]:
        return sum(per[n]["run_time_ns"] for n in names) / packets if packets else None

    return {
        "phase": phase.as_dict(),
        "programs": per,
        "frames_into_ports": packets,
        "frames_out_of_ports": per["floor_count_eg"]["runs"],
        "per_packet_ns": {
            "ours": per_packet(["nw_tc_ingress", "nw_tc_egress"]),
            "floor_count": per_packet(["floor_count_in", "floor_count_eg"]),
            "floor_mac": per_packet(["floor_mac_in", "floor_mac_eg"]),
            "reference": per_packet(["ref_ring_in"]),
        },
    }


def rate_phases(senders: Senders, daemon: DaemonProcess, floors: FloorClassifiers, link: Link, pairs: int,
                msec: int) -> List[Phase]:
    """(off, on, off, floor) x pairs, off, reference, off: netwatchd attached or not (the daemon
    keeps running), the counter floor or the reference attached alone; every one of them between
    two `off`s. Each step: the bridged devices for `msec`, then the direct device for `msec`."""
    plan = ["off", "on", "off", "floor"] * pairs + ["off", "reference", "off"]
    phases = []
    attached = None
    set_attached(daemon, link, True)
    known = {p.id for p in our_programs(daemon, link).values()}
    known |= {bpf_stats.prog_of_fd(floors.pid, fd).id for fd in floors.fds.values()}
    yardstick = {"floor": "floor_count", "reference": "ref_ring"}
    for i, what in enumerate(plan):
        want = what == "on"
        if attached != want:
            set_attached(daemon, link, want)
            attached = want
        if what in yardstick:
            floors.attach([yardstick[what]], [s.ifindex for s in link.stations])
        if i % 4 == 0 or i == len(plan) - 1:
            progress(f"rate phase {i + 1}/{len(plan)}")
        try:
            for path, labels in (("bridge", [d.label for d in link.devices]), ("direct", [link.direct.label])):
                cpu0 = cpu_sec(daemon.pid)
                phase = senders.run(what, "t", msec, labels, monitors=[daemon.pid, floors.pid])
                phase.daemon_cpu_sec = cpu_sec(daemon.pid) - cpu0
                phase.path = path
                phase.foreign = foreign_programs(link, known)
                phases.append(phase)
        finally:
            if what in yardstick:
                floors.detach()
    return phases


def exact_phase(senders: Senders, daemon: DaemonProcess, link: Link, count: int) -> Dict:
    set_attached(daemon, link, True)
    before = settled_counters(daemon, link)
    drops0 = link.drops()
    lost0 = dbus_property(daemon, "DeviceEventsLost")
    cpu0 = cpu_sec(daemon.pid)
    phase = senders.run("exact", "n", count)
    after = settled_counters(daemon, link)
    phase.daemon_cpu_sec = cpu_sec(daemon.pid) - cpu0
    drops = {k: v - drops0[k] for k, v in link.drops().items()}

    def delta(label: str, key: str) -> int:
        return after[label].get(key, 0) - before[label].get(key, 0)

    rows = []
    for d in link.senders:
        sent = phase.sent[d.label]
        row = {"device": d.label, "path": "bridge" if d.bridged else "direct", "mac": d.mac, "sent": sent, "tx_udp_packets": delta(d.label, "tx_udp_packets"),
               "tx_udp_bytes": delta(d.label, "tx_udp_bytes"),
               "tx_other_packets": sum(delta(d.label, k) for k in after[d.label]
                                       if k.startswith("tx_") and k.endswith("_packets") and k != "tx_udp_packets")}
        row["exact"] = row["tx_udp_packets"] == sent and row["tx_udp_bytes"] == sent * 60
        rows.append(row)
    sink_rx = delta("s", "rx_udp_packets")
    bridged_sent = sum(phase.sent[d.label] for d in link.devices)
    return {
        "phase": phase.as_dict(),
        "count_per_device": count,
        "devices": rows,
        "all_exact": all(r["exact"] for r in rows),
        "sink_rx_udp_packets": sink_rx,
        "sink_exact": sink_rx == bridged_sent,
        "bridged_sent": bridged_sent,
        "drops_before_hook": drops,
        "device_events_lost": (dbus_property(daemon, "DeviceEventsLost") or 0) - (lost0 or 0),
        "malformed_frames": dbus_property(daemon, "MalformedFrames"),
    }


# -- the run ----------------------------------------------------------------------------------
def run(args) -> Dict:
    r: Dict = {"host": host_info(), "devices": args.devices, "direct_procs": args.direct_procs}
    with shielded_cleanup() as stack:
        workdir = tempfile.mkdtemp(prefix="nwd-devbench-")
        stack.callback(shutil.rmtree, workdir, True)
        floors = stack.enter_context(FloorClassifiers())  # compiles while the rest starts
        sender_cmd, r["sender"] = build_sender(workdir)
        progress(f"link: bridge, {args.devices} device namespaces and a sink; a direct device")
        link = stack.enter_context(Link(args.devices))
        r["link"] = {"bridge": link.bridge, "stations": [vars(s) for s in link.stations]}
        senders = stack.enter_context(Senders(sender_cmd, link, args.direct_procs))

        progress("netwatchd, watching every port")
        bus = stack.enter_context(PrivateSystemBus())
        daemon = DaemonProcess(bus, daemon_config(link, True))
        stack.callback(daemon.cleanup)
        daemon.start()
        floors.wait_loaded()
        senders.run("warm", "t", 300)  # devices known, caches warm
        settled_counters(daemon, link)

        progress(f"BPF cost: {args.bpf_msec} ms of traffic per path; netwatchd, floors and reference attached, stats on")
        r["bpf"] = bpf_phase(senders, daemon, floors, link, args.bpf_msec)

        progress(f"packet rate: {args.pairs} x (off, on, off, floor), {args.rate_msec} ms per phase and path")
        r["rate_phases"] = [p.as_dict() for p in rate_phases(senders, daemon, floors, link, args.pairs,
                                                             args.rate_msec)]

        progress(f"exactness: {args.count:,} datagrams from each sender process, all at once")
        r["exact"] = exact_phase(senders, daemon, link, args.count)
        r["watched_other_interfaces"] = watched_elsewhere(daemon, link)
        log_lines = daemon.log().splitlines()
        # detaching on reload is logged as "interface X is gone" (our off phases): count those
        r["daemon_detach_warnings"] = sum(1 for line in log_lines if "is gone; will watch it again" in line)
        r["daemon_log_warnings"] = [line for line in log_lines if ("WARNING" in line or "ERROR" in line)
                                    and "is gone; will watch it again" not in line][-20:]
    return r


# -- the report -------------------------------------------------------------------------------
def rate_summary(phases: List[Dict], path: str, key: str) -> Dict:
    """Each `on`, `floor` and `reference` phase against the mean of the `off` phases either side,
    by `key` (packets_per_sec: wall clock; packets_per_cpu_sec: per CPU-second)."""
    phases = [p for p in phases if p["path"] == path]
    out: Dict = {"on": [], "floor": [], "reference": []}
    for i, p in enumerate(phases):
        if p["name"] in out:
            around = statistics.mean([phases[i - 1][key], phases[i + 1][key]])
            out[p["name"]].append({"rate": p[key], "off_around": around, "ratio": p[key] / around})
    for name in ("on", "floor", "reference"):
        out[f"{name}_ratio"] = statistics.median(row["ratio"] for row in out[name])
    on = [p[key] for p in phases if p["name"] == "on"]
    off = [p[key] for p in phases if p["name"] == "off"]
    out["on_mean"], out["off_mean"] = statistics.mean(on), statistics.mean(off)
    out["on_ratio_of_means"] = out["on_mean"] / out["off_mean"]
    out["phases"] = [(p["name"], p[key]) for p in phases]
    return out


def report(r: Dict) -> str:
    L: List[str] = []
    h = r["host"]
    L.append(f"netwatchd device benchmark  {h['time']}  kernel {h['kernel']}, {h['cpus']} CPUs, "
             f"load avg {' '.join('%.2f' % x for x in h['loadavg'])} at start")
    L.append(f"link: bridge {r['link']['bridge']} with {r['devices']} device namespaces + 1 sink on veth pairs, and 1 "
             f"device on a veth pair straight into the host; netwatchd on every port (ingress + egress); senders: {r['sender']}, 60-byte UDP frames, "
             f"one process per bridged device; all ratios taken side by side in this run")

    hooks = r["bpf"]["hooks"]
    ours_first = all(chain[0] in ("nw_tc_ingress", "nw_tc_egress") for chain in hooks.values() if chain)
    foreign = sorted({p for chain in hooks.values() for p in chain if p.startswith("foreign")})
    sample = next(k for k in hooks if k.endswith("ingress") and hooks[k])
    L.append("")
    L.append("1. BPF ns per packet (bpf_stats run_time_ns / run_cnt by program id); ours, the floors and the reference attached")
    L.append(f"   at once on every port; order on {sample}: {' -> '.join(hooks[sample])}"
             f" (ours first on every hook: {ours_first})"
             + (f"; ALSO ATTACHED by others: {', '.join(foreign)}" if foreign else ""))
    for path, title in (("bridge", f"bridge: {r['devices']} devices -> sink, a frame crosses ingress of its port and "
                                   f"egress of the sink's"),
                        ("direct", f"direct: 1 device, {r['direct_procs']} senders (both CPUs count the same device)"
                                   f", ingress only")):
        b = r["bpf"][path]
        P, pp = b["programs"], b["per_packet_ns"]
        L.append(f"   {title}: {b['frames_into_ports']:,} frames in, {b['frames_out_of_ports']:,} out, "
                 f"{b['phase']['sec']:.1f} s")
        L.append(f"     {'':42s} {'ingress':>8s} {'egress':>8s} {'per packet':>11s} {'x floor':>8s} {'x MAC floor':>11s}")

        def row(label, a, e, per):
            fmt = lambda v: f"{v:8.0f}" if v is not None else f"{'-':>8s}"  # noqa: E731
            return (f"     {label:42s} {fmt(a)} {fmt(e)} {per:11.0f} {per / pp['floor_count']:7.2f}x "
                    f"{per / pp['floor_mac']:10.2f}x")

        for label, a, e, key in (("floor: per-CPU counter only", "floor_count_in", "floor_count_eg", "floor_count"),
                                 ("floor: counter keyed by MAC in a hash", "floor_mac_in", "floor_mac_eg", "floor_mac"),
                                 ("netwatchd nw_tc_ingress + nw_tc_egress", "nw_tc_ingress", "nw_tc_egress", "ours"),
                                 ("reference: ring record per packet, wakeup", "ref_ring_in", None, "reference")):
            L.append(row(label, P[a]["ns_per_run"], P[e]["ns_per_run"] if e else None, pp[key]))
        x = pp["ours"] / pp["floor_count"]
        L.append(f"     netwatchd per packet {x:.2f}x the counter floor (goal <= {GOAL_BPF_X_FLOOR:.0f}x: "
                 f"{verdict(x <= GOAL_BPF_X_FLOOR)}), {pp['ours'] / pp['floor_mac']:.2f}x the MAC floor, "
                 f"{pp['ours'] / pp['reference']:.3f}x the reference; reference consumer read "
                 f"{b['reference_records_consumed']:,} records; senders at {b['phase']['packets_per_sec']:,.0f}/s")
    L.append("")
    L.append("2. Sender packets/s with netwatchd attached (on) vs not (off); the daemon runs throughout. Phases alternate")
    L.append(f"   (off on off floor ... off reference off, {r['rate_phases'][0]['sec']:.1f} s each); each is compared with the mean of")
    L.append("   the offs either side, and the verdict is on the median of those ratios, in packets per CPU-second (senders +")
    L.append("   ksoftirqd + daemon + reference consumer): the rate per core we get, which the other engineers' load on the")
    L.append("   2 cores does not move; the wall-clock rate swings by tens of percent from one second to the next here.")
    r["rate_summary"] = {}
    for path, desc in (("bridge", f"bridge, {r['devices']} devices -> sink: ingress + egress hook per packet"),
                       ("direct", f"direct veth into the host, {r['direct_procs']} senders: ingress hook only")):
        cpu = rate_summary(r["rate_phases"], path, "packets_per_cpu_sec")
        wall = rate_summary(r["rate_phases"], path, "packets_per_sec")
        r["rate_summary"][path] = {"per_cpu_sec": cpu, "wall": wall}
        phases = [p for p in r["rate_phases"] if p["path"] == path]
        on = [p for p in phases if p["name"] == "on"]
        L.append(f"   {desc}")
        L.append("     per CPU-s: " + " ".join(f"{name} {rate / 1e3:,.0f}k" for name, rate in cpu["phases"]))
        L.append("     wall:      " + " ".join(f"{name} {rate / 1e3:,.0f}k" for name, rate in wall["phases"]))
        pairs = ", ".join(f"{row['ratio']:.3f}" for row in cpu["on"])
        L.append(f"     netwatchd/without per pair: {pairs}")
        L.append(f"     netwatchd: median {cpu['on_ratio']:.3f}x per CPU-s (goal >= {GOAL_RATE_RATIO}: "
                 f"{verdict(cpu['on_ratio'] >= GOAL_RATE_RATIO)}; ratio of means {cpu['on_ratio_of_means']:.3f}); "
                 f"wall clock: median {wall['on_ratio']:.3f}x, means {wall['on_mean']:,.0f} vs {wall['off_mean']:,.0f}/s")
        L.append(f"     for scale, alone instead of netwatchd: counter floor {cpu['floor_ratio']:.3f}x, reference "
                 f"{cpu['reference_ratio']:.3f}x per CPU-s ({wall['floor_ratio']:.3f}x, {wall['reference_ratio']:.3f}x wall)")
        L.append(f"     daemon CPU while attached {statistics.mean(p['daemon_cpu_sec'] / p['sec'] for p in on) * 100:.1f}% "
                 f"of a core; ksoftirqd {sum(p['ksoftirqd_sec'] for p in phases) / sum(p['cpu_sec'] for p in phases) * 100:.1f}% "
                 f"of the senders' CPU")
    foreign = {hook: ids for p in r["rate_phases"] for hook, ids in p["foreign_programs"].items()}
    if foreign:
        L.append(f"   NOTE: programs of others were attached to our ports during these phases: {foreign}")

    e = r["exact"]
    ph = e["phase"]
    drops = e["drops_before_hook"]
    L.append("")
    L.append(f"3. Per-device counts at full rate: every sender process ({ph['processes']}) sends "
             f"{e['count_per_device']:,} datagrams, all at once: {ph['packets_per_sec']:,.0f} packets/s in all "
             f"({ph['total']:,} in {ph['sec']:.1f} s)")
    for d in e["devices"]:
        L.append(f"   device {d['device']} ({d['path']}) {d['mac']}: sent {d['sent']:,}, GetDevice tx_udp_packets "
                 f"{d['tx_udp_packets']:,} ({d['tx_udp_bytes']:,} bytes), other tx {d['tx_other_packets']:,}"
                 f"{'  exact' if d['exact'] else '  <-- MISMATCH'}")
    L.append(f"   all exact: {verdict(e['all_exact'])}; sink rx_udp_packets {e['sink_rx_udp_packets']:,} of the "
             f"{e['bridged_sent']:,} the bridged devices sent ({'exact' if e['sink_exact'] else 'MISMATCH'}); "
             f"DeviceEventsLost +{e['device_events_lost']}, MalformedFrames {e['malformed_frames']}")
    L.append(f"   drops before our ingress hook: {sum(drops.values())} ({', '.join(f'{k} {v}' for k, v in drops.items())})")
    L.append("")
    if r["watched_other_interfaces"]:
        L.append(f"WARNING: the daemon watched interfaces other than the bench's: {r['watched_other_interfaces']}")
    L.append(f"daemon log: {r['daemon_detach_warnings']} 'interface ... is gone' warnings from the reloads that "
             f"detached it, {len(r['daemon_log_warnings'])} other warnings/errors")
    if r.get("daemon_log_warnings"):
        L.append("")
        L.append("daemon warnings/errors:")
        L.extend("   " + line for line in r["daemon_log_warnings"])
    return "\n".join(L)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short phases, for a smoke check (< 30 s)")
    p.add_argument("--devices", type=int, default=3, help="device namespaces on the bridge (default 3)")
    p.add_argument("--direct-procs", type=int, default=2, help="sender processes of the direct device (default 2)")
    p.add_argument("--bpf-msec", type=int, help="traffic of the BPF-cost phase (default 5000)")
    p.add_argument("--rate-msec", type=int, help="length of each packet-rate phase and path (default 1000)")
    p.add_argument("--pairs", type=int, help="(off, on, off, floor) rounds of packet-rate phases (default 8)")
    p.add_argument("--count", type=int, help="datagrams each device sends in the exactness phase (default 1,000,000)")
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    defaults = ({"bpf_msec": 1000, "rate_msec": 400, "pairs": 2, "count": 100_000} if args.quick else
                {"bpf_msec": 5000, "rate_msec": 1000, "pairs": 8, "count": 1_000_000})
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not 1 <= args.devices <= 20:
        p.error("--devices: 1 to 20")
    return args


def main(argv=None) -> int:
    return run_benchmark("device_bench", "BPF, bpf_stats, network namespaces", parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
