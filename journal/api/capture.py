"""The capture slot as the API and the dashboard show it, sampled once a second in one
thread, so any number of pollers cost the source database nothing more.

``lag_seconds`` is the age of the oldest WAL the slot has not confirmed: the time of the
earliest sample whose WAL end lies past the confirmed position (one-second resolution). The
last event time is the commit time of the newest record in the journal, read on from where
the previous sample stopped (the first from where the compactor stands).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from journal.config import Config
from journal.errors import JournalError
from journal.positions import format_lsn

log = logging.getLogger(__name__)
HISTORY_SECONDS = 3600


@dataclass(frozen=True)
class CaptureStatus:
    slot: str
    exists: bool
    active: bool
    confirmed_lsn: str | None
    lag_bytes: int
    lag_seconds: float
    retained_wal_bytes: int
    last_event_time: str | None
    sampled_at: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CaptureSampler:
    def __init__(self, config: Config, interval_s: float = 1.0) -> None:
        self.config, self.interval_s = config, interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wal_ends: deque[tuple[float, int]] = deque()  # (time, WAL end) per sample
        self._history: deque[tuple[float, int, float]] = deque()  # (time, bytes, seconds)
        self._status: CaptureStatus | None = None
        self._reader: Any = None
        self._offset = 0
        self._last_commit_ts: int | None = None
        self._thread = threading.Thread(target=self._run, name="capture-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._reader is not None:
            self._reader.close()

    def status(self) -> CaptureStatus:
        with self._lock:
            if self._status is not None:
                return self._status
        return self.sample()

    def history(self, points: int = 120) -> list[dict[str, float]]:
        """The last hour's lag, at most ``points`` samples, oldest first."""
        with self._lock:
            samples = list(self._history)
        step = max(1, len(samples) // points)
        return [{"t": t, "lag_bytes": b, "lag_seconds": s} for t, b, s in samples[::step]]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # the sampler outlives a bad sample
                log.warning("capture sample failed: %s", exc)
            self._stop.wait(self.interval_s)

    def sample(self) -> CaptureStatus:
        now = time.time()
        try:
            status = self._sample(now)
        except (psycopg.Error, JournalError, OSError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            status = CaptureStatus(self.config.slot, False, False, None, 0, 0.0, 0,
                                   self._last_event_time(), _iso(now), error=text)
        with self._lock:
            self._status = status
            self._history.append((now, status.lag_bytes, status.lag_seconds))
            while self._history and self._history[0][0] < now - HISTORY_SECONDS:
                self._history.popleft()
        return status

    def _sample(self, now: float) -> CaptureStatus:
        with psycopg.connect(**self.config.source_conninfo(), connect_timeout=5,
                             application_name="journal serve") as conn:
            wal_end = int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()[0])
            row = conn.execute(
                "SELECT active, confirmed_flush_lsn - '0/0', "
                "       pg_current_wal_lsn() - confirmed_flush_lsn, "
                "       pg_current_wal_lsn() - restart_lsn "
                "FROM pg_replication_slots WHERE slot_name = %s", (self.config.slot,)).fetchone()
        self._read_journal()
        with self._lock:
            self._wal_ends.append((now, wal_end))
            while self._wal_ends and self._wal_ends[0][0] < now - HISTORY_SECONDS:
                self._wal_ends.popleft()
            ends = list(self._wal_ends)
        if row is None:
            return CaptureStatus(self.config.slot, False, False, None, 0, 0.0, 0,
                                 self._last_event_time(), _iso(now))
        active, confirmed, lag, retained = row
        confirmed = int(confirmed or 0)
        behind = [t for t, end in ends if end > confirmed]
        lag_s = round(now - min(behind), 1) if behind else 0.0
        return CaptureStatus(self.config.slot, True, bool(active),
                             format_lsn(confirmed) if confirmed else None, int(lag or 0),
                             lag_s, int(retained or 0), self._last_event_time(), _iso(now))

    def _read_journal(self) -> None:
        """Read the journal on from the last sample; decode only its newest record."""
        from journal.transport import decoded, open_reader

        if self._reader is None:
            from journal.compactor import CONSUMER

            self._reader = open_reader(self.config.journal_location(), self.config.database())
            # what the compactor has packaged needs no reading: start where it stands
            self._offset = self._reader.committed_offset(CONSUMER)
        last = None
        for raw in self._reader.read(self._offset):
            last = raw
            if raw.next_offset is not None:
                self._offset = raw.next_offset
        if last is None:
            if self._last_commit_ts is None:  # all of it packaged: the newest package says
                from journal.packages.store import open_store

                newest = max((m.last_commit_ts or 0 for m in
                              open_store(self.config.packages_url).list()), default=0)
                self._last_commit_ts = newest or None
            return
        for record in decoded([last], self._reader.registry()):
            ts = getattr(record, "commit_ts", None)
            source = getattr(record, "source", None)
            ts = ts if ts is not None else getattr(source, "commit_ts", None)
            if ts:
                self._last_commit_ts = int(ts)

    def _last_event_time(self) -> str | None:
        if self._last_commit_ts is None:
            return None
        return datetime.fromtimestamp(self._last_commit_ts / 1e6, UTC).isoformat()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()
