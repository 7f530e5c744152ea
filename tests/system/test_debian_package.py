"""The Debian package in a booted systemd (issue 15's acceptance), in order, in one container:

  - `make deb` on the host, from the checkout (dpkg-buildpackage, then lintian: no error or
    warning); the .deb is copied into a minimal Debian 12 rootfs that has none of its dependencies;
  - `apt install ./netwatchd_<version>_all.deb` pulls them (python3-bpfcc, python3-dbus-fast, ...):
    the service is enabled and running, `busctl` answers, the group, the conffile, the journal
    catalog (systemd's dpkg trigger) are there, and the bus policy lets group members in;
  - `man netwatchctl` (and the other three pages) render;
  - bash completion: `netwatchctl de<TAB>` gives device and devices; `netwatchctl device <TAB>`
    gives the MACs and addresses of devices the daemon saw on a LAN made in the container; a user
    the daemon refuses gets nothing, silently;
  - `apt remove`: the service is stopped and none of the BPF programs or links it held remains
    (by id, from its fds, and by name with bpftool); config and state stay;
  - `apt purge`: /etc/netwatchd and /var/lib/netwatchd are gone, and so are the catalog entries.

The container boots with a private network: apt inside cannot reach a mirror, so its dependencies
are downloaded (cached in /var/tmp/netwatchd-test/apt-archives) while the rootfs is provisioned,
and `apt install` inside resolves and installs them from apt's own archive cache.
Run: .venv/bin/python -m pytest tests/system/test_debian_package.py -x -s   (root)
"""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from netwatchd import __version__
from tests.conftest import REPO, requires, require_tools
from tests.support.oracles import readme_alert_kinds
from tests.system.conftest import DEB
from tests.system.container import (DEB_ROOTFS_PACKAGES, Container, download_deb_dependencies, log,
                                    new_workdir, rootfs_tarball)
from tests.system.test_systemd_service import (
    LAN_MACS,
    BoxLan,
    get_property,
    is_active,
    list_devices,
    loaded_bpf,
    our_bpf_ids,
    vardict,
    call,
    wait_for,
    wait_gone,
)

# builds the package (up to 20 min on a cold cache) and boots a container: a timeout of its own
pytestmark = [pytest.mark.system, pytest.mark.timeout(2400)]

UNIT = "netwatchd.service"
# A minimal system with systemd and what the test itself drives (man, bash-completion, bpftool,
# ip); none of the package's own dependencies but dbus, which booting needs anyway.
ROOTFS_PACKAGES = DEB_ROOTFS_PACKAGES
PULLED = ("python3-bpfcc", "python3-dbus-fast", "python3-sdnotify", "python3-numpy", "python3-yaml",
          "python3-systemd", "ieee-data")
MAN_PAGES = {"netwatchctl": "NETWATCHCTL(1)", "netwatchd": "NETWATCHD(8)",
             "netwatchd.yaml": "NETWATCHD.YAML(5)", "org.netwatchd.Netwatchd1": "ORG.NETWATCHD.NETWATCHD1(5)"}
MESSAGE_IDS = sorted(message_id for message_id, _ in readme_alert_kinds().values())  # the README's table

# Completes the words given as arguments the way bash would on <TAB>: bash-completion loads
# netwatchctl's completion on demand, COMP_* are set as bash sets them, candidates one a line.
COMPLETE = r"""
source /usr/share/bash-completion/bash_completion
_completion_loader netwatchctl
spec=$(complete -p netwatchctl) || exit 90
func=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<<"$spec")
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<<"$COMP_LINE"; [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
"$func" netwatchctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture(scope="module")
def box(deb, request):
    require_tools("systemd-nspawn", "mmdebstrap", "unshare", "nsenter", "tar", "zstd")
    release = os.uname().release
    requires(os.path.exists(f"/lib/modules/{release}/build"),
             f"needs kernel headers at /lib/modules/{release}/build (make setup-test links them)")
    tarball = rootfs_tarball(REPO, ROOTFS_PACKAGES)
    box = Container(new_workdir(), f"nwdeb-{os.getpid()}")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        box.create(tarball)
        box.copy_in(deb.parent, [deb.name], "/root")
        download_deb_dependencies(box, DEB)
        box.boot()
        yield box
    finally:
        if request.session.testsfailed and box.pid1 is not None:
            r = box.run(["journalctl", "-b", "--no-pager", "-n", "60", "-u", UNIT], check=False)
            print("---- journal of netwatchd.service (last 60 lines) ----\n" + r.stdout + r.stderr)
        box.destroy()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def dpkg_status(box: Container, package: str) -> str:
    r = box.run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


def complete(box: Container, line: str, user: str = "root") -> tuple:
    """(candidates, stderr) of <TAB> at the end of `line`, typed by `user`."""
    argv = ["bash", "-c", COMPLETE, "complete", *line.split(" ")]  # "a b " -> a, b and an empty word
    if user != "root":
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    r = box.run(argv, timeout=30)
    return [c for c in r.stdout.splitlines() if c], r.stderr


# ------------------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def installed(box):
    for package in PULLED:
        assert dpkg_status(box, package) == "unknown", f"{package} is already in the rootfs"
    t0 = time.monotonic()
    r = box.sh(f"cd /root && apt install -y ./{DEB}", timeout=600, check=False)
    took = time.monotonic() - t0
    assert r.returncode == 0, f"apt install failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    pulled = re.findall(r"^Setting up (\S+) ", r.stdout, re.M)
    log(f"apt install ./{DEB}: {took:.1f}s, set up {len(pulled)} packages")
    return {"seconds": took, "pulled": pulled, "stdout": r.stdout}


def test_apt_install_pulls_the_dependencies_and_starts_the_service(box, installed):
    for package in PULLED + ("netwatchd",):
        assert dpkg_status(box, package) == "install ok installed", package
    print(f"\napt install set up {len(installed['pulled'])} packages in {installed['seconds']:.1f}s")
    assert box.run(["systemctl", "is-enabled", UNIT], check=False).stdout.strip() == "enabled"
    assert is_active(box) == "active"
    assert get_property(box, "Version") == __version__
    assert get_property(box, "ConfigFile") == "/etc/netwatchd/netwatchd.yaml"
    answer = vardict(call(box, "Summary", "usu", 0, "nosuchcommand", 60)[0])
    assert answer["total_attempts"] == 0 and answer["command"] == "nosuchcommand", answer
    assert box.run(["readlink", "-f", "/proc/" + box.run(["systemctl", "show", "-p", "MainPID", "--value", UNIT])
                    .stdout.strip() + "/exe"]).stdout.strip().startswith("/usr/bin/python3")
    assert "/usr/sbin/netwatchd --config /etc/netwatchd/netwatchd.yaml" in \
        box.run(["systemctl", "show", "-p", "ExecStart", "--value", UNIT]).stdout


def test_the_installed_unit_verifies_with_its_man_pages(box, installed):
    """systemd-analyze verify without --man=no: each man: in Documentation= must resolve too."""
    # both units: the service and the set-up it requires
    r = box.run(["systemd-analyze", "verify", "/lib/systemd/system/netwatchd.service",
                 "/lib/systemd/system/netwatchd-kernel-headers.service"], check=False)
    diagnostics = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not diagnostics, f"systemd-analyze verify (rc {r.returncode}):\n{diagnostics}"


def test_the_package_set_up_group_conffile_state_and_catalog(box, installed):
    assert box.run(["getent", "group", "netwatchd"], check=False).returncode == 0
    conffiles = box.run(["dpkg-query", "-W", "-f=${Conffiles}", "netwatchd"]).stdout
    assert "/etc/netwatchd/netwatchd.yaml" in conffiles, conffiles
    assert box.run(["stat", "-c", "%a %U", "/var/lib/netwatchd"]).stdout.split() == ["750", "root"]
    listed = box.run(["journalctl", "--list-catalog", *MESSAGE_IDS]).stdout
    assert sorted(line.split()[0] for line in listed.splitlines()) == MESSAGE_IDS, listed
    # the bus policy: a member of group netwatchd may query, anyone else is refused
    box.run(["useradd", "--no-create-home", "-G", "netwatchd", "nwmember"])
    member = box.run(["setpriv", "--reuid=nwmember", "--regid=nwmember", "--init-groups",
                      "netwatchctl", "--json", "status"], check=False)
    assert member.returncode == 0 and json.loads(member.stdout)["Version"] == __version__, member
    other = box.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                     "netwatchctl", "status"], check=False)
    assert other.returncode == 4 and "access denied" in other.stderr, other


@pytest.mark.parametrize("page", sorted(MAN_PAGES))
def test_man_renders(box, installed, page):
    r = box.run(["env", "MANWIDTH=80", "man", "-P", "cat", page], check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(MAN_PAGES[page]), r.stdout[:300]
    assert "NAME" in r.stdout and "SEE ALSO" in r.stdout
    if page == "netwatchctl":
        assert "netwatchctl - ask the running netwatchd" in r.stdout
        print(f"\nman netwatchctl:\n{r.stdout[:600]}")


def test_completion_of_verbs_and_of_the_daemons_devices(box, installed):
    words, err = complete(box, "netwatchctl de")
    assert sorted(words) == ["device", "devices"] and not err, (words, err)
    assert sorted(complete(box, "netwatchctl --json summary --")[0]) == \
        ["--command", "--duration", "--help", "--json", "--pid"]

    lan = BoxLan(box)
    try:
        lan.create()
        lan.join()
        wait_for(lambda: set(lan.ports.values()) <= set(get_property(box, "Interfaces")), 30,
                 "netwatchd to watch the LAN's ports")

        def seen():
            lan.ping("a", "b")
            lan.ping("b", "a")
            d = list_devices(box)
            return all(m in d and lan.ipv4[n] in d[m]["ipv4"] for n, m in LAN_MACS.items())
        wait_for(seen, 30, "the LAN's devices and their addresses", interval=0.5)

        words, err = complete(box, "netwatchctl device ")
        assert set(LAN_MACS.values()) | set(lan.ipv4.values()) <= set(words) and not err, (words, err)
        # bash replaces only what follows the last ":" of a MAC: the candidates are cut there
        words, _ = complete(box, "netwatchctl device 00:16:3e:4e:57:0")
        assert sorted(words) == ["01", "02"], words
        words, _ = complete(box, "netwatchctl --json device 10.77.0.")
        assert sorted(words) == sorted(lan.ipv4.values()), words
        print(f"\nnetwatchctl device <TAB>: {sorted(complete(box, 'netwatchctl device ')[0])}")
        # refused by the bus policy (as when the daemon is not running): nothing, silently
        words, err = complete(box, "netwatchctl device ", user="nobody")
        assert words == [] and err == "", (words, err)
        assert sorted(complete(box, "netwatchctl de", user="nobody")[0]) == ["device", "devices"]
    finally:
        lan.cleanup()


def test_apt_remove_stops_the_service_and_leaves_no_bpf_program(box, installed):
    ids = our_bpf_ids(box)
    names = {i: n for i, n in loaded_bpf(box)["progs"].items() if i in ids["progs"]}
    assert {"nw_connect4", "nw_connect6"} <= set(names.values()), names
    t0 = time.monotonic()
    r = box.run(["apt", "remove", "-y", "netwatchd"], timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    print(f"\napt remove: {time.monotonic() - t0:.1f}s; our programs were {sorted(names.items())}")
    assert is_active(box) in ("inactive", "unknown")
    assert dpkg_status(box, "netwatchd") == "deinstall ok config-files"
    left = wait_gone(box, ids)
    assert not any(left.values()), f"still loaded or attached after apt remove: {left}"
    still = {i: n for i, n in loaded_bpf(box)["progs"].items() if (i, n) in names.items()}
    assert not still, f"bpftool still shows our programs: {still}"
    # remove keeps the configuration and the state
    assert box.run(["test", "-f", "/etc/netwatchd/netwatchd.yaml"], check=False).returncode == 0
    assert box.run(["test", "-d", "/var/lib/netwatchd"], check=False).returncode == 0


def test_apt_purge_removes_config_and_state(box, installed):
    assert box.run(["test", "-e", "/var/lib/netwatchd/inventory.sqlite3"], check=False).returncode == 0
    r = box.run(["apt", "purge", "-y", "netwatchd"], timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert dpkg_status(box, "netwatchd") in ("unknown", "not-installed", "unknown ok not-installed")
    for path in ("/etc/netwatchd", "/var/lib/netwatchd", "/usr/share/dbus-1/system.d/org.netwatchd.Netwatchd1.conf",
                 "/lib/systemd/system/netwatchd.service", "/lib/systemd/system/netwatchd-kernel-headers.service",
                 "/usr/lib/systemd/catalog/netwatchd.catalog"):
        assert box.run(["test", "-e", path], check=False).returncode != 0, f"{path} is still there after purge"
    listed = box.run(["journalctl", "--list-catalog", *MESSAGE_IDS], check=False).stdout
    assert not listed.strip(), f"catalog entries left after purge: {listed}"
