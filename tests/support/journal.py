"""A real systemd-journald for tests, on a host whose PID 1 is not systemd (as sysbox.sh `lite`).

PrivateJournal starts a private mount namespace holding tmpfs on /run/systemd, /run/log,
/var/log/journal and /var/lib/systemd/catalog, and a catalog directory of its own bound over
/usr/lib/systemd/catalog; systemd-journald runs there with Storage=volatile. Everything run
inside (`journal.command(...)`, `journal.run(...)`, or netwatchd itself through
DaemonProcess(..., command_prefix=journal.command())) finds journald at the standard socket
paths, and `journalctl` inside reads only that journal. The host's journal, catalog and /run stay
untouched: the mounts are the namespace's and vanish with it.

The namespace is held by one process (pid `journal.pid`), stopped by that pid even when a test
fails; it also ends (and stops its journald) when the test process dies, as its stdin closes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

JOURNALD = "/lib/systemd/systemd-journald"
HOST_CATALOG_DIR = Path("/usr/lib/systemd/catalog")
JOURNAL_SOCKET = "/run/systemd/journal/socket"

# Runs as the namespace's first process (unshare execs it): mounts, journald, then waits for
# stdin to close. Mount errors end it before "ready", with the reason on stderr.
HOLDER = r"""
import os, subprocess, sys, time
work = sys.argv[1]
def mount(*args):
    subprocess.run(["mount", *args], check=True)
for path, mode in (("/run/systemd", "755"), ("/run/log", "755"), ("/var/lib/systemd/catalog", "755"),
                   ("/var/log/journal", "2755")):
    if os.path.isdir(path):
        mount("-t", "tmpfs", "-o", "mode=" + mode, "tmpfs", path)
mount("--bind", os.path.join(work, "catalog"), "/usr/lib/systemd/catalog")
os.makedirs("/run/systemd/journald.conf.d")
with open("/run/systemd/journald.conf.d/netwatchd-test.conf", "w") as f:
    # volatile: nothing reaches the host's disk; no rate limit (unless the test asks for
    # journald's own): most tests log bursts on purpose
    f.write("[Journal]\nStorage=volatile\nReadKMsg=no\n" + ("" if sys.argv[3] == "limited" else "RateLimitBurst=0\n")
            + "ForwardToSyslog=no\nForwardToWall=no\nForwardToConsole=no\n")
env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
log = open(os.path.join(work, "journald.log"), "wb")
journald = subprocess.Popen([sys.argv[2]], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
deadline = time.monotonic() + 20
while not os.path.exists("/run/systemd/journal/socket") or not os.path.exists("/run/systemd/journal/stdout"):
    if journald.poll() is not None or time.monotonic() > deadline:
        sys.exit("systemd-journald did not start (exit %r)" % journald.poll())
    time.sleep(0.02)
print("ready", journald.pid, flush=True)
sys.stdin.read()
journald.terminate()
try:
    journald.wait(10)
except subprocess.TimeoutExpired:
    journald.kill()
    journald.wait()
"""


class PrivateJournal:
    def __init__(self, rate_limited: bool = False) -> None:
        """`rate_limited`: journald's own per-unit rate limit (RateLimitIntervalSec=30s,
        RateLimitBurst=10000, scaled up with free space as journald does), as on a real host;
        otherwise none."""
        self.rate_limited = rate_limited
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-journal-"))
        self.catalog_dir = self.dir / "catalog"
        self.proc: Optional[subprocess.Popen] = None
        self.journald_pid = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "PrivateJournal":
        # systemd's own catalog entries stay readable inside; ours are added by install_catalog
        shutil.copytree(HOST_CATALOG_DIR, self.catalog_dir) if HOST_CATALOG_DIR.is_dir() else self.catalog_dir.mkdir()
        with open(self.dir / "holder.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c", HOLDER, str(self.dir),
                 JOURNALD, "limited" if self.rate_limited else "unlimited"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        line = self.proc.stdout.readline().split()  # "ready <journald pid>", or EOF when the holder failed
        if line[:1] == ["ready"]:
            self.journald_pid = int(line[1])
        else:
            self.proc.wait(10)
            problem = (self.dir / "holder.log").read_text() + self.log()
            self.stop()
            raise RuntimeError(f"private journald did not start: {problem}")
        return self

    def command(self, *cmd: str) -> List[str]:
        """`cmd` run inside the namespace. nsenter joins only the mount namespace, so it execs
        `cmd` itself (the pid is the command's) and keeps the caller's working directory."""
        return ["nsenter", f"--target={self.pid}", "--mount", f"--wd={os.getcwd()}", "--", *cmd]

    def run(self, *cmd: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        r = subprocess.run(self.command(*cmd), timeout=timeout, **kwargs)
        if check and r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, r.args, r.stdout, r.stderr)
        return r

    def journalctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("journalctl", "--no-pager", *args, check=check)

    def entries(self, *matches: str) -> List[Dict[str, str]]:
        """Entries matching journalctl's FIELD=value matches, oldest first, as dicts."""
        out = self.journalctl("-o", "json", *matches).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_for(self, *matches: str, count: int = 1, timeout: float = 15) -> List[Dict[str, str]]:
        """At least `count` entries matching; journald writes asynchronously to what was sent."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.entries(*matches)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} journal entries match {matches}, expected {count}:\n"
                                     + self.journalctl("-o", "short-precise", check=False).stdout[-4000:])
            time.sleep(0.05)

    def install_catalog(self, *paths: Path) -> None:
        """Catalog files into this namespace's /usr/lib/systemd/catalog, then its database rebuilt
        (`journalctl --update-catalog`, as make install does) so `journalctl -x` explains entries."""
        for path in paths:
            shutil.copy(path, self.catalog_dir / Path(path).name)
        self.journalctl("--update-catalog")

    def log(self) -> str:
        path = self.dir / "journald.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # the holder stops journald and exits
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
                self._kill_journald()
        if self.proc is not None:
            self.proc.stdout.close()
            if not self.proc.stdin.closed:
                self.proc.stdin.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_journald(self) -> None:
        """Only when the holder could not stop it; by its pid, checked to still be journald."""
        try:
            with open(f"/proc/{self.journald_pid}/comm") as f:
                if self.journald_pid and f.read().strip() == "systemd-journal":
                    os.kill(self.journald_pid, 9)
        except OSError:
            pass

    def __enter__(self) -> "PrivateJournal":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

