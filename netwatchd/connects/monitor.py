"""The connect engine: kernel counters and records in, Summary and ListConnections out.

Pure apart from what it is given: the probe (anything with drain / read_counters /
pending_handshakes / abandon_handshake / delete_processes / latency_cells / losses /
set_udp_sends), the clock and is_gone. Their defaults, the wall clock and process_gone (whether
/proc/<pid> exists), are the daemon's; unit tests drive it with a fake probe, clock and is_gone.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Tuple

from netwatchd.clock import boot_to_realtime_ns
from netwatchd.config import ConnectionsConfig
from netwatchd.connects import queries
from netwatchd.connects.batches import TickStarts, latency_groups, split_batch
from netwatchd.connects.history import ZERO, ConnectHistory, CounterDeltas, Counts, ProcKeyT
from netwatchd.connects.latency import LatencyHistory, Log2Histogram, by_command
from netwatchd.connects.recent import RecentConnections
from netwatchd.connects.records import ConnectionRecord, PendingHandshake, decode_event
from netwatchd.record_decoding import MalformedRecords

log = logging.getLogger(__name__)


MAX_COMMAND_TOTALS = 10000
STARTS_PER_PAIR = 8  # connection starts per (command, destination, port) kept between observations
# A handshake the kernel still follows after this long missed its end (a state change the
# kernel did not run our program for): user space stops following it and counts it unknown.
# Longer than any SYN retry schedule up to tcp_syn_retries = 8 (511 s).
HANDSHAKE_GIVE_UP_SEC = 600


def process_gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


class ConnectMonitor:
    def __init__(
        self,
        probe,
        cfg: ConnectionsConfig,
        clock: Callable[[], float] = time.time,
        is_gone: Callable[[int], bool] = process_gone,
        boot_offset_ns: int = None,
    ):
        self.probe = probe
        self.cfg = cfg
        self.clock = clock
        self.is_gone = is_gone
        self.history = ConnectHistory(cfg.max_window_sec)
        self.deltas = CounterDeltas()
        self._boot_offset_ns = boot_to_realtime_ns() if boot_offset_ns is None else boot_offset_ns
        self.recent = RecentConnections(cfg.recent_records, lambda raw: decode_event(raw, self._boot_offset_ns))
        self.latency = LatencyHistory(cfg.max_window_sec)
        self._malformed = MalformedRecords("connect records", log)
        # handshakes pending at the last read: (pid, command, wall second of the SYN)
        self._pending: List[Tuple[int, str, float]] = []
        self.handshakes_abandoned = 0
        self.latency_by_command: Dict[str, Log2Histogram] = {}
        self._since_observed: Dict[str, list] = {}  # command -> [attempts, failed, pids]
        # Cumulative per-command counts since start, for metrics; bounded: commands beyond
        # MAX_COMMAND_TOTALS are summed in command_overflow.
        self.command_totals: Dict[str, Counts] = {}
        self.command_overflow = ZERO
        # connect() starts per (command, address, port) since the last observation, for beacons,
        # as arrays (connects/batches.py). They carry no name: the classifier sees the LAN's
        # lookups, not the host's own, and a name a device looked up is that device's view,
        # which must not label our commands' destinations (netwatchd.devices.app_metadata)
        self._starts = TickStarts(STARTS_PER_PAIR)

    def reconfigure(self, cfg: ConnectionsConfig) -> None:
        """Apply what can change live (the restart-only keys, netwatchd/config.py's metadata,
        keep the values the probe was built with)."""
        if cfg.trace_udp_sends != self.cfg.trace_udp_sends:
            self.probe.set_udp_sends(cfg.trace_udp_sends)
        self.recent.resize(cfg.recent_records)
        self.history.max_window_sec = cfg.max_window_sec
        self.latency.max_window_sec = cfg.max_window_sec
        self.cfg = cfg

    # -- periodic work ---------------------------------------------------------------------
    def poll(self) -> int:
        """Move committed records from the ring buffer into the recent ring, a drain at a time
        with no Python work per record (connects/batches.py): a handshake's end completes the
        record of its connect; latencies and connection starts are filed by group."""
        batch = self.probe.drain()
        split = split_batch(batch, self._malformed)
        self.recent.add(split.calls, split.paths)
        self.recent.end_handshakes(split.ends)
        for second, key, bucket, n in latency_groups(split.latencies, self._boot_offset_ns):
            self.latency.add_count(second, key, bucket, n)
        self._starts.add(split.starts, self._boot_offset_ns)
        return len(batch)

    def refresh(self) -> None:
        """Read the kernel now: counters and records up to this moment. The D-Bus and HTTP
        edges call it before they answer, so answers are exact up to the question, not up to
        the last tick; summary() and the listings below read only what was kept."""
        self.tick()
        self.poll()

    def tick(self) -> None:
        """Read the kernel's cumulative counters and file the increments under this second."""
        now = int(self.clock())
        # The handshake map before the counters: the kernel counts a handshake's end as it takes
        # it out of the map, so an end the counters below miss is still listed here, and its
        # process (perhaps gone) is kept until that count has been read.
        handshakes = self.probe.pending_handshakes()
        snapshot = self.probe.read_counters()
        counts = {key: value[1] for key, value in snapshot.items()}
        idle = self.deltas.unchanged_keys(counts)
        per_process: Dict[ProcKeyT, Counts] = {}
        for key, delta in self.deltas.update(counts).items():
            name = (key[0], snapshot[key][0])
            per_process[name] = per_process.get(name, ZERO) + delta
        self._read_handshakes(now, handshakes, per_process)
        self.history.record(now, per_process)
        for (pid, command), delta in per_process.items():  # for the detector's next tick
            seen = self._since_observed.setdefault(command, [0, 0, set()])
            seen[0] += delta.attempts
            seen[1] += delta.failed
            seen[2].add(pid)
            if command in self.command_totals or len(self.command_totals) < MAX_COMMAND_TOTALS:
                self.command_totals[command] = self.command_totals.get(command, ZERO) + delta
            else:
                self.command_overflow = self.command_overflow + delta
        self._free_gone_processes(counts, idle)
        self.history.prune(now)
        self.latency.prune(now)

    def _read_handshakes(self, now: int, handshakes: List[PendingHandshake],
                         per_process: Dict[ProcKeyT, Counts]) -> None:
        """Note the handshakes still pending (Summary's in_progress) and give up on those that
        missed their end: counted unknown, under the process that began them."""
        pending, given_up = [], {}
        for h in handshakes:
            syn_sec = (h.syn_ns + self._boot_offset_ns) / 1e9
            if now - syn_sec > HANDSHAKE_GIVE_UP_SEC and self.probe.abandon_handshake(h.sk):
                key = (h.tgid, h.command)
                given_up[key] = given_up.get(key, ZERO) + Counts(unknown=1)
                self.handshakes_abandoned += 1
            else:
                pending.append((h.tgid, h.command, syn_sec))
        self._pending = pending
        for key, delta in given_up.items():  # filed, totalled and observed with the counters
            per_process[key] = per_process.get(key, ZERO) + delta

    def _free_gone_processes(self, counts, idle) -> None:
        """A process whose counters were all idle since the last read and that no longer exists
        will never count again: it was read for the last time above; free its entries."""
        busy = {key[0] for key in counts if key not in idle}
        busy.update(pid for pid, _, _ in self._pending)  # a pending handshake still ends in them
        gone = {key[0] for key in idle if key[0] not in busy and self.is_gone(key[0])}
        if gone:
            self.probe.delete_processes(gone)
            self.deltas.forget([key for key in counts if key[0] in gone])

    def take_observation(self, obs) -> None:
        """Per-command connect() calls since the last observation, into a TickObservation
        (Summary reads the kernel too, so this gathers every read, not only the tick's)."""
        for command, (attempts, failed, pids) in self._since_observed.items():
            if attempts:
                obs.command_connects[command] = attempts
                obs.command_failed[command] = failed
                obs.command_pids[command] = sorted(pids)
        self._since_observed = {}
        obs.command_starts = self._starts.take()

    # -- queries: summary() and the listings read what tick() and poll() kept (call refresh() first
    # for answers exact up to now); refresh_histograms() and the loss figures read the kernel's
    # maps through the probe when asked
    @property
    def max_window_sec(self) -> int:
        """The longest duration a summary may ask for (connections.max_window_sec, as running)."""
        return self.cfg.max_window_sec

    def summary(self, pid: int, command: str, duration_sec: int) -> Dict[str, Any]:
        query = queries.check_summary(pid, command, duration_sec, self.cfg.max_window_sec)
        now = int(self.clock())
        counts = self.history.summary(now, query.duration_sec, pid=query.pid, command=query.command)
        commands = self.history.commands_of(query.pid) if query.pid else []
        start = now - query.duration_sec
        in_progress = sum(1 for p, c, syn in self._pending
                          if (p == query.pid if query.pid else c == query.command) and syn > start)
        latency = self.latency.window(now, query.duration_sec, self.latency.keys(query.pid, query.command))
        return queries.summary_answer(query, counts, in_progress, latency, commands)

    def refresh_histograms(self) -> None:
        """Read the kernel's latency histograms (for metrics; the HTTP edge calls it)."""
        self.latency_by_command = by_command(self.probe.latency_cells())

    def list_connections(self, pid: int, limit: int) -> Tuple[List[Dict[str, Any]], bool]:
        effective = queries.check_list(pid, limit)
        records, truncated = self.recent.newest(pid, effective)
        return [queries.record_answer(r) for r in records], truncated

    def list_per_process(self, pid: int, limit: int, keep) -> Tuple[Dict[int, List[ConnectionRecord]], bool]:
        """Up to `limit` newest records per process, oldest first (ebpf-server's listing)."""
        return self.recent.newest_per_process(pid, limit, keep)

    @property
    def malformed_records(self) -> int:
        return self._malformed.count

    def events_lost(self) -> int:
        """Records that never reached the recent ring: both rings full, a flow's repeats dropped
        while the ring was full (connects/records.py ConnectLosses), malformed ones."""
        losses = self.probe.losses()
        return losses.ring_full + losses.repeats + self.malformed_records

    def processes_untracked(self) -> int:
        return self.probe.losses().processes

    def handshakes_untracked(self) -> int:
        """Handshakes whose outcome is unknown: the map was full, or they missed their end."""
        losses = self.probe.losses()
        return losses.handshakes + losses.late_ends + self.handshakes_abandoned

    def latency_samples_lost(self) -> int:
        return self.probe.losses().latency
