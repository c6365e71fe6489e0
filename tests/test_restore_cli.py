"""``journal restore`` and ``journal verify`` on the command line (real PostgreSQL)."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner

from journal import sample
from journal.cli import main
from journal.events import micros_to_datetime
from tests.support.restore import Recorder

pytestmark = pytest.mark.integration


@pytest.fixture
def recorded(edms_source: str, tmp_path) -> Recorder:
    rec = Recorder(edms_source, str(tmp_path / "packages"))
    rec.full()
    for i in range(3):
        rec.step(lambda c, seed=i: sample.workload(c, 10, seed=seed))
    rec.segment()
    return rec


def _run(rec: Recorder, *args: str) -> object:
    env = {"JOURNAL_PACKAGES_URL": f"file://{rec.store.files()[0].parent}",
           "JOURNAL_CONFIG": "/nonexistent-journal.toml"}
    return CliRunner().invoke(main, list(args), env=env)


def test_restore_to_a_time_then_verify_at_that_time(recorded, target_db):
    at = micros_to_datetime(recorded.points[1]["commit_ts"]).isoformat()
    result = _run(recorded, "restore", "--target", target_db, "--to", at, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["mode"] == "empty" and report["transactions_replayed"] == 2
    ok = _run(recorded, "verify", "--target", target_db, "--at", at)
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output
    latest = _run(recorded, "verify", "--target", target_db, "--json")
    assert latest.exit_code == 1  # the target is one transaction behind the latest
    assert json.loads(latest.output)["ok"] is False


def test_verify_notices_a_changed_row(recorded, target_db):
    assert _run(recorded, "restore", "--target", target_db).exit_code == 0
    with psycopg.connect(target_db) as conn:
        conn.execute("UPDATE document SET title = 'tampered' WHERE id = "
                     "(SELECT min(id) FROM document)")
    result = _run(recorded, "verify", "--target", target_db)
    assert result.exit_code == 1
    assert "FAILED public.document" in result.output


def test_usage_errors_exit_with_code_2(recorded, target_db):
    result = _run(recorded, "restore", "--target", target_db, "--to", "2025-01-01T00:00:00")
    assert result.exit_code == 2
    assert "time zone" in result.output
    result = _run(recorded, "restore", "--target", target_db, "--to-lsn", "nope")
    assert result.exit_code == 2


def test_verify_takes_the_same_targets_as_restore(edms_source, tmp_path, pg18_server):
    from journal.positions import format_lsn
    from tests.support.databases import scratch_database

    rec = Recorder(edms_source, str(tmp_path / "packages"))
    rec.full()
    for i in range(3):
        rec.step(lambda c, seed=i: sample.workload(c, 10, seed=seed),
                 mark="before-upgrade" if i == 1 else None)
    rec.segment()
    point = rec.points[1]
    for restore_flag, verify_flag, value in (
            ("--to-mark", "--at-mark", "before-upgrade"),
            ("--to-xid", "--at-xid", str(point["xid"])),
            ("--to-lsn", "--at-lsn", format_lsn(point["lsn"]))):
        with scratch_database(pg18_server, "dst") as target:
            done = _run(rec, "restore", "--target", target, restore_flag, value)
            assert done.exit_code == 0, done.output
            ok = _run(rec, "verify", "--target", target, verify_flag, value)
            assert ok.exit_code == 0, ok.output
            behind = _run(rec, "verify", "--target", target)  # latest is one step further
            assert behind.exit_code == 1, behind.output
    both = _run(rec, "verify", "--target", "postgresql://x@127.0.0.1:1/x", "--at-mark", "m",
                "--at-xid", "1")
    assert both.exit_code == 2 and "choose one restore target" in both.output
