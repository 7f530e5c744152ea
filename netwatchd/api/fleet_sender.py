"""Alerts to Alertmanager (fleet.alertmanager_urls), from threads of their own.

The alert pipeline calls `emit` in the tick: the alert's labels and annotations are made there
(netwatchd/api/fleet_labels.py; the read model is only read from the tick) and queued.
- The intake thread takes the queue into the table (netwatchd/api/fleet_alerts.py), resolves
  each alert when its lifetime ends, and writes every change to the spool before anything is
  sent, so a restart sends it again.
- One courier thread per Alertmanager posts new and changed alerts at once, re-sends the firing
  ones every fleet.resend_interval_sec (a failed post is retried then), and before each re-send
  reads back what other observers posted, to merge their host ids into its own `observers`
  annotation (Alertmanager keeps the newest post's annotations: each observer re-posts the union
  it knows, and the union only grows).
A slow or dead Alertmanager delays no tick, no D-Bus answer, and no other Alertmanager: only its
own courier waits (fleet.timeout_sec a request). Failures are logged once per Alertmanager and
cause, counted, and said again when it recovers.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from netwatchd.api import fleet_labels
from netwatchd.api.alertmanager import AlertmanagerClient, DeliveryError, Rejected
from netwatchd.api.fleet_alerts import Entry, FleetAlerts
from netwatchd.errors import NoSuchDevice, StoreError
from netwatchd.read_model import Alert, FleetStatus, HostIdentity, ReadModel

log = logging.getLogger(__name__)

QUEUE_MAX = 100_000  # raised alerts waiting for the thread; beyond, counted as dropped


def alert_interface(alert: Alert, model: ReadModel) -> str:
    """The interface a device alert's device was seen on, when the alert does not say."""
    if alert.details.get("interface") or not alert.subject.startswith("device:"):
        return alert.details.get("interface", "")
    try:
        return str(model.device(alert.subject.partition(":")[2]).get("interface", ""))
    except (NoSuchDevice, ValueError):
        return ""


class FleetSender:
    """An alert sink (AlertPipeline calls emit) that delivers to Alertmanager."""

    def __init__(self, model: ReadModel, open_spool: Callable[[], Optional[object]],
                 clock: Callable[[], float] = time.time):
        self.model = model
        self._open_spool = open_spool
        self._clock = clock
        self._queue: "queue.Queue[Tuple]" = queue.Queue(QUEUE_MAX)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None  # the intake
        self._couriers: Dict[str, Courier] = {}  # one per Alertmanager URL
        self._cfg = model.cfg.fleet
        self._client = AlertmanagerClient(self._cfg)
        self._spool = None
        self.alerts = FleetAlerts(self._cfg.spool_max_alerts)
        self.queue_dropped = 0
        self._placed: Tuple[str, Tuple[HostIdentity, str]] = ("", (HostIdentity(), ""))  # (alert id, placed())
        self.delivered = 0
        # the table, the spool and the counters: the intake and the couriers change them, status() reads
        self._lock = threading.RLock()
        self._sizes = (0, 0)  # (spooled, firing) after the last change: status() never walks the table
        self.failures: Dict[Tuple[str, str], int] = {}
        self._down: Dict[str, Tuple[str, int]] = {}  # url -> (cause said, failed requests since)
        self._store_problem = ""
        if self._cfg.enabled:
            self._start()

    # -- the tick's side ---------------------------------------------------------------------------
    def placed(self, alert: Alert) -> Tuple[HostIdentity, str]:
        """This host's identity and the interface of the alert's device, looked up once per alert:
        the journal's id fields (the sink before this one) and the labels here both need them."""
        if self._placed[0] != alert.id:
            self._placed = (alert.id, (self.model.host_identity(), alert_interface(alert, self.model)))
        return self._placed[1]

    def emit(self, alert: Alert) -> None:
        cfg = self.model.cfg.fleet
        if not cfg.enabled:
            return
        identity, interface = self.placed(alert)
        labels = fleet_labels.labels(alert, identity, interface)
        item = (fleet_labels.fingerprint(labels), labels, fleet_labels.annotations(alert, identity),
                float(cfg.lifetime_sec.of(alert.kind)), identity.host, self._generator_url(identity))
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.queue_dropped += 1
            return
        self._wake.set()

    def _generator_url(self, identity: HostIdentity) -> str:
        base = self.model.cfg.fleet.external_base
        if not base:
            port = self.model.cfg.metrics.listen.rpartition(":")[2]
            base = f"http://{identity.hostname or 'localhost'}:{port}"
        return f"{base}/metrics"

    def reconfigure(self) -> None:
        """After a reload: the new URLs, credentials and bounds apply from the next round."""
        self._cfg = self.model.cfg.fleet
        self._client = AlertmanagerClient(self._cfg)
        if self._cfg.enabled and self._thread is None:
            self._start()
        elif self._thread is not None:
            with self._lock:
                self._sync_couriers(resend=True)
        self._wake.set()

    def status(self) -> FleetStatus:
        with self._lock:
            failures = tuple((url, cause, n) for (url, cause), n in sorted(self.failures.items()))
            delivered, (spooled, firing) = self.delivered, self._sizes
        return FleetStatus(enabled=self.model.cfg.fleet.enabled, spooled=spooled, firing=firing,
                           dropped=self.alerts.dropped + self.queue_dropped, delivered=delivered, failures=failures)

    def close(self, timeout: float = 2.0) -> None:
        """Stops delivery after what is queued is spooled (a request in flight is abandoned: it is
        retried from the spool at the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("fleet: the spool was still being written at stop")

    # -- the intake thread: raises and lifetimes into the table and the spool -------------------------------
    def _start(self) -> None:
        self._spool = self._open_spool()
        if self._spool is not None:
            entries = []
            for d in self._spool.load():
                try:
                    entries.append(Entry.from_json(d))
                except (KeyError, TypeError, ValueError) as e:
                    log.warning("fleet: dropped an unreadable spooled alert (%s)", e)
            self.alerts = FleetAlerts(self._cfg.spool_max_alerts, entries)
            self._sizes = (len(self.alerts), self.alerts.firing_count())
            if entries:
                log.info("fleet: %d alerts from the spool (%d firing)", *self._sizes)
        with self._lock:
            self._sync_couriers(resend=True)
        self._thread = threading.Thread(target=self._run, name="netwatchd-fleet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._until_next_end())
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._intake()
            except Exception:  # one bad round must not end delivery
                log.exception("fleet: taking alerts in failed")
            if stopping:
                with self._lock:
                    for courier in self._couriers.values():
                        courier.stop()
                return

    def _until_next_end(self) -> float:
        """Seconds to the next firing alert's lifetime end (when it is resolved), at most a re-send."""
        with self._lock:
            ends = [e.lifetime_end for e in self.alerts.entries.values() if e.firing]
        wait = self._cfg.resend_interval_sec
        return max(0.0, min([wait] + [end - self._clock() for end in ends]))

    def _intake(self) -> None:
        with self._lock:
            now = self._clock()
            changed: Dict[str, Entry] = {}
            removed: List[str] = []
            if self.alerts.max_alerts != self._cfg.spool_max_alerts:
                removed += [e.key for e in self.alerts.resize(self._cfg.spool_max_alerts)]
            while True:
                try:
                    key, labels, annotations, lifetime, host, generator = self._queue.get_nowait()
                except queue.Empty:
                    break
                entry, pushed = self.alerts.add(key, labels, annotations, now, lifetime, host)
                entry.annotations = dict(entry.annotations, generator_url=generator)
                changed[entry.key] = entry
                removed += [e.key for e in pushed]
            changed.update((e.key, e) for e in self.alerts.expire(now))
            removed = [key for key in removed if key not in changed]  # pushed out, then raised again
            self._persist(changed, removed)  # on disk before the first send: a restart resends it
            if changed:
                for courier in self._couriers.values():
                    courier.wake.set()

    def _sync_couriers(self, resend: bool) -> None:
        """One courier per configured URL (under the lock): new URLs get one, gone ones stop."""
        urls = set(self._cfg.urls) if self._cfg.enabled else set()
        for url in set(self._couriers) - urls:
            self._couriers.pop(url).stop()
        new = urls - set(self._couriers)
        for url in new:
            self._couriers[url] = Courier(url, self._round, self._clock, lambda: self._cfg.resend_interval_sec)
        if resend:  # a new courier's first round re-sends everything already: not twice
            for url, courier in self._couriers.items():
                if url not in new:
                    courier.resend_now()

    # -- one Alertmanager's round (its courier's thread) ---------------------------------------------------
    def _round(self, url: str, everything: bool) -> None:
        """Posts what `url` is owed: the firing alerts, then (only if that worked) the resolved.
        On a re-send (`everything`), first reads back the observers of our LAN alerts there."""
        if everything:
            self._learn_observers(url)
        with self._lock:
            now = self._clock()
            firing, resolved = self.alerts.owed(url, everything)
            batches = [([(e, e.version) for e in batch],
                        [FleetAlerts.payload(e, now, self._cfg.resend_interval_sec, as_firing) for e in batch], as_firing)
                       for batch, as_firing in ((firing, True), (resolved, False)) if batch]
        for sent, body, as_firing in batches:
            rejected = False
            try:
                self._client.post(url, body)
            except Rejected as e:
                rejected = True
                self._failed(url, e)  # stored what was valid; the rest would be refused again
            except DeliveryError as e:
                self._failed(url, e)
                return  # the resolves wait until their firing posts got through
            else:
                self._recovered(url)
            with self._lock:
                if not rejected:
                    self.delivered += len(sent)
                changed = {e.key: e for e in FleetAlerts.accepted(url, sent, as_firing)}
                finished = self.alerts.done(list(self._couriers))
                self._persist({k: e for k, e in changed.items() if k in self.alerts.entries},
                              [e.key for e in finished])

    def _learn_observers(self, url: str) -> None:
        """Other observers' host ids, from what `url` holds of our LAN-scope alerts."""
        with self._lock:
            mine = {e.key for e in self.alerts.entries.values() if e.firing and "host" not in e.labels}
        if not mine:
            return
        try:
            held = self._client.get(url)
        except DeliveryError as e:
            self._failed(url, e)
            return
        with self._lock:
            learnt: Dict[str, Entry] = {}
            for a in held:
                labels, notes = a.get("labels"), a.get("annotations")
                if not isinstance(labels, dict) or not isinstance(notes, dict):
                    continue
                key = fleet_labels.fingerprint({str(k): str(v) for k, v in labels.items()})
                if key in mine:
                    hosts = [h for h in str(notes.get("observers", "")).split() if fleet_labels.HOST_ID.fullmatch(h)]
                    entry = self.alerts.learn_observers(key, hosts)
                    if entry is not None:
                        learnt[key] = entry
            self._persist(learnt, [])

    def _failed(self, url: str, e: DeliveryError) -> None:
        with self._lock:
            self.failures[(url, e.cause)] = self.failures.get((url, e.cause), 0) + 1
        said, count = self._down.get(url, ("", 0))
        if said != e.cause:
            log.warning("fleet: Alertmanager %s: %s%s; %d alerts wait in the spool, retried every %gs", url, e.cause,
                        f" ({e.detail})" if e.detail else "", len(self.alerts), self._cfg.resend_interval_sec)
        self._down[url] = (e.cause, count + 1)

    def _recovered(self, url: str) -> None:
        said = self._down.pop(url, None)
        if said is not None:
            log.info("fleet: Alertmanager %s takes alerts again (after %d failed requests, last: %s)", url,
                     said[1], said[0])

    def _persist(self, changed: Dict[str, Entry], removed: List[str]) -> None:
        """Writes what changed to the spool (called under the lock)."""
        self._sizes = (len(self.alerts), self.alerts.firing_count())
        if self._spool is None or (not changed and not removed):
            return
        try:
            self._spool.write([e.to_json() for e in changed.values()], removed)
        except StoreError as e:
            if self._store_problem != e.problem:
                self._store_problem = e.problem
                log.error("fleet: cannot write the spool (alerts kept in memory): %s", e)
        else:
            self._store_problem = ""


class Courier:
    """One Alertmanager's deliveries, in a thread of their own: a slow or dead one holds up
    neither the intake nor another Alertmanager. Woken when alerts change; every re-send interval
    it sends everything firing again (`deliver(url, everything)`)."""

    def __init__(self, url: str, deliver: Callable[[str, bool], None], clock: Callable[[], float],
                 resend_sec: Callable[[], float]):
        self.url = url
        self.wake = threading.Event()
        self._stopped = threading.Event()
        self._deliver, self._clock, self._resend_sec = deliver, clock, resend_sec
        self._next_resend = 0.0
        self._thread = threading.Thread(target=self._run, name="netwatchd-am", daemon=True)
        self._thread.start()

    def resend_now(self) -> None:
        self._next_resend = 0.0
        self.wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait(max(0.0, self._next_resend - self._clock()))
            self.wake.clear()
            if self._stopped.is_set():
                return
            now = self._clock()
            everything = now >= self._next_resend
            if everything:
                self._next_resend = now + self._resend_sec()
            try:
                self._deliver(self.url, everything)
            except Exception:  # one bad round must not end delivery
                log.exception("fleet: delivery to %s failed", self.url)
