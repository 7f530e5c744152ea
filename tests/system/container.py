"""A real systemd (PID 1) booted in a systemd-nspawn container, for the tests in tests/system.

The machines this project is built on do not run systemd as PID 1 and have no machined, so the
container is started the way that works there (taken from a recipe verified on this machine kind):

- the root file system is a Debian minbase built with mmdebstrap, cached as a tarball under
  CACHE_DIR keyed on suite, mirror and package list (built when absent, ~30-60 s);
- nspawn needs `--register=no --keep-unit` and runs inside `unshare -m` with a tmpfs on
  /run/systemd (it wants /run/systemd/nspawn/ and cannot clean it on a non-tmpfs /run); every
  mount it makes lives in that private mount namespace and goes away with it;
- nspawn's seccomp allow-list leaves out `bpf` and `perf_event_open` and its capability set lacks
  CAP_BPF/CAP_PERFMON: both are added;
- a private bpffs is mounted by a unit inside the container (nspawn's own /sys would shadow
  binds); tracefs is not: systemd skips sys-kernel-tracing.mount in a container (no
  CAP_SYS_RAWIO), so netwatchd-kernel-headers.service mounts it, as on a user's container;
  the host's kernel headers are bound read-only for bcc;
- commands reach the booted container with `nsenter -t <container PID 1> -a` (machinectl and
  `systemd-run -M` need machined).

Tracepoints are system-wide: BPF in the container also sees the host's events.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

CACHE_DIR = Path(os.environ.get("NETWATCHD_TEST_CACHE", "/var/tmp/netwatchd-test"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What the container needs besides the project's run-time packages (read from scripts/setup.sh).
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "make", "procps", "util-linux")
# The rootfs the Debian package is installed into: systemd and what the tests themselves drive
# (man, bash-completion, bpftool, ip); none of the package's own dependencies but dbus, which
# booting needs anyway (tests/system/test_debian_package.py, tests/system/fleet_lab.py).
DEB_ROOTFS_PACKAGES = ("systemd", "systemd-sysv", "dbus", "man-db", "bash-completion", "bpftool", "iproute2",
                       "procps", "util-linux")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
# Units that only add noise and time to a container's boot.
MASKED_UNITS = (
    "console-getty.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
)
KERNFS_UNIT = """\
[Unit]
Description=test harness: mount a private bpffs inside the container
DefaultDependencies=no
Before=sysinit.target
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=-/bin/sh -c 'mount -t bpf -o mode=700 bpf /sys/fs/bpf'

[Install]
WantedBy=sysinit.target
"""


class ContainerError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[system-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------ rootfs
def runtime_packages(repo: Path) -> List[str]:
    """RUNTIME_PKGS from scripts/setup.sh, so `make install` inside finds them all present."""
    text = (repo / "scripts" / "setup.sh").read_text()
    m = re.search(r'^RUNTIME_PKGS="([^"]*)"', text, re.M)
    return m.group(1).split() if m else []


def rootfs_packages(repo: Path) -> List[str]:
    return sorted(set(BASE_PACKAGES) | set(runtime_packages(repo)))


def rootfs_tarball(repo: Path, packages: Optional[Sequence[str]] = None) -> Path:
    """The cached rootfs tarball for a package list (default: rootfs_packages, what `make
    install` needs); built with mmdebstrap if absent."""
    pkgs = sorted(set(packages)) if packages is not None else rootfs_packages(repo)
    key = hashlib.sha256("\n".join([SUITE, MIRROR, "minbase", *pkgs]).encode()).hexdigest()[:16]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"rootfs-{SUITE}-{key}.tar.zst"
    if tarball.exists():
        log(f"rootfs: cached {tarball}")
        return tarball
    log(f"rootfs: building {tarball.name} with mmdebstrap ({len(pkgs)} packages: {' '.join(pkgs)})")
    t0 = time.monotonic()
    tmp = CACHE_DIR / f".{tarball.name}.{os.getpid()}.tmp.tar.zst"
    logfile = CACHE_DIR / f".mmdebstrap.{os.getpid()}.log"
    try:
        with open(logfile, "w") as out:
            r = subprocess.run(
                ["mmdebstrap", "--variant=minbase", "--mode=root", f"--include={','.join(pkgs)}",
                 SUITE, str(tmp), MIRROR],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=900,
            )
        if r.returncode != 0:
            raise ContainerError(f"mmdebstrap failed (rc {r.returncode}):\n{_tail(logfile, 30)}")
        os.replace(tmp, tarball)  # atomic: a concurrent run sees the whole file or none
    finally:
        for p in (tmp, logfile):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    log(f"rootfs: built in {time.monotonic() - t0:.1f}s, {tarball.stat().st_size / 2**20:.0f} MiB")
    return tarball


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def repo_files(repo: Path) -> List[str]:
    """The checkout as git sees it (tracked and untracked, not ignored): no .venv, no caches."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout
    return sorted({f for f in out.decode().split("\0") if f and (repo / f).is_file()})


def header_binds() -> List[str]:
    """Read-only binds that make /lib/modules/$(uname -r)/build resolve inside the container."""
    release = os.uname().release
    moddir = Path("/lib/modules") / release
    binds = [str(moddir)]
    for link in ("build", "source"):
        target = Path(os.path.realpath(moddir / link))
        if target.is_dir():
            binds.append(str(target))
    scripts = Path(os.path.realpath(moddir / "build" / "scripts"))  # .../linux-kbuild-X/scripts
    if scripts.is_dir():
        binds.append(str(scripts.parent))
    return sorted(set(binds))


# ------------------------------------------------------------------------------------ container
class Container:
    """One throw-away container: rootfs under `workdir`, booted systemd, cleaned by destroy()."""

    def __init__(self, workdir: Path, name: str):
        self.workdir = workdir
        self.root = workdir / "root"
        self.name = name
        self.console_log = workdir / "console.log"
        self.nspawn: Optional[subprocess.Popen] = None
        self.pid1: Optional[int] = None
        self.cgroup: Optional[Path] = None
        self._v1_mirror: Optional[Path] = None
        self._mounted = False

    # -- build -----------------------------------------------------------------------------
    def create(self, tarball: Path) -> None:
        self._mount()
        subprocess.run(["tar", "--zstd", "-xpf", str(tarball), "-C", str(self.root)], check=True)
        self._prepare()

    def create_copy(self, source: "Container") -> None:
        """This container's rootfs as a copy of `source`'s (stopped, or never booted): a rootfs
        provisioned once serves many containers."""
        if source.pid1 is not None:
            raise ContainerError(f"copying {source.name}'s rootfs while it runs")
        self._mount()
        subprocess.run(["cp", "-a", f"{source.root}/.", str(self.root)], check=True)
        self._prepare()

    def _mount(self) -> None:
        # A tmpfs: unpacking is quicker, and tearing down is one umount instead of a slow rm of
        # ~500 MB on a busy disk. Sized to cap what a runaway install could take.
        self.root.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755,size=3g", "netwatchd-test", str(self.root)],
                       check=True)
        self._mounted = True

    def _prepare(self) -> None:
        (self.root / "etc" / "hostname").write_text(self.name + "\n")
        units = self.root / "etc" / "systemd" / "system"
        for unit in MASKED_UNITS:
            link = units / unit
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("/dev/null")
        (units / "test-kernfs.service").write_text(KERNFS_UNIT)
        wants = units / "sysinit.target.wants"
        wants.mkdir(exist_ok=True)
        if not (wants / "test-kernfs.service").is_symlink():
            (wants / "test-kernfs.service").symlink_to("/etc/systemd/system/test-kernfs.service")

    def copy_in(self, src: Path, files: Iterable[str], dest: str) -> None:
        """Copy `files` (relative to src) to `dest` inside the rootfs, keeping modes."""
        target = self.root / dest.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        listing = "\0".join(files).encode()
        pack = subprocess.Popen(["tar", "-C", str(src), "--null", "-T", "-", "-cf", "-"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        unpack = subprocess.Popen(["tar", "-C", str(target), "-xpf", "-"], stdin=pack.stdout)
        pack.stdout.close()
        pack.communicate(listing)
        if unpack.wait() != 0 or pack.returncode != 0:
            raise ContainerError(f"copying {src} into {target} failed")

    # -- nspawn ----------------------------------------------------------------------------
    def _nspawn_args(self) -> List[str]:
        a = ["-D", str(self.root), "--register=no", "--keep-unit", "-M", self.name, "-q",
             "--capability=CAP_BPF,CAP_PERFMON,CAP_SYS_ADMIN,CAP_NET_ADMIN",
             "--system-call-filter=bpf perf_event_open"]
        a += [f"--bind-ro={d}" for d in header_binds()]
        a.append("--bind=/sys/fs/bpf")  # only creates the mount point: test-kernfs.service hides it
        return a

    @staticmethod
    def _wrapped(nspawn_args: Sequence[str], cgroup: Optional[Path] = None) -> List[str]:
        # The resulting process *is* systemd-nspawn (unshare and sh exec into it), in `cgroup`
        # when given.
        enter = f"echo $$ > '{cgroup}/cgroup.procs' && " if cgroup else ""
        return ["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c",
                enter + 'mount -t tmpfs -o mode=755 tmpfs /run/systemd && exec systemd-nspawn "$@"',
                "nspawn", *nspawn_args]

    def _own_cgroup(self) -> Path:
        """A cgroup2 directory of the container's own, below this process's. With --keep-unit,
        nspawn splits the cgroup it runs in into payload/ (the container) and supervisor/ (itself):
        containers started from one process would share payload/, and with it every unit's cgroup
        (netwatchd.service's of one would be another's), and a daemon that counts the connects of
        its own container's cgroup only would count all of theirs."""
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
        own = dict(line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().splitlines())
        mount = next(m[1] for m in mounts if m[2] == "cgroup2")
        self.cgroup = Path(mount + own[""].rstrip("/")) / f"netwatchd-test-{self.name}"
        self.cgroup.mkdir(exist_ok=True)
        # on a hybrid host nspawn mirrors it in the name=systemd hierarchy: removed with it
        self._v1_mirror = next((Path(m[1] + own.get("name=systemd", "/").rstrip("/")) / self.cgroup.name
                                for m in mounts if m[2] == "cgroup" and "name=systemd" in m[3].split(",")), None)
        return self.cgroup

    def _remove_cgroup(self) -> None:
        if self.cgroup is None:
            return
        if "populated 1" in (self.cgroup / "cgroup.events").read_text():  # nspawn was killed, not its payload
            (self.cgroup / "cgroup.kill").write_text("1")
            deadline = time.monotonic() + 10
            while "populated 1" in (self.cgroup / "cgroup.events").read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        for top in (self.cgroup, self._v1_mirror):
            for d, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])) if top else ():  # the deepest first
                try:
                    os.rmdir(d)
                except OSError as e:
                    log(f"cgroup {d} not removed: {e}")
        self.cgroup = self._v1_mirror = None

    def provision(self, command: str, binds: Sequence[str] = (), timeout: float = 900) -> str:
        """Run a shell command in the rootfs, not booted, with the host's network (apt, pip)."""
        a = self._nspawn_args() + ["--as-pid2", "--pipe"]
        if os.path.exists(CA_BUNDLE):  # HTTPS here may pass a TLS-intercepting proxy
            a += [f"--bind-ro={CA_BUNDLE}:/run/test-ca.crt", "--setenv=SSL_CERT_FILE=/run/test-ca.crt",
                  "--setenv=PIP_CERT=/run/test-ca.crt", "--setenv=REQUESTS_CA_BUNDLE=/run/test-ca.crt"]
        a += [f"--bind={b}" for b in binds]
        a += [f"--setenv={k}={v}" for k, v in CLEAN_ENV.items()]
        a += ["--setenv=PIP_DISABLE_PIP_VERSION_CHECK=1", "--setenv=DEBIAN_FRONTEND=noninteractive"]
        a += ["--", "/bin/sh", "-c", command]
        os.makedirs("/run/systemd", exist_ok=True)
        r = subprocess.run(self._wrapped(a), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, start_new_session=True)
        if r.returncode != 0:
            raise ContainerError(f"provisioning `{command}` failed (rc {r.returncode}):\n"
                                 f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r.stdout

    def boot(self, timeout: float = 60, network_bridge: Optional[str] = None, own_cgroup: bool = False) -> str:
        """Boot systemd in the background with a private network (or, given `network_bridge`, a
        veth whose container end is `host0` and whose host end is a port of that bridge), in a
        cgroup of its own if asked (_own_cgroup: needed when containers run side by side);
        returns is-system-running."""
        t0 = time.monotonic()
        network = [f"--network-bridge={network_bridge}"] if network_bridge else ["--private-network"]
        a = self._nspawn_args() + network + ["--console=read-only", "-b"]
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        os.makedirs("/run/systemd", exist_ok=True)
        cgroup = self._own_cgroup() if own_cgroup else None
        with open(self.console_log, "wb") as out:
            self.nspawn = subprocess.Popen(self._wrapped(a, cgroup), stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = t0 + timeout
        while self.pid1 is None:
            if self.nspawn.poll() is not None:
                raise ContainerError(f"nspawn exited (rc {self.nspawn.returncode}):\n{_tail(self.console_log, 40)}")
            if time.monotonic() > deadline:
                raise ContainerError(f"container PID 1 did not appear:\n{_tail(self.console_log, 40)}")
            self.pid1 = _child_named(self.nspawn.pid, "systemd")
            time.sleep(0.05)
        state = ""
        while not state:
            if time.monotonic() > deadline:
                raise ContainerError(f"systemd did not come up:\n{_tail(self.console_log, 40)}")
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=30).stdout.strip()
            if not state:
                time.sleep(0.25)
        log(f"container {self.name} booted in {time.monotonic() - t0:.1f}s: {state} "
            f"(nspawn pid {self.nspawn.pid}, container PID 1 = host pid {self.pid1})")
        return state

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 60,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run argv inside the booted container (all its namespaces, a clean environment)."""
        if self.pid1 is None:
            raise ContainerError("container is not booted")
        env = [f"{k}={v}" for k, v in CLEAN_ENV.items()]
        cmd = ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", *env, *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise ContainerError(f"`{shlex.join(argv)}` failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["/bin/sh", "-c", script], **kw)

    def write_file(self, path: str, text: str) -> None:
        self.run(["/bin/sh", "-c", 'cat > "$1"', "sh", path], input=text)

    def host_pid(self, pid: int) -> Optional[int]:
        """The host's pid of the container's process `pid` (None if there is none)."""
        ns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{d}/ns/pid") != ns:
                    continue
                with open(f"/proc/{d}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            if int(line.split()[-1]) == pid:
                                return int(d)
                            break
            except (OSError, ValueError):
                continue
        return None

    # -- teardown --------------------------------------------------------------------------
    def stop(self, timeout: float = 30) -> None:
        """Orderly poweroff (SIGTERM to nspawn), SIGKILL to nspawn if it does not end in time."""
        p = self.nspawn
        if p is None or p.poll() is not None:
            self.pid1 = None
            self._remove_cgroup()
            return
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"container {self.name}: no clean shutdown after {timeout:.0f}s, SIGKILL to nspawn pid {p.pid}")
            p.kill()
            p.wait(30)
        self.pid1 = None
        self._remove_cgroup()
        log(f"container {self.name} stopped in {time.monotonic() - t0:.1f}s")

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            if self.nspawn is not None and self.nspawn.poll() is None:
                log(f"nspawn pid {self.nspawn.pid} still running: leaving {self.workdir} in place")
                return
            # nspawn's own mounts lived in its private mount namespace; ours is the tmpfs
            if self._mounted:
                r = subprocess.run(["umount", str(self.root)], capture_output=True, text=True)
                if r.returncode != 0:
                    log(f"umount {self.root}: {r.stderr.strip()}; detaching it lazily")
                    subprocess.run(["umount", "-l", str(self.root)], check=False)
                self._mounted = False
            # --one-file-system: never descend into anything still mounted below
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.workdir)], check=False)


def _child_named(ppid: int, comm: str) -> Optional[int]:
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if name == comm and int(fields[1]) == ppid:
            return int(d)
    return None


def download_deb_dependencies(box: Container, deb: str) -> float:
    """Provisions `box` (not booted, the host's network) for an offline `apt install /root/<deb>`:
    apt's lists, and the package's dependencies in apt's own archive cache, downloaded into a
    cache kept between runs (CACHE_DIR/apt-archives). Returns the seconds it took."""
    archives = CACHE_DIR / "apt-archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    box.provision("apt-get update -qq && apt-get install -y -qq --download-only "
                  f"-o Dir::Cache::Archives=/var/cache/netwatchd-test/ /root/{deb} >/dev/null && "
                  "cp /var/cache/netwatchd-test/*.deb /var/cache/apt/archives/",
                  binds=[f"{archives}:/var/cache/netwatchd-test"])
    took = time.monotonic() - t0
    log(f"dependencies downloaded (or cached) in {took:.1f}s")
    return took


def new_workdir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=CACHE_DIR))


def bpf_ids_of(host_pid: int) -> Dict[str, set]:
    """BPF program and link ids a process holds open, read from /proc/PID/fdinfo."""
    progs, links = set(), set()
    fdinfo = Path(f"/proc/{host_pid}/fdinfo")
    for entry in fdinfo.iterdir():
        try:
            text = entry.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if "link_id" in fields:
            links.add(int(fields["link_id"]))
            if "prog_id" in fields:
                progs.add(int(fields["prog_id"]))
        elif "prog_id" in fields and "prog_type" in fields:
            progs.add(int(fields["prog_id"]))
    return {"progs": progs, "links": links}

