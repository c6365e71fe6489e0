"""The scheduler: due runs over a controlled clock, missed runs caught up once and recorded
late, and two scheduler processes on one job database never running the same job twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from journal.config import Config
from journal.errors import ConfigError
from journal.jobs.database import JobDatabase
from journal.jobs.models import BackupConfiguration, ScheduledRun
from journal.jobs.scheduler import Claimed, Scheduler, check_cron, due, sync_configuration
from tests import services
from tests.support.clocks import FakeClock
from tests.support.jobdb import BACKENDS, job_database_url

REPO = Path(__file__).resolve().parent.parent
DAY = datetime(2026, 11, 30, tzinfo=UTC)


def at(hh: int, mm: int = 0) -> datetime:
    return DAY + timedelta(hours=hh, minutes=mm)


def test_nothing_is_due_before_the_next_fire_time() -> None:
    assert due("0 * * * *", at(1), at(1, 59)) is None


def test_a_run_on_time_is_neither_late_nor_a_catch_up() -> None:
    assert due("0 * * * *", at(1), at(2, 0)).__dict__ == {
        "scheduled_for": at(2), "missed": 0, "late": False}


def test_missed_runs_are_caught_up_once_by_the_newest_and_marked_late() -> None:
    run = due("0 * * * *", at(6), at(12, 30))
    assert (run.scheduled_for, run.missed, run.late) == (at(12), 5, True)


def test_a_cron_expression_is_checked_by_croniter() -> None:
    assert check_cron("*/15 2-4 * * 1-5") == "*/15 2-4 * * 1-5"
    with pytest.raises(ConfigError, match="not a cron expression"):
        check_cron("every day at two")


SCHEDULES = {"snapshot_schedule": "0 2 * * *", "export_schedule": "30 3 * * *",
             "retention_schedule": "0 4 * * *", "health_schedule": "0 * * * *",
             "drill_schedule": "0 8 * * *"}


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobDatabase]:
    pg = services.pg18_url() if request.param == "pg18" else ""
    with job_database_url(request.param, tmp_path, pg) as url:
        database = JobDatabase(url)
        database.upgrade()
        yield database
        database.dispose()


def _configure(db: JobDatabase, **schedules: str) -> None:
    with db.session() as session:
        session.add(BackupConfiguration(name="edms", source="postgresql://u@db/edms",
                                        retention_policy="REDUNDANCY 2",
                                        drill_target="postgresql://u@scratch/postgres",
                                        created_at=DAY, **schedules))


def test_a_day_of_schedules_runs_each_job_at_its_time_and_catches_up_a_missed_one(
        db: JobDatabase) -> None:
    _configure(db, **SCHEDULES)
    clock = FakeClock(DAY)
    ran: list[tuple[str, datetime, datetime]] = []

    def execute(claimed: Claimed) -> str:
        ran.append((claimed.task, claimed.scheduled_for, clock.now()))
        clock.current += timedelta(seconds=50)  # the job takes its time
        return "failed" if claimed.task == "export" else "succeeded"

    started = time.monotonic()
    Scheduler(db, execute, clock, poll_s=3600).run(threading.Event(), until=at(6))
    clock.current = at(12, 30)  # the scheduler was down from 06:00 to 12:30
    Scheduler(db, execute, clock, poll_s=3600).run(threading.Event(), until=at(23, 59))
    assert time.monotonic() - started < 30  # a day in seconds

    expected = ([("health", at(h)) for h in (1, 2, 3, 4, 5, 6, 12, *range(13, 24))]
                + [("snapshot", at(2)), ("export", at(3, 30)), ("retention", at(4)),
                   ("drill", at(8))])
    assert sorted((task, when) for task, when, _ in ran) == sorted(expected)
    for task, when, started_at in ran:  # on time, except what the downtime delayed
        if when < at(6) or when > at(12, 30):
            assert started_at - when < timedelta(minutes=2), (task, when, started_at)
    with db.session() as session:
        runs = {(r.task, r.scheduled_for): r for r in session.scalars(select(ScheduledRun))}
    assert len(runs) == len(expected)
    late = {key for key, r in runs.items() if r.late}
    assert late == {("health", at(12)), ("drill", at(8))}
    assert runs[("health", at(12))].missed == 5 and runs[("drill", at(8))].missed == 0
    assert runs[("export", at(3, 30))].outcome == "failed"
    assert Counter(r.outcome for r in runs.values()) == {"succeeded": len(expected) - 1,
                                                          "failed": 1}


def test_a_restarted_scheduler_does_not_run_a_claimed_run_again(db: JobDatabase) -> None:
    _configure(db, health_schedule="0 * * * *")
    ran: list[datetime] = []
    for _ in range(3):  # three schedulers in turn, all at 10:05
        Scheduler(db, lambda c: ran.append(c.scheduled_for) or "succeeded",
                  FakeClock(at(10, 5))).tick()
    assert ran == [at(10)]


@pytest.mark.slow
@pytest.mark.integration
def test_two_scheduler_processes_never_run_the_same_job_twice(db: JobDatabase,
                                                              tmp_path: Path) -> None:
    schedules = {"health_schedule": "0 * * * *", "snapshot_schedule": "0 2 * * *",
                 "retention_schedule": "0 2 * * *", "drill_schedule": "0 5 * * *"}
    _configure(db, **schedules)
    log = tmp_path / "runs.jsonl"
    factor = 6400.0  # a simulated day in 13.5 seconds
    real_start = time.time() + 4  # both processes start their day together
    sim_end = DAY + timedelta(hours=23, minutes=59)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    workers = [subprocess.Popen(
        [sys.executable, "-m", "tests.support.scheduler_worker", db.url, str(log), str(real_start),
         DAY.isoformat(), sim_end.isoformat(), str(factor)], env=env, cwd=REPO)
        for _ in range(2)]
    assert [w.wait(120) for w in workers] == [0, 0]

    runs = [json.loads(line) for line in log.read_text().splitlines()]
    done = Counter((r["task"], r["at"]) for r in runs)
    assert [key for key, n in done.items() if n > 1] == []  # never twice
    expected = ({("health", at(h).isoformat()) for h in range(1, 24)}
                | {("snapshot", at(2).isoformat()), ("retention", at(2).isoformat()),
                   ("drill", at(5).isoformat())})
    assert set(done) == expected  # and none lost
    assert {r["pid"] for r in runs} == {w.pid for w in workers}  # both took part
    with db.session() as session:
        assert session.query(ScheduledRun).count() == len(expected)


def test_the_files_schedule_becomes_a_password_free_configuration(tmp_path: Path) -> None:
    db = JobDatabase(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    db.upgrade()
    config = Config(source_url="postgresql://journal:s3cret@db:5432/edms", schedule={
        "name": "edms", "health": "*/5 * * * *", "drill": "0 3 * * *",
        "drill_target": "postgresql://drill:hunter2@scratch/postgres"})
    row = sync_configuration(db, config)
    assert (row.name, row.health_schedule, row.drill_schedule, row.snapshot_schedule) == (
        "edms", "*/5 * * * *", "0 3 * * *", None)
    assert row.source == "postgresql://journal@db:5432/edms"
    assert row.drill_target == "postgresql://drill@scratch/postgres"
    again = sync_configuration(db, replace(config, schedule={"name": "edms",
                                                              "health": "0 * * * *"}))
    assert again.id == row.id and again.health_schedule == "0 * * * *"
    with pytest.raises(ConfigError, match="drill needs drill_target"):
        sync_configuration(db, replace(config, schedule={"drill": "0 3 * * *"}))
    with pytest.raises(ConfigError, match="not a cron expression"):
        sync_configuration(db, replace(config, schedule={"health": "hourly"}))
    with pytest.raises(ConfigError, match="unknown key"):
        sync_configuration(db, replace(config, schedule={"helth": "0 * * * *"}))


@pytest.mark.integration
def test_sigterm_to_the_scheduler_cancels_the_running_job_and_exits_cleanly(
        tmp_path: Path) -> None:
    import signal
    import socket

    from journal.jobs import repository
    from journal.jobs.database import default_url

    db = JobDatabase(default_url(tmp_path / "state"))
    db.upgrade()
    # hourly, last fired half an hour ago (whatever the time of day): runs at once, late
    minute = (datetime.now(UTC).minute + 30) % 60
    with db.session() as session:
        session.add(BackupConfiguration(name="edms", source="postgresql://u@db/edms",
                                        retention_policy="REDUNDANCY 2",
                                        health_schedule=f"{minute} * * * *",
                                        created_at=datetime.now(UTC) - timedelta(hours=2)))
    with socket.socket() as silent:  # the health check's source never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = dict(os.environ, PYTHONPATH=str(REPO), JOURNAL_CONFIG=str(tmp_path / "no.toml"),
                   JOURNAL_STATE_DIR=str(tmp_path / "state"),
                   JOURNAL_PACKAGES_URL=f"file://{tmp_path}/packages",
                   JOURNAL_SOURCE_URL=f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/e")
        scheduler = subprocess.Popen([sys.executable, "-m", "journal.cli", "schedule"], env=env)
        try:
            deadline = time.monotonic() + 30
            while repository.list_jobs(db, status="running") == []:
                assert time.monotonic() < deadline and scheduler.poll() is None
                time.sleep(0.1)
            time.sleep(0.5)
            scheduler.send_signal(signal.SIGTERM)
            code = scheduler.wait(30)
        finally:
            if scheduler.poll() is None:
                scheduler.kill()
    (job,) = repository.list_jobs(db)
    assert code == 0
    assert (job.kind, job.status, job.started_by) == ("health", "cancelled", "scheduler")
    with db.session() as session:
        (run,) = session.scalars(select(ScheduledRun))
        assert (run.outcome, run.late, run.missed) == ("cancelled", True, 1)
    db.dispose()
