"""The every-type table and hypothesis strategies for its rows and change events: every
column type the catalog maps, shared by the codec's encoder and decoder tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from journal.catalog import Column, TableSchema
from journal.events import ChangeEvent
from journal.positions import Position

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
ENUM_OID = 16_390

# every OID of catalog._SCALARS and ARRAY_ELEMENTS, a constrained and an unconstrained
# numeric, a user type (text), and a column name that is no Avro name
COLUMNS = (
    Column("id", "bigint", 20, True),
    Column("code", "text", 25, True),
    Column("flag", "boolean", 16),
    Column("small", "smallint", 21),
    Column("num", "integer", 23),
    Column("real", "real", 700),
    Column("double", "double precision", 701),
    Column("varchar", "character varying(40)", 1043),
    Column("bpchar", "character(3)", 1042),
    Column("name", "name", 19),
    Column("blob", "bytea", 17),
    Column("day", "date", 1082),
    Column("clock", "time without time zone", 1083),
    Column("local", "timestamp without time zone", 1114),
    Column("created", "timestamp with time zone", 1184),
    Column("uid", "uuid", 2950),
    Column("json", "json", 114),
    Column("jsonb", "jsonb", 3802),
    Column("amount", "numeric(12,2)", 1700),
    Column("wide", "numeric(38,0)", 1700),
    Column("any_numeric", "numeric", 1700),
    Column("status", "document_status", ENUM_OID),
    Column("order id", "integer", 23),
    Column("flags", "boolean[]", 1000),
    Column("smalls", "smallint[]", 1005),
    Column("nums", "integer[]", 1007),
    Column("bigs", "bigint[]", 1016),
    Column("reals", "real[]", 1021),
    Column("doubles", "double precision[]", 1022),
    Column("texts", "text[]", 1009),
    Column("varchars", "character varying(9)[]", 1015),
    Column("bpchars", "character(2)[]", 1014),
    Column("blobs", "bytea[]", 1001),
    Column("days", "date[]", 1182),
    Column("clocks", "time without time zone[]", 1183),
    Column("locals", "timestamp without time zone[]", 1115),
    Column("createds", "timestamp with time zone[]", 1185),
    Column("uids", "uuid[]", 2951),
    Column("amounts", "numeric(12,2)[]", 1231),
    Column("jsons", "json[]", 199),
    Column("jsonbs", "jsonb[]", 3807),
)
TABLE = TableSchema("public", "every_type", COLUMNS, ("id", "code", "day"))

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
aware = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.one_of(st.just(UTC), offsets))
naive = st.datetimes()


def decimals(precision: int, scale: int) -> st.SearchStrategy[Decimal]:
    limit = 10**precision - 1
    ends = st.sampled_from([0, 1, -1, limit, -limit])
    return st.one_of(ends, st.integers(-limit, limit)).map(lambda n: Decimal(n).scaleb(-scale))


VALUES: dict[int | str, st.SearchStrategy[Any]] = {
    16: st.booleans(),
    21: st.integers(-2**15, 2**15 - 1),
    23: st.integers(-2**31, 2**31 - 1),
    20: st.integers(-2**63, 2**63 - 1),
    700: st.floats(width=32),  # NaN and infinities included
    701: st.floats(),
    25: text, 1043: text, 1042: text, 19: text, 114: text, 3802: text, ENUM_OID: text,
    17: st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(memoryview)),
    1082: st.dates(),
    1083: st.times(),
    1114: naive,
    1184: aware,
    2950: st.one_of(st.uuids(), st.uuids().map(str)),
    "numeric(12,2)": decimals(12, 2),
    "numeric(38,0)": decimals(38, 0),
    "numeric": st.sampled_from(["NaN", "Infinity", "-0.5", "123456789012345678901234.5"]),
}
ARRAY_ELEMENTS = {1000: 16, 1005: 21, 1007: 23, 1016: 20, 1021: 700, 1022: 701, 1009: 25,
                  1015: 1043, 1014: 1042, 1001: 17, 1182: 1082, 1183: 1083, 1115: 1114,
                  1185: 1184, 2951: 2950, 1231: "numeric(12,2)", 199: 114, 3807: 3802}


def value_of(column: Column) -> st.SearchStrategy[Any]:
    if column.type_oid in ARRAY_ELEMENTS:
        element = VALUES[ARRAY_ELEMENTS[column.type_oid]]
        return st.lists(st.one_of(st.none(), element), max_size=4)
    if column.type_oid == 1700:
        return VALUES[column.pg_type]
    return VALUES[column.type_oid]


def row_of(nullable: bool) -> st.SearchStrategy[dict[str, Any]]:
    fields = {}
    for c in COLUMNS:
        value = value_of(c)
        fields[c.name] = value if c.name in TABLE.primary_key or not nullable else st.one_of(
            st.none(), value)
    return st.fixed_dictionaries(fields)


rows = row_of(nullable=True)
longs = st.integers(-2**63, 2**63 - 1)
positions = st.builds(Position, st.integers(0, 2**64 - 1 >> 1), st.integers(0, 2**31))


def change(op: str, before: dict | None, after: dict | None, position: Position, xid: int,
           commit_ts: int, toast: tuple[str, ...] = (), ts_ms: int = 1_714_564_801_000
           ) -> ChangeEvent:
    return ChangeEvent(op, "edms", TABLE, position, xid, commit_ts, before, after, toast,
                       snapshot=op == "r", ts_ms=ts_ms)


# one field of each kind the compiled codec paths handle, none nullable: the start of the
# "plain" record schemas their tests build
PLAIN_FIELDS: list[dict[str, Any]] = [
    {"name": "long", "type": "long"},
    {"name": "int", "type": "int"},
    {"name": "string", "type": "string"},
    {"name": "bytes", "type": "bytes"},
    {"name": "boolean", "type": "boolean"},
    {"name": "float", "type": "float"},
    {"name": "double", "type": "double"},
    {"name": "date", "type": {"type": "int", "logicalType": "date"}},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    {"name": "uuid", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12,
                                "scale": 2}},
    {"name": "clock", "type": {"type": "long", "logicalType": "time-micros"}},
]
