# Quick start (as root, on a fresh Debian/Ubuntu machine):
#   make run    install what is missing, then run netwatchd in the foreground on config/netwatchd.yaml
#   make test   install what is missing, then run the whole test suite
PREFIX ?= /opt/netwatchd
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
DBUS_POLICYDIR ?= /usr/share/dbus-1/system.d
PYTEST_ARGS ?=

.PHONY: run test setup setup-test install uninstall deb man bench bench-devices bench-tc bench-alerts bench-api bench-beacons bench-flows bench-busy bench-fleet bench-web screenshots

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

run: setup
	@scripts/system-bus.sh
	exec .venv/bin/netwatchd --config config/netwatchd.yaml

test: setup-test
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python bench/connect_bench.py

# Connect outcomes at scale (issue 12): daemon RSS and CPU with 100k distinct flows (~1 min).
bench-flows: setup
	.venv/bin/python bench/connect_flows_bench.py

# issue 24: a busy host's connect rate with and without netwatchd, BPF vs the floor, daemon CPU,
# records lost, RSS (~2 min)
bench-busy: setup
	.venv/bin/python bench/busy_host_bench.py

# issue 25: alerts to Alertmanager: delivery latency, daemon CPU per tick with 1000 alerts firing
# vs none, spool bytes per alert, series per host at max_devices (~2 min)
bench-fleet: setup
	.venv/bin/python bench/fleet_bench.py

# issue 26: the web UI with 1000 devices and 10000 alerts: time to first data per page, the API's
# server time, bytes per page load cold and warm, daemon CPU per live page per tick, tick time
# with 50 open pages vs none (~3 min)
bench-web: setup
	.venv/bin/python bench/web_bench.py

# The device path (issue 3): BPF ns per packet, sender packet rate, per-device counts (~2 min).
bench-devices: setup
	.venv/bin/python bench/device_bench.py

# TC attach paths (issue 9): clsact filters vs TCX links, BPF ns per packet and packets/s (~1 min).
bench-tc: setup
	.venv/bin/python bench/tc_attach_bench.py

# Baselines and alerts (issue 4): update + scoring per tick for 100k keys, vs a per-key Python loop (~5 s, no root).
# Issue 10: the detector before and after side by side, how the burst defaults were chosen, and
# detection latency in ticks per scenario (the last needs root, ~2 min).
bench-alerts: setup
	.venv/bin/python bench/detector_bench.py
	.venv/bin/python bench/burst_bench.py
	.venv/bin/python bench/alert_latency.py

# ebpf-server's HTTP API (issue 13): each route's request latency against GET /health (~30 s).
bench-api: setup
	.venv/bin/python bench/ebpf_api_bench.py

# Beacons (issue 14): per-tick CPU/memory at 100k pairs, latency per jitter, false alerts/hour on a
# quiet host (~2 min, no root); then ns per packet of the classifier with and without the map (root).
bench-beacons: setup
	.venv/bin/python bench/beacon_bench.py
	.venv/bin/python bench/beacon_kernel_bench.py

# issue 26: the README's screenshots of the web UI (docs/screenshots/), taken by the browser test
# in its lab run (a namespace LAN, Debian's headless chromium; root, ~30 s)
screenshots: setup-test
	rm -rf build/screenshots
	NETWATCHD_ARTIFACTS=build/screenshots CI=true .venv/bin/python -m pytest -q -p no:cacheprovider tests/integration/test_web_browser.py
	mkdir -p docs/screenshots
	cp build/screenshots/test_web_browser/*.png docs/screenshots/

# The package into its own venv, the unit, the bus policy, the journal catalog, the config if absent.
install: setup
	@scripts/install.sh "$(PREFIX)" "$(SYSCONFDIR)" "$(UNITDIR)" "$(DBUS_POLICYDIR)"

uninstall:
	@scripts/install.sh --uninstall "$(PREFIX)" "$(SYSCONFDIR)" "$(UNITDIR)" "$(DBUS_POLICYDIR)"

# The Debian package (debian/, debhelper + pybuild), checked with lintian: dist/netwatchd_<version>_all.deb.
# Installs the build dependencies when any is missing.
deb:
	@scripts/build-deb.sh

# Regenerates the man pages made from other sources (the config's comments, the D-Bus
# introspection) and the D-Bus interface XML; a unit test fails when the committed ones differ.
man: setup
	.venv/bin/python man/generate.py
