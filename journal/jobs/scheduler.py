"""The scheduler: which configured tasks are due, claimed once across schedulers, run.

``due`` is a pure decision over a cron expression, the last fire time already claimed and
the clock; ``Scheduler`` applies it to every enabled configuration, claims each fire time
in the job database (its unique constraint is the lock that keeps two schedulers on one
job database from running the same job twice) and hands the claimed run to an executor.
The clock and the executor are parameters, so a day of schedules runs in seconds in a test.

Cron expressions are read by croniter: a small library that only answers "when is the next
/previous fire time", which is exactly the decision here; APScheduler would bring its own
job store, executors and threads, and we need the job database to be the one job store.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from croniter import croniter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from journal.config import Config, redact, without_password
from journal.errors import ConfigError
from journal.jobs.database import JobDatabase, JobDatabaseError
from journal.jobs.models import TASKS, BackupConfiguration, ScheduledRun, utcnow
from journal.jobs.recorder import CONFIGURATION_ENV, SCHEDULED_RUN_ENV, STARTED_BY_ENV
from journal.jobs.repository import job_of_run

log = logging.getLogger(__name__)

# a run that starts later than this after its fire time is recorded as late
GRACE = timedelta(seconds=120)


def check_cron(expression: str, what: str = "schedule") -> str:
    if not croniter.is_valid(expression):
        raise ConfigError(f"{what} {expression!r} is not a cron expression "
                          "(five fields: minute hour day month weekday, e.g. '0 2 * * *')")
    return expression


@dataclass(frozen=True)
class Due:
    """One run to start now: the newest fire time not yet run, and how many older ones
    (missed while no scheduler ran) it stands for."""

    scheduled_for: datetime
    missed: int
    late: bool


def due(expression: str, after: datetime, now: datetime, grace: timedelta = GRACE
        ) -> Due | None:
    """The run due at ``now`` for fire times in ``(after, now]``: missed runs are caught up
    once, by the newest of them, never replayed one by one."""
    fire = croniter(expression, after).get_next(datetime)
    if fire > now:
        return None
    newest = croniter(expression, now + timedelta(microseconds=1)).get_prev(datetime)
    missed = 0
    probe = fire
    while probe < newest and missed < 10_000:
        missed += 1
        probe = croniter(expression, probe).get_next(datetime)
    return Due(newest, missed, now - newest > grace)


def next_fire(expression: str, after: datetime) -> datetime:
    return croniter(expression, after).get_next(datetime)


def previous_fires(expression: str, now: datetime, count: int) -> list[datetime]:
    """The ``count`` fire times at or before ``now``, newest first."""
    it = croniter(expression, now + timedelta(microseconds=1))
    return [it.get_prev(datetime) for _ in range(count)]


class Clock(Protocol):
    def now(self) -> datetime: ...
    def sleep(self, seconds: float, stop: threading.Event) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds)


@dataclass(frozen=True)
class Claimed:
    run_id: int
    configuration_id: int
    configuration: str
    task: str
    scheduled_for: datetime
    late: bool
    missed: int


# runs one claimed task to its end and returns its final status (a job status)
Executor = Callable[[Claimed], str]


class Scheduler:
    def __init__(self, db: JobDatabase, executor: Executor, clock: Clock | None = None,
                 poll_s: float = 60.0, grace: timedelta = GRACE) -> None:
        self.db, self.executor = db, executor
        self.clock = clock or SystemClock()
        self.poll_s, self.grace = poll_s, grace
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.ran: list[Claimed] = []

    def _configurations(self) -> list[BackupConfiguration]:
        with self.db.session() as session:
            return list(session.scalars(select(BackupConfiguration)
                                        .where(BackupConfiguration.enabled)
                                        .order_by(BackupConfiguration.id)))

    def _last_claimed(self, configuration_id: int, task: str) -> datetime | None:
        with self.db.session() as session:
            return session.scalar(select(func.max(ScheduledRun.scheduled_for)).where(
                ScheduledRun.configuration_id == configuration_id, ScheduledRun.task == task))

    def _claim(self, config: BackupConfiguration, task: str, run: Due) -> Claimed | None:
        """Insert the fire time's row; the unique constraint lets one scheduler win."""
        row = ScheduledRun(configuration_id=config.id, task=task,
                           scheduled_for=run.scheduled_for, late=run.late, missed=run.missed,
                           claimed_by=self.identity, claimed_at=self.clock.now())
        try:
            with self.db.session() as session:
                session.add(row)
        except JobDatabaseError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return None  # another scheduler has it
            raise
        return Claimed(row.id, config.id, config.name, task, run.scheduled_for, run.late,
                       run.missed)

    def _close(self, claimed: Claimed, outcome: str) -> None:
        with self.db.session() as session:
            row = session.get(ScheduledRun, claimed.run_id)
            if row is not None:
                row.outcome, row.finished_at = outcome, self.clock.now()

    def tick(self, stop: threading.Event | None = None) -> list[Claimed]:
        """Start every run due now (one at a time); what this scheduler ran."""
        ran = []
        for config in self._configurations():
            for task in TASKS:
                expression = config.schedule(task)
                if not expression or (stop is not None and stop.is_set()):
                    continue
                after = self._last_claimed(config.id, task) or config.created_at
                run = due(expression, after, self.clock.now(), self.grace)
                if run is None:
                    continue
                claimed = self._claim(config, task, run)
                if claimed is None:
                    continue
                if claimed.late:
                    log.warning("%s %s of %s runs late (%d missed)", config.name, task,
                                f"{run.scheduled_for:%Y-%m-%d %H:%M}Z", run.missed)
                try:
                    outcome = self.executor(claimed)
                except Exception as exc:  # the scheduler outlives one broken run
                    log.error("%s %s failed to start: %s", config.name, task, exc)
                    outcome = "failed"
                self._close(claimed, outcome)
                ran.append(claimed)
        self.ran.extend(ran)
        return ran

    def wake_in(self) -> float:
        """Seconds until the next fire time of any schedule, at most ``poll_s``."""
        now = self.clock.now()
        soonest = now + timedelta(seconds=self.poll_s)
        for config in self._configurations():
            for task in TASKS:
                if expression := config.schedule(task):
                    soonest = min(soonest, next_fire(expression, now))
        return max((soonest - now).total_seconds(), 0.0)

    def run(self, stop: threading.Event, until: datetime | None = None) -> None:
        """Tick until ``stop`` is set (or the clock passes ``until``)."""
        while not stop.is_set():
            if until is not None and self.clock.now() > until:
                return
            self.tick(stop)
            self.clock.sleep(self.wake_in(), stop)


def sync_configuration(db: JobDatabase, config: Config) -> BackupConfiguration | None:
    """Create or update the configuration that journal.toml's ``[schedule]`` describes;
    None when the file schedules nothing."""
    spec = dict(config.schedule)
    if not spec:
        return None
    name = str(spec.pop("name", "default"))
    values: dict[str, object] = {"source": without_password(config.source_url),
                                 "retention_policy": str(spec.pop("retention_policy",
                                                                  config.retention))}
    for task in TASKS:
        expression = spec.pop(task, None)
        values[f"{task}_schedule"] = (check_cron(str(expression), f"[schedule] {task}")
                                      if expression else None)
    drill_target = spec.pop("drill_target", None)
    values["drill_target"] = without_password(str(drill_target)) if drill_target else None
    values["export_dir"] = str(spec.pop("export_dir", Path(config.state_dir) / "exports"))
    values["enabled"] = bool(spec.pop("enabled", True))
    if spec:
        raise ConfigError(f"[schedule]: unknown key(s) {sorted(spec)} (known: name, "
                          f"{', '.join(TASKS)}, retention_policy, drill_target, export_dir, "
                          "enabled)")
    if values["drill_schedule"] and not values["drill_target"]:
        raise ConfigError("[schedule] drill needs drill_target: a postgresql:// URL of a "
                          "database on the scratch server (each drill creates and drops a "
                          "database of its own there)")
    with db.session() as session:
        row = session.scalars(select(BackupConfiguration)
                              .where(BackupConfiguration.name == name)).first()
        if row is None:
            row = BackupConfiguration(name=name, created_at=utcnow(), **values)
            session.add(row)
        else:
            for key, value in values.items():
                setattr(row, key, value)
        return row


class CommandExecutor:
    """Runs each task as a ``journal`` command in a child process: the command records its
    own job (told by the environment that the scheduler started it, and which run it is),
    and a crash of the job cannot take the scheduler down. SIGTERM to the scheduler is
    passed on to the running child, which ends its job cancelled (or, for compaction,
    finishes the package it is writing)."""

    def __init__(self, config_path: str | None = None) -> None:
        self.config_path = config_path
        self.child: subprocess.Popen[bytes] | None = None

    def argv(self, claimed: Claimed, db: JobDatabase) -> list[str]:
        with db.session() as session:
            config = session.get(BackupConfiguration, claimed.configuration_id)
            assert config is not None
        base = [sys.executable, "-m", "journal.cli"]
        if self.config_path:
            base += ["-c", self.config_path]
        stamp = claimed.scheduled_for.strftime("%Y%m%dT%H%M%SZ")
        return base + {
            "snapshot": ["compact", "--once", "--snapshot"],
            "export": ["snapshot", "export", "-o",
                       str(Path(config.export_dir or ".") / f"{config.name}-{stamp}.tar")],
            "retention": ["packages", "prune", "--policy", config.retention_policy],
            "health": ["health"],
            "drill": ["drill", "--scratch", config.drill_target or ""],
        }[claimed.task]

    def __call__(self, claimed: Claimed, db: JobDatabase) -> str:
        env = dict(os.environ, **{STARTED_BY_ENV: "scheduler",
                                  SCHEDULED_RUN_ENV: str(claimed.run_id),
                                  CONFIGURATION_ENV: str(claimed.configuration_id)})
        argv = self.argv(claimed, db)
        log.info("run %s: %s", claimed.task, " ".join(redact(a) for a in argv[3:]))
        self.child = subprocess.Popen(argv, env=env)
        try:
            code = self.child.wait()
        finally:
            self.child = None
        # the child's own record is the truth; its exit code when it could not write one
        job = job_of_run(db, claimed.run_id)
        if job is not None:
            return job.status
        return "succeeded" if code == 0 else "failed"

    def terminate(self) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            child.terminate()


def run_forever(db: JobDatabase, executor: CommandExecutor, stop: threading.Event,
                poll_s: float = 60.0) -> None:
    """The daemon: tick on the system clock until ``stop``."""
    scheduler = Scheduler(db, lambda claimed: executor(claimed, db), poll_s=poll_s)
    while not stop.is_set():
        try:
            scheduler.run(stop)
        except JobDatabaseError as exc:  # the job database is away: wait, then go on
            log.error("%s; retrying in %.0fs", exc, poll_s)
            stop.wait(poll_s)
