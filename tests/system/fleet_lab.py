"""A fleet on one machine, for tests/system/test_fleet.py: three netwatchd hosts on one LAN, a
Prometheus that scrapes them and an Alertmanager they send their alerts to.

- The LAN: a Linux bridge on this host (`nwfl<4 hex>`, 10.252.0.1/24, a fixed MAC so that the
  gateway's MAC, part of the segment's id, never changes as ports come and go). Nothing else
  routes there: every address is checked with `ip route get` before this host sends to it.
- The hosts: booted systemd-nspawn containers (tests/system/container.py), each with its own
  /etc/machine-id, cgroup, network namespace, journal and state, on the bridge through a veth (`host0`
  inside) with 10.252.0.11, .12 and .13 and a default route via the bridge. The Debian package is
  installed once, after boot, in the first container's rootfs (dependencies downloaded while it
  was provisioned; no start by the package: policy-rc.d); the other two are copies of that rootfs,
  made while it is stopped, each given its own machine-id before it boots. netwatchd runs on the
  shipped config with time compressed, its metrics listener on 0.0.0.0:9637, and the fleet keys
  (daemon_config), plus a unit drop-in that lets it reach the LAN (the shipped unit allows only
  localhost); it starts only once the network is set up.
- Prometheus and Alertmanager: the distribution's binaries as plain processes on this host
  (temporary directories, ports chosen here, stopped by pid); their configs are derived from the
  fleet examples in the repository when present (with the test's timings, targets and a webhook
  receiver), else minimal ones. Alertmanager can be stopped and started again on the same port
  and storage. The webhook is an HTTP server thread on 127.0.0.1 that keeps every notification.
- Joining devices: network namespaces with a veth port on the bridge, universal MACs (a
  locally administered one would be a randomized MAC: one summary alert, not one per device),
  that send broadcast frames every host sees (ARP for the gateway, UDP to 10.252.0.255).

Everything is removed at cleanup(), even after a failure: processes by pid, containers, links,
namespaces, the bridge, the temporary directory.
"""
from __future__ import annotations

import http.server
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from tests.conftest import REPO
from tests.support.alertmanager import free_port
from tests.support.config_rule import merge, shipped_config_with
from tests.system.container import (CLEAN_ENV, Container, ContainerError, download_deb_dependencies, log,
                                    new_workdir)

SUBNET_PREFIX = "10.252.0."
GATEWAY = "10.252.0.1"
HOST_ADDRESSES = ("10.252.0.11", "10.252.0.12", "10.252.0.13")
BRIDGE_MAC = "02:fe:00:00:00:01"
METRICS_PORT = 9637
UNIT = "netwatchd.service"
CONFIG = "/etc/netwatchd/netwatchd.yaml"
DROP_IN = "/etc/systemd/system/netwatchd.service.d/fleet.conf"
EXAMPLES = REPO / "examples" / "fleet"
PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
BUS = ("org.netwatchd.Netwatchd1", "/org/netwatchd/Netwatchd1", "org.netwatchd.Netwatchd1.Manager")
# Time compressed (tests/README.md): 0.5 s ticks, no learning period.
FAST = {"tick_interval_sec": 0.5, "alerts": {"learning_period_sec": 0}}
FLEET_ABOUT = ("metrics.enabled", "metrics.listen", "fleet.alertmanager_urls", "fleet.resend_interval_sec",
               "fleet.lifetime_sec.new_device", "fleet.lifetime_sec.connect_rate")
# No proxy, whatever the environment says: every address the tests ask is on this machine.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# A joining device's frames: ARP for the gateway (then UDP to it) and UDP broadcasts, in several
# ticks (the daemons see it keep talking), from inside its namespace.
CHATTER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range(int(sys.argv[1])):
    s.sendto(b"netwatchd fleet test", (sys.argv[2], 9))
    s.sendto(b"netwatchd fleet test", (sys.argv[3], 9))
    time.sleep(0.4)
"""


def sh(script: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise ContainerError(f"`{script}` failed (rc {r.returncode}): {r.stderr.strip()}")
    return r


def daemon_config(alertmanager_url: str) -> str:
    """The shipped config, time compressed, with the keys the fleet tests are about: metrics.enabled
    and metrics.listen (0.0.0.0:9637: Prometheus scrapes every host over the LAN),
    fleet.alertmanager_urls (this test's Alertmanager), fleet.resend_interval_sec
    (1 s: hosts converge on an alert's observers within seconds), fleet.lifetime_sec.new_device (30 s)
    and fleet.lifetime_sec.connect_rate (20 s), so that resolutions happen within the test."""
    metrics = merge(FAST, {"metrics": {"enabled": True, "listen": f"0.0.0.0:{METRICS_PORT}"}})
    overrides = merge(metrics, {"fleet": {"alertmanager_urls": [alertmanager_url], "resend_interval_sec": 1,
                                          "lifetime_sec": {"new_device": 30, "connect_rate": 20}}})
    return yaml.safe_dump(shipped_config_with(overrides, about=FLEET_ABOUT, environ={}))


def wait_for(pred, timeout: float, what: str, interval: float = 0.5):
    """pred()'s first true value, polled until `timeout` seconds have passed (AssertionError then,
    with pred's last value or error)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = last = pred()
        except (OSError, ContainerError, ValueError, KeyError) as e:
            value, last = None, e
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def http_json(url: str, timeout: float = 5):
    with HTTP.open(url, timeout=timeout) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------------ the LAN
class Device:
    """A device that joins the LAN: a namespace whose eth0 (a veth, its peer a bridge port) is
    down, silent, until join()."""

    def __init__(self, lan: "Lan", index: int, mac: str, address: str):
        self.lan, self.mac, self.address = lan, mac, address
        self.netns = f"{lan.bridge}n{index}"
        self.port = f"{lan.bridge}d{index}"

    def create(self) -> None:
        ns = self.netns
        sh(f"set -e; ip netns add {ns}; ip -n {ns} link set lo up; "
           f"ip link add {self.port} type veth peer name eth0 netns {ns}; "
           f"ip link set {self.port} master {self.lan.bridge}; ip link set {self.port} up; "
           f"ip -n {ns} link set eth0 address {self.mac}; ip -n {ns} addr add {self.address}/24 dev eth0")

    def join(self, rounds: int = 5) -> None:
        sh(f"ip -n {self.netns} link set eth0 up")
        self.chatter(rounds)

    def chatter(self, rounds: int = 5) -> None:
        broadcast = SUBNET_PREFIX + "255"
        for target in (GATEWAY, broadcast):  # nothing leaves the LAN: eth0's /24 is its only route
            route = json.loads(sh(f"ip -n {self.netns} -j route get {target}").stdout)[0]
            assert route.get("dev") == "eth0", f"{target} from {self.netns} would go {route}"
        r = subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-I", "-S", "-c", CHATTER,
                            str(rounds), GATEWAY, broadcast], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr

    def remove(self) -> None:
        sh(f"ip link del {self.port} 2>/dev/null; ip netns del {self.netns} 2>/dev/null; true", check=False)


class Lan:
    def __init__(self):
        self.bridge = f"nwfl{secrets.token_hex(2)}"
        self.devices: List[Device] = []
        self.created = False

    def create(self) -> None:
        taken = sh(f"ip -4 -o addr show to {SUBNET_PREFIX}0/24; ip -4 route show to match {GATEWAY}").stdout
        taken = [line for line in taken.splitlines() if SUBNET_PREFIX in line]
        assert not taken, f"{SUBNET_PREFIX}0/24 is already in use on this host (another fleet test?): {taken}"
        self.created = True
        sh(f"set -e; ip link add name {self.bridge} type bridge; ip link set {self.bridge} address {BRIDGE_MAC}; "
           f"ip addr add {GATEWAY}/24 dev {self.bridge}; ip link set {self.bridge} up")

    def check_route(self, address: str) -> None:
        """What this host sends to `address` stays on the bridge (or on this host: the gateway)."""
        route = json.loads(sh(f"ip -j route get {address}").stdout)[0]
        local = address == GATEWAY and route.get("type") == "local"
        assert local or route.get("dev") == self.bridge, f"{address} would go {route}, not to {self.bridge}"

    def add_device(self, mac: str, address: str) -> Device:
        device = Device(self, len(self.devices) + 1, mac, address)
        self.devices.append(device)
        device.create()
        return device

    def cleanup(self) -> None:
        for device in self.devices:
            device.remove()
        if self.created:
            sh(f"ip link del {self.bridge} 2>/dev/null; true", check=False)


# ------------------------------------------------------------------------------ the services
class Webhook:
    """Alertmanager's receiver: keeps (monotonic time, notification) for every POST."""

    def __init__(self):
        self.notifications: List[tuple] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook.lock:
                    hook.notifications.append((time.monotonic(), json.loads(body or b"{}")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, status: str, **labels) -> List[tuple]:
        """(received at, alert) for each alert of `status` in the notifications whose labels hold `labels`."""
        with self.lock:
            notes = list(self.notifications)
        return [(t, a) for t, n in notes for a in n.get("alerts", [])
                if a.get("status") == status and all(a.get("labels", {}).get(k) == v for k, v in labels.items())]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Service:
    """A program on this host, by pid; start() waits for its /-/ready."""

    def __init__(self, name: str, argv: List[str], url: str, workdir: Path):
        self.name, self.argv, self.url = name, argv, url
        self.logfile = workdir / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 60) -> None:
        t0 = time.monotonic()
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=dict(CLEAN_ENV, HOME=str(self.logfile.parent)), start_new_session=True)
        while True:
            try:
                with HTTP.open(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                raise ContainerError(f"{self.name} did not become ready (rc {self.proc.poll()}):\n{self.log_tail()}")
            time.sleep(0.2)
        log(f"{self.name} ready in {time.monotonic() - t0:.1f}s (pid {self.proc.pid}, {self.url})")

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def prometheus_config(targets: List[str], alertmanager: str) -> Dict:
    """The example's netwatchd job and rules (when there), scraping `targets` every second."""
    example = EXAMPLES / "prometheus.yml"
    base = yaml.safe_load(example.read_text()) if example.is_file() else {}
    job = next((j for j in base.get("scrape_configs", []) if j.get("job_name") == "netwatchd"), {})
    job = dict(job, job_name="netwatchd", static_configs=[{"targets": targets}])
    return {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(EXAMPLES / f) for f in base.get("rule_files", []) if (EXAMPLES / f).is_file()],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            "scrape_configs": [job]}


def alertmanager_config(webhook: str) -> Dict:
    """The example's routes, grouping and inhibitions (when there) with timings of seconds; every
    receiver (the example's are placeholders) notifies the webhook, resolved alerts included."""
    example = EXAMPLES / "alertmanager.yml"
    cfg = yaml.safe_load(example.read_text()) if example.is_file() else {
        "route": {"receiver": "webhook", "group_by": ["..."]}, "receivers": [{"name": "webhook"}]}
    cfg.pop("templates", None)
    cfg["global"] = {k: v for k, v in (cfg.get("global") or {}).items() if k == "resolve_timeout"}

    def timings(route: Dict, top: bool) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1h")):
            if top or key in route:
                route[key] = value
        for child in route.get("routes") or []:
            timings(child, False)
    timings(cfg["route"], True)
    cfg["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": webhook, "send_resolved": True}]}
                        for r in cfg.get("receivers") or []]
    return cfg


# ------------------------------------------------------------------------------ the fleet
@dataclass
class Host:
    box: Container
    address: str
    machine_id: str

    def busctl(self, method: str, *args) -> list:
        r = self.box.run(["busctl", "--json=short", "--timeout=30", "call", *BUS, method, *args], timeout=40)
        return json.loads(r.stdout)["data"]

    def devices(self) -> Dict[str, dict]:
        """The daemon's inventory (ListDevices): {mac: device}."""
        return {d["mac"]["data"]: {k: v["data"] for k, v in d.items()} for d in self.busctl("ListDevices")[0]}

    def active(self) -> str:
        return self.box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip()

    def restart(self) -> float:
        t0 = time.monotonic()
        self.box.run(["/bin/sh", "-c", f"systemctl daemon-reload && systemctl restart {UNIT}"], timeout=240)
        return time.monotonic() - t0

    def journal(self, n: int = 80) -> str:
        r = self.box.run(["journalctl", "-b", "--no-pager", "-n", str(n), "-u", UNIT], check=False)
        return r.stdout + r.stderr


class Fleet:
    def __init__(self, deb: Path, tarball: Path, size: int = 3):
        self.deb, self.tarball, self.size = deb, tarball, size
        self.workdir = new_workdir()
        self.lan = Lan()
        self.hosts: List[Host] = []
        self.boxes: List[Container] = []
        self.webhook: Optional[Webhook] = None
        self.prometheus: Optional[Service] = None
        self.alertmanager: Optional[Service] = None
        self.timings: Dict[str, float] = {}
        self.notes: Dict[str, object] = {}  # what one test leaves for a later one

    def _phase(self, name: str, t0: float) -> None:
        self.timings[name] = time.monotonic() - t0
        log(f"fleet: {name} took {self.timings[name]:.1f}s")

    def start(self) -> "Fleet":
        t0 = time.monotonic()
        self.lan.create()
        self.webhook = Webhook()
        am_port, prom_port = free_port(GATEWAY), free_port("127.0.0.1")
        am_url = f"http://{GATEWAY}:{am_port}"
        am_config = self.workdir / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(alertmanager_config(self.webhook.url)))
        (self.workdir / "alertmanager").mkdir()
        self.alertmanager = Service("alertmanager", [
            ALERTMANAGER, f"--config.file={am_config}", f"--storage.path={self.workdir / 'alertmanager'}",
            f"--web.listen-address={GATEWAY}:{am_port}", "--cluster.listen-address="], am_url, self.workdir)
        self.lan.check_route(GATEWAY)
        self.alertmanager.start()
        self._phase("bridge, webhook, Alertmanager", t0)

        config = daemon_config(am_url)
        names = [f"{self.lan.bridge}-{i + 1}" for i in range(self.size)]
        ids = [secrets.token_hex(16) for _ in names]
        t0 = time.monotonic()
        first = Container(self.workdir / names[0], names[0])
        self.boxes.append(first)
        first.create(self.tarball)
        first.copy_in(self.deb.parent, [self.deb.name], "/root")
        (first.root / "var/lib/man-db/auto-update").unlink(missing_ok=True)  # no man-db trigger: seconds
        download_deb_dependencies(first, self.deb.name)
        self._phase("rootfs and provisioning", t0)
        t0 = time.monotonic()
        (first.root / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
        first.boot(own_cgroup=True)  # a private network: apt installs from its cache
        self._install(first, config)
        first.stop()
        self._phase("first boot, apt install, poweroff", t0)

        t0 = time.monotonic()
        for name in names[1:]:
            box = Container(self.workdir / name, name)
            self.boxes.append(box)
            box.create_copy(first)
        for box, machine_id in zip(self.boxes, ids):
            (box.root / "etc/machine-id").write_text(machine_id + "\n")
            sh(f"rm -rf {box.root}/var/log/journal/* {box.root}/var/lib/netwatchd/*", check=False)
        self._phase(f"{self.size - 1} copies of the rootfs", t0)
        t0 = time.monotonic()
        for box, address, machine_id in zip(self.boxes, HOST_ADDRESSES, ids):
            box.boot(network_bridge=self.lan.bridge, own_cgroup=True)
            self._network(box, address)
            self.hosts.append(Host(box, address, machine_id))
        self._phase("boots and network", t0)
        t0 = time.monotonic()
        with ThreadPoolExecutor(len(self.hosts)) as pool:  # bcc compiles on every host at once
            for started in [pool.submit(h.restart) for h in self.hosts]:
                started.result()
        self._phase("netwatchd started on every host", t0)

        t0 = time.monotonic()
        for h in self.hosts:
            self.lan.check_route(h.address)
        prom_config = self.workdir / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump(prometheus_config(
            [f"{h.address}:{METRICS_PORT}" for h in self.hosts], f"{GATEWAY}:{am_port}")))
        self.prometheus = Service("prometheus", [
            PROMETHEUS, f"--config.file={prom_config}", f"--storage.tsdb.path={self.workdir / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{prom_port}"], f"http://127.0.0.1:{prom_port}", self.workdir)
        self.prometheus.start()
        self._phase("Prometheus", t0)
        return self

    def _install(self, box: Container, config: str) -> None:
        """apt install of the package in the booted container; the package does not start the
        service (policy-rc.d) and it is disabled: it starts once this host's network is up."""
        box.write_file("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")
        box.run(["chmod", "755", "/usr/sbin/policy-rc.d"])
        t0 = time.monotonic()
        r = box.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                     f"/root/{self.deb.name}"], timeout=600, check=False)
        assert r.returncode == 0, f"apt install failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
        log(f"apt install /root/{self.deb.name}: {time.monotonic() - t0:.1f}s")
        box.run(["rm", "/usr/sbin/policy-rc.d"])
        box.run(["systemctl", "disable", "--quiet", UNIT])
        box.write_file(CONFIG, config)
        box.run(["mkdir", "-p", os.path.dirname(DROP_IN)])
        box.write_file(DROP_IN, f"[Service]\nIPAddressAllow={SUBNET_PREFIX}0/24\n")
        r = box.run(["netwatchd", "--check-config", CONFIG], check=False)
        assert r.returncode == 0, f"netwatchd --check-config rejects the fleet config:\n{r.stdout}{r.stderr}"

    def _network(self, box: Container, address: str) -> None:
        """host0 up with `address`, the default route via the bridge (from this host, in the
        container's network namespace)."""
        ip = f"nsenter -t {box.pid1} -n ip"
        sh(f"set -e; {ip} link set host0 up; {ip} addr add {address}/24 dev host0; "
           f"{ip} route add default via {GATEWAY}")

    # -- readers ---------------------------------------------------------------------------
    def am_alerts(self, **labels) -> List[dict]:
        """Alertmanager's active alerts whose labels equal `labels` (GET /api/v2/alerts)."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in labels.items()])
        return http_json(f"{self.alertmanager.url}/api/v2/alerts?{query}")

    def prom(self, expr: str) -> List[dict]:
        """An instant query's vector: [{"metric": labels, "value": [time, "value"]}]."""
        answer = http_json(f"{self.prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def dump(self) -> None:
        for h in self.hosts:
            if h.box.pid1 is not None:
                print(f"---- {h.box.name} ({h.address}, machine-id {h.machine_id}): journalctl -u {UNIT} -n 80 ----")
                print(h.journal())
        for service in (self.alertmanager, self.prometheus):
            if service is not None:
                print(f"---- {service.name} (last 30 lines) ----\n{service.log_tail()}")

    def cleanup(self) -> None:
        errors = []
        steps = [s.stop for s in (self.prometheus, self.alertmanager, self.webhook) if s is not None]
        steps += [b.destroy for b in self.boxes] + [self.lan.cleanup]
        for step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - every step runs, then the errors are reported
                errors.append(f"{step.__qualname__}: {e}")
        if all(b.nspawn is None or b.nspawn.poll() is not None for b in self.boxes):
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.workdir)], check=False)
        assert not errors, errors
