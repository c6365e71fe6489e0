"""Disk full and read-only locations, for real (tmpfs mounts), end to end through the CLI.

Each failure must be one ``error:`` line naming the path and the OS reason, leave no
partial file, and lose nothing: the run after the location is fixed produces packages
that hold exactly the source's rows (read from the source, not from the journal).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from journal import sample
from journal.cli import main
from journal.compactor import fold_latest
from journal.packages import verify_chain, verify_package
from journal.packages.store import open_store
from producers.capture import run_capture
from tests.support.capture import (
    capture_config,
    cli_env,
    database_of,
    loaded_sample,
    read_records,
    slots_and_publications,
)
from tests.support.cli import one_error
from tests.support.mounts import leftovers, remount, tmpfs
from tests.support.streams import package_rows, same_tables

pytestmark = pytest.mark.integration


def _store_equals_source(packages_url: str, source_url: str) -> None:
    store = open_store(packages_url)
    manifests = store.list()
    verify_chain(manifests)
    for m in manifests:
        verify_package(store.path(m.package_id))
    folded = fold_latest(store)
    newest = folded or manifests[-1]
    with store.open(newest.package_id) as reader:
        assert same_tables(package_rows(reader), sample.snapshot_state(source_url))


@pytest.mark.parametrize("failure", ["full", "read-only"])
def test_compact_into_a_full_or_read_only_store_fails_in_one_line_and_loses_nothing(
        captured, tmp_path: Path, failure: str) -> None:
    cfg = captured
    with tmpfs(tmp_path / "store", "24k" if failure == "full" else "16m") as store_dir:
        if failure == "read-only":
            remount(store_dir, "ro")
        env = cli_env(cfg, f"file://{store_dir}", tmp_path)
        result = CliRunner().invoke(main, ["compact", "--once"], env=env)
        assert result.exit_code == 4, result.output
        line = one_error(result.output)
        assert str(store_dir) in line
        reason = "No space left on device" if failure == "full" else "Read-only file system"
        assert reason in line
        assert leftovers(store_dir) == []
        for tar in store_dir.glob("*.tar"):  # whatever was published is whole
            verify_package(tar)

        remount(store_dir, "size=64m" if failure == "full" else "rw")
        again = CliRunner().invoke(main, ["compact", "--once"], env=env)
        assert again.exit_code == 0, again.output
        assert leftovers(store_dir) == []
        _store_equals_source(f"file://{store_dir}", cfg.source_url)


@pytest.mark.parametrize("failure", ["full", "read-only"])
def test_snapshot_export_into_a_full_or_read_only_directory_fails_in_one_line(
        captured, tmp_path: Path, failure: str) -> None:
    cfg = captured
    env = cli_env(cfg, cfg.packages_url, tmp_path)
    assert CliRunner().invoke(main, ["compact", "--once"], env=env).exit_code == 0
    with tmpfs(tmp_path / "out", "24k" if failure == "full" else "16m") as out_dir:
        if failure == "read-only":
            remount(out_dir, "ro")
        output = out_dir / "export.tar"
        result = CliRunner().invoke(main, ["snapshot", "export", "-o", str(output)], env=env)
        assert result.exit_code == 4, result.output
        line = one_error(result.output)
        assert str(out_dir) in line
        assert ("No space left on device" if failure == "full"
                else "Read-only file system") in line
        assert list(out_dir.iterdir()) == []

        remount(out_dir, "size=64m" if failure == "full" else "rw")
        again = CliRunner().invoke(main, ["snapshot", "export", "-o", str(output)], env=env)
        assert again.exit_code == 0, again.output
        assert [p.name for p in out_dir.iterdir()] == ["export.tar"]
        manifest = verify_package(output)
        from journal.packages import open_package

        with open_package(output) as reader:
            assert same_tables(package_rows(reader), sample.snapshot_state(cfg.source_url))
        assert manifest.kind == "full"


def test_capture_into_a_full_file_journal_fails_in_one_line_and_the_next_run_loses_nothing(
        source_db: str, tmp_path: Path) -> None:
    loaded_sample(source_db, scale=10)
    with tmpfs(tmp_path / "jfs", "32k") as journal_dir:
        cfg = capture_config(source_db, tmp_path, journal_url=f"file://{journal_dir}")
        env = cli_env(cfg, f"file://{tmp_path}/packages", tmp_path)
        result = CliRunner().invoke(main, ["capture", "--once-until-idle", "1"], env=env)
        assert result.exit_code == 4, result.output
        line = one_error(result.output)
        assert str(journal_dir) in line and "No space left on device" in line
        # the failed first start removed what it created in the source
        assert slots_and_publications(source_db) == ([], [])

        remount(journal_dir, "size=64m")
        with psycopg.connect(source_db, autocommit=True) as conn:
            sample.workload(conn, 20, seed=5)
        again = CliRunner().invoke(main, ["capture", "--once-until-idle", "1"], env=env)
        assert again.exit_code == 0, again.output
        from journal.stream_state import StreamState

        state = StreamState().apply_all(read_records(cfg, database_of(source_db)))
        expected = sample.snapshot_state(source_db)
        got = state.tables()
        assert all(got.get(t, {}) == rows for t, rows in expected.items())


def test_capture_with_a_read_only_state_directory_fails_and_leaves_no_slot_or_publication(
        source_db: str, tmp_path: Path) -> None:
    loaded_sample(source_db, scale=2)
    with tmpfs(tmp_path / "state", "1m") as state_dir:
        remount(state_dir, "ro")
        cfg = capture_config(source_db, tmp_path, state_dir=str(state_dir))
        env = cli_env(cfg, f"file://{tmp_path}/packages", tmp_path)
        result = CliRunner().invoke(main, ["capture", "--once-until-idle", "1"], env=env)
        assert result.exit_code == 4, result.output
        line = one_error(result.output)
        assert str(state_dir) in line and "Read-only file system" in line
        assert slots_and_publications(source_db) == ([], [])


def test_a_read_only_package_store_can_still_be_exported_and_restored_from(
        captured, tmp_path: Path, target_db: str) -> None:
    cfg = captured
    with tmpfs(tmp_path / "archive", "64m") as store_dir:
        env = cli_env(cfg, f"file://{store_dir}", tmp_path)
        assert CliRunner().invoke(main, ["compact", "--once"], env=env).exit_code == 0
        remount(store_dir, "ro")  # an archive copy, mounted read-only
        output = tmp_path / "export.tar"
        result = CliRunner().invoke(main, ["snapshot", "export", "-o", str(output)], env=env)
        assert result.exit_code == 0, result.output
        from journal.packages import open_package

        with open_package(output) as reader:
            assert same_tables(package_rows(reader), sample.snapshot_state(cfg.source_url))
        restored = CliRunner().invoke(main, ["restore", "--target", target_db], env=env)
        assert restored.exit_code == 0, restored.output
        assert same_tables(sample.snapshot_state(target_db),
                           sample.snapshot_state(cfg.source_url))


def test_a_file_journal_that_fills_up_while_capture_streams_loses_nothing_once_there_is_room(
        source_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import os
    import time

    from tests.support.capture import Background

    loaded_sample(source_db, scale=5)
    with tmpfs(tmp_path / "jfs", "64m") as journal_dir:
        cfg = capture_config(source_db, tmp_path, journal_url=f"file://{journal_dir}")
        run_capture(cfg, once_until_idle=1.0)  # the snapshot, with room to spare
        st = os.statvfs(journal_dir)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        remount(journal_dir, f"size={used + 64 * 1024}")  # room for a few transactions only

        caplog.set_level(logging.WARNING, logger="producers.capture")
        capture = Background(cfg)
        sample.workload(source_db, 150, seed=9)  # far more than fits
        deadline = time.monotonic() + 30
        while "No space left on device" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "No space left on device" in caplog.text and str(journal_dir) in caplog.text
        assert capture.thread.is_alive()  # the daemon waits for room, it does not exit

        remount(journal_dir, "size=64m")
        time.sleep(1.0)
        with psycopg.connect(source_db, autocommit=True) as conn:
            (target,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        from journal.positions import parse_lsn

        deadline = time.monotonic() + 90
        while capture.metrics.last_acked_lsn < parse_lsn(target) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        capture.stop.set()
        capture.join()

        from journal.stream_state import StreamState

        state = StreamState().apply_all(read_records(cfg, database_of(source_db)))
        expected = sample.snapshot_state(source_db)
        got = state.tables()
        assert all(got.get(t, {}) == rows for t, rows in expected.items())


def test_folding_a_snapshot_into_a_read_only_store_fails_in_one_line_and_leaves_nothing(
        captured, tmp_path: Path) -> None:
    cfg = captured
    with tmpfs(tmp_path / "store", "64m") as store_dir:
        env = cli_env(cfg, f"file://{store_dir}", tmp_path)
        assert CliRunner().invoke(main, ["compact", "--once"], env=env).exit_code == 0
        (store_dir / ".leases").mkdir(exist_ok=True)
        (store_dir / ".leases" / "0dead.json").write_text("{}")  # a dead holder's lease
        before = sorted(p.name for p in store_dir.iterdir())
        remount(store_dir, "ro")
        for command in (["snapshot", "now"], ["compact", "--once", "--snapshot"]):
            result = CliRunner().invoke(main, command, env=env)
            assert result.exit_code == 4, result.output
            line = one_error(result.output)
            assert str(store_dir) in line and "Read-only file system" in line
            assert sorted(p.name for p in store_dir.iterdir()) == before
        remount(store_dir, "rw")
        assert CliRunner().invoke(main, ["snapshot", "now"], env=env).exit_code == 0
        _store_equals_source(f"file://{store_dir}", cfg.source_url)
