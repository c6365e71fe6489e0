"""The typed CATALOG: parsed once from its JSON form, refusing a malformed one by name, and
written back byte for byte (messages, manifests and fingerprints depend on it)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal import sample, schema_change
from journal.catalog import Catalog, TableEntry, table_schema
from journal.errors import ValidationError
from producers.source_catalog import read_catalog
from tests.support.databases import scratch_database

# --- exact round trip over catalogs PostgreSQL describes ---------------------------------

_EVERY_KIND = '''
CREATE EXTENSION citext;
CREATE SCHEMA "Other Schema";
CREATE TYPE "Other Schema"."Mood ""x""" AS ENUM ('it''s', 'a "b"');
CREATE DOMAIN public.code AS citext NOT NULL CHECK (VALUE <> '');
CREATE TYPE public.item AS (code public.code, mood "Other Schema"."Mood ""x"""[]);
CREATE TYPE public.span AS RANGE (subtype = date);
CREATE TABLE "Other Schema"."Odd Table" (
    "Id" integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "select" text NOT NULL DEFAULT 'it''s',
    "quo""te" varchar(10) COLLATE "C",
    items public.item[],
    during public.span,
    "twice" integer GENERATED ALWAYS AS ("Id" * 2) STORED,
    CONSTRAINT "odd unique" UNIQUE ("select")
);
CREATE TABLE "Other Schema".child (
    id serial PRIMARY KEY,
    "odd id" integer REFERENCES "Other Schema"."Odd Table" ("Id") DEFERRABLE,
    token uuid NOT NULL UNIQUE
);
CREATE TABLE "Other Schema".measurement (
    at date NOT NULL, reading numeric(8,2), note text
) PARTITION BY RANGE (at);
CREATE TABLE "Other Schema".measurement_2024 PARTITION OF "Other Schema".measurement
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
ALTER TABLE "Other Schema".measurement_2024 REPLICA IDENTITY FULL;
'''


def _assert_round_trip(catalog: dict[str, Any]) -> None:
    parsed = Catalog.parse(catalog)
    assert parsed.to_json() == catalog
    assert json.dumps(parsed.to_json()) == json.dumps(catalog)  # same keys, same order


@pytest.mark.integration
def test_catalogs_read_from_postgresql_come_back_byte_identical(pg_server: str) -> None:
    with (scratch_database(pg_server, "cj") as url,
          psycopg.connect(url, autocommit=True) as conn):
        sample.create_schema(conn)
        conn.execute(_EVERY_KIND)
        for catalog in (read_catalog(conn), read_catalog(conn, schemas=["Other Schema"]),
                        read_catalog(conn, schemas=["public", "Other Schema"])):
            _assert_round_trip(catalog)
            # through the JSON text it travels as, too
            _assert_round_trip(json.loads(json.dumps(catalog)))
        every = Catalog.parse(read_catalog(conn, schemas=["public", "Other Schema"]))
    assert {t.kind for t in every.types} == {"enum", "domain", "composite", "range"}
    assert [e.name for e in every.extensions] == ["citext"]
    odd = every.tables["Other Schema.Odd Table"]
    assert odd.column("Id").identity == "a" and odd.column("twice").generated == "s"
    assert odd.natural_key == ("select",) and odd.natural_key_detected
    measurement = every.tables["Other Schema.measurement"]
    assert measurement.partition_key == "RANGE (at)"
    assert measurement.partitions[0].replica_identity.kind == "full"
    child = every.tables["Other Schema.child"]
    assert child.foreign_keys[0].deferrable and child.sequences[0].column == "id"


def test_table_schema_leaves_out_generated_columns() -> None:
    entry = TableEntry.parse({
        "schema": "public", "name": "t", "primary_key": ["id"],
        "columns": [{"name": "id", "pg_type": "integer", "type_oid": 23, "not_null": True},
                    {"name": "twice", "pg_type": "integer", "type_oid": 23,
                     "generated": "s", "default": "(id * 2)"}]})
    schema = entry.table_schema()
    assert schema.column_names == ("id",) and schema.primary_key == ("id",)
    assert table_schema(entry.to_json()) == schema


# --- exact round trip over generated catalogs, older ones without later fields included --

_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
                 min_size=1, max_size=8)
_ddl = st.text(max_size=20)


def _object(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with exactly these fields, in this order (as the catalog writes them)."""
    keys = list(fields)
    return st.tuples(*fields.values()).map(lambda values: dict(zip(keys, values, strict=True)))


def _maybe(draw: st.DrawFn, pairs: list[tuple[str, Any]], optional: set[str]
           ) -> dict[str, Any]:
    """The object of ``pairs`` in their order, each optional field present or not."""
    return {k: v for k, v in pairs if k not in optional or draw(st.booleans())}


@st.composite
def _columns(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    return [_maybe(draw, [
        ("name", n), ("pg_type", draw(_names)), ("type_oid", draw(st.integers(0, 2**32))),
        ("not_null", draw(st.booleans())), ("default", draw(st.none() | _ddl)),
        ("identity", draw(st.sampled_from(["", "a", "d"]))),
        ("generated", draw(st.sampled_from(["", "s", "v"]))),
        ("attnum", i + 1)], {"not_null", "default", "identity", "generated", "attnum"})
        for i, n in enumerate(names)]


_identity = _object(kind=st.sampled_from(["default", "full", "index"]),
                    index=st.none() | _names, ddl=st.none() | _ddl)


@st.composite
def _tables(draw: st.DrawFn) -> dict[str, Any]:
    schema, name = draw(_names), draw(_names)
    columns = draw(_columns())
    names = [c["name"] for c in columns]
    some = st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)
    partitions = st.lists(_object(
        schema=_names, name=_names, parent=_names, ddl=_ddl,
        constraints=st.lists(_ddl, max_size=2), indexes=st.lists(_ddl, max_size=2),
        replica_identity=_identity), max_size=2)
    sequences = [_maybe(draw, [("name", draw(_names)), ("column", c), ("ddl", draw(_ddl)),
                               ("last_value", draw(st.integers(-2**63, 2**63 - 1))),
                               ("is_called", draw(st.booleans()))],
                        {"last_value", "is_called"}) for c in draw(st.lists(
                            st.sampled_from(names), max_size=2))]
    pairs = [
        ("oid", draw(st.integers(1, 2**32))), ("schema", schema), ("name", name),
        ("columns", columns), ("primary_key", draw(st.lists(st.sampled_from(names),
                                                             max_size=2, unique=True))),
        ("unique", [{"name": draw(_names), "columns": draw(some)}
                    for _ in range(draw(st.integers(0, 2)))]),
        ("foreign_keys", [_maybe(draw, [
            ("name", draw(_names)), ("columns", draw(some)), ("ref_table", draw(_names)),
            ("ref_columns", draw(st.lists(_names, min_size=1, max_size=3))),
            ("deferrable", draw(st.booleans())), ("ddl", draw(_ddl))], {"ddl"})
            for _ in range(draw(st.integers(0, 2)))]),
        ("create_table", draw(_ddl)), ("constraints", draw(st.lists(_ddl, max_size=2))),
        ("indexes", draw(st.lists(_ddl, max_size=2))), ("sequences", sequences),
        ("replica_identity", draw(_identity)), ("partition_key", draw(_ddl)),
        ("partitions", draw(partitions)), ("natural_key", draw(st.none() | some))]
    return _maybe(draw, pairs, {"oid", "unique", "foreign_keys", "constraints", "indexes",
                                "sequences", "replica_identity", "partition_key",
                                "partitions", "natural_key", "create_table"})


@st.composite
def _types(draw: st.DrawFn) -> dict[str, Any]:
    kind, field, value = draw(st.sampled_from([
        ("enum", "labels", st.lists(_names, max_size=3)),
        ("domain", "base_type", _names),
        ("composite", "attributes", st.lists(st.tuples(_names, _names).map(list),
                                             max_size=3)),
        ("range", "subtype", _names)]))
    return {"schema": draw(_names), "name": draw(_names), "kind": kind,
            field: draw(value), "ddl": draw(_ddl)}


@st.composite
def _catalogs(draw: st.DrawFn) -> dict[str, Any]:
    tables = {f"{t['schema']}.{t['name']}": t for t in draw(st.lists(_tables(), max_size=3))}
    extensions = st.lists(_object(name=_names, schema=_names, version=_names),
                          max_size=2)
    return _maybe(draw, [("types", draw(st.lists(_types(), max_size=3))),
                         ("extensions", draw(extensions)), ("tables", tables)],
                  {"types", "extensions", "tables"})


@settings(max_examples=200, deadline=None)
@given(_catalogs())
def test_any_catalog_comes_back_exactly_as_it_was_written(catalog: dict[str, Any]) -> None:
    _assert_round_trip(catalog)


# --- a malformed catalog (a hostile package's manifest) is refused by name -----------------

def _good() -> dict[str, Any]:
    return {"tables": {"public.doc": {
        "schema": "public", "name": "doc", "primary_key": ["id"],
        "columns": [{"name": "id", "pg_type": "integer", "type_oid": 23, "not_null": True},
                    {"name": "title", "pg_type": "text", "type_oid": 25}],
        "unique": [{"name": "doc_title_key", "columns": ["title"]}],
        "foreign_keys": [{"name": "doc_fk", "columns": ["id"], "ref_table": "public.x",
                          "ref_columns": ["id"], "deferrable": False}]}}}


def _refused(edit: Any, *fragments: str) -> None:
    catalog = _good()
    edit(catalog["tables"]["public.doc"])
    with pytest.raises(ValidationError) as caught:
        Catalog.parse(catalog)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_a_column_without_its_type_oid_is_refused_naming_table_and_column() -> None:
    _refused(lambda t: t["columns"][1].pop("type_oid"), "public.doc", "title", "type_oid")


def test_a_field_of_the_wrong_type_is_refused_naming_it() -> None:
    _refused(lambda t: t["columns"][0].update(not_null="yes"), "public.doc", "not_null",
             "true or false")
    _refused(lambda t: t.update(primary_key="id"), "public.doc", "primary_key")
    _refused(lambda t: t["columns"][0].update(type_oid=True), "type_oid", "an integer")


def test_keys_naming_columns_the_table_does_not_have_are_refused() -> None:
    _refused(lambda t: t.update(primary_key=["nope"]), "public.doc", "primary key", "nope")
    _refused(lambda t: t["unique"][0].update(columns=["nope"]), "doc_title_key", "nope")
    _refused(lambda t: t["foreign_keys"][0].update(columns=["x"]), "doc_fk", "'x'")
    _refused(lambda t: t.update(natural_key=["y"]), "natural key", "'y'")


def test_unknown_fields_and_misfiled_tables_are_refused() -> None:
    _refused(lambda t: t.update(evil=1), "public.doc", "unknown field", "evil")
    _refused(lambda t: t.update(name="other"), "public.doc", "public.other")
    with pytest.raises(ValidationError, match="JSON object"):
        Catalog.parse([])
    with pytest.raises(ValidationError, match="tables"):
        Catalog.parse({"tables": []})


def test_a_catalog_message_with_a_malformed_catalog_is_refused_naming_where() -> None:
    catalog = _good()
    del catalog["tables"]["public.doc"]["columns"][0]["pg_type"]
    content = json.dumps({"catalog": catalog, "change": {"tables": ["public.doc"]}}).encode()
    with pytest.raises(ValidationError) as caught:
        schema_change.apply(Catalog(), content, "0/16B3748#2")
    assert "0/16B3748#2" in str(caught.value) and "public.doc" in str(caught.value)
    assert "pg_type" in str(caught.value)


def test_a_catalog_message_changing_a_table_it_does_not_describe_is_refused() -> None:
    content = json.dumps({"catalog": _good(), "change": {"tables": ["public.gone"]}}).encode()
    with pytest.raises(ValidationError, match="public.gone"):
        schema_change.apply(Catalog(), content, "here")
