"""Restore drills against real packages: the recovery time and a passing verify are
recorded; a drill against a corrupted package is a failure that `journal health` reports."""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from journal.cli import main
from journal.compactor import Compactor
from journal.config import load_config
from journal.jobs import repository
from journal.jobs.database import JobDatabase, open_database
from journal.jobs.drill import drill_checks
from journal.jobs.models import BackupConfiguration, RestoreJob, ScheduledRun
from journal.jobs.scheduler import CommandExecutor, Scheduler
from journal.packages.store import open_store
from journal.transport import open_reader
from producers.capture import run_capture
from tests.support.capture import capture_config, loaded_sample
from tests.support.clocks import FakeClock

REPO = Path(__file__).resolve().parent.parent


def _flip_a_byte_of_a_table(path: Path) -> None:
    """Corrupt one member's data: the manifest still reads, the checksum no longer holds."""
    with tarfile.open(path) as tar:
        member = max((m for m in tar.getmembers() if m.name != "manifest.json"),
                     key=lambda m: m.size)
    data = bytearray(path.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _source_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {t: conn.execute(f'SELECT count(*) FROM public."{t}"').fetchone()[0]  # noqa: S608
                for t in tables}


@pytest.mark.integration
def test_a_drill_records_its_recovery_time_and_a_corrupt_package_fails_health(
        source_db: str, pg18_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded_sample(source_db, scale=10)
    cfg = capture_config(source_db, tmp_path, packages_url=f"file://{tmp_path}/packages")
    run_capture(cfg, once_until_idle=1.0)
    reader = open_reader(cfg.journal_location(), cfg.database())
    try:
        Compactor(reader, open_store(cfg.packages_url)).run(once=True)
    finally:
        reader.close()
    for name, value in {"JOURNAL_CONFIG": str(tmp_path / "absent.toml"),
                        "JOURNAL_STATE_DIR": str(tmp_path / "state"),
                        "JOURNAL_SOURCE_URL": cfg.source_url, "JOURNAL_SLOT": cfg.slot,
                        "JOURNAL_JOURNAL_URL": cfg.journal_url,
                        "JOURNAL_PACKAGES_URL": cfg.packages_url,
                        "PYTHONPATH": str(REPO)}.items():
        monkeypatch.setenv(name, value)
    db = open_database(load_config())
    created = datetime.now(UTC) - timedelta(days=3)
    with db.session() as session:
        session.add(BackupConfiguration(name="edms", source=source_db,
                                        retention_policy="REDUNDANCY 2",
                                        drill_schedule="0 3 * * *", drill_target=pg18_server,
                                        created_at=created))

    # the scheduler runs the drill as `journal drill` in a child process
    executor = CommandExecutor()
    ran = Scheduler(db, lambda claimed: executor(claimed, db), FakeClock(datetime.now(UTC))
                    ).tick()
    assert [c.task for c in ran] == ["drill"]
    (drill,) = repository.list_jobs(db, kind="drill")
    assert (drill.status, drill.started_by, drill.scheduled_run_id) == (
        "succeeded", "scheduler", ran[0].run_id)
    assert drill.verified is True and "OK" in drill.verify_detail
    assert 0 < drill.seconds <= (drill.finished_at - drill.started_at).total_seconds()
    assert {t.split(".")[-1]: c["after"] for t, c in drill.tables.items()} == \
        _source_counts(source_db)
    scratch = urlsplit(drill.target).path.lstrip("/")
    assert scratch.startswith("journal_drill_")
    with psycopg.connect(pg18_server) as conn:  # the scratch database is gone
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (scratch,)).fetchone()[0] == 0
    with db.session() as session:
        run = session.scalars(select(ScheduledRun)).one()
        assert (run.task, run.outcome, run.late) == ("drill", "succeeded", True)

    healthy = CliRunner().invoke(main, ["health"])
    assert healthy.exit_code == 0, healthy.output
    assert "restore drill (edms): OK" in healthy.output

    (full,) = [m for m in open_store(cfg.packages_url).list() if m.kind == "full"]
    path = tmp_path / "packages" / f"{full.package_id}.tar"
    _flip_a_byte_of_a_table(path)
    failed = CliRunner().invoke(main, ["drill", "--scratch", pg18_server])
    assert failed.exit_code == 3, failed.output
    drills = repository.list_jobs(db, kind="drill")
    assert [d.status for d in drills] == ["failed", "succeeded"]
    assert full.package_id[:12] in drills[0].error and drills[0].verified is None

    unhealthy = CliRunner().invoke(main, ["health"])
    assert unhealthy.exit_code == 1
    lines = unhealthy.output.splitlines()
    assert [line for line in lines if "FAILED" in line] == [
        next(line for line in lines if line.startswith("restore drill (edms): FAILED"))]
    db.dispose()


def _drill(db: JobDatabase, started: datetime, status: str = "succeeded") -> None:
    with db.session() as session:
        session.add(RestoreJob(kind="drill", status=status, started_by="scheduler", host="h",
                               pid=1, started_at=started, heartbeat_at=started,
                               finished_at=started, seconds=1.5,
                               error=None if status == "succeeded" else "verify: differences"))


def test_health_fails_when_the_last_drill_is_older_than_its_schedule_allows(
        tmp_path: Path) -> None:
    db = JobDatabase(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    db.upgrade()
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    with db.session() as session:
        session.add(BackupConfiguration(name="edms", source="postgresql://u@db/edms",
                                        retention_policy="REDUNDANCY 2",
                                        drill_schedule="0 3 * * *", drill_target="x",
                                        created_at=now - timedelta(days=10)))
    (never,) = drill_checks(db, now)
    assert not never.ok and "no drill has run" in never.detail
    _drill(db, now - timedelta(days=2, hours=8))  # 28th 02:00: before 29th 03:00
    (stale,) = drill_checks(db, now)
    assert not stale.ok and "before the schedule's previous run" in stale.detail
    _drill(db, datetime(2026, 11, 29, 3, 0, 5, tzinfo=UTC))  # one missed run is tolerated
    assert drill_checks(db, now)[0].ok
    _drill(db, datetime(2026, 11, 30, 3, 0, 5, tzinfo=UTC), status="failed")
    (failed,) = drill_checks(db, now)
    assert not failed.ok and "failed: verify: differences" in failed.detail
