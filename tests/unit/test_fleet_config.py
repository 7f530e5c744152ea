"""The `fleet:` section of the configuration (netwatchd/config.py FleetConfig, check_fleet_files,
netwatchd/fleet_settings.py): every mistake is one ConfigError naming the key path, at load,
not a delivery that fails later."""
import dataclasses

import pytest

from netwatchd.config import AlertLifetimes, ConfigError, FleetConfig, load_config, parse_config

SRC = "/etc/netwatchd/test.yaml"
# a self-signed CA certificate (only loaded as a trust anchor: its dates do not matter)
PEM = """-----BEGIN CERTIFICATE-----
MIIBizCCATKgAwIBAgITeQ6VfFCPGAYUYMVuVt3jtWC01zAKBggqhkjOPQQDAjAc
MRowGAYDVQQDDBFuZXR3YXRjaGQgdGVzdCBDQTAeFw0yNjEyMDcxNjM0MDZaFw0z
NjEyMDQxNjM0MDZaMBwxGjAYBgNVBAMMEW5ldHdhdGNoZCB0ZXN0IENBMFkwEwYH
KoZIzj0CAQYIKoZIzj0DAQcDQgAELTW1V6xu9P1oDxkVFC/AUXrTlLjezg/YFUYB
qIPWhLdEUzZ5dqycoCV+ehK8Nn3nSy4vyzWPq2YAa+U4EQSvE6NTMFEwHQYDVR0O
BBYEFCGzFxKxN9D9pLC1cyY93wjpS1YfMB8GA1UdIwQYMBaAFCGzFxKxN9D9pLC1
cyY93wjpS1YfMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgF1mv
NdaB6tE3XXnxAWgfOxS1FIeQlz55VURxsbR8tV4CIAje4kpD4l/NJHzZ9E/MZvX0
VVkjaoDRH9AtBcB/XSXa
-----END CERTIFICATE-----
"""


def fleet(yaml_text: str) -> FleetConfig:
    return parse_config(yaml_text, SRC).fleet


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, SRC)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    assert message.startswith(f"{SRC}: {info.value.key_path}: ")
    return info.value


def urls_yaml(*urls) -> str:
    return "fleet:\n  alertmanager_urls:\n" + "".join(f"    - {u!r}\n" for u in urls)


# -- defaults ------------------------------------------------------------------------------------

def test_fleet_is_off_by_default():
    cfg = fleet("")
    assert cfg == FleetConfig()
    assert not cfg.enabled and cfg.alertmanager_urls == ()
    assert (cfg.resend_interval_sec, cfg.timeout_sec, cfg.spool_max_alerts) == (60.0, 10.0, 10000)
    assert cfg.lifetime_sec == AlertLifetimes()


def test_an_empty_fleet_section_is_the_defaults():
    assert fleet("fleet:\n") == FleetConfig()


# -- Alertmanager URLs -----------------------------------------------------------------------------

def test_urls_are_accepted():
    cfg = fleet(urls_yaml("http://127.0.0.1:9093", "https://am.example.net/alertmanager", "http://[::1]:9093"))
    assert cfg.enabled
    assert cfg.alertmanager_urls == ("http://127.0.0.1:9093", "https://am.example.net/alertmanager",
                                     "http://[::1]:9093")


def test_a_trailing_slash_is_stripped():
    assert fleet(urls_yaml("http://am:9093/", "https://am2/prefix/")).urls == \
        ("http://am:9093", "https://am2/prefix")


@pytest.mark.parametrize("url, says", [
    ("ftp://am:9093", "the scheme must be http or https, not 'ftp'"),
    ("am:9093", "the scheme must be http or https"),
    ("http://user:secret@am:9093", "credentials in the URL would be logged"),
    ("http://am:9093/?silenced=true", "no query or fragment"),
    ("http://am:9093#top", "no query or fragment"),
    ("http://am:9093/api/v2/alerts", "give the base URL; netwatchd appends /api/v2/alerts itself"),
    ("http://am:9093/api/v2/alerts/", "give the base URL"),
    ("http:///alertmanager", "no host"),
    ("http://:9093", "no host"),
    ("http://am:0", "port 0"),
    ("http://am:99999", "is not an Alertmanager base URL"),
    ("http://am:port", "is not an Alertmanager base URL"),
])
def test_bad_urls_are_named_by_position(url, says):
    e = error_of(urls_yaml(url))
    assert e.key_path == "fleet.alertmanager_urls[0]"
    assert says in e.problem
    assert repr(url) in e.problem


def test_the_second_bad_url_is_named_with_its_index():
    e = error_of(urls_yaml("http://am1:9093", "ftp://am2:9093"))
    assert e.key_path == "fleet.alertmanager_urls[1]"


def test_credentials_are_not_repeated_beyond_the_entry():
    """The problem names the entry (the operator must find it) and tells where secrets go."""
    e = error_of(urls_yaml("http://user:secret@am:9093"))
    assert "fleet.password_file" in e.problem and "fleet.bearer_token_file" in e.problem


@pytest.mark.parametrize("value", ["", "  ", 9093, None])
def test_a_url_that_is_not_a_string_is_refused(value):
    e = error_of(f"fleet:\n  alertmanager_urls: [{value!r}]\n" if value is not None
                 else "fleet:\n  alertmanager_urls: [null]\n")
    assert e.key_path == "fleet.alertmanager_urls[0]"


def test_urls_must_be_a_list():
    e = error_of("fleet:\n  alertmanager_urls: http://am:9093\n")
    assert (e.key_path, e.problem) == ("fleet.alertmanager_urls", "expected a list, got 'http://am:9093'")


# -- identity overrides -------------------------------------------------------------------------------

def test_segment_and_host_id_overrides():
    cfg = fleet("fleet:\n  segment: office-lan/2\n  host_id: rack3-node7\n")
    assert (cfg.segment, cfg.host_id) == ("office-lan/2", "rack3-node7")


@pytest.mark.parametrize("key", ["segment", "host_id"])
@pytest.mark.parametrize("value", ["office lan", "a\tb", "x" * 129, "é"])
def test_an_identity_override_must_be_label_safe(key, value):
    e = error_of(f"fleet:\n  {key}: {value!r}\n")
    assert e.key_path == f"fleet.{key}"
    assert "it becomes a label value" in e.problem


def test_external_url_is_checked_like_a_base_url():
    e = error_of("fleet:\n  external_url: ftp://me:9637\n")
    assert e.key_path == "fleet.external_url"
    assert "scheme must be http or https" in e.problem
    assert fleet("fleet:\n  external_url: http://me.example.net:9637\n").external_url == "http://me.example.net:9637"


# -- credentials ---------------------------------------------------------------------------------------

def test_basic_auth_and_bearer_together_is_an_error():
    e = error_of("fleet:\n  username: nw\n  password_file: /etc/netwatchd/am.pw\n"
                 "  bearer_token_file: /etc/netwatchd/am.token\n")
    assert e.key_path == "fleet.bearer_token_file"
    assert e.problem == "set either password_file (basic auth) or bearer_token_file, not both"


def test_username_without_password_file_is_an_error():
    e = error_of("fleet:\n  username: nw\n")
    assert (e.key_path, e.problem) == ("fleet.password_file", "username is set: basic auth needs a password_file")


def test_password_file_without_username_is_an_error():
    e = error_of("fleet:\n  password_file: /etc/netwatchd/am.pw\n")
    assert (e.key_path, e.problem) == ("fleet.username", "password_file is set: basic auth needs a username")


# -- numbers ---------------------------------------------------------------------------------------------------

def test_lifetimes_are_set_per_kind():
    cfg = fleet("fleet:\n  lifetime_sec:\n    new_device: 86400\n    beacon: 10\n")
    assert cfg.lifetime_sec.of("new_device") == 86400
    assert cfg.lifetime_sec.of("beacon") == 10
    assert cfg.lifetime_sec.of("fan_out") == AlertLifetimes().fan_out


def lifetime_bounds():
    bounds = {f.name: f.metadata["range"] for f in dataclasses.fields(AlertLifetimes)}
    assert len({(b.low, b.high) for b in bounds.values()}) == 1, "every kind has the same bounds"
    return bounds["new_device"]


def test_lifetime_bounds_are_seconds_up_to_30_days():
    assert lifetime_bounds().high == 30 * 86400 == 2592000
    assert 1 <= lifetime_bounds().low <= 10


@pytest.mark.parametrize("value", ["low", "high"])
def test_a_lifetime_out_of_range_names_its_kind_and_the_bounds(value):
    bounds = lifetime_bounds()
    bad = bounds.low - 1 if value == "low" else bounds.high + 1
    e = error_of(f"fleet:\n  lifetime_sec:\n    new_device: {bad}\n")
    assert e.key_path == "fleet.lifetime_sec.new_device"
    assert e.problem == f"{bad} is out of range {bounds.low}..2592000"
    ok = fleet(f"fleet:\n  lifetime_sec:\n    new_device: {bounds.low}\n    beacon: {bounds.high}\n")
    assert (ok.lifetime_sec.new_device, ok.lifetime_sec.beacon) == (bounds.low, bounds.high)


def test_a_lifetime_must_be_an_integer():
    e = error_of("fleet:\n  lifetime_sec:\n    beacon: 1h\n")
    assert (e.key_path, e.problem) == ("fleet.lifetime_sec.beacon", "expected an integer, got '1h'")


def test_an_unknown_kind_in_lifetimes_is_an_error():
    e = error_of("fleet:\n  lifetime_sec:\n    new_devices: 60\n")
    assert e.key_path == "fleet.lifetime_sec.new_devices"
    assert "unknown key" in e.problem and "new_device" in e.problem


@pytest.mark.parametrize("key, value, says", [
    ("resend_interval_sec", 0.05, "0.05 is out of range 0.1..3600.0"),
    ("timeout_sec", 301, "301 is out of range 0.1..300.0"),
    ("spool_max_alerts", 9, "9 is out of range 10..1000000"),
])
def test_delivery_bounds(key, value, says):
    e = error_of(f"fleet:\n  {key}: {value}\n")
    assert (e.key_path, e.problem) == (f"fleet.{key}", says)


# -- files, at load ------------------------------------------------------------------------------------------

def write_config(tmp_path, body: str) -> str:
    path = tmp_path / "netwatchd.yaml"
    path.write_text("fleet:\n  alertmanager_urls: ['http://127.0.0.1:9093']\n" + body)
    return str(path)


def load_error(path: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {info.value.key_path}: ")
    return info.value


def test_a_missing_ca_file_is_named_at_load(tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    e = load_error(write_config(tmp_path, f"  ca_file: {missing}\n"))
    assert e.key_path == "fleet.ca_file"
    assert e.problem.startswith(f"cannot read {missing}")
    assert "No such file or directory" in e.problem


def test_a_ca_file_of_garbage_is_refused_at_load(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("this is not a certificate\n")
    e = load_error(write_config(tmp_path, f"  ca_file: {ca}\n"))
    assert e.key_path == "fleet.ca_file"
    assert str(ca) in e.problem


def test_a_ca_file_of_garbage_is_said_to_hold_no_usable_pem(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("this is not a certificate\n")
    e = load_error(write_config(tmp_path, f"  ca_file: {ca}\n"))
    assert e.problem.startswith(f"{ca} holds no usable PEM certificate")
    assert "cannot read" not in e.problem


def test_a_pem_ca_file_loads(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM)
    assert load_config(write_config(tmp_path, f"  ca_file: {ca}\n")).fleet.ca_file == str(ca)


def test_an_empty_bearer_token_file_is_an_error(tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    e = load_error(write_config(tmp_path, f"  bearer_token_file: {token}\n"))
    assert (e.key_path, e.problem) == ("fleet.bearer_token_file", f"{token}: the file is empty")


def test_a_missing_bearer_token_file_is_an_error(tmp_path):
    token = tmp_path / "token"
    e = load_error(write_config(tmp_path, f"  bearer_token_file: {token}\n"))
    assert e.key_path == "fleet.bearer_token_file"
    assert e.problem.startswith(f"cannot read {token}")


def test_an_unreadable_token_file_is_an_error(tmp_path):
    token = tmp_path / "token"
    token.mkdir()  # unreadable as a file even to root (a mode of 0 is not)
    e = load_error(write_config(tmp_path, f"  bearer_token_file: {token}\n"))
    assert e.problem == f"cannot read {token}: Is a directory"


def test_a_readable_token_file_loads(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    cfg = load_config(write_config(tmp_path, f"  bearer_token_file: {token}\n")).fleet
    assert cfg.bearer_token_file == str(token)
    assert cfg.enabled


def test_a_password_file_is_checked_too(tmp_path):
    pw = tmp_path / "am.pw"
    e = load_error(write_config(tmp_path, f"  username: nw\n  password_file: {pw}\n"))
    assert e.key_path == "fleet.password_file"
    pw.write_text("hunter2\n")
    assert load_config(write_config(tmp_path, f"  username: nw\n  password_file: {pw}\n")).fleet.username == "nw"


def test_parse_config_alone_does_not_read_the_files():
    """--check-config and reload go through load_config; parse_config is pure."""
    cfg = fleet("fleet:\n  ca_file: /nonexistent/ca.pem\n  bearer_token_file: /nonexistent/token\n")
    assert cfg.ca_file == "/nonexistent/ca.pem"
