"""Every kind of table: partitioned tables, tables without a primary key (REPLICA IDENTITY
FULL, equal rows included), UNLOGGED tables, and replica identities.

The unit tests hold the fold and the in-memory state to multiset semantics; the
integration tests capture through pgoutput from a real PostgreSQL 18 and 15, compact
(a fold included), restore into an empty database and compare with the source's rows as
SQL recorded them, row for row and count for count.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from journal.catalog import Column, TableSchema
from journal.cli import main
from journal.codec import SchemaRegistry
from journal.config import Config
from journal.errors import RestoreError, SourceError, ValidationError
from journal.events import TransactionMarker
from journal.fold import fold
from journal.packages import PackageBuilder, open_package
from journal.packages.store import open_store
from journal.positions import Position
from journal.row_identity import row_identity
from journal.sorting import SortedRowSink
from journal.stream_state import StreamState
from producers.capture import run_capture
from restorer import ddl
from restorer.journal_state import JournalState
from restorer.restore import RestoreOptions, restore
from tests.support.capture import capture_config
from tests.support.databases import scratch_database
from tests.support.streams import StreamBuilder, write_segment

BAG = TableSchema("public", "bag", (Column("a", "integer", 23, False),
                                    Column("b", "text", 25, False)), ())


def _bag_catalog() -> dict[str, Any]:
    return {"types": [], "tables": {"public.bag": {
        "schema": "public", "name": "bag",
        "columns": [{"name": c.name, "pg_type": c.pg_type, "type_oid": c.type_oid,
                     "not_null": c.not_null, "default": None, "identity": "",
                     "generated": ""} for c in BAG.columns],
        "primary_key": [], "unique": [], "foreign_keys": [], "create_table": "",
        "constraints": [], "indexes": [], "sequences": [], "natural_key": None}}}


def _row(a: int | None, b: str | None) -> dict[str, Any]:
    return {"a": a, "b": b}


def _bag_full(workdir: Path, rows: list[dict[str, Any]], position: Position,
              commit_ts: int) -> Path:
    builder = PackageBuilder("full", workdir)
    sink = SortedRowSink(builder, BAG, workdir, spill_bytes=4096)
    for row in rows:
        sink.write(row)
    sink.close()
    tmp, m = builder.finish(system_identifier="42", database="edms", generation="gen-1",
                            to_position=position, first_commit_ts=commit_ts,
                            last_commit_ts=commit_ts, catalog=_bag_catalog())
    final = workdir / f"{m.package_id}.tar"
    tmp.rename(final)
    return final


def _fold_bag(tmp_path: Path, base_rows: list[dict[str, Any]],
              changes: list[tuple[Any, ...]]) -> tuple[Counter[Any], JournalState]:
    """Fold ``changes`` (one transaction) into a full package of ``base_rows``; the
    folded rows as a multiset, and the in-memory state of the same changes."""
    sb = StreamBuilder()
    full = open_package(_bag_full(tmp_path, base_rows, Position(sb.lsn, 9), sb.ts))
    records = sb.change(changes)
    segment = open_package(write_segment(tmp_path, records, full.manifest, SchemaRegistry()))
    out, _ = fold(full, [segment], tmp_path, spill_bytes=4096)
    folded = Counter(tuple(sorted(r.items())) for r in open_package(out).rows("public.bag"))
    state = JournalState({"public.bag": ()})
    state.load("public.bag", base_rows)
    for record in records:
        if not isinstance(record, TransactionMarker):
            state.apply(record)
    return folded, state


def _multiset(rows: Any) -> Counter[Any]:
    return Counter(tuple(sorted(r.items())) for r in rows)


def test_row_identity_tells_apart_what_equality_would_merge() -> None:
    cols = ("v",)
    assert row_identity(cols, {"v": 0.0}) != row_identity(cols, {"v": -0.0})
    assert row_identity(cols, {"v": Decimal("1.0")}) != row_identity(cols, {"v": Decimal("1.00")})
    assert row_identity(cols, {"v": 1}) != row_identity(cols, {"v": "1"})
    assert row_identity(cols, {"v": float("nan")}) == row_identity(cols, {"v": float("nan")})
    assert row_identity(cols, {"v": [1, None]}) == row_identity(cols, {"v": [1, None]})
    # a total order: rows with NULLs in arrays and NaNs sort without error
    sorted(row_identity(cols, {"v": v}) for v in ([None, 1], [1, None], float("nan"), None))


def test_fold_of_a_table_without_primary_key_keeps_equal_rows_as_many(tmp_path: Path) -> None:
    x, y, z = _row(1, "x"), _row(2, "y"), _row(3, "z")
    base = [y, x, _row(None, None), x]  # out of order: the snapshot sink sorts them
    changes = [
        ("c", BAG, None, x, ()),          # a third (1, x)
        ("u", BAG, x, z, ()),             # one of them becomes (3, z)
        ("d", BAG, x, None, ()),          # one more goes
        ("d", BAG, y, None, ()),
        ("c", BAG, None, y, ()),
        ("c", BAG, None, y, ()),          # (2, y) twice
        ("u", BAG, _row(None, None), _row(None, "n"), ()),
    ]
    folded, state = _fold_bag(tmp_path, base, changes)
    expected = _multiset([x, z, y, y, _row(None, "n")])
    assert folded == expected
    assert _multiset(state.rows("public.bag")) == expected


def test_fold_refuses_a_delete_of_a_row_the_table_does_not_hold(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="removes a row the table does not hold"):
        _fold_bag(tmp_path, [_row(1, "x")], [("d", BAG, _row(1, "x"), None, ()),
                                              ("d", BAG, _row(1, "x"), None, ())])


def test_fold_refuses_a_keyless_update_without_the_whole_old_row(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="REPLICA IDENTITY FULL"):
        _fold_bag(tmp_path, [_row(1, "x")], [("u", BAG, None, _row(1, "y"), ())])


def test_keyless_update_takes_unchanged_toast_columns_from_the_old_row(tmp_path: Path) -> None:
    old = _row(1, "long" * 1000)
    folded, state = _fold_bag(tmp_path, [old, old], [("u", BAG, old, _row(2, None), ("b",))])
    expected = _multiset([old, _row(2, "long" * 1000)])
    assert folded == expected
    assert _multiset(state.rows("public.bag")) == expected


@pytest.mark.parametrize("seed", range(8))
def test_random_keyless_workload_folds_to_the_same_multiset_everywhere(
        tmp_path: Path, seed: int) -> None:
    """A list of rows is the model; the fold, the in-memory state of verify and the
    stream state the tests replay all end with the same multiset."""
    rng = random.Random(seed)
    values = [_row(rng.choice([1, 2, None]), rng.choice(["x", "y", None])) for _ in range(12)]
    base = [dict(rng.choice(values)) for _ in range(rng.randrange(0, 10))]
    model = [dict(r) for r in base]
    changes: list[tuple[Any, ...]] = []
    for _ in range(rng.randrange(1, 30)):
        op = rng.choice("cud" if model else "c")
        if op == "c":
            row = dict(rng.choice(values))
            model.append(row)
            changes.append(("c", BAG, None, row, ()))
            continue
        old = model.pop(rng.randrange(len(model)))
        if op == "u":
            new = dict(rng.choice(values))
            model.append(new)
            changes.append(("u", BAG, old, new, ()))
        else:
            changes.append(("d", BAG, old, None, ()))
    folded, state = _fold_bag(tmp_path, base, changes)
    expected = _multiset(model)
    assert folded == expected
    assert _multiset(state.rows("public.bag")) == expected
    sb = StreamBuilder()
    stream = StreamState().apply_all(
        sb.snapshot({BAG: base}) + sb.change(changes))  # type: ignore[dict-item]
    assert _multiset(stream.rows("public.bag").values()) == expected


@pytest.mark.parametrize(("kind", "statement", "name"), [
    ("partition", 'CREATE TABLE "public"."event_eu" PARTITION OF public.event '
                  "FOR VALUES IN ('eu') PARTITION BY RANGE (at)", "event_eu"),
    ("partition", 'CREATE TABLE "public"."event_other" PARTITION OF public.event DEFAULT',
     "event_other"),
    ("replica identity", "ALTER TABLE ONLY public.tag REPLICA IDENTITY FULL", "tag"),
    ("replica identity", 'ALTER TABLE ONLY public.tag REPLICA IDENTITY USING INDEX "tag i"',
     "tag"),
    ("constraint", "ALTER TABLE public.event ADD CONSTRAINT event_pkey PRIMARY KEY (id)",
     "event"),
])
def test_partition_and_replica_identity_ddl_passes_the_package_check(
        kind: str, statement: str, name: str) -> None:
    ddl.check(kind, statement, "public", name)


@pytest.mark.parametrize(("kind", "statement"), [
    ("partition", 'CREATE TABLE "public"."other" PARTITION OF public.event DEFAULT'),
    ("partition", 'CREATE TABLE "public"."event_eu" (x int)'),
    ("replica identity", "ALTER TABLE ONLY public.tag REPLICA IDENTITY FULL, DROP COLUMN x"),
    ("replica identity", "ALTER TABLE ONLY public.other REPLICA IDENTITY FULL"),
])
def test_partition_and_replica_identity_ddl_of_another_shape_is_refused(
        kind: str, statement: str) -> None:
    with pytest.raises(ValidationError, match="package DDL refused"):
        ddl.check(kind, statement, "public", "event_eu" if kind == "partition" else "tag")


# -- against the real servers ---------------------------------------------------------------

_SCHEMA = """
CREATE TABLE event (
    id int NOT NULL, region text NOT NULL, at date NOT NULL, note text,
    PRIMARY KEY (id, region, at)
) PARTITION BY LIST (region);
CREATE TABLE event_eu PARTITION OF event FOR VALUES IN ('eu') PARTITION BY RANGE (at);
CREATE TABLE event_eu_2025 PARTITION OF event_eu
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE event_eu_2026 PARTITION OF event_eu
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE event_us PARTITION OF event FOR VALUES IN ('us', 'ca');
CREATE TABLE event_other PARTITION OF event DEFAULT;
CREATE INDEX event_note ON event (note);
-- a partition's own constraint, beyond its parent's
ALTER TABLE event_us ADD CONSTRAINT event_us_note CHECK (note <> 'forbidden');

CREATE TABLE label (id int PRIMARY KEY, code text NOT NULL);
CREATE UNIQUE INDEX label_id_code ON label (id, code);
ALTER TABLE label REPLICA IDENTITY USING INDEX label_pkey;
CREATE TABLE audit (id int PRIMARY KEY, what text);
ALTER TABLE audit REPLICA IDENTITY NOTHING;  -- inserts only

CREATE TABLE tag (name text, weight double precision, doc json, body text);
ALTER TABLE tag REPLICA IDENTITY FULL;

CREATE TABLE reading (sensor int, value numeric, taken date NOT NULL)
    PARTITION BY RANGE (taken);
CREATE TABLE reading_2025 PARTITION OF reading
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE reading_rest PARTITION OF reading DEFAULT;
ALTER TABLE reading REPLICA IDENTITY FULL;
ALTER TABLE reading_2025 REPLICA IDENTITY FULL;
ALTER TABLE reading_rest REPLICA IDENTITY FULL;
"""

_TABLES = ("event", "tag", "reading", "label", "audit")
_BIG = "".join(random.Random(5).choice("0123456789abcdef") for _ in range(12000))  # TOASTed


def _one(statement: str, table: str, where: str) -> sql.Composed:
    """``statement`` ("… WHERE {}") on exactly one row of possibly several equal ones."""
    return sql.SQL(statement).format(sql.SQL(
        "(tableoid, ctid) = (SELECT tableoid, ctid FROM {} AS t WHERE {} "
        "ORDER BY tableoid, ctid LIMIT 1)").format(sql.Identifier(table), sql.SQL(where)))


def _each(query: str, table: str) -> sql.Composed:
    return sql.SQL(query).format(sql.Identifier(table))


def _initial(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_SCHEMA)
    conn.execute("INSERT INTO event SELECT i, (ARRAY['eu', 'us', 'ca', 'xx'])[i % 4 + 1], "
                 "date '2025-03-01' + (i * 7), 'n' || i FROM generate_series(1, 60) i")
    conn.execute("INSERT INTO tag VALUES ('dup', 1.5, '{\"a\":  1}', NULL), "
                 "('dup', 1.5, '{\"a\":  1}', NULL), ('dup', 1.5, '{\"a\":  1}', NULL), "
                 "('zero', 0, NULL, NULL), ('zero', '-0', NULL, NULL), "
                 "(NULL, NULL, NULL, NULL), (NULL, NULL, NULL, NULL), "
                 "('big', 1, '[]', %s)", (_BIG,))
    conn.execute("INSERT INTO reading VALUES (1, 1.0, '2025-05-01'), (1, 1.0, '2025-05-01'), "
                 "(1, 1.00, '2025-05-01'), (2, NULL, '2024-01-01')")
    conn.execute("INSERT INTO label VALUES (1, 'a'), (2, 'b')")
    conn.execute("INSERT INTO audit VALUES (1, 'created')")


def _workload(conn: psycopg.Connection[Any], step: int) -> None:
    """Inserts, updates and deletes: rows moving between partitions and sub-partitions,
    one of several equal rows changed or deleted, an unchanged TOAST column."""
    base = 1000 * step
    conn.execute("INSERT INTO event SELECT %s + i, (ARRAY['eu', 'us', 'xx'])[i %% 3 + 1], "
                 "date '2025-06-01' + i * 11, NULL FROM generate_series(1, 20) i", (base,))
    # across partitions (eu -> us), across sub-partitions (2025 -> 2026), into DEFAULT
    conn.execute("UPDATE event SET region = 'us', note = 'moved' "
                 "WHERE region = 'eu' AND id %% 5 = %s", (step % 5,))
    conn.execute("UPDATE event SET at = at + 365 WHERE region = 'eu' AND at < '2025-12-01' "
                 "AND id %% 4 = %s", (step % 4,))
    conn.execute("UPDATE event SET region = 'zz' WHERE region = 'ca' AND id %% 3 = %s",
                 (step % 3,))
    conn.execute("DELETE FROM event WHERE id %% 7 = %s", (step % 7,))
    # equal rows: add one, change one, delete one
    conn.execute("INSERT INTO tag VALUES ('dup', 1.5, '{\"a\":  1}', NULL)")
    conn.execute(_one("UPDATE tag SET weight = %s WHERE {}", "tag",
                      "name = 'dup' AND weight = 1.5"), (2.5 + step,))
    conn.execute(_one("DELETE FROM tag WHERE {}", "tag", "name = 'dup' AND weight = 1.5"))
    conn.execute(_one("UPDATE tag SET name = %s WHERE {}", "tag", "name IS NULL"),
                 (f"named{step}",))
    conn.execute("INSERT INTO tag VALUES (NULL, NULL, NULL, NULL)")
    conn.execute("UPDATE tag SET weight = weight + 1 WHERE name = 'big'")  # body: TOAST
    conn.execute("INSERT INTO reading VALUES (3, 3.0, '2025-07-01'), (3, 3.0, '2025-07-01')")
    conn.execute(_one("UPDATE reading SET taken = '2026-02-01' WHERE {}", "reading",
                      "sensor = 3 AND taken = '2025-07-01'"))
    conn.execute(_one("DELETE FROM reading WHERE {}", "reading", "sensor = 1 AND value = 1.0"))
    conn.execute("INSERT INTO label VALUES (%s, 'new')", (10 + step,))
    conn.execute("UPDATE label SET code = code || %s WHERE id = 1", (str(step),))
    conn.execute("INSERT INTO audit VALUES (%s, 'step')", (10 + step,))


def _workload_last(conn: psycopg.Connection[Any]) -> None:
    _workload(conn, 3)
    conn.execute(_one("DELETE FROM tag WHERE {}", "tag", "name = 'zero' AND weight::text = '-0'"))
    conn.execute("INSERT INTO reading VALUES (1, 1.00, '2025-05-01')")


def _rows(url: str) -> dict[str, Counter[str]]:
    """Each table's rows as a multiset of their text (the oracle: SQL on the database)."""
    with psycopg.connect(url) as conn:
        return {t: Counter({text: n for text, n in conn.execute(
            _each("SELECT t::text, count(*) FROM {} AS t GROUP BY 1", t)).fetchall()})
            for t in _TABLES}


def _placement(url: str) -> set[tuple[str, str, int]]:
    """How many rows each partition holds: (table, partition, count)."""
    with psycopg.connect(url) as conn:
        return {(t, rel, n) for t in ("event", "reading") for rel, n in conn.execute(
            _each("SELECT tableoid::regclass::text, count(*) FROM {} GROUP BY 1", t)
        ).fetchall()}


def _structure(url: str) -> list[tuple[Any, ...]]:
    """Partitions, their bounds and keys, replica identities, constraints, indexes."""
    with psycopg.connect(url) as conn:
        conn.execute("SET search_path = ''")
        return conn.execute("""
            SELECT c.relname, c.relkind::text, c.relreplident::text, c.relpersistence::text,
                   (SELECT i.indexrelid::regclass::text FROM pg_index i
                    WHERE i.indrelid = c.oid AND i.indisreplident),
                   pg_get_expr(c.relpartbound, c.oid),
                   CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                   (SELECT array_agg(pg_get_constraintdef(con.oid) ORDER BY con.conname)
                    FROM pg_constraint con WHERE con.conrelid = c.oid AND con.contype <> 'n'),
                   (SELECT array_agg(pg_get_indexdef(i.indexrelid)
                                     ORDER BY i.indexrelid::regclass::text)
                    FROM pg_index i WHERE i.indrelid = c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
              AND c.relname NOT LIKE 'journal%%'
            ORDER BY 1""").fetchall()


def _except_all_both_ways(source: dict[str, Counter[str]], target_url: str) -> None:
    """The restored rows EXCEPT ALL the source's and the other way round: both empty."""
    with psycopg.connect(target_url) as conn:
        for t in _TABLES:
            conn.execute("CREATE TEMP TABLE expected (r text) ON COMMIT DROP")
            with conn.cursor().copy("COPY expected FROM STDIN") as copy:
                for text, n in source[t].items():
                    for _ in range(n):
                        copy.write_row((text,))
            missing = conn.execute(_each("SELECT r FROM expected EXCEPT ALL "
                                         "SELECT t::text FROM {} AS t", t)).fetchall()
            extra = conn.execute(_each("SELECT t::text FROM {} AS t EXCEPT ALL "
                                       "SELECT r FROM expected", t)).fetchall()
            assert (missing, extra) == ([], []), t
            conn.rollback()


def _cli(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def _env(cfg: Config, packages: str) -> dict[str, str]:
    return {"JOURNAL_SOURCE_URL": cfg.source_url, "JOURNAL_SLOT": cfg.slot,
            "JOURNAL_JOURNAL_URL": cfg.journal_url, "JOURNAL_TOPIC_PREFIX": cfg.topic_prefix,
            "JOURNAL_PACKAGES_URL": packages, "JOURNAL_STATE_DIR": cfg.state_dir,
            "JOURNAL_CONFIG": "/nonexistent-journal.toml"}


@pytest.mark.integration
def test_partitioned_and_keyless_tables_are_captured_folded_and_restored_exactly(
        pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # init writes journal.toml into the working directory
    with (scratch_database(pg_server, "src") as source,
          scratch_database(pg_server, "dst") as target):
        with psycopg.connect(source, autocommit=True) as conn:
            _initial(conn)
        cfg = capture_config(source, tmp_path)
        env = _env(cfg, f"file://{tmp_path}/packages")
        result = _cli(env, "init")
        assert result.exit_code == 0, result.output
        run_capture(cfg, once_until_idle=1.0)  # the snapshot, read through the roots
        for step in (1, 2):
            with psycopg.connect(source, autocommit=True) as conn:
                _workload(conn, step)
            run_capture(cfg, once_until_idle=1.0)
            # the second compaction folds the segments into a new full snapshot
            args = ["compact", "--once"] + (["--snapshot"] if step == 2 else [])
            result = _cli(env, *args)
            assert result.exit_code == 0, result.output
        with psycopg.connect(source, autocommit=True) as conn:
            _workload_last(conn)  # replayed from a segment after the folded snapshot
        run_capture(cfg, once_until_idle=1.0)
        assert _cli(env, "compact", "--once").exit_code == 0
        expected = _rows(source)
        assert sum(expected["tag"].values()) == 10 and max(expected["tag"].values()) >= 2

        result = _cli(env, "packages", "list", "--json")
        kinds = [p["kind"] for p in json.loads(result.output)]
        assert kinds.count("full") == 2 and kinds[-1] == "segment", kinds
        result = _cli(env, "restore", "--target", target)
        assert result.exit_code == 0, result.output

        assert _rows(target) == expected
        _except_all_both_ways(expected, target)
        assert _placement(target) == _placement(source)
        assert _structure(target) == _structure(source)

        result = _cli(env, "verify", "--target", target)
        assert result.exit_code == 0 and "OK" in result.output.splitlines()[0], result.output
        # a replay whose old row the target lacks fails, and the target stays unchanged
        with scratch_database(pg_server, "dst") as other:
            def without_equal_rows(conn: psycopg.Connection[Any]) -> None:
                conn.execute("DELETE FROM tag WHERE name = 'dup'")

            with pytest.raises(RestoreError, match=r"no row of public\.tag .* equals the old"):
                restore(RestoreOptions(target_url=other, store=open_store(env[
                    "JOURNAL_PACKAGES_URL"]), before_replay=without_equal_rows,
                    replay="ordered"))
            with psycopg.connect(other) as conn:
                assert conn.execute("SELECT to_regclass('public.tag')").fetchone() == (None,)
        # one of two equal rows deleted: found
        duplicate = next(text for text, n in expected["tag"].items() if n >= 2)
        one_of_them = "t::text = " + psycopg.sql.quote(duplicate)
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(_one("DELETE FROM tag WHERE {}", "tag", one_of_them))
        result = _cli(env, "verify", "--target", target)
        assert result.exit_code == 1, result.output
        assert _verify_line(result.output, "public.tag").endswith("1 missing, 0 extra")
        # back twice (one more than there was), and an extra row in a partition: found
        with psycopg.connect(target, autocommit=True) as conn:
            for _ in range(2):
                conn.execute(sql.SQL("INSERT INTO tag SELECT * FROM tag AS t WHERE {} "
                                     "LIMIT 1").format(sql.SQL(one_of_them)))
            conn.execute("INSERT INTO reading VALUES (9, 9, '2025-09-09')")
        result = _cli(env, "verify", "--target", target)
        assert result.exit_code == 1, result.output
        assert _verify_line(result.output, "public.tag").endswith("0 missing, 1 extra")
        assert _verify_line(result.output, "public.reading").endswith("0 missing, 1 extra")
        assert _verify_line(result.output, "public.event").startswith("OK")


def _toml_with_tables(tmp_path: Path, cfg: Config) -> Path:
    """A journal.toml capturing a partition by name."""
    path = tmp_path / "partition.toml"
    path.write_text(f'[source]\nurl = "{cfg.source_url}"\n'
                    'tables = ["public.keyed", "public.parted_low"]\n')
    return path


def _verify_line(output: str, table: str) -> str:
    return next(line for line in output.splitlines() if f" {table}:" in line)


@pytest.mark.integration
def test_init_refuses_unlogged_and_keyless_tables_without_full_identity(
        pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with scratch_database(pg_server, "src") as source:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("CREATE TABLE keyed (id int PRIMARY KEY)")
            conn.execute("CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)")
            conn.execute("CREATE TABLE loose (v text)")
            conn.execute("CREATE TABLE parted (v int) PARTITION BY RANGE (v)")
            conn.execute("CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (9)")
            conn.execute("ALTER TABLE parted REPLICA IDENTITY FULL")  # not its partition
            conn.execute("CREATE TABLE ident (id int PRIMARY KEY, code text NOT NULL)")
            conn.execute("CREATE UNIQUE INDEX ident_code ON ident (code)")
            conn.execute("ALTER TABLE ident REPLICA IDENTITY USING INDEX ident_code")
        cfg = capture_config(source, tmp_path)
        env = _env(cfg, f"file://{tmp_path}/packages")
        result = _cli(env, "init")
        assert result.exit_code == 4, result.output
        assert "public.scratch is UNLOGGED" in result.output
        assert "logical decoding never sees its rows" in result.output
        assert "ALTER TABLE public.loose REPLICA IDENTITY FULL" in result.output
        assert "ALTER TABLE public.parted_low REPLICA IDENTITY FULL" in result.output
        assert "public.ident has REPLICA IDENTITY USING INDEX ident_code" in result.output
        assert "public.keyed" not in result.output
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("ALTER TABLE loose REPLICA IDENTITY FULL")
            conn.execute("ALTER TABLE parted_low REPLICA IDENTITY FULL")
            conn.execute("ALTER TABLE scratch SET LOGGED")
            conn.execute("ALTER TABLE ident REPLICA IDENTITY DEFAULT")
        result = _cli(env, "init")
        assert result.exit_code == 0, result.output
        result = _cli({**env, "JOURNAL_CONFIG": str(_toml_with_tables(tmp_path, cfg))}, "init")
        assert result.exit_code == 4 and "public.parted_low are partitions" in result.output
        # an UNLOGGED table that appears later is refused by capture, never captured empty
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("CREATE UNLOGGED TABLE later (id int PRIMARY KEY)")
        with pytest.raises(SourceError, match="public.later is UNLOGGED"):
            run_capture(cfg, once_until_idle=1.0)


_PARTITIONED = """
CREATE TABLE metric (id int NOT NULL, at date NOT NULL, v int, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE metric_2025 PARTITION OF metric FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO metric SELECT i, DATE '2025-03-01' + i, i FROM generate_series(1, 20) i;
"""


def _partitioned_source(pg_server: str, tmp_path: Path, source: str) -> tuple[Config, dict]:
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(_PARTITIONED)
    cfg = capture_config(source, tmp_path)
    env = _env(cfg, f"file://{tmp_path}/packages")
    assert _cli(env, "init").exit_code == 0  # as a superuser: the DDL trigger is installed
    run_capture(cfg, once_until_idle=1.0)
    return cfg, env


@pytest.mark.integration
def test_a_partition_created_in_the_stream_is_created_by_the_restore(
        pg18_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with (scratch_database(pg18_server, "src") as source,
          scratch_database(pg18_server, "dst") as target):
        cfg, env = _partitioned_source(pg18_server, tmp_path, source)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("CREATE TABLE metric_2026 PARTITION OF metric "
                         "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
            conn.execute("INSERT INTO metric SELECT i, DATE '2026-02-01' + i, i "
                         "FROM generate_series(100, 110) i")
            conn.execute("UPDATE metric SET at = at + 365 WHERE id <= 3")  # moves partition
        run_capture(cfg, once_until_idle=1.0)
        assert _cli(env, "compact", "--once").exit_code == 0
        result = _cli(env, "restore", "--target", target)
        assert result.exit_code == 0, result.output
        query = ("SELECT tableoid::regclass::text, id, at, v FROM metric ORDER BY 1, 2, 3")
        with psycopg.connect(source) as a, psycopg.connect(target) as b:
            assert b.execute(query).fetchall() == a.execute(query).fetchall()
        assert _cli(env, "verify", "--target", target).exit_code == 0


@pytest.mark.integration
@pytest.mark.parametrize(("statement", "why"), [
    ("ALTER TABLE metric DETACH PARTITION metric_2025", "DETACH"),
    ("DROP TABLE metric_2025", "was dropped"),
    ("CREATE TABLE loaded (LIKE metric); INSERT INTO loaded VALUES (500, '2027-05-01', 1);"
     " ALTER TABLE metric ATTACH PARTITION loaded"
     " FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')", "attached"),
])
def test_partitions_leaving_or_joining_with_rows_are_refused_at_capture(
        pg18_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statement: str,
        why: str) -> None:
    from producers.ddl_trigger import SchemaChangeRefused

    monkeypatch.chdir(tmp_path)
    with scratch_database(pg18_server, "src") as source:
        cfg, _ = _partitioned_source(pg18_server, tmp_path, source)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(statement)
        with pytest.raises(SchemaChangeRefused, match=why):
            run_capture(cfg, once_until_idle=1.0)


@pytest.mark.integration
def test_truncating_a_partition_alone_is_refused_at_capture_and_the_root_is_not(
        pg18_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from producers.ddl_trigger import SchemaChangeRefused

    monkeypatch.chdir(tmp_path)
    with scratch_database(pg18_server, "src") as source:
        cfg, _ = _partitioned_source(pg18_server, tmp_path, source)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("TRUNCATE metric")  # the whole table: in the stream
            # a partition created after init is watched too
            conn.execute("CREATE TABLE metric_2026 PARTITION OF metric "
                         "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
            conn.execute("INSERT INTO metric VALUES (1, '2026-05-01', 1)")
        run_capture(cfg, once_until_idle=1.0)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("TRUNCATE metric_2026")
        with pytest.raises(SchemaChangeRefused, match="metric_2026 of public.metric was "
                                                      "truncated on its own"):
            run_capture(cfg, once_until_idle=1.0)


@pytest.mark.integration
def test_a_keyless_table_is_folded_across_an_added_column(
        pg18_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with (scratch_database(pg18_server, "src") as source,
          scratch_database(pg18_server, "dst") as target):
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("CREATE TABLE bag (v int, w text); ALTER TABLE bag REPLICA IDENTITY FULL;"
                         "INSERT INTO bag SELECT i % 3, 'x' FROM generate_series(1, 9) i")
        cfg = capture_config(source, tmp_path)
        env = _env(cfg, f"file://{tmp_path}/packages")
        assert _cli(env, "init").exit_code == 0
        run_capture(cfg, once_until_idle=1.0)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("DELETE FROM bag WHERE ctid = (SELECT min(ctid) FROM bag WHERE v = 1)")
            conn.execute("ALTER TABLE bag ADD COLUMN z int NOT NULL DEFAULT 7")
            conn.execute("INSERT INTO bag VALUES (1, 'x', 7), (2, 'y', 8)")
            conn.execute("DELETE FROM bag WHERE ctid = (SELECT min(ctid) FROM bag WHERE v = 2)")
        run_capture(cfg, once_until_idle=1.0)
        result = _cli(env, "compact", "--once", "--snapshot")  # the fold crosses the change
        assert result.exit_code == 0, result.output
        result = _cli(env, "restore", "--target", target)
        assert result.exit_code == 0, result.output
        query = "SELECT v, w, z, count(*) FROM bag GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        with psycopg.connect(source) as a, psycopg.connect(target) as b:
            assert b.execute(query).fetchall() == a.execute(query).fetchall()
