"""Every request and response body of the API, as Pydantic models: the OpenAPI document is
true by construction, and bad input is a 422 naming the field before anything runs."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.engine import make_url

from journal.config import check_postgres_url
from journal.errors import ConfigError
from journal.positions import parse_lsn
from journal.retention import parse_policy

JOB_ID = r"^[br][0-9]{1,12}$"
PACKAGE_ID = r"^(full|segment)-[0-9A-F]{16}-[0-9A-F]{8}-[0-9a-f]{16}$"
CONFIGURATION_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# a table as PostgreSQL names it unquoted, optionally schema-qualified: anything else
# (quotes, semicolons, commas, spaces) is no table of ours and is refused before it runs
_TABLE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_MARK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Check(BaseModel):
    check: str
    ok: bool
    detail: str


class Drill(BaseModel):
    id: str
    status: str
    started_at: datetime
    seconds: float | None = Field(None, description="the restore's duration: the recovery "
                                                    "time achieved")
    verified: bool | None
    error: str | None


class Health(BaseModel):
    ok: bool
    checks: list[Check]
    last_drill: Drill | None


class CaptureLagSample(BaseModel):
    t: float
    lag_bytes: int
    lag_seconds: float


class Capture(BaseModel):
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
    history: list[CaptureLagSample] = []


class Mark(BaseModel):
    name: str
    position: str
    commit_ts: int


class PackageSummary(BaseModel):
    id: str
    kind: str
    database: str
    generation: str
    from_position: str | None
    to_position: str
    first_commit_ts: int | None
    last_commit_ts: int | None
    parent_id: str | None
    bytes: int
    rows: int
    tables: list[str]
    marks: list[Mark]
    created_at: str


class Verified(BaseModel):
    id: str
    ok: bool
    detail: str


class ConfigurationIn(Strict):
    """A backup configuration: one cron expression per task (null: not scheduled)."""

    snapshot: str | None = None
    export: str | None = None
    retention: str | None = None
    health: str | None = None
    drill: str | None = None
    retention_policy: str = "REDUNDANCY 2"
    drill_target: str | None = Field(None, description="postgresql:// URL of a maintenance "
                                     "database on the scratch server, without a password")
    export_dir: str | None = None
    enabled: bool = True

    @field_validator("snapshot", "export", "retention", "health", "drill")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (five fields: minute hour "
                             "day month weekday, e.g. '0 2 * * *')")
        return value

    @field_validator("retention_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        try:
            return str(parse_policy(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("drill_target")
    @classmethod
    def _drill_target(cls, value: str | None) -> str | None:
        return None if value is None else _password_free_url(value)

    @model_validator(mode="after")
    def _drill_needs_target(self) -> ConfigurationIn:
        if self.drill and not self.drill_target:
            raise ValueError("drill needs drill_target: a postgresql:// URL of a database on "
                             "the scratch server")
        return self


class Configuration(BaseModel):
    name: str
    source: str
    snapshot: str | None
    export: str | None
    retention: str | None
    health: str | None
    drill: str | None
    retention_policy: str
    drill_target: str | None
    export_dir: str | None
    enabled: bool
    next_runs: dict[str, datetime]


class BackupRequest(Strict):
    kind: Literal["snapshot", "export", "prune"]
    policy: str | None = Field(None, description="prune only: the retention policy "
                                                 "(default: the configured one)")

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(parse_policy(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class RestoreRequest(Strict):
    target: str = Field(description="postgresql:// URL of the target database, without a "
                                    "password (the server's ~/.pgpass or PGPASSWORD give it)")
    to_time: datetime | None = None
    to_lsn: str | None = None
    to_xid: int | None = Field(None, ge=1)
    to_mark: str | None = None
    incremental: bool = False
    tables: list[str] = Field(default_factory=list, max_length=1000)
    on_conflict: Literal["update", "skip", "fail"] = "update"
    dry_run: bool = True
    packages_only: bool = Field(False, description="stop at the newest package; do not read "
                                "the journal's newer records")
    replay: Literal["net", "ordered"] = Field("net", description="net: the changes up to the "
                                              "target applied as each row's net change; "
                                              "ordered: every transaction in turn")
    confirm_database: str | None = Field(None, description="a real restore: the target's "
                                         "database name, typed again")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return _password_free_url(value)

    @field_validator("to_time")
    @classmethod
    def _zone(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (e.g. +00:00 or Z)")
        return value

    @field_validator("to_lsn")
    @classmethod
    def _lsn(cls, value: str | None) -> str | None:
        if value is not None:
            parse_lsn(value)  # its ValueError names the problem
        return value

    @field_validator("to_mark")
    @classmethod
    def _mark(cls, value: str | None) -> str | None:
        if value is not None and not _MARK.match(value):
            raise ValueError(f"{value!r} is not a mark name")
        return value

    @field_validator("tables")
    @classmethod
    def _tables(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _TABLE.match(name):
                raise ValueError(f"{name[:100]!r} is not a table name")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> RestoreRequest:
        given = [n for n in ("to_time", "to_lsn", "to_xid", "to_mark")
                 if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one restore target, not {' and '.join(given)}")
        return self

    def restore_target(self) -> str:
        """As the CLI's job row names it (``to T``, ``to-lsn L``, ...)."""
        if self.to_time is not None:
            return f"to {self.to_time.isoformat()}"
        for name in ("to_lsn", "to_xid", "to_mark"):
            if (value := getattr(self, name)) is not None:
                return f"{name.replace('_', '-')} {value}"
        return "latest"

    def argv(self) -> list[str]:
        """The ``journal restore`` command line (options as --name=value: no value can be
        taken for an option)."""
        args = ["restore", f"--target={self.target}", f"--on-conflict={self.on_conflict}"]
        if self.to_time is not None:
            args.append(f"--to={self.to_time.isoformat()}")
        if self.to_lsn is not None:
            args.append(f"--to-lsn={self.to_lsn}")
        if self.to_xid is not None:
            args.append(f"--to-xid={self.to_xid}")
        if self.to_mark is not None:
            args.append(f"--to-mark={self.to_mark}")
        if self.tables:
            args.append(f"--tables={','.join(self.tables)}")
        if self.incremental:
            args.append("--incremental")
        if self.dry_run:
            args.append("--dry-run")
        if self.packages_only:
            args.append("--packages-only")
        if self.replay != "net":
            args.append(f"--replay={self.replay}")
        return args


class JobAccepted(BaseModel):
    id: str
    status: str
    url: str
    events: str


class Job(BaseModel):
    """A job row: the fields every job has, then a backup's or a restore's own."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="b12 (a backup job), r3 (a restore job)")
    kind: str
    status: str
    started_by: str = Field(description="user:NAME, scheduler or api:TOKEN-NAME")
    command: str
    configuration_id: int | None
    scheduled_run_id: int | None
    host: str
    pid: int
    started_at: str
    heartbeat_at: str
    finished_at: str | None
    progress: str
    error: str | None
    duration_s: float | None = None
    # backup jobs
    from_position: str | None = None
    to_position: str | None = None
    packages: list[str] | None = None
    events: int | None = None
    bytes: int | None = None
    # restore jobs and drills
    target: str | None = Field(None, description="password-free URL")
    restore_target: str | None = None
    mode: str | None = None
    dry_run: bool | None = None
    reached_position: str | None = None
    tables: dict[str, dict[str, int | float | str | None]] | None = Field(
        None, description="per table: the restore report's counts")
    seconds: float | None = None
    verified: bool | None = None
    verify_detail: str | None = None


class AuditEntry(BaseModel):
    seq: int
    at: str
    user: str
    host: str
    command: str
    args: list[str]
    outcome: str
    detail: str
    seconds: float
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before: int | None = Field(description="pass as ?before= for the older entries")


def _password_free_url(value: str) -> str:
    try:
        check_postgres_url(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    parsed = make_url(value)
    if parsed.password is not None or "password" in {k.lower() for k in parsed.query}:
        raise ValueError("the URL holds a password: a request never carries one; give it to "
                         "the server through ~/.pgpass or its environment")
    return value

