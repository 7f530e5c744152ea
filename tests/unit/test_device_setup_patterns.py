"""The daemon's device wiring keeps known patterns across a restart: what the classifier reported
is in patterns.sqlite3 after a stop, and handed to the next probe before any interface is
attached (so nothing the kernel sees then is first-seen again)."""
from netwatchd.config import DaemonConfig, DevicesConfig
from netwatchd.device_setup import start_devices, stop_devices
from netwatchd.store.patterns import Pattern
from tests.unit.test_device_monitor import EV_PATTERN, FakeProbe, event


class RecordingProbe(FakeProbe):
    def __init__(self):
        super().__init__()
        self.calls, self.remembered = [], []

    def start(self):
        self.calls.append("start")

    def stop(self):
        self.calls.append("stop")

    def remember_patterns(self, patterns):
        self.calls.append(f"remember {len(patterns)} with {len(self.links)} attached")
        self.remembered = list(patterns)
        return len(patterns)


def test_patterns_reported_before_a_stop_are_loaded_into_the_next_probe_before_attaching(tmp_path):
    cfg = DaemonConfig(state_directory=str(tmp_path), devices=DevicesConfig(interfaces=("nwdoesnotexist0",)))
    first = RecordingProbe()
    monitor = start_devices(cfg, probe=first)
    mac = "00:00:0c:12:34:56"
    first.raw = [event(EV_PATTERN, mac, transport=6, daddr="10.77.0.1", dport=443),
                 event(EV_PATTERN, mac, transport=17, family=10, daddr="fd00::1", dport=53)]
    stop_devices(monitor)  # drains what arrived, saves, closes
    assert first.calls == ["start", "remember 0 with 0 attached", "stop"]
    second = RecordingProbe()
    stop_devices(start_devices(cfg, probe=second))
    assert second.calls[:2] == ["start", "remember 2 with 0 attached"]
    assert sorted(second.remembered, key=lambda p: p.port) == [Pattern(mac, "fd00::1", 53, 17),
                                                               Pattern(mac, "10.77.0.1", 443, 6)]
