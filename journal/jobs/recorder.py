"""The job this process is running, for the small progress hooks in the commands.

``recording`` starts the job's row, keeps its heartbeat fresh from a thread, and makes the
job ``current()``; a command reports figures with ``current().update(...)`` or the helpers
below, which do nothing when no job is being recorded (library use, tests, the demo).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Any

from journal.jobs import repository
from journal.jobs.database import JobDatabase, JobDatabaseError
from journal.jobs.repository import JobRef

# progress is written at most this often; figures are kept and written with the heartbeat
MIN_WRITE_INTERVAL_S = 1.0

# how a scheduler (or later the API) tells the command it starts who it is and which run
STARTED_BY_ENV = "JOURNAL_STARTED_BY"
SCHEDULED_RUN_ENV = "JOURNAL_SCHEDULED_RUN"
CONFIGURATION_ENV = "JOURNAL_CONFIGURATION_ID"
# the API queues the job's row itself (to answer with its URL at once): the command it starts
# adopts that row instead of starting one of its own
JOB_ENV = "JOURNAL_JOB"


class JobRecorder:
    def __init__(self, db: JobDatabase | None = None, ref: JobRef | None = None) -> None:
        self.db, self.ref = db, ref
        self.fields: dict[str, Any] = {}
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._written = 0.0
        self.finished = False
        self._watched: Callable[[], dict[str, Any]] | None = None

    @property
    def active(self) -> bool:
        return self.db is not None and self.ref is not None

    def update(self, **fields: Any) -> None:
        """Figures of the running job (progress, events, bytes, positions...)."""
        if not self.active:
            return
        with self._lock:
            self.fields.update(fields)
            self._pending.update(fields)
            due = time.monotonic() - self._written >= MIN_WRITE_INTERVAL_S
        if due:
            self.flush()

    def watch(self, figures: Callable[[], dict[str, Any]]) -> None:
        """Figures read again at every heartbeat: the progress of a long or endless job
        (the compaction daemon) without a hook inside its loop."""
        self._watched = figures

    def flush(self) -> None:
        if not self.active:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
            self._written = time.monotonic()
        assert self.db is not None and self.ref is not None
        repository.update_job(self.db, self.ref, **pending)

    def add_manifests(self, manifests: Iterable[Any], events: int | None = None) -> None:
        """The packages this job wrote or checked: their ids, the positions they cover,
        their bytes and (unless given) their rows."""
        manifests = sorted(manifests, key=lambda m: m.to_position)
        if not manifests:
            self.update(packages=[], events=events or 0, bytes=0)
            return
        first = manifests[0]
        self.update(packages=[m.package_id for m in manifests],
                    from_position=str(first.from_position) if first.from_position else None,
                    to_position=str(manifests[-1].to_position),
                    bytes=sum(m.size for m in manifests),
                    events=events if events is not None else sum(m.rows for m in manifests))

    def restore_report(self, report: Any) -> None:
        """A restorer.report.RestoreReport: mode, reached position, per-table counts."""
        self.update(mode=report.mode, reached_position=report.reached_position,
                    dry_run=report.dry_run, restore_target=report.restore_target,
                    seconds=round(report.seconds, 3),
                    tables={name: asdict(c) if is_dataclass(c) else dict(c)
                            for name, c in report.tables.items()},
                    progress=f"{len(report.package_ids)} package(s), "
                             f"{report.transactions_replayed} transaction(s) replayed")


_NOBODY = JobRecorder()
_current: JobRecorder = _NOBODY


def current() -> JobRecorder:
    return _current


class RunningJob(JobRecorder):
    """A recorded job of this process: its row, a heartbeat thread, ``current()``."""

    def __init__(self, db: JobDatabase, ref: JobRef) -> None:
        super().__init__(db, ref)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{ref}",
                                        daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(repository.HEARTBEAT_INTERVAL_S):
            try:
                if self._watched is not None:
                    with self._lock:
                        self._pending.update(self._watched())
                self.flush()
            except JobDatabaseError:
                pass  # the next beat tries again; staleness is judged by others

    def end(self, status: str, error: str | None = None) -> None:
        """Close the row with its outcome and the figures not yet written."""
        global _current
        if self.finished:
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if _current is self:
            _current = _NOBODY
        with self._lock:
            pending, self._pending = self._pending, {}
        assert self.db is not None and self.ref is not None
        repository.finish_job(self.db, self.ref, status, error, **pending)
        self.finished = True


def start(db: JobDatabase, kind: str, started_by: str, command: str = "",
          **fields: Any) -> RunningJob:
    """Record a job as running and make it ``current()``; end it with ``end()``."""
    global _current
    job = RunningJob(db, repository.start_job(db, kind, started_by, command, **fields))
    job._thread.start()
    _current = job
    return job


def adopt(db: JobDatabase, ref: JobRef, **fields: Any) -> RunningJob | None:
    """Run a queued job here (see ``JOB_ENV``); None when it was cancelled meanwhile."""
    global _current
    if not repository.adopt_job(db, ref, **fields):
        return None
    job = RunningJob(db, ref)
    job._thread.start()
    _current = job
    return job


@contextmanager
def recording(db: JobDatabase, kind: str, started_by: str, command: str = "",
              **fields: Any) -> Iterator[RunningJob]:
    """The block as one job: ``succeeded`` unless it raises (``failed``, with the error)
    or ends the job itself."""
    job = start(db, kind, started_by, command, **fields)
    try:
        yield job
    except BaseException as exc:
        job.end("failed", f"{type(exc).__name__}: {exc}")
        raise
    job.end("succeeded")
