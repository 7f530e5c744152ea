"""A real Alertmanager (Debian's prometheus-alertmanager) for the tests: its own port, storage
and config in a temporary directory, no cluster gossip, stopped and started again by the test
(by its pid) on the same port and storage."""
from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

BINARY = "/usr/bin/prometheus-alertmanager"
# One route, no receiver: the tests read the alerts back over the API.
CONFIG = "route:\n  receiver: none\nreceivers:\n  - name: none\n"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Alertmanager:
    """`web_config`: Alertmanager's --web.config.file (TLS, basic auth users); its URL is then
    https, and the test's own reads (ready, alerts) pass `ca_file` and `auth`."""

    def __init__(self, host: str = "127.0.0.1", config: str = CONFIG, web_config: str = "", ca_file: str = "",
                 auth: Optional[tuple] = None):
        self.host = host
        self.port = free_port(host)
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-am-"))
        (self.dir / "alertmanager.yml").write_text(config)
        self.web_config = web_config
        if web_config:
            (self.dir / "web.yml").write_text(web_config)
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._auth = auth
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"{'https' if self._context else 'http'}://{self.host}:{self.port}"

    def _open(self, url: str):
        request = urllib.request.Request(url)
        if self._auth:
            pair = base64.b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {pair}")
        return urllib.request.urlopen(request, timeout=10, context=self._context)

    def start(self, timeout: float = 20) -> "Alertmanager":
        log = open(self.dir / "alertmanager.log", "ab")
        self.proc = subprocess.Popen(
            [BINARY, f"--config.file={self.dir / 'alertmanager.yml'}", f"--storage.path={self.dir / 'data'}",
             f"--web.listen-address={self.host}:{self.port}", "--cluster.listen-address="]
            + ([f"--web.config.file={self.dir / 'web.yml'}"] if self.web_config else []),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._open(f"{self.url}/-/ready") as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"alertmanager did not come up:\n{(self.dir / 'alertmanager.log').read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def alerts(self, **labels: str) -> List[Dict]:
        """The alerts it holds (active, silenced, inhibited, unprocessed) with these labels."""
        query = [("filter", f'{k}="{v}"') for k, v in labels.items()]
        url = f"{self.url}/api/v2/alerts?" + urllib.parse.urlencode(query)
        with self._open(url) as r:
            return json.loads(r.read())

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
