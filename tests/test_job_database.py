"""The job database on SQLite and on PostgreSQL 18: migrations, job rows, abandonment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from journal.errors import ConfigError
from journal.jobs import repository
from journal.jobs.database import HEAD, JobDatabase, head_revision
from journal.jobs.models import BackupJob, Base, utcnow
from journal.jobs.recorder import current, recording
from tests import services
from tests.support.jobdb import BACKENDS, job_database_url


@pytest.fixture(params=BACKENDS)
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobDatabase]:
    pg = services.pg18_url() if request.param == "pg18" else ""
    with job_database_url(request.param, tmp_path, pg) as url:
        db = JobDatabase(url)
        yield db
        db.dispose()


@pytest.fixture
def db(empty_db: JobDatabase) -> JobDatabase:
    empty_db.upgrade()
    return empty_db


def test_migrations_build_exactly_the_models_schema(db: JobDatabase) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert db.revision() == head_revision()


def test_the_head_every_command_expects_is_the_newest_migration() -> None:
    assert HEAD == head_revision()


def test_upgrade_from_the_previous_revision_keeps_its_rows(empty_db: JobDatabase) -> None:
    empty_db.upgrade("0001")
    assert "audit_entry" not in inspect(empty_db.engine).get_table_names()
    with empty_db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO backup_job (kind, status, started_by, command, host, pid, started_at,"
            " heartbeat_at, progress, packages) VALUES ('compact', 'succeeded', 'user:old',"
            " 'compact --once', 'h', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '', '[]')"))
    empty_db.upgrade()
    assert empty_db.revision() == head_revision()
    (job,) = repository.list_jobs(empty_db)
    assert (job.kind, job.status, job.started_by, job.scheduled_run_id) == (
        "compact", "succeeded", "user:old", None)
    assert {"audit_entry", "scheduled_run"} <= set(inspect(empty_db.engine).get_table_names())


def test_a_shared_database_behind_is_refused_with_the_command_to_run(
        empty_db: JobDatabase) -> None:
    empty_db.upgrade("0001")
    if empty_db.is_embedded():
        empty_db.ensure_current()  # the embedded file is upgraded on the spot
        assert empty_db.revision() == head_revision()
        return
    with pytest.raises(ConfigError, match=r"at revision 0001 .* run `journal db upgrade`"):
        empty_db.ensure_current()
    assert empty_db.revision() == "0001"


def test_a_job_records_progress_and_its_outcome(db: JobDatabase) -> None:
    with recording(db, "compact", "user:alice", "compact --once") as job:
        assert current() is job
        job.update(events=10, progress="half way")
        job.flush()
        (running,) = repository.list_jobs(db, status="running")
        assert (running.events, running.progress) == (10, "half way")
        job.update(events=20, bytes=4096, from_position="0/10:0", to_position="0/20:3",
                   packages=["p1", "p2"])
    assert not current().active
    (done,) = repository.list_jobs(db)
    assert (done.status, done.events, done.bytes, done.packages, done.to_position) == (
        "succeeded", 20, 4096, ["p1", "p2"], "0/20:3")
    assert done.finished_at >= done.started_at and done.error is None


def test_a_failing_job_is_failed_with_its_error(db: JobDatabase) -> None:
    with pytest.raises(RuntimeError), recording(db, "restore", "scheduler",
                                                target="postgresql://u@h/db"):
        raise RuntimeError("the target went away")
    (job,) = repository.list_jobs(db, kind="restore")
    assert job.status == "failed" and "the target went away" in job.error


def test_a_job_whose_process_died_is_abandoned_by_the_next_start(db: JobDatabase) -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(child.stdout)
    ref = repository.start_job(db, "compact", "user:bob")
    alive = repository.start_job(db, "prune", "user:bob")
    with db.session() as session:
        session.get(BackupJob, ref.id).pid = dead_pid
    assert repository.reap_abandoned(db) == [ref]
    assert repository.get_job(db, ref).status == "abandoned"
    assert "gone" in repository.get_job(db, ref).error
    assert repository.get_job(db, alive).status == "running"  # this very process

    # another host's job: only its heartbeat tells
    with db.session() as session:
        job = session.get(BackupJob, alive.id)
        job.host, job.pid = "elsewhere", os.getpid()
        job.heartbeat_at = utcnow() - repository.STALE_AFTER + timedelta(seconds=5)
    assert repository.reap_abandoned(db) == []
    assert repository.reap_abandoned(db, utcnow() + timedelta(seconds=10)) == [alive]
    assert repository.get_job(db, alive).status == "abandoned"


def test_upgrade_to_api_tokens_keeps_jobs_and_audit_and_stores_only_hashes(
        empty_db: JobDatabase) -> None:
    from journal.jobs import audit_chain, tokens
    from journal.jobs.models import ApiToken

    empty_db.upgrade("0002")
    assert "api_token" not in inspect(empty_db.engine).get_table_names()
    audit_chain.append(empty_db, "compact", ["--once"], "ok")
    ref = repository.start_job(empty_db, "compact", "user:old")
    empty_db.upgrade()
    assert empty_db.revision() == head_revision() == "0003"
    assert repository.get_job(empty_db, ref) is not None
    assert audit_chain.verify(empty_db)[1] == []
    secret = tokens.create(empty_db, "ops", "operator", "user:test")
    with empty_db.session() as session:
        (row,) = session.query(ApiToken).all()
        assert secret not in (row.secret_sha256, row.name)
    assert tokens.authenticate(empty_db, secret) == tokens.Caller("ops", "operator")
    tokens.revoke(empty_db, "ops")
    assert tokens.authenticate(empty_db, secret) is None
