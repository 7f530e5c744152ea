"""Alerts to an Alertmanager that serves HTTPS and wants basic auth (issue 25), as root: Debian's
prometheus-alertmanager with --web.config.file (a server certificate from a CA of the test's own,
a bcrypt-hashed user), one daemon on the shipped config (time compressed: tick 0.5 s, learning 0,
fleet.resend_interval_sec 0.5), about devices.interfaces, fleet.alertmanager_urls, fleet.ca_file,
fleet.username and fleet.password_file.

- a device joins: its alert reaches Alertmanager over TLS, verified against fleet.ca_file, with
  the user and the password from fleet.password_file;
- the password file is changed (rotated wrong): the next alert fails as HTTP 401, counted, and
  waits in the spool; the right password back in the file (no reload: it is read at every
  request), the alert is delivered."""
from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tools, requires
from tests.support.alertmanager import BINARY, Alertmanager
from tests.support.lan import mac_tail

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

USER = "netwatchd"


def make_certificates(d: Path) -> None:
    """ca.pem, and server.pem/server.key for 127.0.0.1 signed by it."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=netwatchd test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")


@pytest.fixture(scope="module")
def tls(make_world):
    """The world, a TLS Alertmanager with one user, and a daemon about devices.interfaces,
    fleet.alertmanager_urls, fleet.ca_file, fleet.username and fleet.password_file."""
    require_tools(BINARY, "openssl")
    try:
        import bcrypt  # Alertmanager's basic_auth_users are bcrypt hashes
    except ImportError:
        bcrypt = None
    requires(bcrypt is not None, "needs python3-bcrypt (make setup-test installs it)")
    w = make_world("nwt")
    certs = w.tmp / "certs"
    certs.mkdir()
    make_certificates(certs)
    w.password = secrets.token_hex(8)
    w.password_file = certs / "password"
    w.password_file.write_text(w.password + "\n")
    hashed = bcrypt.hashpw(w.password.encode(), bcrypt.gensalt(rounds=6)).decode()
    web = (f"tls_server_config:\n  cert_file: {certs / 'server.pem'}\n  key_file: {certs / 'server.key'}\n"
           f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    am = Alertmanager(web_config=web, ca_file=str(certs / "ca.pem"), auth=(USER, w.password)).start()
    try:
        w.am = am
        w.lan.add_node("first", "00:1b:21:" + mac_tail(), down=True)
        w.lan.add_node("second", "b8:27:eb:" + mac_tail(), down=True)
        w.start_daemon({"tick_interval_sec": 0.5, "alerts": {"learning_period_sec": 0},
                        "devices": {"interfaces": w.lan.ports()},
                        "fleet": {"alertmanager_urls": [am.url], "resend_interval_sec": 0.5,
                                  "ca_file": str(certs / "ca.pem"), "username": USER,
                                  "password_file": str(w.password_file)}},
                       about=("devices.interfaces", "fleet.alertmanager_urls", "fleet.ca_file", "fleet.username",
                              "fleet.password_file"))
        yield w
    finally:
        am.cleanup()


def join(w, name: str) -> str:
    node, other = w.node(name), w.node("second" if name == "first" else "first")
    w.lan.ns(node, "ip", "link", "set", "eth0", "up")
    w.lan.send_udp(node, [f"{other.ipv4}:9"], 3)  # sent from the node's namespace: only its /24 is routed
    return node.mac


def delivery(w) -> dict:
    return json.loads(w.ctl("status", "--json").stdout)["FleetDelivery"]


def test_an_alert_reaches_alertmanager_over_tls_with_basic_auth(tls):
    w = tls
    assert w.am.url.startswith("https://")
    mac = join(w, "first")
    (alert,) = w.wait(lambda: w.am.alerts(alertname="NetwatchdNewDevice", mac=mac), 15, "the alert over TLS")
    assert alert["labels"]["kind"] == "new_device" and "host" not in alert["labels"]
    assert not [k for k in delivery(w) if k.startswith("failed ")]


def test_a_wrong_password_is_counted_and_the_right_one_delivers_without_a_reload(tls):
    w = tls
    w.password_file.write_text("not-" + w.password + "\n")  # rotated wrong
    mac = join(w, "second")
    w.alert_for("new_device", f"device:{mac}")
    w.wait(lambda: delivery(w).get(f"failed {w.am.url} HTTP 401"), 10, "a 401 counted")
    assert w.am.alerts(alertname="NetwatchdNewDevice", mac=mac) == []
    w.password_file.write_text(w.password + "\n")  # rotated right: read at the next request
    w.wait(lambda: w.am.alerts(alertname="NetwatchdNewDevice", mac=mac), 10, "the spooled alert delivered")
    assert f"Alertmanager {w.am.url} takes alerts again" in w.daemon_log()
