"""What a host owes its Alertmanagers (netwatchd/api/fleet_alerts.py), without a thread or a
network: raises, lifetimes, acknowledgements per URL, the bound, and the request body."""
import json

import pytest

from netwatchd.api.fleet_alerts import MAX_OBSERVERS, Entry, FleetAlerts, rfc3339

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
U1, U2 = "http://am1:9093", "http://am2:9093"


def key_of(name):
    return f"alertname=NetwatchdNewDevice\x1fmac={name}"


def add(fa, name, now=T0, lifetime=600.0, observer="host-a", note="n"):
    return fa.add(key_of(name), {"alertname": "NetwatchdNewDevice", "mac": name},
                  {"summary": note, "observers": observer, "observer_count": "1"}, now, lifetime, observer)


def post(fa, url, entries, firing):
    """As the sender does: the versions sent, then accepted."""
    FleetAlerts.accepted(url, [(e, e.version) for e in entries], firing)


def keys(entries):
    return [e.key for e in entries]


# -- raising and expiring --------------------------------------------------------------------------

def test_a_new_alert_is_one_firing_entry():
    fa = FleetAlerts(10)
    e, pushed = add(fa, "m1")
    assert pushed == []
    assert (len(fa), fa.firing_count()) == (1, 1)
    assert e.firing and e.resolved_at == 0.0
    assert (e.starts_at, e.lifetime_end, e.version, e.observers) == (T0, T0 + 600, 1, {"host-a"})
    assert e.labels == {"alertname": "NetwatchdNewDevice", "mac": "m1"}


def test_raised_again_while_firing_keeps_its_start_and_extends_its_lifetime():
    fa = FleetAlerts(10)
    first, _ = add(fa, "m1", note="first")
    again, pushed = add(fa, "m1", now=T0 + 100, observer="host-b", note="second")
    assert again is first and pushed == []
    assert again.starts_at == T0  # Alertmanager sees one alert, started once
    assert again.lifetime_end == T0 + 100 + 600
    assert again.version == 2
    assert again.observers == {"host-a", "host-b"}
    assert again.annotations["summary"] == "second"
    assert len(fa) == 1


def test_the_lifetime_ends_and_the_alert_is_resolved_then():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    assert fa.expire(T0 + 59.9) == []
    assert e.firing
    ended = fa.expire(T0 + 61)
    assert ended == [e]
    assert not e.firing and e.resolved_at == T0 + 61
    assert e.version == 2
    assert fa.firing_count() == 0 and len(fa) == 1  # still owed as resolved
    assert fa.expire(T0 + 100) == [], "resolved once"
    assert e.resolved_at == T0 + 61


def test_a_raise_extends_the_lifetime_past_the_first_end():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    add(fa, "m1", now=T0 + 50, lifetime=60)
    assert fa.expire(T0 + 61) == []
    assert fa.expire(T0 + 110) == [e]


def test_raised_after_it_was_resolved_it_fires_again_from_now():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    fa.expire(T0 + 60)
    again, pushed = add(fa, "m1", now=T0 + 200, lifetime=60)
    assert pushed == []
    assert again is not e and again.firing
    assert (again.starts_at, again.lifetime_end, again.version) == (T0 + 200, T0 + 260, 1)
    assert len(fa) == 1


# -- what each URL is owed --------------------------------------------------------------------------

def test_a_new_alert_is_owed_firing_to_every_url():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1")
    assert fa.owed(U1, everything=False) == ([e], [])
    assert fa.owed(U2, everything=False) == ([e], [])


def test_after_a_url_accepted_it_nothing_is_owed_there_until_a_resend():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1")
    post(fa, U1, [e], firing=True)
    assert fa.owed(U1, everything=False) == ([], [])
    assert fa.owed(U1, everything=True) == ([e], [])  # re-sent while firing
    assert fa.owed(U2, everything=False) == ([e], []), "the other URL has not accepted it"


def test_a_change_makes_it_owed_again():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1")
    post(fa, U1, [e], firing=True)
    add(fa, "m1", now=T0 + 10, observer="host-b")
    assert fa.owed(U1, everything=False) == ([e], [])


def test_an_accept_of_an_older_version_acks_nothing():
    """Raised again while the post was in flight: the new version is still owed."""
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1")
    sent = [(e, e.version)]
    add(fa, "m1", now=T0 + 1)
    FleetAlerts.accepted(U1, sent, firing=True)
    assert fa.owed(U1, everything=False) == ([e], [])
    assert U1 in e.fired


def test_a_resolved_entry_is_owed_resolved():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    post(fa, U1, [e], firing=True)
    fa.expire(T0 + 60)
    assert fa.owed(U1, everything=False) == ([], [e])
    assert fa.owed(U1, everything=True) == ([], [e]), "a resolved alert is not re-sent firing"
    post(fa, U1, [e], firing=False)
    assert fa.owed(U1, everything=False) == ([], [])
    assert fa.owed(U1, everything=True) == ([], [])


def test_resolved_before_a_url_had_it_firing_it_is_owed_both_firing_first():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    post(fa, U1, [e], firing=True)
    fa.expire(T0 + 60)
    # U2 never accepted the firing post
    assert fa.owed(U2, everything=False) == ([e], [e])
    assert fa.owed(U1, everything=False) == ([], [e])
    # the firing post alone does not ack the resolve
    post(fa, U2, [e], firing=True)
    assert U2 in e.fired
    assert fa.owed(U2, everything=False) == ([], [e])
    assert fa.done([U1, U2]) == []
    post(fa, U2, [e], firing=False)
    assert fa.owed(U2, everything=False) == ([], [])


def test_done_removes_resolved_entries_every_url_accepted():
    fa = FleetAlerts(10)
    gone, _ = add(fa, "m1", lifetime=60)
    firing, _ = add(fa, "m2", lifetime=600)
    fa.expire(T0 + 60)
    for url in (U1, U2):
        post(fa, url, [gone, firing], firing=True)
    post(fa, U1, [gone], firing=False)
    assert fa.done([U1, U2]) == [], "U2 has not accepted the resolve"
    assert len(fa) == 2
    post(fa, U2, [gone], firing=False)
    assert fa.done([U1, U2]) == [gone]
    assert list(fa.entries) == [firing.key], "a firing entry is never done"
    assert fa.done([U1, U2]) == []


def test_done_counts_only_the_current_urls():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    post(fa, U1, [e], firing=True)
    fa.expire(T0 + 60)
    post(fa, U1, [e], firing=False)
    assert fa.done([U1]) == [e]  # U2 was removed from the config


# -- the bound ----------------------------------------------------------------------------------------

def test_a_full_spool_pushes_out_the_oldest_resolved_first():
    fa = FleetAlerts(3)
    a, _ = add(fa, "a", lifetime=600)
    b, _ = add(fa, "b", lifetime=60)
    c, _ = add(fa, "c", lifetime=600)
    fa.expire(T0 + 60)  # b resolved
    d, pushed = add(fa, "d", now=T0 + 70)
    assert pushed == [b]
    assert sorted(fa.entries) == sorted([a.key, c.key, d.key])
    assert fa.dropped == 1


def test_else_the_oldest_firing_goes():
    fa = FleetAlerts(3)
    a, _ = add(fa, "a")
    b, _ = add(fa, "b")
    c, _ = add(fa, "c")
    d, pushed = add(fa, "d")
    assert pushed == [a]
    assert sorted(fa.entries) == sorted([b.key, c.key, d.key])
    assert fa.dropped == 1
    e, pushed = add(fa, "e")
    assert pushed == [b]
    assert fa.dropped == 2


def test_a_raise_again_makes_an_alert_young():
    fa = FleetAlerts(3)
    a, _ = add(fa, "a")
    b, _ = add(fa, "b")
    add(fa, "c")
    add(fa, "a", now=T0 + 1)  # raised again: now the newest
    _, pushed = add(fa, "d", now=T0 + 2)
    assert pushed == [b]
    assert a.key in fa.entries


def test_raising_a_spooled_alert_again_pushes_nothing_out():
    fa = FleetAlerts(3)
    for name in "abc":
        add(fa, name)
    _, pushed = add(fa, "b", now=T0 + 1)
    assert pushed == [] and fa.dropped == 0 and len(fa) == 3


def test_resize_smaller_pushes_out_and_counts():
    fa = FleetAlerts(5)
    entries = [add(fa, name)[0] for name in "abcde"]
    fa.expire(T0 + 600)  # all resolved...
    add(fa, "e", now=T0 + 601)  # ...but e, which fires again
    pushed = fa.resize(2)
    assert pushed == entries[:3], "the oldest resolved first"
    assert sorted(fa.entries) == sorted([key_of("d"), key_of("e")])
    assert fa.dropped == 3
    assert fa.resize(10) == [] and fa.max_alerts == 10


def test_a_restored_spool_keeps_its_order():
    old = FleetAlerts(3)
    for name in "abc":
        add(old, name)
    restored = FleetAlerts(3, [Entry.from_json(json.loads(json.dumps(e.to_json()))) for e in old.entries.values()])
    _, pushed = add(restored, "d")
    assert keys(pushed) == [key_of("a")]
    assert restored.entries[key_of("d")].seq == 4


# -- other observers ------------------------------------------------------------------------------------

def test_learn_observers_unions_and_updates_the_annotations():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", observer="host-a")
    post(fa, U1, [e], firing=True)
    assert fa.learn_observers(e.key, ["host-c", "host-b", "host-a"]) is e
    assert e.observers == {"host-a", "host-b", "host-c"}
    assert e.annotations["observers"] == "host-a host-b host-c"
    assert e.annotations["observer_count"] == "3"
    assert e.annotations["summary"] == "n", "the other annotations stay"
    assert e.version == 2
    assert fa.owed(U1, everything=False) == ([e], []), "the union is posted again"
    # nothing new: no change, no new version
    assert fa.learn_observers(e.key, ["host-b"]) is None
    assert e.version == 2


def test_learn_observers_is_capped():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", observer="host-a")
    many = [f"h{i:04d}" for i in range(MAX_OBSERVERS + 50)]
    assert fa.learn_observers(e.key, many) is e
    assert len(e.observers) == MAX_OBSERVERS == 256
    assert e.annotations["observer_count"] == "256"
    assert len(e.annotations["observers"].split()) == 256
    assert "host-a" in e.observers
    version = e.version
    assert fa.learn_observers(e.key, ["zzzz"]) is None
    assert e.version == version and "zzzz" not in e.observers


def test_learn_observers_ignores_resolved_and_unknown_entries():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    fa.expire(T0 + 60)
    version = e.version
    assert fa.learn_observers(e.key, ["host-b"]) is None
    assert e.observers == {"host-a"} and e.version == version
    assert fa.learn_observers("no such key", ["host-b"]) is None


# -- the request body -------------------------------------------------------------------------------------

def test_firing_payload_ends_four_resends_ahead():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=3600)
    notes = dict(e.annotations)
    e.annotations["generator_url"] = "http://h:9637/metrics"  # kept with the entry, sent apart
    p = FleetAlerts.payload(e, T0 + 10, 60.0, as_firing=True)
    assert p == {"labels": e.labels, "annotations": notes, "startsAt": "2023-11-14T22:13:20.000Z",
                 "endsAt": rfc3339(T0 + 10 + 240), "generatorURL": "http://h:9637/metrics"}
    assert p["endsAt"] == "2023-11-14T22:17:30.000Z"


def test_firing_payload_never_ends_past_the_lifetime():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=100)
    p = FleetAlerts.payload(e, T0 + 10, 60.0, as_firing=True)
    assert p["endsAt"] == rfc3339(T0 + 100) == "2023-11-14T22:15:00.000Z"


def test_resolved_payload_ends_when_it_was_resolved_and_starts_as_before():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=100)
    first = FleetAlerts.payload(e, T0, 60.0, as_firing=True)
    fa.expire(T0 + 100.25)
    p = FleetAlerts.payload(e, T0 + 500, 60.0, as_firing=False)
    assert p["endsAt"] == "2023-11-14T22:15:00.250Z"
    assert p["startsAt"] == first["startsAt"] == "2023-11-14T22:13:20.000Z"


def test_start_is_stable_across_raises():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1")
    before = FleetAlerts.payload(e, T0, 60.0, True)["startsAt"]
    add(fa, "m1", now=T0 + 300)
    assert FleetAlerts.payload(e, T0 + 300, 60.0, True)["startsAt"] == before


def test_a_resolved_entry_sent_firing_first_is_firing_in_the_body():
    """The firing post that precedes a resolve to a URL that never had the alert."""
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    fa.expire(T0 + 60)
    p = FleetAlerts.payload(e, T0 + 70, 60.0, as_firing=True)
    assert p["endsAt"] == rfc3339(T0 + 70 + 240)
    assert p["endsAt"] > rfc3339(T0 + 70)


@pytest.mark.parametrize("seconds, text", [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (T0, "2023-11-14T22:13:20.000Z"),
    (T0 + 0.5, "2023-11-14T22:13:20.500Z"),
])
def test_rfc3339_is_utc_with_z(seconds, text):
    assert rfc3339(seconds) == text


# -- the spool's form -----------------------------------------------------------------------------------------

def test_entry_json_round_trip():
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    fa.learn_observers(e.key, ["host-b", "host-c"])
    post(fa, U1, [e], firing=True)
    fa.expire(T0 + 60)
    post(fa, U1, [e], firing=False)
    text = json.dumps(e.to_json())
    back = Entry.from_json(json.loads(text))
    assert back == e
    assert back.to_json() == e.to_json()
    assert back.fired == {U1} and back.acked == {U1: e.version}
    assert back.observers == {"host-a", "host-b", "host-c"}
    assert json.loads(text)["observers"] == ["host-a", "host-b", "host-c"]


def test_entry_from_json_fills_defaults():
    e = Entry.from_json({"key": "k", "labels": {"a": "1"}, "annotations": {}, "starts_at": 1, "lifetime_end": 2})
    assert e == Entry("k", {"a": "1"}, {}, 1.0, 2.0)
    assert e.firing and e.version == 1 and e.acked == {} and e.fired == set()


def test_accepted_returns_the_entries_whose_delivery_state_changed():
    """What the sender writes to the spool after a post: a re-send URL already had changes nothing."""
    fa = FleetAlerts(10)
    e, _ = add(fa, "m1", lifetime=60)
    assert FleetAlerts.accepted(U1, [(e, e.version)], firing=True) == [e]
    assert FleetAlerts.accepted(U1, [(e, e.version)], firing=True) == [], "a re-send"
    fa.expire(T0 + 60)
    assert FleetAlerts.accepted(U2, [(e, e.version)], firing=True) == [e], "fired, though not acked"
    assert FleetAlerts.accepted(U2, [(e, e.version)], firing=False) == [e]
    assert FleetAlerts.accepted(U2, [(e, e.version)], firing=False) == []
