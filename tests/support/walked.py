"""Rows, records and packages for the tests of the C walk over a block's rows and of COPY
text written from Avro bytes: a schema of every kind keys are ordered by, a small table,
its records damaged in every way a member can be, and a package holding exactly them."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import UUID

import fastavro
from hypothesis import strategies as st

import tests.support.every_type as fast
from journal.catalog import Column, TableSchema
from journal.codec import record_reader, table_row_writer, to_avro_row
from journal.codec.wire import Unhandled
from journal.packages import PackageBuilder
from journal.packages.reader import sort_key
from journal.positions import Position


def written(schema: Any, datums: list[Any]) -> list[bytes]:
    out = []
    for datum in datums:
        buf = io.BytesIO()
        # a str in a date or timestamp column is its text form: the third branch
        datum = {k: ("string", v) if k in ("day", "ts") and type(v) is str else v
                 for k, v in datum.items()}
        fastavro.schemaless_writer(buf, schema, datum)
        out.append(buf.getvalue())
    return out


def arranged(schema: Any, records: list[bytes], key_columns: tuple[int, ...],
             in_order: bool) -> list[bytes]:
    """The records, sorted by their keys when ``in_order`` (and the keys compare)."""
    if not in_order or not key_columns:
        return records
    read = record_reader(schema)
    assert read is not None
    names = [f["name"] for f in schema["fields"]]

    def key(record: bytes) -> Any:
        datum = read(record, 0)[0]
        return sort_key(tuple(datum[names[i]] for i in key_columns))

    try:
        return sorted(records, key=key)
    except (TypeError, InvalidOperation):
        return records


DATE = {"type": "int", "logicalType": "date"}
TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}
UUID_TYPE = {"type": "string", "logicalType": "uuid"}
# every kind the walk orders in C, nullable and with the text branch, and some it orders
# by building values (double, decimal, time, array)
KEYED = fastavro.parse_schema({"type": "record", "name": "Keyed", "fields": [
    {"name": "n", "type": "long"},
    {"name": "maybe", "type": ["null", "long"]},
    {"name": "s", "type": "string"},
    {"name": "ms", "type": ["null", "string"]},
    {"name": "b", "type": "bytes"},
    {"name": "flag", "type": "boolean"},
    {"name": "day", "type": ["null", DATE, "string"]},
    {"name": "ts", "type": ["null", TIMESTAMP, "string"]},
    {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    {"name": "u", "type": UUID_TYPE},
    {"name": "mu", "type": ["null", UUID_TYPE]},
    {"name": "x", "type": "double"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4,
                                "scale": 2}},
    {"name": "clock", "type": {"type": "long", "logicalType": "time-micros"}},
    {"name": "longs", "type": {"type": "array", "items": "long"}},
]})
KEYED_FIELDS = len(KEYED["fields"])

# small domains, so that keys tie and composite keys are compared column after column
small_longs = st.integers(-2, 2) | fast.longs
small_text = st.sampled_from(["", "a", "ab", "b", "\x00", "a\x00", "é", "z", "\uffff",
                              "\U0001f600"]) | fast.text
uuids = st.sampled_from([UUID(int=0), UUID(int=1), UUID(int=2**127),
                         UUID(int=2**128 - 1)]) | st.uuids()
uuid_texts = st.one_of(  # every spelling _read_uuid reads: plain, upper case, braces, urn
    uuids, uuids.map(str), uuids.map(lambda u: u.hex), uuids.map(lambda u: str(u).upper()),
    uuids.map(lambda u: "{" + str(u) + "}"), uuids.map(lambda u: u.urn))
days = st.sampled_from([date(1, 1, 1), date(1970, 1, 1), date(9999, 12, 31)]) | st.dates()
instants = st.sampled_from([datetime(1970, 1, 1, tzinfo=UTC),
                            datetime(2024, 1, 1, tzinfo=UTC)]) | fast.aware
text_forms = st.sampled_from(["infinity", "-infinity", "0044-03-15 BC"])
keyed_rows = st.fixed_dictionaries({
    "n": small_longs, "maybe": st.none() | small_longs, "s": small_text,
    "ms": st.none() | small_text, "b": st.sampled_from([b"", b"\x00", b"\x00\x00", b"\xff",
                                                         b"a"]) | st.binary(max_size=8),
    "flag": st.booleans(), "day": st.none() | days | text_forms,
    "ts": st.none() | instants | text_forms,
    "local": st.integers(-2, 2) | st.integers(-62_135_596_800_000_000,
                                              253_402_300_799_999_999),
    "u": uuid_texts, "mu": st.none() | uuid_texts,
    "x": st.sampled_from([0.0, -0.0, 1.5, float("nan"), float("inf")]) | st.floats(),
    "amount": st.sampled_from([Decimal("0.00"), Decimal("-1.50"), Decimal("99.99")]),
    "clock": st.sampled_from([time(0), time(12, 30)]) | st.times(),
    "longs": st.lists(st.integers(-2, 2), max_size=2),
})


# -- a small table and its packages -----------------------------------------------------

TABLE = TableSchema("public", "walked", (
    Column("id", "bigint", 20, True),
    Column("title", "text", 25, False),
    Column("day", "date", 1082, False),
    Column("uid", "uuid", 2950, False),
), ("id",))
TABLE_SCHEMA = fastavro.parse_schema(TABLE.avro_row_schema())
WRITE_ROW = table_row_writer(TABLE)


def encoded(row: dict[str, Any]) -> bytes:
    try:
        return WRITE_ROW(row)
    except Unhandled:  # a value the C writer leaves to fastavro
        return written(TABLE_SCHEMA, [to_avro_row(TABLE, row)])[0]


titles = st.sampled_from(["", "a", "é", "title"]) | fast.text


def damaged_blocks(rows: list[tuple], in_order: bool, per_block: int, how: str, index: int,
                   patch: bytes) -> list[list[bytes]]:
    """The rows' records in blocks of ``per_block``, the one at ``index`` damaged ``how``:
    cut, a bit flipped, patched over, with trailing bytes, merged with the next."""
    records = [encoded({"id": i, "title": t, "day": d, "uid": u}) for i, t, d, u in rows]
    records = arranged(TABLE_SCHEMA, records, (0,), in_order)
    index %= len(records)
    record = records[index]
    at = index % len(record)
    if how == "cut":
        records[index] = record[:at]
    elif how == "flip":
        records[index] = record[:at] + bytes([record[at] ^ patch[0]]) + record[at + 1:]
    elif how == "patch":
        records[index] = record[:at] + patch + record[at + len(patch):]
    elif how == "trailing":
        records[index] = record + patch
    elif how == "merge" and index + 1 < len(records):  # two records counted as one
        records[index:index + 2] = [record + records[index + 1]]
    blocks = [records[i:i + per_block] for i in range(0, len(records), per_block)]
    return blocks


def package(tmp_path: Path, blocks: list[list[bytes]]) -> Path:
    """A full package whose table member holds exactly these blocks of records."""
    builder = PackageBuilder("full", tmp_path)
    rows = builder.table(TABLE)
    member = rows._writer
    for block in blocks:
        for record in block:
            member.append_encoded(record)
        member._flush_block()
    tmp, manifest = builder.finish(system_identifier="1", database="db", generation="g",
                                   to_position=Position(1 << 32, 1), first_commit_ts=0,
                                   last_commit_ts=0)
    return tmp
