"""The key map's store: in memory, and in a table of the restore's transaction."""

from __future__ import annotations

import psycopg
import pytest

from restorer.keystore import ANALYZE_AT, KeyStore


def test_in_memory_store_sets_reads_and_removes_entries() -> None:
    store = KeyStore()
    store.put("public.a", (1,), (7,))
    store.put("public.a", (2,), (8,))
    store.put("public.a", (2,), None)
    assert store.get("public.a", (1,)) == (7,)
    assert store.get("public.a", (2,), "absent") == "absent"
    assert store.get("public.b", (1,)) is None
    assert store.count("public.a") == 1


def _planner_rows(conn: psycopg.Connection, table: str) -> float:
    return conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                        (table,)).fetchone()[0]


@pytest.mark.integration
@pytest.mark.parametrize("schema", [None, "public"])
def test_the_planner_is_told_of_entries_as_they_double(target_db: str, schema: str | None
                                                       ) -> None:
    with psycopg.connect(target_db) as conn:
        store = KeyStore(conn, "keystore_test", lambda table, value: tuple(value),
                         flush_at=1_000, cache_size=100, schema=schema)
        name = f"{schema or 'pg_temp'}.keystore_test"
        assert _planner_rows(conn, name) < 0  # never counted: the planner guesses
        n = ANALYZE_AT * 3
        for i in range(n):
            store.put("public.a", (i,), (i + n,))
        store.flush()
        # counted at 10,000 and again at 20,000 entries, not at every flush after
        assert _planner_rows(conn, name) == 2 * ANALYZE_AT
        # read back past the small cache: each answer comes from the table
        assert [store.get("public.a", (i,)) for i in range(0, n, 997)] == [
            (i + n,) for i in range(0, n, 997)]
        assert store.count("public.a") == n
        conn.rollback()  # a rollback takes the table away, whatever its schema
        assert conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None
