"""The CATALOG read from pg_catalog: keys, DDL that re-creates the schema, rows."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from journal import sample
from journal.catalog import Catalog, table_schema
from journal.errors import SourceError
from journal.values import read_rows
from producers.source_catalog import (
    detect_natural_key,
    read_catalog,
    tables_without_primary_key,
)
from tests.support.databases import scratch_database

# --- natural keys (pure) -----------------------------------------------------------------


def _table(columns: dict[str, tuple[int, bool]], primary_key: list[str],
           unique: list[list[str]]) -> dict[str, Any]:
    return {"columns": [{"name": n, "type_oid": oid, "not_null": nn}
                        for n, (oid, nn) in columns.items()],
            "primary_key": primary_key,
            "unique": [{"name": "_".join(u) + "_key", "columns": u} for u in unique]}


def test_natural_key_prefers_a_single_uuid_column() -> None:
    t = _table({"id": (20, True), "code": (1043, True), "uuid": (2950, True)}, ["id"],
               [["code"], ["uuid"]])
    assert detect_natural_key(t) == ["uuid"]


def test_natural_key_prefers_text_columns_then_fewest_columns() -> None:
    t = _table({"id": (23, True), "number": (23, True), "name": (25, True),
                "a": (1043, True), "b": (1043, True)}, ["id"], [["number"], ["a", "b"], ["name"]])
    assert detect_natural_key(t) == ["name"]
    t["unique"] = [u for u in t["unique"] if u["columns"] != ["name"]]
    assert detect_natural_key(t) == ["a", "b"]
    t["unique"] = [u for u in t["unique"] if u["columns"] == ["number"]]
    assert detect_natural_key(t) == ["number"]


def test_natural_key_ignores_nullable_columns_and_the_primary_key() -> None:
    t = _table({"id": (23, True), "email": (1043, False)}, ["id"], [["id"], ["email"]])
    assert detect_natural_key(t) is None


# --- the sample's catalog ----------------------------------------------------------------


@pytest.fixture
def sample_catalog(source_db: str) -> dict[str, Any]:
    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        return read_catalog(conn)


@pytest.mark.integration
def test_sample_catalog_has_every_table_with_its_primary_and_unique_keys(
        sample_catalog: dict[str, Any]) -> None:
    tables = sample_catalog["tables"]
    assert sorted(tables) == sorted(f"public.{t}" for t in sample.TABLES)
    assert all(t["primary_key"] == ["id"] for t in tables.values())
    assert tables_without_primary_key(sample_catalog) == []
    uniques = {u["name"]: u["columns"] for u in tables["public.auth_permission"]["unique"]}
    assert uniques == {"auth_permission_content_type_id_codename_key":
                       ["content_type_id", "codename"]}
    assert tables["public.access_control_entry"]["unique"][0]["columns"] == [
        "content_type_id", "object_id", "permission_id", "group_id"]


@pytest.mark.integration
def test_sample_catalog_detects_the_natural_keys(sample_catalog: dict[str, Any]) -> None:
    keys = {name: t["natural_key"] for name, t in sample_catalog["tables"].items()}
    assert keys["public.document"] == ["uuid"]
    assert keys["public.auth_user"] == ["username"]
    assert keys["public.django_content_type"] == ["app_label", "model"]
    assert keys["public.auth_permission"] == ["content_type_id", "codename"]
    assert keys["public.document_version"] == ["document_id", "version_number"]
    assert keys["public.document_state"] is None
    assert keys["public.django_admin_log"] is None


@pytest.mark.integration
def test_sample_catalog_has_the_deferred_cycle_and_the_self_reference(
        sample_catalog: dict[str, Any]) -> None:
    tables = sample_catalog["tables"]
    fks = {fk["name"]: fk for t in tables.values() for fk in t["foreign_keys"]}
    cycle = fks["document_current_version_id_fkey"]
    assert (cycle["columns"], cycle["ref_table"], cycle["ref_columns"], cycle["deferrable"]) == (
        ["current_version_id"], "public.document_version", ["id"], True)
    assert "DEFERRABLE INITIALLY DEFERRED" in cycle["ddl"]
    back = fks["document_version_document_id_fkey"]
    assert (back["ref_table"], back["deferrable"]) == ("public.document", False)
    manager = fks["auth_user_manager_id_fkey"]
    assert (manager["columns"], manager["ref_table"]) == (["manager_id"], "public.auth_user")
    assert "ON DELETE SET NULL" in manager["ddl"]
    assert sum(len(t["foreign_keys"]) for t in tables.values()) == 21


@pytest.mark.integration
def test_sample_catalog_has_the_enum_type_and_ddl_pieces(sample_catalog: dict[str, Any]) -> None:
    assert sample_catalog["types"] == [{
        "schema": "public", "name": "document_status", "kind": "enum",
        "labels": ["draft", "review", "approved", "published", "archived"],
        "ddl": "CREATE TYPE public.document_status AS ENUM "
               "('draft', 'review', 'approved', 'published', 'archived')"}]
    document = sample_catalog["tables"]["public.document"]
    status = next(c for c in document["columns"] if c["name"] == "status")
    assert status["pg_type"] == "public.document_status"
    assert "nextval" not in document["create_table"]
    assert "DEFAULT 'draft'::public.document_status NOT NULL" in document["create_table"]
    assert document["constraints"][0].endswith("PRIMARY KEY (id)")
    assert any("CHECK ((page_count >= 0))" in c for c in document["constraints"])
    assert len(document["indexes"]) == 3 and all("UNIQUE" not in i for i in document["indexes"])
    assert [s["name"] for s in document["sequences"]] == ["public.document_id_seq"]
    identity = sample_catalog["tables"]["public.django_admin_log"]
    assert identity["columns"][0]["identity"] == "d"
    assert "ADD GENERATED BY DEFAULT AS IDENTITY" in identity["sequences"][0]["ddl"]


# --- re-creating the schema from the catalog ---------------------------------------------

def _create_from_catalog(conn: psycopg.Connection, catalog: dict[str, Any]) -> None:
    """The restore's order: types, tables, (load), sequences, constraints, indexes, FKs."""
    with conn.transaction():
        for t in catalog["types"]:
            conn.execute(t["ddl"])
        tables = catalog["tables"].values()
        for step in (lambda t: [t["create_table"]], lambda t: [s["ddl"] for s in t["sequences"]],
                     lambda t: t["constraints"], lambda t: t["indexes"],
                     lambda t: [fk["ddl"] for fk in t["foreign_keys"]]):
            for table in tables:
                for ddl in step(table):
                    conn.execute(ddl)


def _without_user_type_oids(catalog: dict[str, Any]) -> dict[str, Any]:
    # User-defined types and tables get new OIDs in every database; everything else must
    # match.
    for table in catalog["tables"].values():
        table["oid"] = "relation"
        for column in table["columns"]:
            if column["type_oid"] >= 16384:
                column["type_oid"] = "user type"
    return catalog


_AWKWARD = '''
CREATE SCHEMA "Other Schema";
CREATE TYPE "Other Schema"."Mood ""x""" AS ENUM ('it''s', 'a "b"', 'c,d');
CREATE TABLE "Other Schema"."Odd Table" (
    "Id" integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "select" text NOT NULL DEFAULT 'it''s',
    "quo""te" varchar(10) COLLATE "C",
    "mood" "Other Schema"."Mood ""x"""[] DEFAULT '{}',
    "twice" integer GENERATED ALWAYS AS ("Id" * 2) STORED,
    CONSTRAINT "odd unique" UNIQUE ("select"),
    CONSTRAINT "odd check" CHECK ("quo""te" <> 'x')
);
CREATE INDEX "odd index" ON "Other Schema"."Odd Table" (lower("select")) WHERE "Id" > 0;
CREATE TABLE "Other Schema"."child" (
    id serial PRIMARY KEY,
    "odd id" integer REFERENCES "Other Schema"."Odd Table" ("Id") ON UPDATE CASCADE
);
CREATE TABLE "Other Schema"."no key" (a int, b text);
CREATE TABLE "Other Schema".journal_restore_state (id int PRIMARY KEY);
'''


@pytest.mark.integration
def test_catalog_ddl_recreates_the_sample_identically(pg_server: str) -> None:
    with (scratch_database(pg_server, "src") as source,
          scratch_database(pg_server, "dst") as target,
          psycopg.connect(source, autocommit=True) as src,
          psycopg.connect(target, autocommit=True) as dst):
        sample.create_schema(src)
        original = read_catalog(src)
        _create_from_catalog(dst, original)
        assert _without_user_type_oids(read_catalog(dst)) == _without_user_type_oids(original)


@pytest.mark.integration
def test_awkward_names_survive_catalog_and_ddl_recreation(pg_server: str) -> None:
    with (scratch_database(pg_server, "src") as source,
          scratch_database(pg_server, "dst") as target,
          psycopg.connect(source, autocommit=True) as src,
          psycopg.connect(target, autocommit=True) as dst):
        src.execute(_AWKWARD)
        original = read_catalog(src, schemas=["Other Schema"])
        assert sorted(original["tables"]) == [
            "Other Schema.Odd Table", "Other Schema.child", "Other Schema.no key"]
        odd = original["tables"]["Other Schema.Odd Table"]
        assert [c["name"] for c in odd["columns"]] == ["Id", "select", 'quo"te', "mood", "twice"]
        assert odd["columns"][4]["generated"] == "s"
        assert odd["natural_key"] == ["select"]
        assert original["types"][0]["labels"] == ["it's", 'a "b"', "c,d"]
        assert tables_without_primary_key(original) == ["Other Schema.no key"]

        dst.execute('CREATE SCHEMA "Other Schema"')
        _create_from_catalog(dst, original)
        assert (_without_user_type_oids(read_catalog(dst, schemas=["Other Schema"]))
                == _without_user_type_oids(original))
        # And the re-created table works: identity, generated column and defaults included.
        dst.execute('INSERT INTO "Other Schema"."Odd Table" ("quo""te") VALUES (%s)', ("q",))
        row = dst.execute('SELECT "Id", "select", "mood", "twice" '
                          'FROM "Other Schema"."Odd Table"').fetchone()
        assert row == (1, "it's", "{}", 2)


@pytest.mark.integration
def test_read_catalog_keeps_the_session_search_path(source_db: str) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("SET search_path = pg_catalog, public")
        read_catalog(conn)
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog, public"


@pytest.mark.integration
def test_read_catalog_names_tables_and_refuses_unknown_ones(source_db: str) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(_AWKWARD)
        chosen = read_catalog(conn, tables=["Other Schema.child"])
        assert list(chosen["tables"]) == ["Other Schema.child"]
        assert chosen["types"] == []
        everything = read_catalog(conn, schemas=["Other Schema"])
        assert "Other Schema.journal_restore_state" not in everything["tables"]
        with pytest.raises(SourceError, match="public.missing"):
            read_catalog(conn, tables=["public.missing"])


@pytest.mark.integration
def test_read_rows_streams_rows_in_primary_key_order(source_db: str) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        counts = sample.load(conn, scale=25, seed=3)
        catalog = read_catalog(conn)
        table = table_schema(catalog["tables"]["public.document"])
        rows = list(read_rows(conn, table))
        assert len(rows) == counts["document"] == 25
        assert [r["id"] for r in rows] == list(range(1, 26))
        assert rows[0].keys() == set(table.column_names)
        noted = table_schema(catalog["tables"]["public.auth_user"])
        users = {r["username"] for r in read_rows(conn, noted)}
        assert len(users) == counts["auth_user"]


@pytest.mark.integration
def test_catalog_lists_user_types_before_their_users_and_the_extensions_it_needs(
        pg_server: str) -> None:
    with scratch_database(pg_server, "ty") as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""
            CREATE EXTENSION citext;
            CREATE SCHEMA z;
            CREATE TYPE z.a_pair AS (left_side integer);
        """)
        conn.execute("""
            CREATE TYPE public.zz_state AS ENUM ('new', 'it''s');
            CREATE DOMAIN z.b_code AS citext NOT NULL DEFAULT 'x' CHECK (VALUE <> '')
                CHECK (length(VALUE) < 9);
            CREATE TYPE public.c_item AS (code z.b_code, state public.zz_state[]);
            CREATE TYPE z.d_span AS RANGE (subtype = date);
            CREATE TABLE public.t (id int PRIMARY KEY, items public.c_item[], span z.d_span,
                                   spans z.d_span_multirange);
        """)
        catalog = read_catalog(conn, ["public"])
    kinds = [(t["schema"], t["name"], t["kind"]) for t in catalog["types"]]
    assert ("z", "a_pair", "composite") not in kinds  # not used by a captured table
    order = [name for _, name, _ in kinds]
    assert set(order) == {"zz_state", "b_code", "c_item", "d_span"}
    assert order.index("b_code") < order.index("c_item")
    assert order.index("zz_state") < order.index("c_item")
    ddl = {t["name"]: t["ddl"] for t in catalog["types"]}
    assert ddl["b_code"].startswith("CREATE DOMAIN z.b_code AS public.citext")
    assert "NOT NULL" in ddl["b_code"] and "CHECK ((length((VALUE)::text) < 9))" in ddl["b_code"]
    assert ddl["zz_state"] == "CREATE TYPE public.zz_state AS ENUM ('new', 'it''s')"
    assert "MULTIRANGE_TYPE_NAME = z.d_span_multirange" in ddl["d_span"]
    assert [e["name"] for e in catalog["extensions"]] == ["citext"]
    assert catalog["extensions"][0]["schema"] == "public"

    from restorer.schema import create_tables, create_types

    with scratch_database(pg_server, "tyr") as url, psycopg.connect(url) as conn:
        create_types(conn, Catalog.parse(catalog))
        create_tables(conn, Catalog.parse(catalog), ["public.t"])
        conn.execute("INSERT INTO public.t VALUES (1, ARRAY[ROW('Ab', '{it''s}')]::c_item[], "
                     "'[2020-01-01,2020-02-01)', '{[2020-01-01,2020-01-05)}')")
        assert conn.execute("SELECT (items[1]).code = 'aB' FROM public.t").fetchone()[0]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("SELECT ''::z.b_code")
