"""The YAML configuration, turned once into typed, validated objects.

Every key has a default here; config/netwatchd.yaml documents the same defaults and a unit test
keeps the two equal. Unknown keys and bad values raise ConfigError naming the file, the key path
and what is wrong, so `netwatchd --check-config FILE` can print one useful line.

Every key applies on `systemctl reload` except the restart-only ones, declared here once as
field metadata {"restart": True}: they size kernel maps, pick what is compiled or attached,
open listeners or choose the state directory, and keep their running value until a restart.
`restart_only_changes` names the ones a reload changed (Daemon.reload logs them); man/generate.py
refuses a config/netwatchd.yaml whose comments say "Restart to change." of other keys than these.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, List, Mapping

import yaml

from netwatchd.allowed_hosts import parse_allowed_host
from netwatchd.beacon_allow import parse_command, parse_destination, parse_name
# ConfigError and split_listen are the config's names for its users too (netwatchd.config.ConfigError)
from netwatchd.config_values import ConfigError, IntRange, convert_value, split_listen, type_name  # noqa: F401
from netwatchd.dns_domains import parse_allow_domain
from netwatchd.fleet_settings import check_identity, file_problem, parse_alertmanager_url
from netwatchd.web_settings import WebConfig, users_problem
from netwatchd.interfaces import SYS_NET, Interface, not_ethernet, read_interfaces

DEFAULT_CONFIG_PATH = "/etc/netwatchd/netwatchd.yaml"
MAX_SUMMARY_WINDOW_SEC = 3600


@dataclass(frozen=True)
class ConnectionsConfig:
    # Longest window Summary accepts; per-second counts are kept this long.
    max_window_sec: int = field(default=3600, metadata={"range": IntRange(1, MAX_SUMMARY_WINDOW_SEC)})
    # Recent per-connect records kept for ListConnections (newest first).
    recent_records: int = field(default=10000, metadata={"range": IntRange(1, 1_000_000)})
    # Send one ring-buffer record per connect (ListConnections). Counts never need them.
    record_events: bool = field(default=True, metadata={"restart": True})
    # Count and record unconnected UDP sends (sendto/sendmsg with an address) as their own kind.
    trace_udp_sends: bool = True
    # Processes tracked at once by the kernel's per-process counters.
    max_processes: int = field(default=16384, metadata={"range": IntRange(64, 1_048_576), "restart": True})
    # TCP handshakes followed at once after a non-blocking connect() returned; beyond, their
    # outcome is counted as unknown (HandshakesUntracked).
    max_handshakes: int = field(default=16384, metadata={"range": IntRange(64, 1_048_576), "restart": True})
    # Ring buffer between kernel and daemon, in KiB: a power of two, at least one page.
    ring_buffer_kib: int = field(default=4096, metadata={"range": IntRange(4, 262144), "power_of_two": True,
                                                         "restart": True})
    # How often the ring buffer is drained, in milliseconds.
    poll_interval_ms: int = field(default=100, metadata={"range": IntRange(10, 10000)})


@dataclass(frozen=True)
class DevicesConfig:
    # Watch the devices around the host with a TC classifier.
    enabled: bool = field(default=True, metadata={"restart": True})
    # "auto" (every up Ethernet interface but loopback and bridge/bond masters, re-evaluated as
    # interfaces come and go) or a list of interface names.
    interfaces: Any = field(default="auto", metadata={"interfaces": True})
    # Devices known at once, in the kernel's map and in the inventory. Both make room for a new
    # MAC: the kernel's by evicting the MAC seen least recently, the inventory unconfirmed
    # devices first (a MAC that sent one frame), then the longest idle; what is evicted is
    # counted (`netwatchctl status`), so a flood of forged MACs never blinds the watcher.
    max_devices: int = field(default=4096, metadata={"range": IntRange(16, 1_048_576), "restart": True})
    # Time setting: a device idle this long is forgotten (new again if it comes back).
    expire_after_sec: int = field(default=30 * 86400, metadata={"range": IntRange(60, 10 * 366 * 86400)})
    # Time setting: ...and one that never kept talking (frames in two ticks at least), sooner.
    unconfirmed_expire_sec: int = field(default=86400, metadata={"range": IntRange(60, 10 * 366 * 86400)})
    # First-seen (device, peer, port, transport) patterns remembered by the kernel's LRU.
    max_patterns: int = field(default=65536, metadata={"range": IntRange(256, 4_194_304), "restart": True})
    # Ring buffer for address bindings, patterns and payload snippets, KiB, a power of two.
    ring_buffer_kib: int = field(default=1024, metadata={"range": IntRange(4, 262144), "power_of_two": True,
                                                         "restart": True})
    # DNS/DHCP/HTTP/TLS snippets one device may send a second (per CPU); beyond, they are counted
    # as throttled: no device can fill the ring (a snippet is a kilobyte) and hide the others'.
    snippet_budget_per_sec: int = field(default=256, metadata={"range": IntRange(8, 1_000_000), "restart": True})
    # Privacy: which application metadata is captured. Only metadata is kept, never payload.
    capture_dns: bool = True
    capture_http: bool = True
    capture_tls: bool = True
    capture_dhcp: bool = True
    # Seconds between batched writes of the inventory to SQLite (what a SIGKILL can lose).
    store_interval_sec: float = field(default=5.0, metadata={"float_range": (0.1, 3600.0)})
    # How the classifier attaches: TCX links (kernel >= 6.6), a clsact qdisc with direct-action
    # filters (any kernel), or "auto" = TCX where the kernel has it, else clsact.
    tc_attach: str = field(default="auto", metadata={"choices": ("auto", "tcx", "tc"), "restart": True})

    def check(self):
        if self.unconfirmed_expire_sec > self.expire_after_sec:
            return "unconfirmed_expire_sec", (f"{self.unconfirmed_expire_sec} is above expire_after_sec "
                                              f"{self.expire_after_sec}: unconfirmed devices go first, not last")
        return None


@dataclass(frozen=True)
class AlertsConfig:
    # Raise alerts at all (the inventory and counts work either way).
    enabled: bool = True
    # After the very first start, new devices are learnt without alerts for this long, so
    # installing on a busy LAN does not alert for every device already there.
    learning_period_sec: int = field(default=3600, metadata={"range": IntRange(0, 30 * 86400)})
    # Ticks a device or command must be observed before its rate may alert.
    warmup_ticks: int = field(default=300, metadata={"range": IntRange(1, 1_000_000)})
    # Weight of each new tick in the rolling mean and variance (EWMA).
    ewma_alpha: float = field(default=0.02, metadata={"float_range": (0.0001, 1.0)})
    # How many standard deviations above its normal a rate must be to be anomalous.
    z_threshold: float = field(default=6.0, metadata={"float_range": (1.0, 1000.0)})
    # Floor on the standard deviation used for scoring, so a flat baseline is not over-sensitive.
    min_stddev: float = field(default=1.0, metadata={"float_range": (0.01, 1_000_000.0)})
    # Anomalous ticks in a row before an alert.
    consecutive_ticks: int = field(default=2, metadata={"range": IntRange(1, 1000)})
    # One alert per (kind, subject) within this many seconds.
    cooldown_sec: int = field(default=600, metadata={"range": IntRange(0, 7 * 86400)})
    # Connection attempts per tick below which a device never alerts (its SYNs).
    device_connect_floor: int = field(default=20, metadata={"range": IntRange(1, 10_000_000)})
    # connect() calls per tick below which a command never alerts.
    process_connect_floor: int = field(default=50, metadata={"range": IntRange(1, 10_000_000)})
    # Distinct new ports or new peers per tick below which a device's fan-out never alerts.
    fan_out_floor: int = field(default=20, metadata={"range": IntRange(1, 10_000_000)})
    # A device or command still warming up alerts only above this many attempts per tick.
    cold_connect_rate: int = field(default=1000, metadata={"range": IntRange(1, 10_000_000)})
    # New devices with randomized (locally administered) MACs: alert like any device ("alert"),
    # never ("ignore"), or at most once per cooldown for all of them together ("once").
    randomized_macs: str = field(default="once", metadata={"choices": ("alert", "ignore", "once")})
    # MAC flooding (macof, a CAM-table overflow; netwatchd/alerting/mac_flood.py): this many new
    # MACs on one interface within mac_flood_window_ticks is a flood -- one mac_flood alert with
    # the count, and none of its MACs a new_device of its own (unless it keeps talking).
    mac_flood_new_macs: int = field(default=64, metadata={"range": IntRange(8, 1_000_000)})
    mac_flood_window_ticks: int = field(default=10, metadata={"range": IntRange(1, 3600)})
    # Alert on new DHCP servers and their changes (alerting/dhcp_servers.py); false: only learnt.
    dhcp_servers: bool = True
    # Time setting: seconds between saves of what alerting learnt (baselines, cooldowns, recent
    # alerts) and writes of the newest ticks to the replay history: what a SIGKILL can lose.
    state_save_interval_sec: float = field(default=5.0, metadata={"float_range": (0.1, 3600.0)})
    # Per-tick history kept for `netwatchctl replay`, in ticks.
    history_ticks: int = field(default=86400, metadata={"range": IntRange(0, 10_000_000)})
    # ...and at most this many MiB of them: a busy host's ticks (tens of thousands of connection
    # starts each) are MBs apiece, and a day of those would fill a disk.
    history_max_mb: int = field(default=256, metadata={"range": IntRange(1, 1_048_576)})
    # Recent alerts kept for ListAlerts.
    max_alerts: int = field(default=1000, metadata={"range": IntRange(1, 1_000_000)})
    # Bursts (netwatchd/alerting/burst.py): one tick this many standard deviations above normal
    # AND at least the kind's burst count alerts at once, without waiting for consecutive_ticks.
    burst_score: float = field(default=30.0, metadata={"float_range": (1.0, 1_000_000.0)})
    # Burst counts per kind: first-seen ports or peers, SYNs of a device, connect() of a command.
    burst_fan_out: int = field(default=100, metadata={"range": IntRange(1, 10_000_000)})
    burst_device_connects: int = field(default=500, metadata={"range": IntRange(1, 10_000_000)})
    burst_process_connects: int = field(default=1000, metadata={"range": IntRange(1, 10_000_000)})
    # Seasonality (netwatchd/alerting/seasonality.py): a rate learnt per slot of a period (an
    # hour of the week by default) excuses what is normal for that slot, e.g. a nightly backup.
    seasonality: bool = True
    seasonality_period_sec: int = field(default=7 * 86400, metadata={"range": IntRange(2, 366 * 86400)})
    seasonality_slot_sec: int = field(default=3600, metadata={"range": IntRange(1, 86400)})
    # Weight of the newest period in a slot's learnt rate (EWMA over periods).
    seasonality_weight: float = field(default=0.3, metadata={"float_range": (0.01, 1.0)})
    # Keys (devices, commands) with a seasonal profile; the ones that alerted first get one.
    seasonality_max_keys: int = field(default=1024, metadata={"range": IntRange(16, 1_000_000)})
    # Bounds on what devices and local users can add (issue 21; netwatchd/alerting/baseline.py):
    # a device or command not observed for this long while netwatchd watched loses its baseline
    # (and seasonal profile); longer than seasonality_period_sec, so a weekly job keeps its own.
    baseline_idle_sec: int = field(default=8 * 86400, metadata={"range": IntRange(600, 366 * 86400)})
    # Devices (and commands) with a baseline, per table; beyond, the longest idle go first, and
    # new keys beyond what that frees in one tick wait (the largest counts are taken first).
    max_baseline_keys: int = field(default=100_000, metadata={"range": IntRange(256, 10_000_000)})
    # Slow scans (netwatchd/alerting/scan_windows.py): within a sliding window of this many seconds,
    # a device probing this many distinct ports of one host (port_scan) or local hosts on one port
    # (host_scan) is one alert. Zeek's numbers.
    scan_window_sec: int = field(default=300, metadata={"range": IntRange(10, 3600)})
    scan_ports_per_host: int = field(default=15, metadata={"range": IntRange(2, 65536)})
    scan_hosts_per_port: int = field(default=25, metadata={"range": IntRange(2, 1_000_000)})
    # DNS anomalies per device within a window (alerting/dns_anomalies.py; config/netwatchd.yaml says more)
    dns_window_sec: int = field(default=60, metadata={"range": IntRange(6, 86400)})
    dns_nxdomain_answers: int = field(default=100, metadata={"range": IntRange(1, 10_000_000)})
    dns_tunnel_names: int = field(default=30, metadata={"range": IntRange(1, 10_000_000)})
    dns_allow_domains: tuple = field(default=("arpa", "local"), metadata={"allow": parse_allow_domain})

    @property
    def history_max_bytes(self) -> int:
        return self.history_max_mb << 20

    def check(self):
        """Settings that are wrong together: (key, problem) or None."""
        if self.burst_score < self.z_threshold:
            return "burst_score", (f"{self.burst_score:g} is below z_threshold {self.z_threshold:g}: "
                                   "a burst must be further from normal than an anomaly")
        if self.seasonality_period_sec % self.seasonality_slot_sec:
            return "seasonality_slot_sec", (f"{self.seasonality_slot_sec} does not divide "
                                            f"seasonality_period_sec {self.seasonality_period_sec}")
        if self.seasonality_period_sec // self.seasonality_slot_sec > 10_000:
            return "seasonality_slot_sec", (f"{self.seasonality_slot_sec} makes "
                                            f"{self.seasonality_period_sec // self.seasonality_slot_sec} slots "
                                            "per period (at most 10000)")
        return None


@dataclass(frozen=True)
class BeaconsConfig:
    # Look for beacons: (command or device, destination) pairs whose connections start on a timer.
    enabled: bool = True
    # Time setting: starts older than this are forgotten; a pair idle this long is dropped.
    horizon_sec: int = field(default=3600, metadata={"range": IntRange(60, 7 * 86400)})
    # Time setting: a typical interval shorter than this is a poll loop or a stream, not a beacon.
    min_period_sec: float = field(default=1.0, metadata={"float_range": (0.01, 86400.0)})
    # Connections within the horizon before a pair is scored (its intervals are one fewer).
    min_connections: int = field(default=11, metadata={"range": IntRange(5, 33)})
    # Regularity score (0..1) at which a pair is a beacon (twice in a row).
    score_threshold: float = field(default=0.85, metadata={"float_range": (0.5, 1.0)})
    # Pairs tracked at once in user space; beyond, the least active are dropped (counted).
    max_pairs: int = field(default=100000, metadata={"range": IntRange(16, 10_000_000)})
    # (device, peer, port) pairs the kernel keeps the last connection starts of.
    max_device_pairs: int = field(default=16384, metadata={"range": IntRange(256, 4_194_304), "restart": True})
    # Never a beacon: destinations, DNS/TLS names and commands (netwatchd.beacon_allow).
    # the local resolver, the LAN's resolvers (DNS to private, ULA and link-local addresses: a
    # device's periodic lookups are not call-home) and NTP
    allow_destinations: tuple = field(default=("127.0.0.0/8:53", "[::1]:53", "10.0.0.0/8:53", "172.16.0.0/12:53", "192.168.0.0/16:53", "[fc00::/7]:53", "[fe80::/10]:53", "*:123"),
                                      metadata={"allow": parse_destination})
    allow_names: tuple = field(default=("*.debian.org", "*.ubuntu.com", "*.pool.ntp.org"),
                               metadata={"allow": parse_name})
    allow_commands: tuple = field(default=("systemd-resolve", "systemd-timesyn", "chronyd", "ntpd"),
                                  metadata={"allow": parse_command})
    # Let allow_names allow pairs. Names come from DNS answers seen on the wire, which a device
    # on the LAN (or whoever answers its DNS) chooses: off, allow_names never allow a pair (the
    # name is still shown in the alert).
    trust_dns_names: bool = False


@dataclass(frozen=True)
class MetricsConfig:
    # Serve Prometheus metrics (/metrics) and the read-only JSON API (/api/...) over HTTP.
    enabled: bool = field(default=False, metadata={"restart": True})
    # host:port of the one HTTP listener; an IP literal ([::1]:9637 for IPv6).
    listen: str = field(default="127.0.0.1:9637", metadata={"listen": True, "restart": True})
    # Commands exported with their own label; the rest are summed under command="other".
    top_commands: int = field(default=20, metadata={"range": IntRange(1, 1000)})
    # Host names, besides localhost, that requests may give in their Host header (an IP address
    # always may); any other name is refused (403), so a web page cannot reach the listener by
    # DNS rebinding (netwatchd.api.http_guard).
    allowed_hosts: tuple = field(default=(), metadata={"allow": parse_allowed_host})


@dataclass(frozen=True)
class EbpfServerApiConfig:
    # Serve ebpf-server's HTTP API (/, /health, /api/connection-summary, /api/list-connections)
    # on a listener of its own, so its users' scripts run unchanged.
    enabled: bool = field(default=False, metadata={"restart": True})
    # host:port of that listener. ebpf-server's port on loopback; "0.0.0.0:8080" is its ":8080".
    listen: str = field(default="127.0.0.1:8080", metadata={"listen": True, "restart": True})
    # As metrics.allowed_hosts, for this listener.
    allowed_hosts: tuple = field(default=(), metadata={"allow": parse_allowed_host})


def _lifetime(seconds: int):
    return field(default=seconds, metadata={"range": IntRange(1, 30 * 86400)})


@dataclass(frozen=True)
class AlertLifetimes:
    """Time setting: how long an alert of each kind stays firing in Alertmanager after it was raised
    (a raise of the same alert while it fires starts its lifetime again); then it is resolved.
    One field per alert kind (a unit test keeps them equal to netwatchd.alerting.alerts.KINDS)."""
    new_device: int = _lifetime(3600)
    address_change: int = _lifetime(3600)
    connect_rate: int = _lifetime(1200)
    fan_out: int = _lifetime(1200)
    beacon: int = _lifetime(7200)
    mac_flood: int = _lifetime(1200)
    dhcp_server_new: int = _lifetime(3600)
    dhcp_server_change: int = _lifetime(3600)
    dns_nxdomain_burst: int = _lifetime(1200)
    dns_tunnel: int = _lifetime(3600)
    port_scan: int = _lifetime(1200)
    host_scan: int = _lifetime(1200)
    address_sweep: int = _lifetime(1200)

    def of(self, kind: str) -> int:
        return getattr(self, kind, 3600)


@dataclass(frozen=True)
class FleetConfig:
    # Alertmanager base URLs (API v2); every alert goes to every one, as Prometheus sends (an HA
    # cluster dedups). Empty: off.
    alertmanager_urls: tuple = field(default=(), metadata={"allow": parse_alertmanager_url})
    # The L2 segment's id in alert labels; "" = computed alike by every host on the segment.
    segment: str = ""
    # This host's id in labels; "" = /etc/machine-id.
    host_id: str = ""
    # Base of generatorURL; "" = http://<hostname>:<metrics port>.
    external_url: str = ""
    # Time setting: seconds between re-sends of the firing alerts (and retries of what failed).
    resend_interval_sec: float = field(default=60.0, metadata={"float_range": (0.1, 3600.0)})
    # Seconds one request to one Alertmanager may take.
    timeout_sec: float = field(default=10.0, metadata={"float_range": (0.1, 300.0)})
    # Alerts the spool holds (firing, or resolved and not yet delivered); beyond, the oldest
    # resolved go first, then the oldest firing, counted.
    spool_max_alerts: int = field(default=10000, metadata={"range": IntRange(10, 1_000_000)})
    # TLS: a CA file instead of the system's; basic auth or a bearer token, from files.
    ca_file: str = ""
    username: str = ""
    password_file: str = ""
    bearer_token_file: str = ""
    lifetime_sec: AlertLifetimes = field(default_factory=AlertLifetimes)

    @property
    def enabled(self) -> bool:
        return bool(self.alertmanager_urls)

    @property
    def urls(self) -> tuple:
        """alertmanager_urls as requests use them: trimmed, no trailing slash."""
        return tuple(parse_alertmanager_url(url) for url in self.alertmanager_urls)

    @property
    def external_base(self) -> str:
        return parse_alertmanager_url(self.external_url) if self.external_url else ""

    def check(self):
        for key in ("segment", "host_id"):
            problem = check_identity(getattr(self, key))
            if problem:
                return key, problem
        if self.external_url:
            try:
                parse_alertmanager_url(self.external_url)
            except ValueError as e:
                return "external_url", str(e).replace("an Alertmanager base URL", "a base URL")
        if self.password_file and self.bearer_token_file:
            return "bearer_token_file", "set either password_file (basic auth) or bearer_token_file, not both"
        if self.password_file and not self.username:
            return "username", "password_file is set: basic auth needs a username"
        if self.username and not self.password_file:
            return "password_file", "username is set: basic auth needs a password_file"
        return None


@dataclass(frozen=True)
class DaemonConfig:
    # Seconds between reads of the kernel counters (the resolution of Summary windows).
    tick_interval_sec: float = field(default=1.0, metadata={"float_range": (0.05, 60.0)})
    # Log level: debug, info, notice, warning, error.
    log_level: str = field(default="info", metadata={"choices": ("debug", "info", "notice", "warning", "error")})
    # Where state lives (the device inventory); "" = $STATE_DIRECTORY (set by systemd's
    # StateDirectory=), else /var/lib/netwatchd.
    state_directory: str = field(default="", metadata={"restart": True})
    connections: ConnectionsConfig = field(default_factory=ConnectionsConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    beacons: BeaconsConfig = field(default_factory=BeaconsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ebpf_server_api: EbpfServerApiConfig = field(default_factory=EbpfServerApiConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    web: WebConfig = field(default_factory=WebConfig)


RESTART = "restart"  # field metadata: the key takes effect on restart only


def restart_only_keys(cls: type = DaemonConfig, prefix: str = "") -> List[str]:
    """The dotted paths of the restart-only keys (metadata {"restart": True}), in file order."""
    keys: List[str] = []
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            keys += restart_only_keys(f.default_factory, path)
        elif f.metadata.get(RESTART):
            keys.append(path)
    return keys


def restart_only_changes(old: DaemonConfig, new: DaemonConfig) -> List[str]:
    """The restart-only keys whose value differs between `old` (what runs) and `new`, dotted,
    in file order."""
    return [path for path in restart_only_keys() if _value(old, path) != _value(new, path)]


def _value(cfg: Any, path: str) -> Any:
    for name in path.split("."):
        cfg = getattr(cfg, name)
    return cfg


def load_config(path: str, sys_net: str = SYS_NET) -> DaemonConfig:
    """Read and validate a YAML file, and check it against this host's interfaces (what the
    daemon's start and reload and --check-config use); raises ConfigError with the path."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from None
    cfg = parse_config(text, path)
    check_interfaces(cfg, path, read_interfaces(sys_net))
    check_fleet_files(cfg, path)
    return cfg


def check_fleet_files(cfg: "DaemonConfig", source: str) -> None:
    """The fleet's CA and secret files, and the web UI's auth files, can be read now (at start,
    reload, --check-config)."""
    for key, kind in (("fleet.ca_file", "ca"), ("fleet.password_file", "secret"),
                      ("fleet.bearer_token_file", "secret"), ("web.basic_auth_file", "users"),
                      ("web.token_file", "secret")):
        section, name = key.split(".")
        path = getattr(getattr(cfg, section), name)
        problem = (users_problem(path) if kind == "users" else file_problem(kind, path)) if path else ""
        if problem:
            raise ConfigError(source, key, problem)


def check_interfaces(cfg: "DaemonConfig", source: str, available: Mapping[str, Interface]) -> None:
    """devices.interfaces against the interfaces there now: a listed one that exists and carries
    no Ethernet headers (tun, wg, ipip, sit, gre, lo...) is an error; one that does not exist is
    not (it may come later; the watcher refuses it then if it is not Ethernet)."""
    if cfg.devices.interfaces == "auto":
        return
    for n, name in enumerate(cfg.devices.interfaces):
        problem = not_ethernet(available[name]) if name in available else None
        if problem:
            raise ConfigError(source, f"devices.interfaces[{n}]", problem)


def parse_config(text: str, source: str = "<string>") -> DaemonConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(source, "", f"malformed YAML: {where}{problem}") from None
    if data is None:
        data = {}
    cfg = _build(DaemonConfig, data, source, "")
    listeners = [(key, getattr(cfg, key).listen) for key in ("metrics", "ebpf_server_api", "web")
                 if getattr(cfg, key).enabled]
    for n, (key, listen) in enumerate(listeners):
        for other, same in listeners[:n]:
            if same == listen:
                raise ConfigError(source, f"{key}.listen", f"{listen} is also {other}.listen; each listener needs "
                                                           "its own port")
    return cfg


def _build(cls: type, data: Any, source: str, prefix: str):
    if not isinstance(data, Mapping):
        raise ConfigError(source, prefix or "(top level)", f"expected a mapping, got {type_name(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            path = _join(prefix, str(key))
            known = ", ".join(sorted(fields))
            raise ConfigError(source, path, f"unknown key (known keys here: {known})")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        path = _join(prefix, name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):  # a section whose keys are all commented out is empty, not an error
            values[name] = _build(type(default), {} if data[name] is None else data[name], source, path)
        else:
            values[name] = convert_value(f, default, data[name], source, path)
    built = cls(**values)
    wrong = built.check() if hasattr(built, "check") else None
    if wrong:  # settings valid one by one but not together
        raise ConfigError(source, _join(prefix, wrong[0]), wrong[1])
    return built


def state_directory(cfg: "DaemonConfig") -> str:
    return cfg.state_directory or os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/netwatchd"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def as_dict(config: DaemonConfig) -> dict:
    """Plain nested dict of a config, for logging and for comparing with the documented file."""
    return dataclasses.asdict(config)
