#!/bin/bash
# make install / make uninstall: the package into its own venv, unit, bus policy, sysusers and
# tmpfiles snippets, journal catalog (journalctl -x), man pages, bash completion, config (only if
# absent: an operator's file is never overwritten), then daemon-reload.
# The unit and the catalog name the Debian package's paths (/usr/sbin, /usr/libexec/netwatchd,
# /usr/share/doc/netwatchd): they are rewritten here to this prefix's.
set -euo pipefail
cd "$(dirname "$0")/.."
uninstall=0
[ "${1:-}" = "--uninstall" ] && { uninstall=1; shift; }
prefix=$1 sysconfdir=$2 unitdir=$3 policydir=$4

catalogdir=/usr/lib/systemd/catalog
mandir=/usr/local/share/man
completiondir=/usr/local/share/bash-completion/completions
manpages=(man/netwatchd.8 man/netwatchctl.1 man/netwatchd.yaml.5 man/org.netwatchd.Netwatchd1.5)

systemd_running() { [ -d /run/systemd/system ]; }
# journalctl -x reads a compiled database, not the catalog files: rebuild it after each change.
update_catalog() {
  command -v journalctl >/dev/null || return 0
  journalctl --update-catalog || echo "warning: journalctl --update-catalog failed: journalctl -x will not explain netwatchd's alerts" >&2
}

if [ "$uninstall" = 1 ]; then
  systemd_running && systemctl disable --now netwatchd.service 2>/dev/null || true
  rm -rf "$prefix"
  rm -f "$unitdir/netwatchd.service" "$unitdir/netwatchd-kernel-headers.service" "$policydir/org.netwatchd.Netwatchd1.conf" \
        /usr/lib/sysusers.d/netwatchd.conf /usr/lib/tmpfiles.d/netwatchd.conf /usr/local/bin/netwatchctl \
        "$catalogdir/netwatchd.catalog" "$completiondir/netwatchctl"
  for page in "${manpages[@]}"; do rm -f "$mandir/man${page##*.}/${page#man/}"; done
  update_catalog
  systemd_running && systemctl daemon-reload || true
  echo "uninstalled (kept $sysconfdir/netwatchd and /var/lib/netwatchd)"
  exit 0
fi

[ -x "$prefix/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$prefix"
"$prefix/bin/pip" install -q --disable-pip-version-check .
install -D -m 0755 scripts/netwatchd-kernel-headers "$prefix/libexec/netwatchd-kernel-headers"
install -D -m 0644 README.md "$prefix/share/doc/netwatchd/README.md"
for unit in netwatchd.service netwatchd-kernel-headers.service; do
  install -D -m 0644 "systemd/$unit" "$unitdir/$unit"
  sed -i "s#/usr/sbin/netwatchd#$prefix/bin/netwatchd#g; s#/usr/libexec/netwatchd/#$prefix/libexec/#g;
          s#/usr/share/doc/netwatchd/#$prefix/share/doc/netwatchd/#g;
          s#/etc/netwatchd#$sysconfdir/netwatchd#g" "$unitdir/$unit"
done
install -D -m 0644 systemd/org.netwatchd.Netwatchd1.conf "$policydir/org.netwatchd.Netwatchd1.conf"
install -D -m 0644 systemd/netwatchd.sysusers.conf /usr/lib/sysusers.d/netwatchd.conf
install -D -m 0644 systemd/netwatchd.tmpfiles.conf /usr/lib/tmpfiles.d/netwatchd.conf
install -D -m 0644 systemd/netwatchd.catalog "$catalogdir/netwatchd.catalog"
sed -i "s#/usr/share/doc/netwatchd/#$prefix/share/doc/netwatchd/#g" "$catalogdir/netwatchd.catalog"
for page in "${manpages[@]}"; do install -D -m 0644 "$page" "$mandir/man${page##*.}/${page#man/}"; done
install -D -m 0644 completion/netwatchctl "$completiondir/netwatchctl"
update_catalog
getent group netwatchd >/dev/null || groupadd --system netwatchd
ln -sfn "$prefix/bin/netwatchctl" /usr/local/bin/netwatchctl
if [ ! -e "$sysconfdir/netwatchd/netwatchd.yaml" ]; then
  install -D -m 0644 config/netwatchd.yaml "$sysconfdir/netwatchd/netwatchd.yaml"
fi
if systemd_running; then
  systemctl daemon-reload
  busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null 2>&1 || true
fi
echo "installed netwatchd in $prefix; start it with: systemctl enable --now netwatchd"
