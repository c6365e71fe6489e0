"""Schema changes as decisions over catalogs: restorer/evolve.py, journal/schema_change.py
and the capture-side refusals of producers/ddl_trigger.py. Nothing running."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal import schema_change
from journal.catalog import Catalog, ColumnEntry, TableEntry, TypeEntry
from journal.errors import RestoreError, ValidationError
from producers.ddl_trigger import SchemaChangeRefused, refuse_inexact, value_preserving
from restorer import ddl
from restorer.evolve import EnumColumn, LiveKeys, enum_statements, key_statements, table_statements


def _col(attnum: int, name: str, pg_type: str = "integer", oid: int = 23, *,
         not_null: bool = False, default: str | None = None, identity: str = "",
         generated: str = "") -> dict[str, Any]:
    return {"attnum": attnum, "name": name, "pg_type": pg_type, "type_oid": oid,
            "not_null": not_null, "default": default, "identity": identity,
            "generated": generated}


def _table(name: str, *columns: dict[str, Any], pk: tuple[str, ...] = ("id",),
           **extra: Any) -> dict[str, Any]:
    return {"oid": 1, "schema": "public", "name": name, "columns": list(columns),
            "primary_key": list(pk), "constraints": [], "indexes": [], "foreign_keys": [],
            "sequences": [], **extra}


DOC = _table("doc", _col(1, "id", not_null=True), _col(2, "title", "text", 25),
             _col(3, "n"))


def _entry(data: dict[str, Any]) -> TableEntry:
    return TableEntry.parse(data)


def _enum(data: dict[str, Any]) -> TypeEntry:
    return TypeEntry.parse({"kind": "enum", **data}, "type")


def _texts(statements: list[Any]) -> list[str]:
    for s in statements:  # every statement passes the package DDL check
        ddl.check(s.kind, s.text, s.schema, s.name)
    return [s.text for s in statements]


def test_renamed_column_is_renamed_not_dropped_and_added() -> None:
    new = copy.deepcopy(DOC)
    new["columns"][1]["name"] = "heading"
    assert _texts(table_statements(_entry(DOC), _entry(new), {})) == [
        'ALTER TABLE ONLY "public"."doc" RENAME COLUMN "title" TO "heading"']


def test_swapped_column_names_move_one_aside_first() -> None:
    new = copy.deepcopy(DOC)
    new["columns"][1]["name"], new["columns"][2]["name"] = "n", "title"
    new["columns"][1]["pg_type"], new["columns"][2]["pg_type"] = "text", "integer"
    texts = _texts(table_statements(_entry(DOC), _entry(new), {}))
    assert texts == [
        'ALTER TABLE ONLY "public"."doc" RENAME COLUMN "title" TO "title_journal_2"',
        'ALTER TABLE ONLY "public"."doc" RENAME COLUMN "n" TO "title"',
        'ALTER TABLE ONLY "public"."doc" RENAME COLUMN "title_journal_2" TO "n"']


def test_column_dropped_and_another_added_under_its_name_are_two_columns() -> None:
    new = _table("doc", _col(1, "id", not_null=True), _col(3, "n"), _col(4, "title"))
    assert _texts(table_statements(_entry(DOC), _entry(new), {})) == [
        'ALTER TABLE ONLY "public"."doc" DROP COLUMN "title"',
        'ALTER TABLE ONLY "public"."doc" ADD COLUMN "title" integer']


def test_added_column_gets_the_value_old_rows_hold_then_its_own_default() -> None:
    new = copy.deepcopy(DOC)
    new["columns"].append(_col(4, "born", "date", 1082, not_null=True,
                               default="CURRENT_DATE"))
    new["columns"].append(_col(5, "colour", "text", 25))
    texts = _texts(table_statements(_entry(DOC), _entry(new),
                                    {"born": "2020-01-02", "colour": "red"}))
    assert texts == [
        "ALTER TABLE ONLY \"public\".\"doc\" ADD COLUMN \"born\" date DEFAULT "
        "'2020-01-02'::date NOT NULL",
        'ALTER TABLE ONLY "public"."doc" ALTER COLUMN "born" SET DEFAULT CURRENT_DATE',
        "ALTER TABLE ONLY \"public\".\"doc\" ADD COLUMN \"colour\" text DEFAULT 'red'::text",
        'ALTER TABLE ONLY "public"."doc" ALTER COLUMN "colour" DROP DEFAULT']


def test_type_default_and_not_null_changes() -> None:
    new = copy.deepcopy(DOC)
    new["columns"][2].update(pg_type="bigint", type_oid=20, not_null=True, default="0")
    new["columns"][1]["default"] = None
    assert _texts(table_statements(_entry(DOC), _entry(new), {})) == [
        'ALTER TABLE ONLY "public"."doc" ALTER COLUMN "n" TYPE bigint',
        'ALTER TABLE ONLY "public"."doc" ALTER COLUMN "n" SET DEFAULT 0',
        'ALTER TABLE ONLY "public"."doc" ALTER COLUMN "n" SET NOT NULL']


def test_renamed_table_is_renamed_before_its_columns_change() -> None:
    new = copy.deepcopy(DOC)
    new["name"] = "document"
    new["columns"][2]["not_null"] = True
    assert _texts(table_statements(_entry(DOC), _entry(new), {})) == [
        'ALTER TABLE ONLY "public"."doc" RENAME TO "document"',
        'ALTER TABLE ONLY "public"."document" ALTER COLUMN "n" SET NOT NULL']


def test_catalog_without_attnums_is_refused_rather_than_guessed() -> None:
    old = copy.deepcopy(DOC)
    for c in old["columns"]:
        del c["attnum"]
    with pytest.raises(RestoreError, match="without attnums"):
        table_statements(_entry(old), _entry(DOC), {})


def test_replaced_primary_key_drops_the_dependents_first_then_adds() -> None:
    old_pk = 'ALTER TABLE ONLY "public"."doc" ADD CONSTRAINT "doc_pkey" PRIMARY KEY (id)'
    unique = 'ALTER TABLE ONLY "public"."doc" ADD CONSTRAINT "doc_n_key" UNIQUE (n)'
    new_pk = 'ALTER TABLE ONLY public.doc ADD CONSTRAINT doc_pkey PRIMARY KEY (title)'
    entry = _table("doc", _col(1, "id"), _col(2, "title", "text", 25), pk=("title",),
                   constraints=[new_pk])
    live = LiveKeys({old_pk: "doc_pkey", unique: "doc_n_key"}, {}, {})
    assert _texts(key_statements(_entry(entry), live)) == [
        'ALTER TABLE ONLY "public"."doc" DROP CONSTRAINT "doc_n_key"',
        'ALTER TABLE ONLY "public"."doc" DROP CONSTRAINT "doc_pkey"',
        new_pk]


def test_unchanged_keys_are_left_alone() -> None:
    pk = 'ALTER TABLE ONLY public.doc ADD CONSTRAINT doc_pkey PRIMARY KEY (id)'
    index = "CREATE INDEX doc_title ON public.doc USING btree (title)"
    entry = _table("doc", _col(1, "id"), constraints=[pk], indexes=[index])
    live = LiveKeys({pk: "doc_pkey"}, {}, {index: "doc_title"})
    assert key_statements(_entry(entry), live) == []
    assert _texts(key_statements(_entry(entry), LiveKeys({pk: "doc_pkey"}, {}, {}))) == [index]


def test_enum_with_a_new_value_is_rebuilt_and_its_columns_converted() -> None:
    new = {"schema": "public", "name": "mood", "labels": ["calm", "busy", "angry"],
           "ddl": "CREATE TYPE public.mood AS ENUM ('calm', 'busy', 'angry')"}
    columns = [EnumColumn("public", "doc", "m", False, True),
               EnumColumn("public", "doc", "ms", True, False)]
    texts = _texts(enum_statements(["calm", "busy"], _enum(new), columns,
                                   {("public", "doc", "m"): "'calm'::public.mood"}))
    assert texts == [
        'ALTER TYPE "public"."mood" RENAME TO "mood_journal_old"',
        new["ddl"],
        'ALTER TABLE ONLY "public"."doc" ALTER COLUMN "m" DROP DEFAULT',
        'ALTER TABLE ONLY "public"."doc" ALTER COLUMN "m" TYPE "public"."mood" '
        'USING "m"::text::"public"."mood"',
        "ALTER TABLE ONLY \"public\".\"doc\" ALTER COLUMN \"m\" SET DEFAULT 'calm'::public.mood",
        'ALTER TABLE ONLY "public"."doc" ALTER COLUMN "ms" TYPE "public"."mood"[] '
        'USING "ms"::text[]::"public"."mood"[]',
        'DROP TYPE "public"."mood_journal_old"']
    assert enum_statements(new["labels"], _enum(new), columns, {}) == []


def test_enum_that_lost_a_value_is_refused() -> None:
    new = {"schema": "public", "name": "mood", "labels": ["calm"], "ddl": "x"}
    with pytest.raises(RestoreError, match="lost values"):
        enum_statements(["calm", "busy"], _enum(new), [], {})


def test_ddl_check_refuses_an_alter_naming_another_table() -> None:
    with pytest.raises(ValidationError, match="names another object"):
        ddl.check("alter table", 'ALTER TABLE ONLY "public"."other" DROP COLUMN "x"',
                  "public", "doc")
    with pytest.raises(ValidationError, match="not a drop table"):
        ddl.check("drop table", 'DROP TABLE "public"."doc" CASCADE; DROP TABLE x',
                  "public", "doc")


# -- capture-side refusals ---------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "kept"), [
    ("integer", "bigint", True), ("smallint", "integer", True), ("bigint", "integer", False),
    ("character varying(10)", "text", True), ("text", "character varying", True),
    ("numeric(10,2)", "numeric(12,2)", True), ("numeric(10,2)", "numeric(10,3)", False),
    ("integer", "text", False), ("timestamp(6) without time zone", "date", False)])
def test_type_changes_that_keep_every_value(old: str, new: str, kept: bool) -> None:
    oids = {"integer": 23, "bigint": 20, "smallint": 21, "text": 25, "date": 1082}
    def column(t: str) -> ColumnEntry:
        oid = oids.get(t, 1043 if t.startswith("character varying") else
                       1700 if t.startswith("numeric") else 1114)
        return ColumnEntry("c", t, oid)
    assert value_preserving(column(old), column(new)) is kept


def test_column_added_with_a_volatile_default_to_a_table_with_rows_is_refused() -> None:
    new = copy.deepcopy(DOC)
    new["columns"].append(_col(4, "r", "double precision", 701, default="random()"))
    old, added = _entry(DOC), _entry(new)
    with pytest.raises(SchemaChangeRefused, match="volatile default"):
        refuse_inexact("public.doc", old, added, True, {}, "ALTER TABLE doc ADD r ...")
    refuse_inexact("public.doc", old, added, False, {}, "")  # no rows: nothing rewritten
    refuse_inexact("public.doc", old, added, True, {"r": "0.5"}, "")  # a fast default


def test_type_change_with_using_is_refused_even_when_widening() -> None:
    new = copy.deepcopy(DOC)
    new["columns"][2].update(pg_type="bigint", type_oid=20)
    old, retyped = _entry(DOC), _entry(new)
    refuse_inexact("public.doc", old, retyped, True, {}, "ALTER TABLE doc ALTER n TYPE bigint")
    with pytest.raises(SchemaChangeRefused, match="changed type from integer to bigint"):
        refuse_inexact("public.doc", old, retyped, True, {},
                       "ALTER TABLE doc ALTER n TYPE bigint USING n * 2")


# -- what a CATALOG message means ----------------------------------------------------------

def _message(catalog: dict[str, Any], change: dict[str, Any] | None) -> bytes:
    data: dict[str, Any] = {"catalog": catalog}
    if change is not None:
        data["change"] = change
    return json.dumps(data).encode()


def test_catalog_message_changes_only_the_tables_it_names() -> None:
    tag = _table("tag", _col(1, "id"))
    previous = {"types": [], "tables": {"public.doc": DOC, "public.tag": tag}}
    ahead = copy.deepcopy(DOC)  # what capture believed of doc: not part of this change
    ahead["columns"].append(_col(9, "later"))
    renamed = copy.deepcopy(tag)
    renamed["name"] = "label"
    message = _message({"types": [], "tables": {"public.doc": ahead, "public.label": renamed}},
                       {"tables": ["public.label"], "renamed": {"public.tag": "public.label"}})
    after, change = schema_change.apply(Catalog.parse(previous), message, "here")
    assert after.to_json()["tables"] == {"public.doc": DOC, "public.label": renamed}
    assert change.touches("public.tag") and change.touches("public.label")
    assert previous["tables"]["public.tag"] == tag  # the previous catalog is not changed


def test_catalog_message_without_a_change_record_replaces_the_catalog() -> None:
    previous = {"types": [], "tables": {"public.doc": DOC}}
    new = {"types": [], "tables": {"public.tag": _table("tag", _col(1, "id"))}}
    after, change = schema_change.apply(Catalog.parse(previous), _message(new, None), "here")
    assert after.to_json() == new and change.dropped == ("public.doc",)
    assert change.tables == ("public.tag",)


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(), st.floats(allow_nan=False),
    st.binary(), st.dates(), st.times(), st.datetimes(),
    st.datetimes(timezones=st.just(UTC)), st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(), st.lists(st.integers() | st.none(), max_size=4))


@given(_VALUES)
def test_missing_values_survive_json(value: Any) -> None:
    encoded = json.loads(json.dumps(schema_change.encode_value(value)))
    assert schema_change.decode_value(encoded) == value


def test_special_floats_survive_json() -> None:
    for value in (float("inf"), float("-inf")):
        assert schema_change.decode_value(schema_change.encode_value(value)) == value
    nan = schema_change.decode_value(schema_change.encode_value(float("nan")))
    assert nan != nan
    for value in (date(2020, 1, 2), time(1, 2, 3), datetime(2020, 1, 2, tzinfo=UTC),
                  Decimal("1.50"), uuid.uuid4(), b"\x00\xff"):
        assert type(schema_change.decode_value(schema_change.encode_value(value))) is type(value)
