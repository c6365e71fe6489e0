"""The EDMS sample: schema, deterministic bulk load, workload, state snapshots, CLI."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner

from journal import sample
from journal.cli import main
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration


def test_load_fills_every_table_and_counts_its_rows(source_db: str) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        counts = sample.load(conn, scale=40, seed=1)
        assert list(counts) == list(sample.TABLES)
        for table, rows in counts.items():
            assert rows > 0, table
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows  # noqa: S608
        assert counts["document"] == 40
        assert counts["auth_user"] == 20
        assert counts["auth_permission"] == 4 * counts["django_content_type"]
        assert 40 <= counts["document_version"] <= 120
        # Every document points at its newest version (the cycle, loaded in one go).
        assert conn.execute(
            "SELECT count(*) FROM document d JOIN document_version v "
            "ON v.id = d.current_version_id AND v.document_id = d.id "
            "WHERE v.version_number = (SELECT max(version_number) FROM document_version "
            "WHERE document_id = d.id)").fetchone()[0] == 40
        # Some managers (the self-reference) and sequences past the loaded ids.
        assert conn.execute("SELECT count(*) FROM auth_user WHERE manager_id IS NOT NULL"
                            ).fetchone()[0] > 0
        assert conn.execute("SELECT nextval('document_id_seq')").fetchone()[0] == 41


def test_load_stores_some_bodies_out_of_line(source_db: str) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.load(conn, scale=30, seed=0)
        big = conn.execute("SELECT count(*) FROM document WHERE octet_length(body) > 8192"
                           ).fetchone()[0]
        assert big == 3
        # Out of line = the TOAST table holds chunks after compression was tried.
        toast = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class "
                             "WHERE oid = 'document'::regclass").fetchone()[0]
        chunks = conn.execute(f"SELECT count(DISTINCT chunk_id) FROM {toast}").fetchone()[0]  # noqa: S608
        assert chunks >= big


def test_same_seed_gives_the_same_database_and_the_same_workload(pg18_server: str) -> None:
    states = []
    for _ in range(2):
        with (scratch_database(pg18_server, "smp") as url,
              psycopg.connect(url, autocommit=True) as conn):
            sample.create_schema(conn)
            sample.load(conn, scale=30, seed=7)
            loaded = sample.snapshot_state(conn)
            sample.workload(conn, transactions=40, seed=7)
            states.append((loaded, sample.snapshot_state(conn)))
    assert states[0] == states[1]
    assert states[0][0] != states[0][1]


def test_workload_changes_every_table(pg_server: str) -> None:
    with (scratch_database(pg_server, "smp") as url,
          psycopg.connect(url, autocommit=True) as conn):
        sample.create_schema(conn)
        sample.load(conn, scale=30, seed=2)
        before = sample.snapshot_state(conn)
        stats = sample.workload(url, transactions=120, seed=2)
        after = sample.snapshot_state(conn)
    assert stats.transactions == 120
    assert set(stats.by_kind) == set(sample.TRANSACTIONS)
    assert sorted(after) == sorted(f"public.{t}" for t in sample.TABLES)
    unchanged = [name for name in after if after[name] == before[name]]
    assert unchanged == []
    # Inserts, updates and deletes all happen on the documents themselves.
    docs_before, docs_after = before["public.document"], after["public.document"]
    assert set(docs_after) - set(docs_before), "no document created"
    assert set(docs_before) - set(docs_after), "no document deleted"
    assert any(docs_after[k] != docs_before[k] for k in set(docs_before) & set(docs_after))
    # A rename leaves the body untouched: the case that sends unchanged TOAST.
    renamed = [k for k in set(docs_before) & set(docs_after)
               if docs_after[k]["title"] != docs_before[k]["title"]]
    assert renamed and all(docs_after[k]["body"] == docs_before[k]["body"] for k in renamed)


def test_workload_throttles_to_the_rate(source_db: str) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.load(conn, scale=10)
        stats = sample.workload(conn, transactions=11, rate=50.0)
    assert stats.elapsed_s >= 0.2
    assert stats.rate <= 55


def test_workload_refuses_a_connection_inside_a_transaction(source_db: str) -> None:
    with psycopg.connect(source_db) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(ValueError, match="idle"):
            sample.workload(conn, transactions=1)


def test_snapshot_state_keys_rows_by_primary_key(source_db: str) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.load(conn, scale=5, seed=0)
    state = sample.snapshot_state(source_db)
    users = state["public.auth_user"]
    assert sorted(users) == [(i,) for i in range(1, 21)]
    assert users[(1,)]["id"] == 1 and users[(1,)]["date_joined"].tzinfo is not None
    assert all(isinstance(r["metadata"], str | None) for r in state["public.document"].values())


def test_sample_command_creates_loads_and_runs_a_workload(source_db: str) -> None:
    runner = CliRunner()
    created = runner.invoke(main, ["sample", "create", "--url", source_db])
    assert created.exit_code == 0, created.output
    again = runner.invoke(main, ["sample", "create", "--url", source_db])
    assert again.exit_code == 4 and "already exists" in again.output
    loaded = runner.invoke(main, ["sample", "load", "--scale", "12", "--json", "--url", source_db])
    assert loaded.exit_code == 0, loaded.output
    assert '"document": 12' in loaded.output
    ran = runner.invoke(main, ["sample", "workload", "--transactions", "15", "--url", source_db])
    assert ran.exit_code == 0, ran.output
    assert ran.output.startswith("15 transactions")
