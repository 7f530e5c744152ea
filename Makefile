# Quick start (as root, on a fresh Debian/Ubuntu machine):
#   make run    install what is missing, then run netwatchd in the foreground on config/netwatchd.yaml
#   make test   install what is missing, then run the whole test suite
PREFIX ?= /opt/netwatchd
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
DBUS_POLICYDIR ?= /usr/share/dbus-1/system.d
PYTEST_ARGS ?=

.PHONY: run test setup setup-test install uninstall bench bench-devices bench-tc bench-alerts

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

# The device path (issue 3): BPF ns per packet, sender packet rate, per-device counts (~2 min).
bench-devices: setup
	.venv/bin/python bench/device_bench.py

# TC attach paths (issue 9): clsact filters vs TCX links, BPF ns per packet and packets/s (~1 min).
bench-tc: setup
	.venv/bin/python bench/tc_attach_bench.py

# Baselines and alerts (issue 4): update + scoring per tick for 100k keys, vs a per-key Python loop (~5 s, no root).
bench-alerts: setup
	.venv/bin/python bench/detector_bench.py

# The package into its own venv, the unit, the bus policy, the journal catalog, the config if absent.
install: setup
	@scripts/install.sh "$(PREFIX)" "$(SYSCONFDIR)" "$(UNITDIR)" "$(DBUS_POLICYDIR)"

uninstall:
	@scripts/install.sh --uninstall "$(PREFIX)" "$(SYSCONFDIR)" "$(UNITDIR)" "$(DBUS_POLICYDIR)"
