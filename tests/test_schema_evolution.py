"""Schema changes in the stream: captured through pgoutput and the DDL event trigger,
compacted, and restored at their position — compared with the source's schema and rows
recorded at each mark by SQL over the source itself (never by the journal's own reading).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from journal.compactor import Compactor, Policy, fold_latest
from journal.errors import RestoreError
from journal.events import MARK_PREFIX
from journal.store import open_store
from journal.transport import open_reader
from producers.ddl_trigger import SchemaChangeRefused
from restorer.plan import RestoreTarget
from restorer.restore import RestoreOptions, restore
from restorer.verify import verify
from tests.conftest import scratch_database
from tests.test_capture import capture_config, capture_until_idle, database_of

pytestmark = pytest.mark.integration

_SCHEMA = """
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE tag (id int PRIMARY KEY, label text NOT NULL);
CREATE TABLE doc (id serial PRIMARY KEY, title text NOT NULL, n int, m mood DEFAULT 'calm',
                  tag_id int REFERENCES tag (id));
CREATE INDEX doc_title ON doc (title);
INSERT INTO tag SELECT i, 'tag ' || i FROM generate_series(1, 5) i;
INSERT INTO doc (title, n, tag_id) SELECT 'doc ' || i, i, 1 + i % 5 FROM generate_series(1, 20) i;
"""

# (name, statements run one by one in autocommit, each its own transaction); a list inside
# is one transaction. Every step changes rows before and after its DDL.
_STEPS: list[tuple[str, list[Any]]] = [
    ("add-column", ["UPDATE doc SET n = n + 100 WHERE id <= 3",
                    "ALTER TABLE doc ADD COLUMN note text",
                    "UPDATE doc SET note = 'noted ' || id WHERE id % 4 = 0",
                    "INSERT INTO doc (title, n, note) VALUES ('with note', 7, 'hello')"]),
    ("add-column-default", [
        "INSERT INTO doc (title, n) VALUES ('before default', 8)",
        "ALTER TABLE doc ADD COLUMN colour text NOT NULL DEFAULT 'red'",
        "ALTER TABLE doc ADD COLUMN score int DEFAULT 7, ADD COLUMN born date "
        "DEFAULT '2020-01-02'",
        "INSERT INTO doc (title, n, colour, score) VALUES ('blue one', 9, 'blue', 1)",
        "UPDATE doc SET score = 70 WHERE id = 2"]),
    ("rename-column", ["ALTER TABLE doc RENAME COLUMN title TO heading",
                       "UPDATE doc SET heading = heading || '!' WHERE id % 3 = 0"]),
    ("drop-column", ["UPDATE doc SET note = 'last' WHERE id = 4",
                     "ALTER TABLE doc DROP COLUMN note",
                     "DELETE FROM doc WHERE id = 5"]),
    ("alter-type", ["ALTER TABLE doc ALTER COLUMN n TYPE bigint",
                    "UPDATE doc SET n = 5000000000 WHERE id = 6"]),
    ("enum-value", ["ALTER TYPE mood ADD VALUE 'angry'",
                    "UPDATE doc SET m = 'angry' WHERE id IN (7, 8)"]),
    ("drop-not-null", ["ALTER TABLE tag ALTER COLUMN label DROP NOT NULL",
                       "INSERT INTO tag VALUES (6, NULL)"]),
    ("replace-primary-key", [[
        "ALTER TABLE tag ADD COLUMN code text",
        "UPDATE tag SET code = 'k' || id",
        "ALTER TABLE tag ALTER COLUMN code SET NOT NULL",
        "ALTER TABLE doc DROP CONSTRAINT doc_tag_id_fkey",
        "ALTER TABLE tag DROP CONSTRAINT tag_pkey",
        "ALTER TABLE tag ADD PRIMARY KEY (code)",
        "ALTER TABLE tag ADD CONSTRAINT tag_id_key UNIQUE (id)"],
        "INSERT INTO tag (id, label, code) VALUES (7, 'seven', 'k7')",
        "UPDATE tag SET label = 'one' WHERE code = 'k1'"]),
    ("rename-table", ["ALTER TABLE tag RENAME TO label",
                      "INSERT INTO label (id, label, code) VALUES (8, 'eight', 'k8')",
                      "DELETE FROM label WHERE code = 'k2'"]),
    ("create-table", ["CREATE TABLE extra (id int PRIMARY KEY, v text UNIQUE)",
                      "INSERT INTO extra VALUES (1, 'a'), (2, 'b')",
                      "UPDATE doc SET n = 1 WHERE id = 1"]),
    ("drop-table", ["UPDATE extra SET v = 'c' WHERE id = 2",
                    "DROP TABLE extra",
                    "INSERT INTO doc (heading, n) VALUES ('after drop', 11)"]),
]


def source_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Schema and rows of the public schema, by SQL alone: columns from pg_attribute
    (name, type, not null, default), keys and indexes from pg_index, enum labels from
    pg_enum, and every row as JSON, sorted."""
    tables = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname NOT LIKE 'journal%' "
        "ORDER BY 1")]
    state: dict[str, Any] = {"enums": conn.execute(
        "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e "
        "JOIN pg_type t ON t.oid = e.enumtypid GROUP BY 1 ORDER BY 1").fetchall()}
    for table in tables:
        columns = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum", (f"public.{table}",)).fetchall()
        keys = conn.execute(
            "SELECT i.indisprimary, i.indisunique, array_agg(a.attname ORDER BY k.n) "
            "FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY "
            "AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = k.attnum WHERE i.indrelid = %s::regclass "
            "GROUP BY i.indexrelid, 1, 2 ORDER BY 3::text",
            (f"public.{table}",)).fetchall()
        rows = sorted(json.dumps(r[0], sort_keys=True) for r in conn.execute(
            f'SELECT to_jsonb(t) FROM public."{table}" t'))  # noqa: S608 - our own names
        state[table] = {"columns": columns, "keys": keys, "rows": rows}
    return state


def _run(url: str, statements: list[Any]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            if isinstance(statement, list):
                with conn.transaction():
                    for s in statement:
                        conn.execute(s)
            else:
                conn.execute(statement)


@pytest.fixture(scope="module", params=["pg18", "pg15"])
def evolved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A source that lives through every step, captured (catching up after all of them,
    so capture's catalog "now" is ahead of the stream) and compacted into small segments;
    the source's state recorded at each step's mark. On PostgreSQL 18 and 15; each
    restore goes into a database of the same server."""
    from tests import services

    server = services.pg18_url() if request.param == "pg18" else services.pg15_url()
    tmp_path = tmp_path_factory.mktemp("evolution")
    with scratch_database(server, "evo") as url:
        _run(url, [_SCHEMA])
        cfg = capture_config(url, tmp_path)
        capture_until_idle(cfg, idle=1.0)  # slot, snapshot and the DDL trigger
        recorded: dict[str, Any] = {}
        with psycopg.connect(url, autocommit=True) as conn:
            recorded["start"] = source_state(conn)
        for name, statements in _STEPS:
            _run(url, statements)
            with psycopg.connect(url, autocommit=True) as conn:
                recorded[name] = source_state(conn)
                conn.execute("SELECT pg_logical_emit_message(true, %s, %s)",
                             (MARK_PREFIX, name))
        capture_until_idle(cfg, idle=1.5)
        packages = f"file://{tmp_path}/packages"
        reader = open_reader(cfg.journal_location(), database_of(url))
        Compactor(reader, open_store(packages),
                  Policy(segment_max_events=7, snapshot_every_segments=0)).run(once=True)
        reader.close()
        yield {"url": url, "store": open_store(packages), "recorded": recorded,
               "server": server}


def _restored(evolved: dict[str, Any], target: str, **options: Any) -> dict[str, Any]:
    restore(RestoreOptions(target_url=target, store=evolved["store"], **options))
    with psycopg.connect(target) as conn:
        return source_state(conn)


@pytest.mark.parametrize("step", [name for name, _ in _STEPS])
def test_restore_to_the_mark_after_each_schema_change_equals_the_source_then(
        evolved: dict[str, Any], step: str) -> None:

    with scratch_database(evolved["server"], "dst") as target:
        assert _restored(evolved, target, to_mark=step) == evolved["recorded"][step]
        report = verify(target, store=evolved["store"], at=RestoreTarget("mark", step))
        assert report.ok, report.summary()
        with psycopg.connect(target, autocommit=True) as conn:  # and verify can fail
            conn.execute("UPDATE doc SET n = n + 1 WHERE id = 1")
        assert not verify(target, store=evolved["store"], at=RestoreTarget("mark", step)).ok


def test_incremental_restore_across_every_schema_change_equals_the_source_at_each(
        evolved: dict[str, Any]) -> None:

    with scratch_database(evolved["server"], "dst") as target:
        names = [name for name, _ in _STEPS]
        assert _restored(evolved, target, to_mark=names[0]) == evolved["recorded"][names[0]]
        for name in names[1:]:
            got = _restored(evolved, target, to_mark=name, incremental=True)
            assert got == evolved["recorded"][name], name
        assert _restored(evolved, target, incremental=True) == evolved["recorded"][names[-1]]


def test_full_snapshot_folded_across_every_schema_change_restores_the_latest_state(
        evolved: dict[str, Any], tmp_path: Path) -> None:

    manifest = fold_latest(evolved["store"])
    assert manifest is not None
    assert sorted(manifest.catalog["tables"]) == ["public.doc", "public.label"]
    with scratch_database(evolved["server"], "dst") as target:
        got = _restored(evolved, target)  # the plan starts from the folded snapshot
        assert got == evolved["recorded"][_STEPS[-1][0]]


def _refused_at_capture(tmp_path: Path, statements: list[str], words: str) -> None:
    from tests import services

    with scratch_database(services.pg18_url(), "evo") as url:
        _run(url, [_SCHEMA])
        cfg = capture_config(url, tmp_path)
        capture_until_idle(cfg, idle=1.0)
        _run(url, statements)
        with pytest.raises(SchemaChangeRefused, match=words):
            capture_until_idle(cfg, idle=1.0)


def test_column_added_with_a_volatile_default_is_refused_at_capture(tmp_path: Path) -> None:
    _refused_at_capture(tmp_path, ["ALTER TABLE doc ADD COLUMN r float8 DEFAULT random()"],
                        r"column 'r' of public\.doc was added with a volatile default")


def test_type_change_that_converts_values_is_refused_at_capture(tmp_path: Path) -> None:
    _refused_at_capture(tmp_path, ["ALTER TABLE doc ALTER COLUMN n TYPE text"],
                        r"column 'n' of public\.doc changed type from integer to text")


def test_table_moved_to_another_schema_is_refused_at_capture(tmp_path: Path) -> None:
    _refused_at_capture(tmp_path, ["CREATE SCHEMA other", "ALTER TABLE tag SET SCHEMA other"],
                        r"table public\.tag was renamed or moved to other\.tag")


def test_type_change_with_using_is_refused_at_capture(tmp_path: Path) -> None:
    _refused_at_capture(tmp_path, ["ALTER TABLE doc ALTER COLUMN n TYPE bigint USING n * 2"],
                        r"changed type from integer to bigint")


def test_schema_change_into_a_populated_target_is_refused_and_leaves_it_unchanged(
        evolved: dict[str, Any]) -> None:

    with scratch_database(evolved["server"], "dst") as target:
        _run(target, [_SCHEMA])
        with psycopg.connect(target) as conn:
            before = source_state(conn)
        with pytest.raises(RestoreError, match="populated target is not migrated"):
            restore(RestoreOptions(target_url=target, store=evolved["store"],
                                   to_mark="add-column",
                                   natural_keys={"public.tag": ("label",)}))
        with psycopg.connect(target) as conn:
            assert source_state(conn) == before



def test_trigger_describes_a_table_exactly_as_read_catalog_does(pg_server: str) -> None:
    """The event trigger runs the catalog's own queries; the entry built from its message
    must be the one read_catalog reads (the oracle), on both server versions."""
    from producers import ddl_trigger
    from producers.catalog import read_catalog

    with scratch_database(pg_server, "evo") as url, psycopg.connect(url, autocommit=True) as conn:
        _run(url, [_SCHEMA])
        ddl_trigger.install(conn)
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
                     (f"evo_{conn.info.backend_pid}",))
        conn.execute("ALTER TABLE doc ADD COLUMN tags text[] DEFAULT '{a,b}', "
                     "ADD CONSTRAINT doc_n_check CHECK (n > -1)")
        conn.execute("CREATE UNIQUE INDEX doc_lower ON doc (lower(title))")
        data = [r[0] for r in conn.execute(
            "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL)",
            (f"evo_{conn.info.backend_pid}",)) if "edms_journal.ddl" in r[0]]
        last = data[-1].split("content:", 1)[1].encode()
        before = {"types": [], "tables": {}}
        catalog, change = ddl_trigger.catalog_change(
            before, last, conn, lambda schema, name: schema == "public")
        assert change["tables"] == ["public.doc"]
        assert catalog["tables"]["public.doc"] == read_catalog(conn)["tables"]["public.doc"]
        assert catalog["types"] == read_catalog(conn)["types"]
        conn.execute("SELECT pg_drop_replication_slot(%s)", (f"evo_{conn.info.backend_pid}",))


def test_init_installs_the_ddl_trigger(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from journal.cli import main
    from producers import ddl_trigger
    from tests import services
    from tests.test_capture import write_toml

    with scratch_database(services.pg18_url(), "evo") as url:
        _run(url, [_SCHEMA])
        toml = write_toml(tmp_path, capture_config(url, tmp_path))
        result = CliRunner().invoke(main, ["-c", str(toml), "init"])
        assert result.exit_code == 0, result.output
        assert "OK   DDL event trigger installed" in result.output
        with psycopg.connect(url) as conn:
            assert ddl_trigger.installed(conn)


def test_without_the_trigger_capture_stops_at_the_first_schema_change(tmp_path: Path) -> None:
    """A role that may replicate but is no superuser cannot install the trigger: capture
    runs, and refuses the first schema change instead of guessing where it happened."""
    from psycopg import sql

    from tests import services

    role = f"repl_{tmp_path.name[-8:].replace('-', '_')}"
    with scratch_database(services.pg18_url(), "evo") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION").format(
                sql.Identifier(role)))
        try:
            _run(url, [_SCHEMA, f'ALTER TABLE doc OWNER TO "{role}"',
                       f'ALTER TABLE tag OWNER TO "{role}"',
                       f'ALTER SEQUENCE doc_id_seq OWNER TO "{role}"'])
            cfg = capture_config(url.replace("postgres@", f"{role}@"), tmp_path)
            _run(url, [f'CREATE PUBLICATION "{cfg.publication}" FOR TABLES IN SCHEMA public'])
            capture_until_idle(cfg, idle=1.0)
            _run(url, ["INSERT INTO tag VALUES (50, 'fifty')"])
            capture_until_idle(cfg, idle=1.0)  # rows alone are captured as ever
            _run(cfg.source_url, ["ALTER TABLE tag ADD COLUMN colour text",
                                  "INSERT INTO tag VALUES (51, 'x', 'blue')"])
            with pytest.raises(SchemaChangeRefused, match="event trigger is not installed"):
                capture_until_idle(cfg, idle=1.0)
        finally:
            from tests.conftest import drop_database

            drop_database(services.pg18_url(), database_of(url))
            with psycopg.connect(services.pg18_url(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_subset_restore_across_a_schema_change_of_its_tables_is_refused(
        evolved: dict[str, Any]) -> None:

    with scratch_database(evolved["server"], "dst") as target:
        with pytest.raises(RestoreError, match="does not follow schema changes"):
            restore(RestoreOptions(target_url=target, store=evolved["store"],
                                   to_mark="add-column", tables=("public.doc",)))
        with psycopg.connect(target) as conn:
            assert source_state(conn) == {"enums": []}


# -- random sequences of row and schema changes --------------------------------------------

class _Model:
    """What the random workload knows of its one table, to write valid statements (SQL
    made of its own names and numbers only)."""

    def __init__(self) -> None:
        self.table = "t"
        self.columns = {"a": "integer", "b": "text"}  # besides the key "id"
        self.keys: set[int] = set()
        self.serial = 0

    def statement(self, data: Any) -> str:
        from hypothesis import strategies as st

        table = f'"{self.table}"'
        kinds = ["insert", "insert", "update", "delete", "add", "add-default", "rename",
                 "drop", "widen", "rename-table", "not-null"]
        kind = data.draw(st.sampled_from(kinds))
        ints = [c for c, t in self.columns.items() if t == "integer"]
        if kind == "insert" or not self.keys and kind in ("update", "delete"):
            self.serial += 1
            self.keys.add(self.serial)
            names = ", ".join(f'"{c}"' for c in ["id", *self.columns])
            values = ", ".join([str(self.serial)] + ["'v'" if t == "text" else str(self.serial)
                                                     for t in self.columns.values()])
            return f"INSERT INTO {table} ({names}) VALUES ({values})"  # noqa: S608
        if kind in ("update", "delete"):
            key = data.draw(st.sampled_from(sorted(self.keys)))
            if kind == "delete":
                self.keys.discard(key)
                return f"DELETE FROM {table} WHERE id = {key}"  # noqa: S608
            column = data.draw(st.sampled_from(sorted(self.columns)))
            value = "'v'" if self.columns[column] == "text" else str(key * 10)
            return f'UPDATE {table} SET "{column}" = {value} WHERE id = {key}'  # noqa: S608
        self.serial += 1
        if kind in ("add", "add-default"):
            name = f"c{self.serial}"
            self.columns[name] = "integer"
            default = f" DEFAULT {self.serial}" if kind == "add-default" else ""
            return f'ALTER TABLE {table} ADD COLUMN "{name}" integer{default}'
        if kind == "rename" and self.columns:
            old = data.draw(st.sampled_from(sorted(self.columns)))
            new = f"r{self.serial}"
            self.columns[new] = self.columns.pop(old)
            return f'ALTER TABLE {table} RENAME COLUMN "{old}" TO "{new}"'
        if kind == "drop" and len(self.columns) > 1:
            old = data.draw(st.sampled_from(sorted(self.columns)))
            del self.columns[old]
            return f'ALTER TABLE {table} DROP COLUMN "{old}"'
        if kind == "not-null":
            column = data.draw(st.sampled_from(sorted(self.columns)))
            fill = "'f'" if self.columns[column] == "text" else "0"
            if data.draw(st.booleans()):
                return (f'UPDATE {table} SET "{column}" = {fill} '  # noqa: S608
                        f'WHERE "{column}" IS NULL; '
                        f'ALTER TABLE {table} ALTER COLUMN "{column}" SET NOT NULL')
            return f'ALTER TABLE {table} ALTER COLUMN "{column}" DROP NOT NULL'
        if kind == "widen" and ints:
            column = data.draw(st.sampled_from(ints))
            self.columns[column] = "bigint"
            return f'ALTER TABLE {table} ALTER COLUMN "{column}" TYPE bigint'
        self.table = f"t{self.serial}"
        return f'ALTER TABLE {table} RENAME TO "{self.table}"'


def test_random_row_and_schema_changes_restore_to_every_mark(tmp_path_factory) -> None:
    """Any sequence of transactions of inserts, updates, deletes, ADD (with and without a
    default), RENAME and DROP COLUMN, SET and DROP NOT NULL, widening type changes and
    table renames: a restore to each mark, an incremental restore through all of them,
    and a restore from the folded snapshot equal the source recorded there."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests import services

    @settings(max_examples=5, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: Any) -> None:
        tmp_path = tmp_path_factory.mktemp("random")
        model = _Model()
        with scratch_database(services.pg18_url(), "rnd") as url:
            _run(url, ["CREATE TABLE t (id int PRIMARY KEY, a int, b text)",
                       "INSERT INTO t VALUES (0, 1, 'x')"])
            model.keys.add(0)
            cfg = capture_config(url, tmp_path)
            capture_until_idle(cfg, idle=1.0)
            recorded = {}
            for i in range(data.draw(st.integers(8, 16))):
                # one to three statements in one transaction
                _run(url, [[model.statement(data)
                            for _ in range(data.draw(st.integers(1, 3)))]])
                with psycopg.connect(url, autocommit=True) as conn:
                    recorded[f"m{i}"] = source_state(conn)
                    conn.execute("SELECT pg_logical_emit_message(true, %s, %s)",
                                 (MARK_PREFIX, f"m{i}"))
            capture_until_idle(cfg, idle=1.0)
            store = open_store(f"file://{tmp_path}/packages")
            reader = open_reader(cfg.journal_location(), database_of(url))
            Compactor(reader, store, Policy(segment_max_events=3,
                                            snapshot_every_segments=0)).run(once=True)
            reader.close()
            world = {"store": store}
            marks = list(recorded)
            with scratch_database(services.pg18_url(), "dst") as target:
                for n, mark in enumerate(marks):
                    got = _restored(world, target, to_mark=mark, incremental=n > 0)
                    assert got == recorded[mark], mark
            for mark in data.draw(st.lists(st.sampled_from(marks), min_size=1, max_size=2)):
                with scratch_database(services.pg18_url(), "dst") as target:
                    assert _restored(world, target, to_mark=mark) == recorded[mark], mark
            assert fold_latest(store) is not None
            with scratch_database(services.pg18_url(), "dst") as target:
                assert _restored(world, target) == recorded[marks[-1]]

    run()
