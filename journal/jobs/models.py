"""The job database's tables, as SQLAlchemy 2 typed declarative models.

This is the one description of the schema: the Alembic revisions under ``migrations/``
are written from it, and a test compares the two so they cannot drift. (The source's table
metadata is the "catalog" elsewhere in this code; nothing here is about it.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

BACKUP_KINDS = ("compact", "snapshot", "export", "prune", "verify", "health")
RESTORE_KINDS = ("restore", "drill")
STATUSES = ("queued", "running", "succeeded", "failed", "abandoned", "cancelled")
# what a BackupConfiguration schedules, each with a cron expression of its own
TASKS = ("snapshot", "export", "retention", "health", "drill")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite stores none of the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the job database stores UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON,
                           list[Any]: JSON}


class BackupConfiguration(Base):
    """What to back up and when: one cron expression per task (None: not scheduled)."""

    __tablename__ = "backup_configuration"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(1000))  # password-free URL
    snapshot_schedule: Mapped[str | None] = mapped_column(String(100))
    export_schedule: Mapped[str | None] = mapped_column(String(100))
    retention_schedule: Mapped[str | None] = mapped_column(String(100))
    health_schedule: Mapped[str | None] = mapped_column(String(100))
    drill_schedule: Mapped[str | None] = mapped_column(String(100))
    retention_policy: Mapped[str] = mapped_column(String(200))
    # a maintenance database on the scratch server (password-free URL): each drill creates
    # a database of its own there and drops it afterwards
    drill_target: Mapped[str | None] = mapped_column(String(1000))
    export_dir: Mapped[str | None] = mapped_column(String(1000))
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def schedule(self, task: str) -> str | None:
        return getattr(self, f"{task}_schedule")


class ScheduledRun(Base):
    """One fire time of one task, claimed by exactly one scheduler: the unique constraint
    is the lock that keeps two schedulers on one job database from running it twice."""

    __tablename__ = "scheduled_run"
    __table_args__ = (UniqueConstraint("configuration_id", "task", "scheduled_for",
                                       name="uq_scheduled_run_slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("backup_configuration.id"))
    task: Mapped[str] = mapped_column(String(20))
    scheduled_for: Mapped[datetime]
    late: Mapped[bool] = mapped_column(default=False)  # started past its grace period
    missed: Mapped[int] = mapped_column(default=0)  # older fire times folded into this run
    claimed_by: Mapped[str] = mapped_column(String(300))  # host:pid
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(20))  # a job status


class _JobColumns:
    """What every job row has: who ran it, where, when, how far it got, how it ended."""

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    started_by: Mapped[str] = mapped_column(String(200))  # user:NAME, scheduler, api:NAME
    command: Mapped[str] = mapped_column(Text, default="")  # arguments, secrets redacted
    configuration_id: Mapped[int | None] = mapped_column(ForeignKey("backup_configuration.id"))
    scheduled_run_id: Mapped[int | None] = mapped_column(ForeignKey("scheduled_run.id"))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    progress: Mapped[str] = mapped_column(String(500), default="")
    error: Mapped[str | None] = mapped_column(Text)


class BackupJob(_JobColumns, Base):
    __tablename__ = "backup_job"

    from_position: Mapped[str | None] = mapped_column(String(40))
    to_position: Mapped[str | None] = mapped_column(String(40))
    packages: Mapped[list[str]] = mapped_column(default=list)
    events: Mapped[int | None] = mapped_column(BigInteger)
    bytes: Mapped[int | None] = mapped_column(BigInteger)


class RestoreJob(_JobColumns, Base):
    __tablename__ = "restore_job"

    target: Mapped[str] = mapped_column(String(1000), default="")  # password-free URL
    restore_target: Mapped[str] = mapped_column(String(200), default="latest")
    mode: Mapped[str | None] = mapped_column(String(20))
    dry_run: Mapped[bool] = mapped_column(default=False)
    reached_position: Mapped[str | None] = mapped_column(String(40))
    # per table: the restore report's before/after/inserted/updated/... counts
    tables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seconds: Mapped[float | None] = mapped_column(Float)  # the restore alone
    verified: Mapped[bool | None]  # a drill's verify: True OK, False differences
    verify_detail: Mapped[str | None] = mapped_column(Text)


class HealthCheck(Base):
    __tablename__ = "health_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("backup_job.id"), index=True)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    check: Mapped[str] = mapped_column(String(100))
    ok: Mapped[bool]
    detail: Mapped[str] = mapped_column(Text, default="")


class AuditEntry(Base):
    """One audited command. ``hash`` is the SHA-256 of the entry's content and of
    ``prev_hash``, the hash of entry ``seq - 1``: an edited, deleted or reordered entry
    breaks the chain where it happened."""

    __tablename__ = "audit_entry"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    user: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255))
    command: Mapped[str] = mapped_column(String(100))
    args: Mapped[list[str]] = mapped_column(default=list)  # secrets redacted
    outcome: Mapped[str] = mapped_column(String(50))
    detail: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


ROLES = ("viewer", "operator", "admin")


class ApiToken(Base):
    """A bearer token of the REST API. Only the SHA-256 of the secret is stored: the secret
    itself is shown once, when it is created, and cannot be read back."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None]
