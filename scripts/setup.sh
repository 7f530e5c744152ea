#!/bin/bash
# Installs what netwatchd needs on a Debian/Ubuntu machine, as root; quiet when all is there.
#   scripts/setup.sh          run-time needs: distro packages, kernel headers, venv in .venv
#   scripts/setup.sh --test   the same plus what the test suite drives (busctl, nspawn, ...)
set -euo pipefail
cd "$(dirname "$0")/.."

# libjs-chart.js: the web UI's charts (netwatchd/api/web/app.py serves Debian's copy)
RUNTIME_PKGS="python3-bpfcc python3-venv python3-systemd python3-aiohttp libjs-chart.js dbus dbus-daemon libbpf1 iproute2 bpftool ieee-data"
# busybox-static (not busybox, which conflicts with it): the kernel matrix's VMs need the static
# one for their initramfs (tests/kernels/vmrun.sh), and udhcpc in the device tests is the same.
# prometheus and prometheus-alertmanager: promtool, amtool and Alertmanager itself check the
# examples of examples/fleet/ (tests/integration/test_fleet_examples.py); systemd-journal-remote: the
# journal collected from many hosts (tests/integration/test_fleet_delivery.py); python3-bcrypt: the
# hashed user of an Alertmanager behind basic auth (tests/integration/test_fleet_tls.py).
# chromium, chromium-driver and python3-selenium: the web UI's browser tests drive headless
# Chromium through chromedriver (tests/support/browser.py; nothing is downloaded at test time).
TEST_PKGS="gcc libc6-dev systemd systemd-container mmdebstrap util-linux procps zstd git bind9-dnsutils curl jq openssl busybox-static nmap prometheus prometheus-alertmanager systemd-journal-remote python3-bcrypt man-db nftables chromium chromium-driver python3-selenium"

want="$RUNTIME_PKGS"
[ "${1:-}" = "--test" ] && want="$want $TEST_PKGS"

missing=()
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scripts/netwatchd-kernel-headers

getent group netwatchd >/dev/null || groupadd --system netwatchd

# bcc's Python module ships only as a distro package: the venv sees the system site packages.
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv from /usr/bin/python3"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.netwatchd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing netwatchd and its test extras into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
