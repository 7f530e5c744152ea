"""Where the HTTP listeners can be reached from, under the shipped unit.

netwatchd.service allows IP traffic only with localhost (IPAddressDeny=any, IPAddressAllow=
localhost: systemd checks the source address of what comes in and the destination of what goes
out). A listener configured on another address (metrics.listen, ebpf_server_api.listen, web.listen) still
binds, but answers no one until a drop-in allows its clients' addresses; even a client on this
host is refused when it connects to that address. An Alertmanager the fleet posts to
(fleet.alertmanager_urls) elsewhere than on loopback is refused the same way (EPERM). Said once at
start (and at a reload, for the URLs), per such listener or URL, when systemd runs the daemon
(INVOCATION_ID is set): in a terminal there is no such filter.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from typing import List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from netwatchd.config import DaemonConfig, split_listen

log = logging.getLogger(__name__)

DROP_IN = "systemctl edit netwatchd: [Service] IPAddressAllow=<the clients' addresses or networks>"


def listeners_beyond_localhost(cfg: DaemonConfig) -> List[Tuple[str, str]]:
    """(key, host:port) of each enabled listener whose address is not a loopback address."""
    out = []
    for key, section in (("metrics.listen", cfg.metrics), ("ebpf_server_api.listen", cfg.ebpf_server_api),
                         ("web.listen", cfg.web)):
        if not section.enabled:
            continue
        host, _port = split_listen(section.listen)
        if not ipaddress.ip_address(host).is_loopback:
            out.append((key, section.listen))
    return out


def urls_beyond_localhost(cfg: DaemonConfig) -> List[str]:
    """The Alertmanager URLs whose host is not a loopback address or localhost (a name may
    resolve anywhere: it is listed too)."""
    out = []
    for url in cfg.fleet.alertmanager_urls:
        host = urlsplit(url).hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            out.append(url)
    return out


def warn_beyond_localhost(cfg: DaemonConfig, environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Log (and return) one warning per listener the unit's IP filter keeps from other hosts."""
    environ = os.environ if environ is None else environ
    if not environ.get("INVOCATION_ID"):
        return []
    messages = [f"{key} is {listen}, not a loopback address: netwatchd.service allows IP traffic only "
                f"with localhost (IPAddressAllow=localhost), so no client reaches this listener unless a "
                f"drop-in allows it ({DROP_IN}; README, \"Installing as a service\")"
                for key, listen in listeners_beyond_localhost(cfg)]
    messages += [f"fleet.alertmanager_urls has {url}, not on loopback: netwatchd.service allows IP traffic only "
                 f"with localhost, so alerts wait in the spool until a drop-in allows the Alertmanager's address "
                 f"(systemctl edit netwatchd: [Service] IPAddressAllow=<its address>; README, \"A fleet\")"
                 for url in urls_beyond_localhost(cfg)]
    for message in messages:
        log.warning("%s", message)
    return messages
