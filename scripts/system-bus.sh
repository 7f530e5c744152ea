#!/bin/bash
# Makes sure netwatchd's bus policy is installed and a system bus runs (make run on a machine
# whose PID 1 is not systemd has none). Quiet when both are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
policy=/usr/share/dbus-1/system.d/org.netwatchd.Netwatchd1.conf
if ! cmp -s systemd/org.netwatchd.Netwatchd1.conf "$policy"; then
  install -D -m 0644 systemd/org.netwatchd.Netwatchd1.conf "$policy"
  echo "system-bus: installed $policy"
  busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null 2>&1 || true
fi
if ! busctl --system status >/dev/null 2>&1; then
  mkdir -p /run/dbus
  if [ -f /run/dbus/pid ] && ! kill -0 "$(cat /run/dbus/pid)" 2>/dev/null; then rm -f /run/dbus/pid; fi
  rm -f /run/dbus/system_bus_socket
  dbus-daemon --system --fork
  echo "system-bus: started the system bus (dbus-daemon --system)"
fi
