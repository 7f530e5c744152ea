"""DHCP servers (netwatchd/alerting/dhcp_servers.py) through the AlertingCore the daemon and
replay both run: learnt during the learning period, one dhcp_server_new for a server seen after
it, one dhcp_server_change when a known one hands out another router or DNS, bounded under a
flood of forged servers, kept across a restart, and the same in a replay."""
import numpy as np
import pytest

from netwatchd.alerting.core import AlertingCore
from netwatchd.alerting.dhcp_servers import DhcpServers
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.replay import replay
from netwatchd.config import AlertsConfig, BeaconsConfig

SEC = 1_000_000
T0 = 1_700_000_000 * SEC
LEGIT, ROGUE = "52:54:00:00:00:01", "52:54:00:00:00:66"
CFG = AlertsConfig(learning_period_sec=60, cooldown_sec=600)  # shipped but for the learning time


def reply(mac, ip="10.0.0.1", router="10.0.0.1", dns=("10.0.0.1",), interface="veth-a", vlan=0, kind="OFFER"):
    return {"server_mac": mac, "server_ip": ip, "interface": interface, "vlan": vlan, "router": router,
            "dns": list(dns), "message_type": kind}


def tick(core, second, *replies):
    return core.tick(TickObservation(time_usec=T0 + second * SEC, dhcp_replies=list(replies)))


@pytest.fixture
def core():
    return AlertingCore(CFG, BeaconsConfig(), first_start_usec=T0, now_usec=T0)


def learnt(core):
    """The core with LEGIT learnt on veth-a during the learning period."""
    assert tick(core, 1, reply(LEGIT)) == []
    return core


def test_a_server_seen_while_learning_is_learnt_without_an_alert(core):
    assert tick(core, 1, reply(LEGIT)) == [] and tick(core, 59, reply(ROGUE, interface="veth-b")) == []
    assert tick(core, 61, reply(LEGIT), reply(ROGUE, interface="veth-b")) == []


def test_a_new_server_after_learning_is_one_alert_with_what_it_offers(core):
    learnt(core)
    offer = reply(ROGUE, ip="10.0.0.66", router="10.0.0.66", dns=("10.0.0.66", "9.9.9.9"), interface="veth-b")
    (alert,) = tick(core, 61, offer, dict(offer, message_type="ACK"))
    assert (alert.kind, alert.subject, alert.priority) == ("dhcp_server_new", f"device:{ROGUE}", 4)
    assert alert.details == {"mac": ROGUE, "ip": "10.0.0.66", "interface": "veth-b", "vlan": "0",
                             "router": "10.0.0.66", "dns": "10.0.0.66 9.9.9.9"}
    assert "10.0.0.66" in alert.message and "9.9.9.9" in alert.message
    assert tick(core, 62, offer) == [] and tick(core, 62 + 700, offer) == []  # known now, not new again


def test_the_same_server_on_another_segment_is_new_there(core):
    learnt(core)
    assert [a.kind for a in tick(core, 61, reply(LEGIT, interface="veth-c"))] == ["dhcp_server_new"]
    assert [a.kind for a in tick(core, 62, reply(LEGIT, vlan=10))] == []  # the same subject, cooling down


def test_a_known_server_changing_its_router_or_dns_is_one_change_alert(core):
    learnt(core)
    (alert,) = tick(core, 61, reply(LEGIT, router="10.0.0.99"))
    assert (alert.kind, alert.subject) == ("dhcp_server_change", f"device:{LEGIT}")
    assert alert.details == {"mac": LEGIT, "ip": "10.0.0.1", "interface": "veth-a", "vlan": "0",
                             "router": "10.0.0.99", "dns": "10.0.0.1", "old_router": "10.0.0.1",
                             "old_dns": "10.0.0.1"}
    assert tick(core, 62, reply(LEGIT, router="10.0.0.99")) == []  # the new value is known now
    assert tick(core, 63, reply(LEGIT, router="10.0.0.99", dns=("8.8.8.8",))) == []  # cooling down: learnt
    (again,) = tick(core, 63 + 600, reply(LEGIT, router="10.0.0.99", dns=("1.1.1.1",)))
    assert (again.details["old_dns"], again.details["dns"]) == ("8.8.8.8", "1.1.1.1")


def test_an_option_left_out_is_no_change(core):
    learnt(core)
    assert tick(core, 61, reply(LEGIT, router="", dns=(), kind="ACK")) == []


def test_alerts_off_still_learn():
    core = AlertingCore(AlertsConfig(learning_period_sec=0, dhcp_servers=False), BeaconsConfig(), T0, T0)
    assert tick(core, 1, reply(ROGUE)) == []
    core.reconfigure(AlertsConfig(learning_period_sec=0))
    assert tick(core, 2, reply(ROGUE)) == []
    assert [a.kind for a in tick(core, 3, reply(LEGIT))] == ["dhcp_server_new"]


def test_a_flood_of_forged_servers_is_four_alerts_per_interface_per_cooldown(core):
    learnt(core)
    forged = [reply(f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}", interface="veth-x") for n in range(300)]
    alerts = [a for second in range(61, 61 + 300, 30) for a in tick(core, second, *forged[:64])]
    alerts += tick(core, 400, reply(ROGUE, interface="veth-x"))  # a real rogue hidden in the flood...
    assert len(alerts) == 4 and {a.kind for a in alerts} == {"dhcp_server_new"}
    assert core.dropped()["dhcp_servers_unreported"] == 10 * 60 + 1
    assert [a.kind for a in tick(core, 400, reply(LEGIT, router="10.0.0.9", interface="veth-a"))] == [
        "dhcp_server_change"]  # ...another interface has its own budget
    (late,) = tick(core, 61 + 600, reply(ROGUE, interface="veth-x"))  # ...is reported once the budget is back
    assert late.subject == f"device:{ROGUE}"


def test_at_most_256_servers_the_least_recently_seen_forgotten_first():
    servers = DhcpServers()
    ids = AlertingCore(CFG, BeaconsConfig(), T0, T0).ids
    for n in range(300):
        servers.tick([reply(f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}")], T0 + n, True, ids, True, 600)
    assert len(servers.servers) == 256 and servers.forgotten == 300 - 256
    assert ("veth-a", 0, "02:00:00:00:00:2c") in servers.servers  # the 45th: the oldest one kept
    assert ("veth-a", 0, "02:00:00:00:00:2b") not in servers.servers


def test_what_was_learnt_survives_a_restart(core):
    learnt(core)
    tick(core, 61, reply(ROGUE, interface="veth-b"))
    state = {k: np.asarray(v) for k, v in core.state().items()}
    restarted = AlertingCore(CFG, BeaconsConfig(), first_start_usec=T0, now_usec=T0 + 70 * SEC)
    restarted.load_state(state)
    assert tick(restarted, 70, reply(LEGIT), reply(ROGUE, interface="veth-b")) == []  # known, cooling down
    assert [a.kind for a in tick(restarted, 71, reply(LEGIT, dns=("9.9.9.9",)))] == ["dhcp_server_change"]
    assert restarted.dhcp_servers.state().keys() == core.dhcp_servers.state().keys()


def test_state_saved_before_dhcp_servers_loads_as_nothing_known(core):
    core.load_state({})
    assert core.dhcp_servers.servers == {}


def test_a_replay_raises_what_the_live_core_raised(core):
    ticks = [TickObservation(time_usec=T0 + 1 * SEC, dhcp_replies=[reply(LEGIT)]),
             TickObservation(time_usec=T0 + 61 * SEC, dhcp_replies=[reply(ROGUE, interface="veth-b")]),
             TickObservation(time_usec=T0 + 62 * SEC, dhcp_replies=[reply(LEGIT, router="10.0.0.9")])]
    live = [a for obs in ticks for a in core.tick(TickObservation.from_json(obs.to_json()))]
    replayed = replay([TickObservation.from_json(obs.to_json()) for obs in ticks], CFG)
    assert [(a.kind, a.subject, a.timestamp_usec) for a in live] == [
        ("dhcp_server_new", f"device:{ROGUE}", T0 + 61 * SEC), ("dhcp_server_change", f"device:{LEGIT}", T0 + 62 * SEC)]
    assert [(a.kind, a.subject, a.timestamp_usec, a.details) for a in replayed] == [
        (a.kind, a.subject, a.timestamp_usec, a.details) for a in live]
