"""Typed functions over the job database: start, progress and finish jobs, mark the dead
ones abandoned, store health results, read jobs back. Each call is one unit of work."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select

from journal.jobs.database import JobDatabase
from journal.jobs.models import (
    BACKUP_KINDS,
    RESTORE_KINDS,
    BackupJob,
    HealthCheck,
    RestoreJob,
    ScheduledRun,
    utcnow,
)
from journal.processes import pid_alive

Job = BackupJob | RestoreJob
# a job on another host is abandoned once its heartbeat is this much older than its interval
STALE_AFTER = timedelta(seconds=60)
HEARTBEAT_INTERVAL_S = 10.0
FINAL = ("succeeded", "failed", "abandoned", "cancelled")


@dataclass(frozen=True)
class JobRef:
    """A job's identity across the two job tables: ``b12`` is backup job 12, ``r3`` restore
    job 3 (the tables number their rows independently)."""

    table: str  # "b" | "r"
    id: int

    def __str__(self) -> str:
        return f"{self.table}{self.id}"

    @property
    def model(self) -> type[Job]:
        return BackupJob if self.table == "b" else RestoreJob

    @classmethod
    def parse(cls, text: str) -> JobRef:
        text = text.strip().lower()
        if len(text) > 1 and text[0] in "br" and text[1:].isdigit():
            return cls(text[0], int(text[1:]))
        raise ValueError(f"{text!r} is not a job id (b12 for a backup job, r3 for a restore)")

    @classmethod
    def of(cls, job: Job) -> JobRef:
        return cls("b" if isinstance(job, BackupJob) else "r", job.id)


def start_job(db: JobDatabase, kind: str, started_by: str, command: str = "", *,
              configuration_id: int | None = None, scheduled_run_id: int | None = None,
              **fields: Any) -> JobRef:
    """Record a job as running in this process; its row is its claim to be alive."""
    if kind in BACKUP_KINDS:
        model: type[Job] = BackupJob
    elif kind in RESTORE_KINDS:
        model = RestoreJob
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    now = utcnow()
    job = model(kind=kind, status="running", started_by=started_by, command=command,
                configuration_id=configuration_id, scheduled_run_id=scheduled_run_id,
                host=socket.gethostname(), pid=os.getpid(), started_at=now, heartbeat_at=now,
                progress="", **fields)
    with db.session() as session:
        session.add(job)
        session.flush()
        return JobRef.of(job)


def queue_job(db: JobDatabase, kind: str, started_by: str, command: str = "",
              **fields: Any) -> JobRef:
    """Record a job that another process will run (the API's worker): ``queued``, owned by
    this process until that one adopts the row with ``adopt_job``."""
    ref = start_job(db, kind, started_by, command, **fields)
    update_job(db, ref, status="queued")
    return ref


def adopt_job(db: JobDatabase, ref: JobRef, **fields: Any) -> bool:
    """This process takes over a queued job: it is now running here. False when the row is
    gone or no longer queued (cancelled before it started)."""
    with db.session() as session:
        job = session.get(ref.model, ref.id)
        if job is None or job.status != "queued":
            return False
        for name, value in fields.items():
            setattr(job, name, value)
        now = utcnow()
        job.status, job.host, job.pid, job.heartbeat_at = ("running", socket.gethostname(),
                                                           os.getpid(), now)
        return True


def update_job(db: JobDatabase, ref: JobRef, **fields: Any) -> None:
    """Progress and figures of a running job; refreshes its heartbeat."""
    with db.session() as session:
        job = session.get(ref.model, ref.id)
        if job is None:
            return
        for name, value in fields.items():
            setattr(job, name, value)
        job.heartbeat_at = utcnow()


def finish_job(db: JobDatabase, ref: JobRef, status: str, error: str | None = None,
               **fields: Any) -> None:
    if status not in FINAL:
        raise ValueError(f"{status!r} is not a final status")
    with db.session() as session:
        job = session.get(ref.model, ref.id)
        if job is None:
            return
        for name, value in fields.items():
            setattr(job, name, value)
        now = utcnow()
        job.status, job.error, job.finished_at, job.heartbeat_at = status, error, now, now



def reap_abandoned(db: JobDatabase, now: datetime | None = None) -> list[JobRef]:
    """Mark ``abandoned`` every running job whose process is gone: on this host, a pid that
    no longer exists; anywhere, a heartbeat older than ``STALE_AFTER``."""
    now = now or utcnow()
    host = socket.gethostname()
    reaped: list[JobRef] = []
    with db.session() as session:
        for model in (BackupJob, RestoreJob):
            # a queued job belongs to the process that queued it until one adopts it
            for job in session.scalars(select(model).where(
                    model.status.in_(("running", "queued")))):
                stale = now - job.heartbeat_at > STALE_AFTER
                dead = job.host == host and job.pid != os.getpid() and not pid_alive(job.pid)
                if stale or dead:
                    why = (f"process {job.pid} on {job.host} is gone" if dead else
                           f"no heartbeat since {job.heartbeat_at:%Y-%m-%d %H:%M:%S}Z")
                    job.status, job.finished_at = "abandoned", now
                    job.error = f"abandoned: {why}"
                    reaped.append(JobRef.of(job))
        for ref in reaped:  # the scheduler's record of those runs ends with them
            job = session.get(ref.model, ref.id)
            if job is not None and job.scheduled_run_id is not None:
                run = session.get(ScheduledRun, job.scheduled_run_id)
                if run is not None and run.outcome is None:
                    run.outcome, run.finished_at = "abandoned", now
    return reaped


def record_health(db: JobDatabase, job: JobRef | None,
                  results: list[tuple[str, bool, str]]) -> None:
    now = utcnow()
    with db.session() as session:
        session.add_all(HealthCheck(job_id=job.id if job else None, checked_at=now, check=name,
                                    ok=ok, detail=detail) for name, ok, detail in results)


def list_jobs(db: JobDatabase, kind: str | None = None, status: str | None = None,
              limit: int = 100) -> list[Job]:
    """Newest first, backup and restore jobs together."""
    jobs: list[Job] = []
    with db.session() as session:
        for model in (BackupJob, RestoreJob):
            stmt = select(model).order_by(model.started_at.desc()).limit(limit)
            if kind:
                stmt = stmt.where(model.kind == kind)
            if status:
                stmt = stmt.where(model.status == status)
            jobs.extend(session.scalars(stmt))
    jobs.sort(key=lambda j: j.started_at, reverse=True)
    return jobs[:limit]


def get_job(db: JobDatabase, ref: JobRef) -> Job | None:
    with db.session() as session:
        return session.get(ref.model, ref.id)


def health_of(db: JobDatabase, ref: JobRef) -> list[HealthCheck]:
    with db.session() as session:
        return list(session.scalars(select(HealthCheck).where(HealthCheck.job_id == ref.id)
                                    .order_by(HealthCheck.id)))


def scheduled_run(db: JobDatabase, run_id: int) -> ScheduledRun | None:
    with db.session() as session:
        return session.get(ScheduledRun, run_id)


def job_of_run(db: JobDatabase, run_id: int) -> Job | None:
    """The job a scheduled run started, if it recorded one."""
    with db.session() as session:
        for model in (BackupJob, RestoreJob):
            job = session.scalars(select(model).where(model.scheduled_run_id == run_id)
                                  .order_by(model.id.desc()).limit(1)).first()
            if job is not None:
                return job
    return None


def last_drill(db: JobDatabase, configuration_id: int | None = None) -> RestoreJob | None:
    """The newest finished restore drill (of one configuration, or any)."""
    stmt = (select(RestoreJob).where(RestoreJob.kind == "drill",
                                     RestoreJob.status.in_(FINAL))
            .order_by(RestoreJob.started_at.desc()).limit(1))
    if configuration_id is not None:
        stmt = stmt.where(or_(RestoreJob.configuration_id == configuration_id,
                              RestoreJob.configuration_id.is_(None)))
    with db.session() as session:
        return session.scalars(stmt).first()


def to_json(job: Job) -> dict[str, Any]:
    """A job row as plain data (for --json and, later, the API)."""
    data = {"id": str(JobRef.of(job))}
    data.update({c.key: getattr(job, c.key) for c in job.__table__.columns if c.key != "id"})
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    if data.get("finished_at"):
        data["duration_s"] = round((job.finished_at - job.started_at).total_seconds(), 3)
    return data
