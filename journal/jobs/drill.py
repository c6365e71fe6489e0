"""Restore drills: restore the latest packaged state into a scratch database, verify it
against the packages, record how long the restore took (the recovery time actually
achieved), drop the scratch database. And the health check over the drills' record.

The scratch database is created by the drill under a name of its own on the server the
configuration names, and dropped afterwards: a drill never writes into, or drops, a
database it did not create.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.engine import make_url

from journal.config import Config, check_postgres_url, redact, without_password
from journal.errors import JournalError, RestoreError
from journal.health import CheckResult
from journal.jobs import repository
from journal.jobs.database import JobDatabase
from journal.jobs.models import BackupConfiguration, utcnow
from journal.jobs.recorder import current
from journal.jobs.scheduler import previous_fires
from journal.positions import parse_lsn

PASSWORD_ENV = "JOURNAL_DRILL_PASSWORD"


@dataclass(frozen=True)
class DrillResult:
    ok: bool
    restore_seconds: float
    reached_position: str | None
    verify_summary: str

    def line(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        return (f"drill {verdict}: restored to {self.reached_position} in "
                f"{self.restore_seconds:.1f}s; {self.verify_summary.splitlines()[0]}")


def _conninfo(url: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"conninfo": url}
    if password := os.environ.get(PASSWORD_ENV):
        kwargs["password"] = password
    return kwargs


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def run_drill(config: Config, scratch_url: str) -> DrillResult:
    """Restore latest into a new database on the scratch server, verify it at the position
    the restore reached, drop it. Figures go to the current job, if one is recorded."""
    from journal.targets import RestoreTarget
    from restorer.restore import RestoreOptions, restore
    from restorer.verify import verify

    check_postgres_url(scratch_url)
    name = f"journal_drill_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(**_conninfo(scratch_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise RestoreError(f"drill: cannot create a scratch database on "
                           f"{redact(scratch_url)}: {exc}".strip()) from exc
    target = _with_database(scratch_url, name)
    password = os.environ.get(PASSWORD_ENV)
    if password:  # the restorer and verify connect by URL alone
        target = make_url(target).set(password=password).render_as_string(
            hide_password=False)
    current().update(target=without_password(target), progress=f"restoring into {name}")
    try:
        started = time.monotonic()
        report = restore(RestoreOptions(
            target_url=target, packages_url=config.packages_url,
            natural_keys=dict(config.natural_keys),
            generic_foreign_keys=dict(config.generic_foreign_keys)))
        seconds = time.monotonic() - started
        current().restore_report(report)
        current().update(seconds=round(seconds, 3), progress="verifying")
        reached = report.reached_position
        at = (RestoreTarget("lsn", parse_lsn(reached.split(":")[0])) if reached
              else RestoreTarget())
        checked = verify(target, config.packages_url, at,
                         natural_keys=dict(config.natural_keys),
                         generic=dict(config.generic_foreign_keys))
        summary = checked.summary()
        current().update(verified=checked.ok, verify_detail=summary,
                         progress="verified" if checked.ok else "verify found differences")
        return DrillResult(checked.ok, seconds, reached, summary)
    finally:
        _drop(scratch_url, name)


def _drop(scratch_url: str, name: str) -> None:
    try:
        with psycopg.connect(**_conninfo(scratch_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
    except psycopg.Error as exc:
        raise JournalError(f"drill: the scratch database {name} on {redact(scratch_url)} "
                           f"could not be dropped; drop it by hand: {exc}") from exc


def drill_checks(db: JobDatabase, now: datetime | None = None) -> list[CheckResult]:
    """The last restore drill passed, and is recent: for each enabled configuration with a
    drill schedule, no older than the fire time before the latest (one missed run is
    tolerated, a drill still running at its next fire time is not a failure). With no
    drill schedule, only a recorded drill's outcome is checked."""
    now = now or utcnow()
    results: list[CheckResult] = []
    with db.session() as session:
        configs = list(session.scalars(select(BackupConfiguration).where(
            BackupConfiguration.enabled, BackupConfiguration.drill_schedule.is_not(None))))
    for config in configs:
        assert config.drill_schedule is not None
        drill = repository.last_drill(db, config.id)
        oldest_allowed = previous_fires(config.drill_schedule, now, 2)[1]
        name = f"restore drill ({config.name})"
        if drill is None:
            if config.created_at <= oldest_allowed:
                results.append(CheckResult(name, False, "no drill has run; schedule "
                                           f"{config.drill_schedule!r}"))
            continue
        results.append(_judge(name, drill, oldest_allowed))
    if not configs and (drill := repository.last_drill(db)) is not None:
        results.append(_judge("restore drill", drill, None))
    return results


def _judge(name: str, drill: Any, oldest_allowed: datetime | None) -> CheckResult:
    when = f"{drill.started_at:%Y-%m-%d %H:%M}Z"
    if drill.status != "succeeded":
        return CheckResult(name, False, f"the last drill (job r{drill.id}, {when}) "
                                        f"{drill.status}: {drill.error or ''}".rstrip(": "))
    if oldest_allowed is not None and drill.started_at < oldest_allowed:
        return CheckResult(name, False, f"the last drill ran {when}, before the schedule's "
                                        f"previous run {oldest_allowed:%Y-%m-%d %H:%M}Z")
    return CheckResult(name, True, f"job r{drill.id} {when}: restored in "
                                   f"{drill.seconds or 0:.1f}s, verify OK")
