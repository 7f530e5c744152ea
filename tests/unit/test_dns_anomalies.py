"""DNS anomalies per device (issue 23, scope 4): NXDOMAIN bursts and tunnel-like names, from the
device engine's snippets (devices/app_metadata.py, devices/dns_tally.py) through the tick's
observation to the alerting core (alerting/dns_anomalies.py), on the shipped alert settings
(AlertsConfig's defaults, which tests/unit/test_config.py keeps equal to config/netwatchd.yaml).

Expected values are written out here: 100 NXDOMAIN a minute and 30 tunnel-like names a minute
are the README's ("What raises which alert", the config table)."""
from __future__ import annotations

import random
import string
import struct

import pytest

from netwatchd.alerting.core import AlertingCore
from netwatchd.alerting.observation import TickObservation
from netwatchd.config import AlertsConfig, BeaconsConfig, ConfigError, parse_config
from netwatchd.devices.dns_tally import DnsTally, shannon_entropy, tunnel_like
from netwatchd.devices.records import EV_SNIPPET
from netwatchd.dns_domains import domain_allowed, parse_allow_domain, registered_domain
from tests.unit.test_device_monitor import CISCO, PHONE, dns_query, event
from tests.unit.test_hostile_devices import monitor

SEC = 1_000_000
T0 = 100_000 * SEC  # long after the first start (0): the learning hour is over
SERVER, CLIENT = "10.77.0.1", "10.77.0.11"


def nxdomain(name, ident):
    """An NXDOMAIN response (RCODE 3) to `name`, as a resolver sends it: the question, no answers."""
    return struct.pack(">HHHHHH", ident, 0x8183, 1, 0, 0, 0) + dns_query(name)[12:]


def asked(mac, name, ident, client=CLIENT):
    return event(EV_SNIPPET, mac, app=1, transport=17, saddr=client, sport=40000, daddr=SERVER, dport=53,
                 payload=dns_query(name, ident=ident))


def told_nxdomain(mac, name, ident, client=CLIENT):
    return event(EV_SNIPPET, mac, app=1, direction=1, transport=17, saddr=SERVER, sport=53, daddr=client,
                 dport=40000, payload=nxdomain(name, ident))


def dga_names(n, seed=7):
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(12)) + ".com" for _ in range(n)]


def tunnel_names(n, domain="t.example.net", seed=3):
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(60)) + "." + domain
            for _ in range(n)]


class Lan:
    """The device engine and the alerting core, one tick a second (shipped alert settings)."""

    def __init__(self, cfg=None, first_start_usec=0):
        self.probe, _, self.mon = monitor()
        self.core = AlertingCore(cfg or AlertsConfig(), BeaconsConfig(), first_start_usec, now_usec=T0)
        self.now = T0
        self.ident = 0

    def tick(self, raw):
        self.probe.raw = raw
        self.mon.poll()
        obs = TickObservation(time_usec=self.now)
        self.mon.take_observation(obs)
        self.now += SEC
        # the devices are new to the core too: their new_device alerts are not what is tested here
        return obs, [a for a in self.core.tick(obs) if a.kind.startswith("dns_")]

    def lookups(self, mac, names, answer=True):
        """Each name asked by `mac` and, when `answer`, answered NXDOMAIN (matched: same id and name)."""
        raw = []
        for name in names:
            self.ident += 1
            raw.append(asked(mac, name, self.ident))
            if answer:
                raw.append(told_nxdomain(mac, name, self.ident))
        return raw


def run(lan, mac, names, per_tick, answer=True):
    alerts = []
    for i in range(0, len(names), per_tick):
        alerts += lan.tick(lan.lookups(mac, names[i:i + per_tick], answer))[1]
    return alerts


# -- registered domains and the allow-list -------------------------------------------------------------

@pytest.mark.parametrize("name, domain", [
    ("www.example.com", "example.com"), ("a.b.c.example.com.", "example.com"), ("example.com", "example.com"),
    ("news.bbc.co.uk", "bbc.co.uk"), ("shop.example.com.au", "example.com.au"), ("x.abc.io", "abc.io"),
    ("localhost", "localhost"), ("4.3.2.1.in-addr.arpa", "in-addr.arpa"), ("WWW.Example.COM", "example.com")])
def test_a_registered_domain_is_the_last_two_labels_three_under_a_country_second_level(name, domain):
    assert registered_domain(name) == domain


def test_allow_entries_are_registered_domains_or_broader_and_match_their_subdomains():
    assert [parse_allow_domain(d) for d in ("Example.COM.", "arpa", "bbc.co.uk")] == ["example.com", "arpa", "bbc.co.uk"]
    for wrong in ("avqs.mcafee.com", "*.example.com", "", "a..b", 5):
        with pytest.raises(ValueError):
            parse_allow_domain(wrong)
    assert domain_allowed("in-addr.arpa", ("arpa",)) and domain_allowed("example.com", ("example.com",))
    assert not domain_allowed("badexample.com", ("example.com",)) and not domain_allowed("com", ("example.com",))


def test_the_allow_list_is_a_setting_with_its_entries_checked():
    assert AlertsConfig().dns_allow_domains == ("arpa", "local")
    assert parse_config("alerts:\n  dns_allow_domains: [example.org]\n").alerts.dns_allow_domains == ("example.org",)
    with pytest.raises(ConfigError, match=r"alerts\.dns_allow_domains\[1\]"):
        parse_config("alerts:\n  dns_allow_domains: [example.org, www.example.org]\n")


# -- what a tunnel-like name is ------------------------------------------------------------------------

def test_random_60_character_labels_are_tunnel_like_cdn_hashes_and_host_names_are_not():
    assert all(tunnel_like(name, "example.net") for name in tunnel_names(50, "example.net"))
    for name in ("a1b2c3.cloudfront.net", "d3kcewxqlx4gn7.cloudfront.net", "www.debian.org",
                 "r3---sn-4g5e6nsz.googlevideo.com", "ec2-203-0-113-25.compute-1.amazonaws.com",
                 "login.microsoftonline.com", "example.net"):
        assert not tunnel_like(name, registered_domain(name)), name
    # 24 random base32 characters in three short labels: no long label, but high entropy
    assert tunnel_like("mfrggzdf.mzxw6ytb.ojsxg5dv.example.net", "example.net")
    assert shannon_entropy("") == 0.0 and shannon_entropy("aaaa") == 0.0 and shannon_entropy("abcd") == 2.0


# -- the device engine: what counts, for whom --------------------------------------------------------------

def test_an_nxdomain_answering_the_devices_own_question_counts_for_it_once():
    lan = Lan()
    obs, _ = lan.tick(lan.lookups(CISCO, ["nope.example.com", "nope.example.com"]))
    assert obs.dns_activity == {CISCO: {"nxdomain": {"example.com": 2}, "names": {"example.com": [1, 0, 4]}}}


def test_an_unsolicited_nxdomain_counts_for_nobody():
    """A forger sends CISCO NXDOMAIN answers to questions CISCO never asked (and PHONE asked
    names whose answers go to CISCO): neither device gets an NXDOMAIN."""
    lan = Lan()
    raw = [told_nxdomain(CISCO, name, ident) for ident, name in enumerate(dga_names(200), 1)]
    raw += [asked(PHONE, "a.example.com", 900, client="10.77.0.12"), told_nxdomain(CISCO, "a.example.com", 900)]
    obs, alerts = lan.tick(raw)
    assert obs.dns_activity == {PHONE: {"names": {"example.com": [1, 0, 1]}}}
    assert alerts == [] and lan.mon.metadata.questions.counts.unsolicited == 201


def test_a_device_tick_is_bounded_to_64_domains_and_nxdomain_beyond_still_counts():
    lan = Lan()
    obs, _ = lan.tick(lan.lookups(CISCO, dga_names(100)))
    fact = obs.dns_activity[CISCO]
    assert (len(fact["nxdomain"]), len(fact["names"]), fact["nxdomain_over"], fact["names_over"]) == (64, 64, 36, 36)
    assert lan.mon.dropped()["dns_domains_over"] == 72
    assert lan.tick([])[0].dns_activity == {}  # cleared every tick


def test_the_tally_is_bounded_in_devices_a_tick():
    tally = DnsTally()
    for n in range(4096 + 10):
        tally.asked("02:00:00:00:%02x:%02x" % (n >> 8, n & 255), "www.example.com")
    assert (len(tally.take()), tally.devices_over) == (4096, 10)


# -- the alerts -------------------------------------------------------------------------------------------

def test_200_nxdomain_in_a_minute_is_exactly_one_alert_with_its_fields():
    lan = Lan()
    alerts = run(lan, CISCO, dga_names(200), per_tick=20)  # 10 ticks, a second apart
    assert len(alerts) == 1
    (a,) = alerts
    assert (a.kind, a.subject, a.timestamp_usec) == ("dns_nxdomain_burst", f"device:{CISCO}", T0 + 4 * SEC)
    assert (a.observed, a.baseline, a.score, a.priority) == (100.0, 100.0, 1.0, 4)
    assert a.details["mac"] == CISCO and a.details["count"] == "100" and a.details["window_sec"] == "60"
    assert len(a.details["domains"].split()) == 5 and all(d.endswith(".com") for d in a.details["domains"].split())
    assert a.message.startswith(f"device {CISCO} got 100 NXDOMAIN answers to its own lookups in 60 s")


def test_20_nxdomain_in_a_minute_and_200_spread_over_an_hour_are_none():
    assert run(Lan(), CISCO, dga_names(20), per_tick=2) == []
    lan = Lan()
    alerts = []
    for name in dga_names(200):  # one every 18 s: at most 4 in a window
        alerts += lan.tick(lan.lookups(CISCO, [name]))[1]
        lan.now += 17 * SEC
    assert alerts == []


def test_questions_without_answers_are_no_nxdomain():
    assert run(Lan(), CISCO, dga_names(200), per_tick=20, answer=False) == []


def test_50_random_60_byte_labels_under_one_domain_is_one_tunnel_alert_naming_it():
    lan = Lan()
    alerts = run(lan, CISCO, tunnel_names(50), per_tick=5, answer=False)
    assert [(a.kind, a.subject, a.details["domain"]) for a in alerts] == [
        ("dns_tunnel", f"device:{CISCO}", "example.net")]
    (a,) = alerts
    assert (a.observed, a.baseline, a.details["count"], a.details["longest_label"]) == (30.0, 30.0, "30", "60")
    assert a.timestamp_usec == T0 + 5 * SEC  # the 30th name came in the sixth tick


def test_50_ordinary_names_and_a_few_cdn_hashes_a_minute_are_none():
    ordinary = [f"{host}.example.net" for host in ("www", "mail", "api", "static", "cdn", "login", "img", "video",
                                                  "news", "shop")] * 5
    ordinary = [f"{i}{name}" for i, name in enumerate(ordinary)]
    assert run(Lan(), CISCO, ordinary, per_tick=5, answer=False) == []
    rng = random.Random(1)
    cdn = ["".join(rng.choice("abcdef0123456789") for _ in range(14)) + ".cloudfront.net" for _ in range(200)]
    assert run(Lan(), CISCO, cdn, per_tick=20, answer=False) == []  # even 200 a minute: too short to count


def test_an_allow_listed_domain_is_none_for_both_kinds():
    lan = Lan(AlertsConfig(dns_allow_domains=("example.net", "com")))
    assert run(lan, CISCO, tunnel_names(50) + dga_names(200), per_tick=25) == []


def test_reverse_lookups_are_allowed_as_shipped():
    ptrs = [f"{i}.0.168.192.in-addr.arpa" for i in range(200)]
    assert run(Lan(), CISCO, ptrs, per_tick=20) == []


def test_nothing_while_learning_and_one_per_device_kind_and_domain_per_cooldown():
    lan = Lan(first_start_usec=T0 - 10 * SEC)  # learning until T0 + 3590 s
    assert run(lan, CISCO, dga_names(200), per_tick=20) == []
    lan = Lan()
    first = run(lan, CISCO, tunnel_names(50) + tunnel_names(50, "other.org", seed=4), per_tick=10, answer=False)
    again = run(lan, CISCO, tunnel_names(50, seed=5), per_tick=10, answer=False)  # within the cooldown
    assert sorted(a.details["domain"] for a in first) == ["example.net", "other.org"] and again == []
    lan.now += 600 * SEC  # alerts.cooldown_sec
    assert len(run(lan, CISCO, tunnel_names(50, seed=6), per_tick=10, answer=False)) == 1


def test_a_restored_alert_keeps_its_cooldown():
    lan = Lan()
    (a,) = run(lan, CISCO, dga_names(200), per_tick=20)
    fresh = Lan()
    fresh.now = lan.now
    fresh.core.remember([a])
    assert run(fresh, CISCO, dga_names(200, seed=8), per_tick=20) == []


def test_windows_are_bounded_and_what_goes_is_counted_in_dropped():
    lan = Lan()
    activity = {"02:00:00:%02x:%02x:%02x" % (n >> 16, n >> 8 & 255, n & 255): {"nxdomain": {"example.com": 1}}
                for n in range(16384 + 36)}
    lan.core.tick(TickObservation(time_usec=T0, dns_activity=activity))
    assert len(lan.core.dns.nxdomain) == 16384 and lan.core.dropped()["dns_windows_dropped"] == 36
    lan.core.tick(TickObservation(time_usec=T0 + 61 * SEC))  # a window later: the idle ones go
    assert len(lan.core.dns.nxdomain) == 0


def test_a_replay_of_the_recorded_observations_raises_the_same():
    lan = Lan()
    observations, live = [], []
    for i in range(0, 200, 20):
        obs, alerts = lan.tick(lan.lookups(CISCO, dga_names(200)[i:i + 20]))
        observations.append(TickObservation.from_json(obs.to_json()))
        live += alerts
    replay = AlertingCore(AlertsConfig(), BeaconsConfig(), first_start_usec=0, now_usec=T0)
    replayed = [a for obs in observations for a in replay.tick(obs) if a.kind.startswith("dns_")]
    assert [(a.kind, a.timestamp_usec, a.details) for a in replayed] == [(a.kind, a.timestamp_usec, a.details)
                                                                         for a in live]


# -- the parser: what an NXDOMAIN is -----------------------------------------------------------------

def test_an_nxdomain_response_parses_with_rcode_3_its_question_and_no_answers():
    from netwatchd.devices.app_parsers import parse_dns

    msg = parse_dns(nxdomain("x7kq2v9.example.com", 0xBEEF))
    assert (msg.id, msg.is_response, msg.rcode, [q.name for q in msg.questions], msg.answers) == (
        0xBEEF, True, 3, ["x7kq2v9.example.com"], ())
    assert parse_dns(dns_query("www.example.com", response=True, answers=["192.0.2.1"])).rcode == 0
