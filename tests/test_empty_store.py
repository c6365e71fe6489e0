"""A compactor that starts on an empty package store: a full snapshot first, or a loud no.

Against the real PostgreSQL 18: capture into a file journal, compact into one store, then
point a second, empty store at the same journal. The oracle is the source's own rows
(``sample.snapshot_state``), read after the workload, not the compactor's view of them.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from journal import sample
from journal.cli import main
from journal.compactor import CONSUMER, Compactor, fold_latest
from journal.errors import JournalError
from journal.packages.store import open_store
from journal.transport import open_reader
from journal.transport.file import FileJournal
from producers.capture import run_capture
from tests.support.capture import cli_env, database_of
from tests.support.streams import package_rows, same_tables

pytestmark = pytest.mark.integration


def _compact_into(cfg, packages_url: str) -> Compactor:
    reader = open_reader(cfg.journal_location(), cfg.database())
    try:
        compactor = Compactor(reader, open_store(packages_url))
        compactor.run(once=True)
        return compactor
    finally:
        reader.close()


def test_empty_store_after_the_journal_was_compacted_elsewhere_gets_a_full_snapshot(
        captured, tmp_path: Path) -> None:
    cfg = captured
    first = _compact_into(cfg, cfg.packages_url)
    assert first.stats.snapshots == 1 and first.stats.segments >= 1
    reader = open_reader(cfg.journal_location(), cfg.database())
    try:
        assert reader.committed_offset(CONSUMER) > 0  # the journal is compacted
    finally:
        reader.close()

    second_url = f"file://{tmp_path}/second"
    result = CliRunner().invoke(main, ["compact", "--once", "--json"],
                                env=cli_env(cfg, second_url, tmp_path))
    assert result.exit_code == 0, result.output
    store = open_store(second_url)
    kinds = [m.kind for m in store.list()]
    assert kinds[0] == "full" and "segment" in kinds, kinds

    # the new store alone restores the source as it is now
    folded = fold_latest(store)
    assert folded is not None
    with store.open(folded.package_id) as reader:
        got = package_rows(reader)
    assert same_tables(got, sample.snapshot_state(cfg.source_url))
    assert folded.to_position == store.list()[-1].to_position


def _journal_without_its_snapshot(cfg) -> None:
    """Compacted into the first store, then retention drops the snapshot's segments."""
    _compact_into(cfg, cfg.packages_url)
    journal = FileJournal.from_url(cfg.journal_location(), database_of(cfg.source_url))
    assert journal.truncate_before(journal.consumer_offsets()[CONSUMER])
    reader = journal.reader()
    try:
        prefixes = {r.key for r in reader.read()}
    finally:
        reader.close()
    assert b"edms_journal.snapshot" not in prefixes


def test_empty_store_when_the_journal_lost_its_snapshot_starts_from_a_source_snapshot(
        captured, tmp_path: Path) -> None:
    cfg = captured
    _journal_without_its_snapshot(cfg)
    # committed while capture is stopped: in the source's snapshot, and later in the journal
    sample.workload(cfg.source_url, 15, seed=4)

    second_url = f"file://{tmp_path}/second"
    env = cli_env(cfg, second_url, tmp_path)
    result = CliRunner().invoke(main, ["compact", "--once"], env=env)
    assert result.exit_code == 0, result.output
    store = open_store(second_url)
    (full,) = store.list()
    assert full.kind == "full"
    with store.open(full.package_id) as reader:
        assert same_tables(package_rows(reader), sample.snapshot_state(cfg.source_url))
    with psycopg.connect(cfg.source_url, autocommit=True) as conn:
        slots = [r[0] for r in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")]
    assert slots == [cfg.slot]  # the temporary slot went with its connection

    # capture delivers what it missed (already in the snapshot) and what comes next
    sample.workload(cfg.source_url, 15, seed=5)
    run_capture(cfg, once_until_idle=1.0)
    again = CliRunner().invoke(main, ["compact", "--once"], env=env)
    assert again.exit_code == 0, again.output
    assert [m.kind for m in store.list()] == ["full", "segment"]
    folded = fold_latest(store)
    assert folded is not None
    with store.open(folded.package_id) as reader:
        assert same_tables(package_rows(reader), sample.snapshot_state(cfg.source_url))


def test_empty_store_without_journal_snapshot_or_capture_slot_says_why_and_writes_nothing(
        captured, tmp_path: Path) -> None:
    cfg = captured
    _journal_without_its_snapshot(cfg)
    with psycopg.connect(cfg.source_url, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (cfg.slot,))

    empty = tmp_path / "empty"
    result = CliRunner().invoke(main, ["compact", "--once"],
                                env=cli_env(cfg, f"file://{empty}", tmp_path))
    assert result.exit_code == 4, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "no snapshot generation" in errors[0] and "nothing was written" in errors[0]
    assert f"slot {cfg.slot} does not exist" in errors[0]
    assert "Traceback" not in result.output
    assert list(empty.glob("*")) == [] if empty.exists() else True


def test_empty_store_without_a_source_snapshot_callable_refuses(captured, tmp_path: Path
                                                                ) -> None:
    cfg = captured
    _journal_without_its_snapshot(cfg)
    with pytest.raises(JournalError, match="no snapshot generation.*nothing was written"):
        _compact_into(cfg, f"file://{tmp_path}/other")
    assert open_store(f"file://{tmp_path}/other").list() == []
