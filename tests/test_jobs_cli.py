"""Every job run from the CLI leaves exactly one row with its status, figures and
positions; a failing job is failed with its error; a killed one ends abandoned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from journal.cli import main
from journal.jobs import repository
from journal.jobs.database import JobDatabase, JobDatabaseError, default_url
from tests import services
from tests.support.capture import capture_config, loaded_sample
from tests.support.databases import scratch_database
from tests.support.jobdb import BACKENDS, job_database_url
from tests.support.restore import Recorder

REPO = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"JOURNAL_CONFIG": str(tmp_path / "absent.toml"),
            "JOURNAL_STATE_DIR": str(tmp_path / "state"),
            "JOURNAL_PACKAGES_URL": f"file://{tmp_path}/packages", **extra}


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def _member_bytes(path: Path) -> int:
    """A package's data bytes (as `packages list` counts them), read with tarfile."""
    with tarfile.open(path) as tar:
        return sum(m.size for m in tar.getmembers() if m.name != "manifest.json")


def _counts(url: str) -> dict[str, int]:
    """Rows per table, straight from the database: the oracle for the restore's figures."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename NOT LIKE 'journal_%'")]
        return {t.split(".", 1)[1]: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
                for t in tables}


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_job_kind_leaves_one_row_with_its_figures(
        backend: str, edms_source: str, target_db: str, tmp_path: Path) -> None:
    from journal import sample

    rec = Recorder(edms_source, str(tmp_path / "packages"))
    full = rec.full()
    rec.step(lambda c: sample.workload(c, 5, seed=2))
    seg1 = rec.segment()
    rec.step(lambda c: sample.workload(c, 5, seed=3))
    seg2 = rec.segment()
    chain = [full, seg1, seg2]

    with job_database_url(backend, tmp_path, services.pg18_url()) as url:
        env = _env(tmp_path, JOURNAL_JOBS_URL=url)
        if backend == "pg18":
            assert _cli(env, "db", "upgrade")[0] == 0
        db = JobDatabase(url)

        assert _cli(env, "packages", "verify", "--all")[0] == 0
        (verify_job,) = repository.list_jobs(db, kind="verify")
        assert verify_job.status == "succeeded"
        assert verify_job.packages == [m.package_id for m in chain]
        assert verify_job.to_position == str(seg2.to_position)
        assert verify_job.bytes == sum(_member_bytes(tmp_path / "packages" /
                                                     f"{m.package_id}.tar") for m in chain)

        code, out = _cli(env, "restore", "--target", target_db)
        assert code == 0, out
        (restore_job,) = repository.list_jobs(db, kind="restore")
        assert restore_job.status == "succeeded" and restore_job.mode == "empty"
        assert restore_job.reached_position == str(rec.position)
        assert restore_job.restore_target == "latest" and "***" not in restore_job.target
        source_counts = _counts(edms_source)
        assert {t.split(".")[-1]: c["after"] for t, c in restore_job.tables.items()} == \
            source_counts
        assert all(c["before"] == 0 for c in restore_job.tables.values())

        assert _cli(env, "verify", "--target", target_db)[0] == 0
        assert [j.status for j in repository.list_jobs(db, kind="verify")] == [
            "succeeded", "succeeded"]

        code, out = _cli(env, "snapshot", "now")
        assert code == 0, out
        (snap,) = repository.list_jobs(db, kind="snapshot")
        assert snap.status == "succeeded" and snap.packages == [out.strip()]
        assert snap.to_position == str(seg2.to_position)

        exported = tmp_path / "export.tar"
        assert _cli(env, "snapshot", "export", "-o", str(exported))[0] == 0
        (export,) = repository.list_jobs(db, kind="export")
        assert export.status == "succeeded" and export.bytes == _member_bytes(exported)
        assert export.to_position == str(seg2.to_position)

        before = {p.stem for p in (tmp_path / "packages").glob("*.tar")}
        assert _cli(env, "packages", "prune", "--policy", "REDUNDANCY 1")[0] == 0
        after = {p.stem for p in (tmp_path / "packages").glob("*.tar")}
        (prune,) = repository.list_jobs(db, kind="prune")
        assert prune.status == "succeeded" and sorted(prune.packages) == sorted(before - after)
        assert prune.packages  # the old chain went

        code, _ = _cli(env, "health")  # no source configured: its checks fail
        assert code == 1
        (health,) = repository.list_jobs(db, kind="health")
        checks = repository.health_of(db, repository.JobRef.of(health))
        assert health.status == "failed" and "failed" in health.error
        assert any(c.check == "full snapshot" and c.ok for c in checks)
        assert any(not c.ok for c in checks)

        assert Counter(j.kind for j in repository.list_jobs(db)) == {
            "verify": 2, "restore": 1, "snapshot": 1, "export": 1, "prune": 1, "health": 1}
        assert all(j.started_by.startswith("user:") for j in repository.list_jobs(db))
        code, out = _cli(env, "jobs", "list", "--json")
        assert code == 0 and len(json.loads(out)) == 7
        db.dispose()


@pytest.mark.integration
def test_a_failing_restore_is_failed_with_its_error(edms_source: str, target_db: str,
                                                    tmp_path: Path) -> None:
    rec = Recorder(edms_source, str(tmp_path / "packages"))
    full = rec.full()
    path = tmp_path / "packages" / f"{full.package_id}.tar"
    data = bytearray(path.read_bytes())
    data[-2000] ^= 0xFF  # inside the last member, past the manifest
    path.write_bytes(bytes(data))
    env = _env(tmp_path)
    code, out = _cli(env, "restore", "--target", target_db)
    assert code == 3, out
    db = JobDatabase(default_url(tmp_path / "state"))
    (job,) = repository.list_jobs(db)
    assert job.kind == "restore" and job.status == "failed"
    assert full.package_id[:12] in job.error
    with psycopg.connect(target_db) as conn:  # and the target was left as it was
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone()[0] == 0


def _running(db: JobDatabase) -> bool:
    """A job is running (False while the child is still creating the job database)."""
    try:
        return repository.list_jobs(db, status="running") != []
    except JobDatabaseError:
        return False


def _wait_for(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_a_killed_job_ends_abandoned_and_a_terminated_daemon_finishes(
        how: str, pg18_server: str, tmp_path: Path) -> None:
    with scratch_database(pg18_server, "cap") as source:
        loaded_sample(source, scale=5)
        cfg = capture_config(source, tmp_path, packages_url=f"file://{tmp_path}/packages")
        from producers.capture import run_capture

        run_capture(cfg, once_until_idle=0.5)
        env = dict(os.environ, **_env(tmp_path), JOURNAL_SOURCE_URL=cfg.source_url,
                   JOURNAL_JOURNAL_URL=cfg.journal_url, PYTHONPATH=str(REPO))
        daemon = subprocess.Popen([sys.executable, "-m", "journal.cli", "compact"], env=env)
        db = JobDatabase(default_url(tmp_path / "state"))
        try:
            _wait_for(lambda: _running(db))
            # the daemon has packaged what the journal held
            _wait_for(lambda: list((tmp_path / "packages").glob("*.tar")) != [])
            daemon.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
            code = daemon.wait(30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
        (job,) = repository.list_jobs(db)
        if how == "SIGTERM":  # compaction finishes its package and ends well
            assert code == 0 and job.status == "succeeded"
            assert job.packages and job.events and job.events > 0
            return
        assert code == -signal.SIGKILL and job.status == "running"
        code, out = _cli(dict(env), "packages", "list")  # any command
        assert code == 0, out
        (job,) = repository.list_jobs(db)
        assert job.status == "abandoned" and f"process {daemon.pid}" in job.error
        code, out = _cli(dict(env), "jobs", "show", f"b{job.id}")
        assert "abandoned" in out


def test_sigterm_ends_a_running_job_cancelled(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        env = dict(os.environ, **_env(tmp_path), PYTHONPATH=str(REPO),
                   JOURNAL_SOURCE_URL=f"postgresql://u@127.0.0.1:{port}/edms")
        child = subprocess.Popen([sys.executable, "-m", "journal.cli", "health"], env=env)
        db = JobDatabase(default_url(tmp_path / "state"))
        try:
            _wait_for(lambda: _running(db))
            time.sleep(0.5)  # inside the health check's connection attempt
            child.send_signal(signal.SIGTERM)
            code = child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
    (job,) = repository.list_jobs(db)
    assert code != 0 and job.status == "cancelled" and "SIGTERM" in job.error


def test_a_restore_job_row_holds_its_target_without_the_password() -> None:
    from journal.commands._recording import job_fields

    args = ["restore", "--target", "postgresql://u:hunter2@db:5432/edms?sslmode=require",
            "--to-lsn", "16/B374D848", "--dry-run"]
    assert job_fields("restore", args) == {
        "target": "postgresql://u@db:5432/edms?sslmode=require",
        "restore_target": "to-lsn 16/B374D848", "dry_run": True}
    assert job_fields("restore", ["restore", "--target=postgresql://db/x"]) == {
        "target": "postgresql://db/x", "restore_target": "latest", "dry_run": False}


@pytest.mark.integration
def test_a_compaction_records_the_packages_positions_and_events_it_wrote(
        pg18_server: str, tmp_path: Path) -> None:
    with scratch_database(pg18_server, "cap") as source:
        loaded_sample(source, scale=5)
        rows = sum(_counts(source).values())
        cfg = capture_config(source, tmp_path, packages_url=f"file://{tmp_path}/packages")
        from producers.capture import run_capture

        run_capture(cfg, once_until_idle=0.5)
        from journal import sample

        with psycopg.connect(source, autocommit=True) as conn:
            sample.workload(conn, 5, seed=1)
        run_capture(cfg, once_until_idle=0.5)
        env = _env(tmp_path, JOURNAL_SOURCE_URL=cfg.source_url,
                   JOURNAL_JOURNAL_URL=cfg.journal_url)
        code, out = _cli(env, "compact", "--once")
        assert code == 0, out
    db = JobDatabase(default_url(tmp_path / "state"))
    (job,) = repository.list_jobs(db)
    files = sorted((tmp_path / "packages").glob("*.tar"))
    manifests = []
    for path in files:  # read back with tarfile and json, not with our reader
        with tarfile.open(path) as tar:
            manifests.append(json.load(tar.extractfile("manifest.json")))
    assert (job.kind, job.status) == ("compact", "succeeded")
    assert sorted(job.packages) == sorted(p.stem for p in files) and len(files) >= 2
    assert job.bytes == sum(_member_bytes(p) for p in files)
    assert job.events >= rows  # every row of the initial snapshot, and the markers

    def position(text: str) -> tuple[int, int, int]:
        lsn, seq = text.split(":")
        hi, lo = lsn.split("/")
        return int(hi, 16), int(lo, 16), int(seq)

    assert job.to_position == max((m["to_position"] for m in manifests), key=position)
