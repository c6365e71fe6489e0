"""Capture against the real servers: snapshot + stream reconstruct the source exactly."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from journal import sample
from journal.events import (
    CATALOG_PREFIX,
    HEARTBEAT_PREFIX,
    MARK_PREFIX,
    SNAPSHOT_PREFIX,
    ChangeEvent,
    LogicalMessage,
    TransactionMarker,
)
from journal.stream_state import StreamState
from tests.support.capture import (
    Background,
    assert_reconstructs,
    capture_config,
    capture_until_idle,
    database_of,
    loaded_sample,
    raw_positions,
    read_records,
    write_toml,
)
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration


@pytest.fixture
def sample_db(pg18_server: str):
    with scratch_database(pg18_server, "cap") as url:
        loaded_sample(url)
        yield url


# --- tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["kafka", "file"])
def test_snapshot_and_concurrent_workload_reconstruct_every_table(
        pg_server: str, transport: str, tmp_path: Path, request: pytest.FixtureRequest):
    kafka = request.getfixturevalue("kafka_bootstrap") if transport == "kafka" else None
    with scratch_database(pg_server, "cap") as url:
        loaded_sample(url, scale=60)
        cfg = capture_config(url, tmp_path, transport, kafka)
        capture = Background(cfg, idle=2.0)
        sample.workload(url, 150, seed=7)  # runs while the snapshot is being read
        metrics = capture.join()
        records = read_records(cfg, database_of(url))
        state = assert_reconstructs(records, url)
        snapshots = [r for r in records if isinstance(r, LogicalMessage)
                     and r.prefix == SNAPSHOT_PREFIX]
        assert len(snapshots) == 1
        content = json.loads(snapshots[0].content)
        assert content["slot"] == cfg.slot and content["database"] == database_of(url)
        assert "public.document" in content["catalog"]["tables"]
        assert state.transactions_applied == metrics.transactions + 1
        ends = [r for r in records if isinstance(r, TransactionMarker) and r.status == "END"]
        for end in ends:  # every END counts the change events of its transaction
            changes = [r for r in records if isinstance(r, ChangeEvent)
                       and r.position.commit_lsn == end.position.commit_lsn]
            assert end.event_count == len(changes)


def test_positions_strictly_increase_and_slot_confirms_only_durable_lsn(sample_db: str,
                                                                       tmp_path: Path):
    cfg = capture_config(sample_db, tmp_path)
    capture_until_idle(cfg, idle=1.0)
    sample.workload(sample_db, 40, seed=3)
    metrics = capture_until_idle(cfg, idle=1.5)
    positions = raw_positions(cfg, database_of(sample_db))
    assert positions == sorted(set(positions))  # no restart: no duplicates at all
    with psycopg.connect(sample_db) as conn:
        confirmed = _confirmed(conn, cfg.slot)
    # never beyond what is in the journal: the last record is at or after the slot
    assert confirmed <= metrics.last_acked_lsn
    assert confirmed > positions[-1].commit_lsn


def test_every_column_type_round_trips_and_unchanged_toast_is_resolved(sample_db: str,
                                                                      tmp_path: Path):
    cfg = capture_config(sample_db, tmp_path)
    capture_until_idle(cfg, idle=1.0)
    with psycopg.connect(sample_db, autocommit=True) as conn:
        # a long, incompressible body is stored out of line: updating another column
        # leaves it out of the change (unchanged TOAST)
        conn.execute("UPDATE document SET body = (SELECT string_agg(md5(g::text), '') "
                     "FROM generate_series(1, 400) g) WHERE id = 1")
        conn.execute("UPDATE document SET title = title || ' (renamed)' WHERE id = 1")
        conn.execute("UPDATE document_version SET comment = 'é ☃ \"quoted\"\\ttab' "
                     "WHERE id = (SELECT min(id) FROM document_version)")
    sample.workload(sample_db, 60, seed=11)
    capture_until_idle(cfg, idle=1.5)
    records = read_records(cfg, database_of(sample_db))
    assert_reconstructs(records, sample_db)
    unchanged = [r for r in records if isinstance(r, ChangeEvent) and r.unchanged_toast]
    assert unchanged, "no update left a TOASTed value unchanged"
    assert all(r.after[c] is None for r in unchanged for c in r.unchanged_toast)
    # every pg type of the sample appears in a streamed (not snapshot) event
    streamed_types = {c.pg_type for r in records if isinstance(r, ChangeEvent)
                      and not r.snapshot for c in r.table.columns}
    for pg_type in ("integer", "bigint", "numeric(12,2)", "text", "boolean", "uuid", "jsonb",
                    "bytea", "text[]", "date", "timestamp with time zone",
                    "timestamp without time zone"):
        assert pg_type in streamed_types


def test_schema_change_is_announced_in_its_own_transaction_before_the_rows_that_use_it(
        sample_db: str, tmp_path: Path):
    cfg = capture_config(sample_db, tmp_path)
    capture_until_idle(cfg, idle=1.0)
    with psycopg.connect(sample_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE tag ADD COLUMN colour text DEFAULT 'red'")
        conn.execute("INSERT INTO tag (id, label, colour) VALUES (900, 'new-tag', 'blue')")
        conn.execute("ALTER TABLE tag DROP COLUMN colour")
        conn.execute("INSERT INTO tag (id, label) VALUES (901, 'newer-tag')")
    capture_until_idle(cfg, idle=1.5)
    records = read_records(cfg, database_of(sample_db))
    state = StreamState().apply_all(records)
    # rows written before the DROP COLUMN keep it in the consumer's state: compare the
    # columns the table has now
    expected = sample.snapshot_state(sample_db)["public.tag"]
    assert {k: {c: row[c] for c in expected[k]} for k, row in state.rows("public.tag").items()
            } == expected
    tags = [r for r in records if isinstance(r, ChangeEvent) and r.op == "c"
            and r.table.name == "tag"]
    assert [t.after["id"] for t in tags] == [900, 901]
    assert tags[0].after["colour"] == "blue" and "colour" in tags[0].table.column_names
    assert "colour" not in tags[1].table.column_names
    assert tags[0].table.digest() != tags[1].table.digest()
    catalogs = [r for r in records if isinstance(r, LogicalMessage)
                and r.prefix == CATALOG_PREFIX]
    # one per ALTER, each alone in the DDL's transaction, before the insert that follows
    assert len(catalogs) == 2
    assert catalogs[0].position < tags[0].position < catalogs[1].position < tags[1].position
    assert catalogs[0].position.commit_lsn != tags[0].position.commit_lsn
    added, dropped = (json.loads(c.content) for c in catalogs)
    assert added["change"]["tables"] == ["public.tag"]
    assert added["change"]["missing"]["public.tag"] == {"colour": "red"}
    columns = [c["name"] for c in dropped["catalog"]["tables"]["public.tag"]["columns"]]
    assert "colour" not in columns


def test_truncate_marks_and_heartbeats_are_in_the_stream(sample_db: str, tmp_path: Path):
    cfg = capture_config(sample_db, tmp_path, heartbeat_interval_s=0.3)
    capture_until_idle(cfg, idle=1.0)
    toml = write_toml(tmp_path, cfg)
    from click.testing import CliRunner

    from journal.cli import main
    result = CliRunner().invoke(main, ["-c", str(toml), "mark", "before-truncate"])
    assert result.exit_code == 0, result.output
    with psycopg.connect(sample_db, autocommit=True) as conn:
        conn.execute("TRUNCATE document_tags, tag")
    capture_until_idle(cfg, idle=1.5)
    records = read_records(cfg, database_of(sample_db))
    state = assert_reconstructs(records, sample_db)
    assert [name for name, _ in state.marks] == ["before-truncate"]
    truncates = [r for r in records if isinstance(r, ChangeEvent) and r.op == "t"]
    assert sorted(t.table.name for t in truncates) == ["document_tags", "tag"]
    assert len({t.position.commit_lsn for t in truncates}) == 1
    heartbeats = [r for r in records if isinstance(r, LogicalMessage)
                  and r.prefix == HEARTBEAT_PREFIX]
    assert heartbeats and all(not h.transactional and h.position.seq == 0 for h in heartbeats)
    marks = [r for r in records if isinstance(r, LogicalMessage) and r.prefix == MARK_PREFIX]
    assert marks[0].transactional and marks[0].content == b"before-truncate"


def test_idle_captured_tables_with_busy_other_table_keep_retained_wal_bounded(
        sample_db: str, tmp_path: Path):
    with psycopg.connect(sample_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE busy_other (id bigserial PRIMARY KEY, payload text)")
    cfg = capture_config(sample_db, tmp_path, heartbeat_interval_s=0.2,
                         tables=("public.tag", "public.document"))
    capture = Background(cfg)
    try:
        capture.wait_streaming()
        with psycopg.connect(sample_db, autocommit=True) as conn:
            start = _current_lsn(conn)
            while _current_lsn(conn) - start < 40 * 2**20:  # ~40 MB of WAL elsewhere
                conn.execute("INSERT INTO busy_other (payload) SELECT repeat(md5(g::text), 30) "
                             "FROM generate_series(1, 2000) g")
            deadline = threading.Event()
            retained = None
            for _ in range(50):
                retained = _current_lsn(conn) - _confirmed(conn, cfg.slot)
                if retained < 4 * 2**20:
                    break
                deadline.wait(0.2)
        assert retained is not None and retained < 4 * 2**20, \
            f"slot retains {retained} bytes of WAL"
    finally:
        capture.stop.set()
        capture.join()


def _current_lsn(conn: psycopg.Connection[Any]) -> int:
    from journal.positions import parse_lsn
    return parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def _confirmed(conn: psycopg.Connection[Any], name: str) -> int:
    from journal.positions import parse_lsn
    row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                       "WHERE slot_name = %s", (name,)).fetchone()
    return parse_lsn(row[0])


def test_dropped_and_recreated_slot_is_detected_and_starts_new_generation(
        sample_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    cfg = capture_config(sample_db, tmp_path)
    capture_until_idle(cfg, idle=1.0)
    with psycopg.connect(sample_db, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (cfg.slot,))
        conn.execute("INSERT INTO tag (id, label) VALUES (950, 'while-no-slot')")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (cfg.slot,))
        conn.execute("INSERT INTO tag (id, label) VALUES (951, 'after-recreate')")
    with caplog.at_level(logging.WARNING, logger="producers.capture"):
        capture_until_idle(cfg, idle=1.0)
    assert "NEW SNAPSHOT GENERATION" in caplog.text and "recreated" in caplog.text
    # dropped (and not recreated): detected as well
    with psycopg.connect(sample_db, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (cfg.slot,))
        conn.execute("INSERT INTO tag (id, label) VALUES (952, 'while-dropped')")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="producers.capture"):
        capture_until_idle(cfg, idle=1.0)
    assert "disappeared" in caplog.text
    records = read_records(cfg, database_of(sample_db))
    generations = [json.loads(r.content)["generation"] for r in records
                   if isinstance(r, LogicalMessage) and r.prefix == SNAPSHOT_PREFIX]
    assert len(generations) == 3 and len(set(generations)) == 3
    state = assert_reconstructs(records, sample_db)
    assert {950, 951, 952} <= {k[0] for k in state.rows("public.tag")}
