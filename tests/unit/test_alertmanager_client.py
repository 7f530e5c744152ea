"""Alertmanager's API v2 as netwatchd's client speaks it (netwatchd/api/alertmanager.py), against
a fake Alertmanager on 127.0.0.1: the request, the credentials, and every failure named by one
short cause."""
import base64
import dataclasses
import json
import time

import pytest

from netwatchd.api.alertmanager import ALERTS_PATH, AlertmanagerClient, DeliveryError, Rejected
from netwatchd.config import parse_config
from tests.support.fake_alertmanager import FakeAlertmanager, closed_port

ALERT = {"labels": {"alertname": "NetwatchdNewDevice", "mac": "3c:22:fb:01:02:03"},
         "annotations": {"summary": "new device"}, "startsAt": "2023-11-14T22:13:20.000Z",
         "endsAt": "2023-11-14T22:17:20.000Z", "generatorURL": "http://h:9637/metrics"}


@pytest.fixture
def am():
    server = FakeAlertmanager()
    yield server
    server.close()


def fleet_cfg(url, **fields):
    cfg = parse_config(f"fleet: {{alertmanager_urls: ['{url}']}}").fleet
    return dataclasses.replace(cfg, **fields)


def client_for(url, **fields):
    return AlertmanagerClient(fleet_cfg(url, **fields))


def failure(call, *args) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        call(*args)
    return info.value


# -- the request ----------------------------------------------------------------------------------

def test_post_sends_json_to_the_alerts_path(am):
    client_for(am.url).post(am.url, [ALERT])
    (request,) = am.requests
    assert (request.method, request.path) == ("POST", "/api/v2/alerts")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "netwatchd"
    assert "authorization" not in request.headers
    assert request.json() == [ALERT]


def test_post_under_a_path_prefix(am):
    url = am.url + "/alertmanager"
    client_for(url).post(url, [ALERT])
    assert am.requests[0].path == "/alertmanager/api/v2/alerts"


def test_a_configured_trailing_slash_posts_to_the_alerts_path(am):
    cfg = parse_config(f"fleet: {{alertmanager_urls: ['{am.url}/']}}").fleet
    AlertmanagerClient(cfg).post(cfg.alertmanager_urls[0], [ALERT])
    assert am.requests[0].path == ALERTS_PATH


def test_get_returns_the_alerts_held(am):
    client = client_for(am.url)
    client.post(am.url, [ALERT])
    assert client.get(am.url) == [ALERT]
    get = am.requests[-1]
    assert get.method == "GET"
    assert get.path == "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true"
    assert get.body == b""


def test_get_skips_entries_that_are_not_alerts(am):
    am.answer = json.dumps([ALERT, "noise", 3, None]).encode()
    assert client_for(am.url).get(am.url) == [ALERT]


# -- credentials --------------------------------------------------------------------------------------

def test_basic_auth_from_username_and_password_file(am, tmp_path):
    pw = tmp_path / "am.pw"
    pw.write_text("hunter2\n")
    client_for(am.url, username="netwatchd", password_file=str(pw)).post(am.url, [ALERT])
    expected = "Basic " + base64.b64encode(b"netwatchd:hunter2").decode()
    assert am.requests[0].headers["authorization"] == expected


def test_bearer_token_is_read_at_each_request(am, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    client = client_for(am.url, bearer_token_file=str(token))
    client.post(am.url, [ALERT])
    token.write_text("rotated-token\n")  # rotated without a reload
    client.post(am.url, [ALERT])
    client.get(am.url)
    assert [r.headers["authorization"] for r in am.requests] == \
        ["Bearer first-token", "Bearer rotated-token", "Bearer rotated-token"]


def test_a_missing_password_file_at_send_time(am, tmp_path):
    e = failure(client_for(am.url, username="netwatchd", password_file=str(tmp_path / "gone")).post, am.url, [ALERT])
    assert e.cause == "credentials unreadable"
    assert not isinstance(e, Rejected)
    assert am.requests == [], "nothing sent without its credentials"


def test_an_emptied_token_file_at_send_time(am, tmp_path):
    token = tmp_path / "token"
    token.write_text("")
    e = failure(client_for(am.url, bearer_token_file=str(token)).get, am.url)
    assert (e.cause, e.detail) == ("credentials unreadable", "the file is empty")
    assert am.requests == []


# -- failures, each named by its cause -----------------------------------------------------------------

def test_a_400_is_rejected(am):
    am.status, am.answer = 400, b'{"code":400,"message":"start time must be before end time"}'
    e = failure(client_for(am.url).post, am.url, [ALERT])
    assert isinstance(e, Rejected)
    assert e.cause == "HTTP 400 (alerts refused)"
    assert "start time must be before end time" in e.detail


def test_a_400_to_a_get_is_not_a_rejection(am):
    am.status = 400
    e = failure(client_for(am.url).get, am.url)
    assert not isinstance(e, Rejected) and e.cause == "HTTP 400"


def test_a_500_is_a_delivery_error(am):
    am.status, am.answer = 500, b"internal error"
    e = failure(client_for(am.url).post, am.url, [ALERT])
    assert type(e) is DeliveryError
    assert (e.cause, e.detail) == ("HTTP 500", "internal error")
    assert str(e) == "HTTP 500: internal error"


def test_a_503_names_its_code(am):
    am.status = 503
    assert failure(client_for(am.url).post, am.url, [ALERT]).cause == "HTTP 503"


def test_a_404_says_it_is_not_alertmanager(am):
    am.status, am.answer = 404, b"404 page not found"
    e = failure(client_for(am.url).post, am.url, [ALERT])
    assert "not Alertmanager" in e.cause
    assert e.cause == "HTTP 404 (not Alertmanager's API v2 at this URL)"


def test_the_error_body_is_clipped(am):
    am.status, am.answer = 500, b"x" * 10_000
    assert len(failure(client_for(am.url).post, am.url, [ALERT]).detail) == 300


def test_a_closed_port_is_connection_refused():
    url = f"http://127.0.0.1:{closed_port()}"
    assert failure(client_for(url).post, url, [ALERT]).cause == "connection refused"
    assert failure(client_for(url).get, url).cause == "connection refused"


def test_a_slow_alertmanager_is_a_timeout(am):
    am.delay = 1.0
    client = client_for(am.url, timeout_sec=0.2)
    started = time.monotonic()
    e = failure(client.post, am.url, [ALERT])
    assert e.cause == "timeout"
    assert time.monotonic() - started < 0.9, "the client gave up at its timeout"


def test_a_slow_get_is_a_timeout(am):
    am.delay = 1.0
    assert failure(client_for(am.url, timeout_sec=0.2).get, am.url).cause == "timeout"


def test_a_non_json_answer_is_not_alertmanager(am):
    am.answer, am.content_type = b"<html>hello</html>", "text/html"
    e = failure(client_for(am.url).get, am.url)
    assert e.cause.startswith("not Alertmanager")
    assert e.cause == "not Alertmanager (the answer is not JSON)"


def test_a_json_answer_that_is_not_a_list_is_not_alertmanager(am):
    am.answer = b'{"status": "success"}'
    e = failure(client_for(am.url).get, am.url)
    assert e.cause == "not Alertmanager (the answer is not a list of alerts)"


def test_https_with_an_unusable_ca_file_fails_without_a_request(tmp_path):
    url = "https://127.0.0.1:1"
    e = failure(client_for(url, ca_file=str(tmp_path / "gone.pem")).post, url, [ALERT])
    assert e.cause == "CA file unusable"
    assert "gone.pem" in e.detail


def test_https_to_a_plain_http_server_is_a_tls_failure(am):
    url = am.url.replace("http:", "https:")
    e = failure(client_for(url, timeout_sec=2.0).post, url, [ALERT])
    assert e.cause in ("TLS failed", "connection lost")


# -- proxies ---------------------------------------------------------------------------------------------

def test_proxies_from_the_environment_are_ignored(am, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    client = client_for(am.url)
    client.post(am.url, [ALERT])
    assert client.get(am.url) == [ALERT]
    assert [r.method for r in am.requests] == ["POST", "GET"]
    assert am.requests[0].path == ALERTS_PATH, "not a proxy's absolute-URI request"
