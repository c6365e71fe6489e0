"""The C reader of rows and change events (``journal/codec/_fastread.pyx``) reads exactly
what the Python readers it replaces read, and what fastavro reads: values, types and the
position after the record; on any bytes the Python reader refuses it raises Unhandled,
never reading past the buffer.
"""

from __future__ import annotations

import io
import struct
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.support.every_type as fast
from journal.codec import SchemaRegistry, decode_generic, encode, record_reader, to_avro_row
from journal.codec import decoder as codec_decoder
from journal.codec.decoder import compile_decoder
from journal.codec.wire import Unhandled
from journal.positions import Position
from tests.support.ci import unavailable
from tests.support.identical import assert_identical

SETTINGS = fast.SETTINGS
TABLE = fast.TABLE


@pytest.fixture(autouse=True, scope="module")
def _c_reader_built() -> None:
    if not codec_decoder.IN_C:
        unavailable("journal.codec._fastread is not built: reinstall (pip install -e .) "
                    "with a C compiler and Python's headers (gcc libc6-dev python3-dev)")


def readers(schema: Any) -> tuple[Any, Any]:
    """(C reader, Python reader) of one record of ``schema``."""
    parsed = fastavro.parse_schema(schema)
    in_c, in_python = record_reader(parsed), record_reader(parsed, in_c=False)
    assert in_c is not None and in_python is not None
    return in_c, in_python


def fastavro_reads(data: bytes, schema: Any, at: int = 0) -> tuple[Any, int]:
    buf = io.BytesIO(data)
    buf.seek(at)
    return fastavro.schemaless_reader(buf, schema, None), buf.tell()


def written(schema: Any, datums: list[Any]) -> bytes:
    buf = io.BytesIO()
    for datum in datums:
        fastavro.schemaless_writer(buf, schema, datum)
    return buf.getvalue()


def attempt(read: Any, data: bytes, at: int) -> tuple[str, Any]:
    try:
        return "read", read(data, at)
    except Unhandled:
        return "unhandled", None
    except Exception as exc:  # the Python reader: IndexError, struct.error, ...
        return "refused", type(exc)


def assert_c_reads_as_python(in_c: Any, in_python: Any, data: bytes, at: int = 0) -> None:
    """Where the Python reader reads, the C reader reads the same; where it raises, C
    raises Unhandled (nothing else: the callers fall back to fastavro on any exception,
    but a crash or a read past the buffer would be no exception at all)."""
    got, want = attempt(in_c, data, at), attempt(in_python, data, at)
    if want[0] == "read":
        assert got[0] == "read", (got, want)
        assert_identical(got[1], want[1])
    else:
        assert got[0] == "unhandled", (got, want)


# -- valid rows: C == Python == fastavro ----------------------------------------------------

ROW_SCHEMA = fastavro.parse_schema(TABLE.avro_row_schema())
READ_C, READ_PYTHON = readers(ROW_SCHEMA)


@SETTINGS
@given(st.lists(fast.rows, min_size=1, max_size=3))
def test_rows_of_every_column_type_read_alike_in_c_python_and_fastavro(rows: list[dict]
                                                                        ) -> None:
    data = written(ROW_SCHEMA, [to_avro_row(TABLE, row) for row in rows])
    at = 0
    for _ in rows:
        got, end = READ_C(data, at)
        python, python_end = READ_PYTHON(data, at)
        want, want_end = fastavro_reads(data, ROW_SCHEMA, at)
        assert_identical(got, python)
        assert_identical(got, want)
        assert end == python_end == want_end
        at = end
    assert at == len(data)


# every kind the C reader reads itself, not nullable, and as array items
PLAIN = {"type": "record", "name": "Plain", "fields": [
    *fast.PLAIN_FIELDS,
    {"name": "longs", "type": {"type": "array", "items": "long"}},
    {"name": "strings", "type": {"type": "array", "items": "string"}},
    {"name": "dates", "type": {"type": "array", "items": {"type": "int",
                                                          "logicalType": "date"}}},
    {"name": "uuids", "type": {"type": "array", "items": ["null", {
        "type": "string", "logicalType": "uuid"}]}},
    {"name": "amounts", "type": {"type": "array", "items": {
        "type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}}},
    {"name": "nested", "type": {"type": "array", "items": {"type": "array",
                                                           "items": "long"}}},
]}
PLAIN_PARSED = fastavro.parse_schema(PLAIN)
PLAIN_C, PLAIN_PYTHON = readers(PLAIN)
micros = st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999)  # years 1 to 9999
plain_rows = st.fixed_dictionaries({
    "long": fast.longs, "int": st.integers(-2**31, 2**31 - 1), "string": fast.text,
    "bytes": st.binary(max_size=20), "boolean": st.booleans(),
    "float": st.floats(width=32), "double": st.floats(), "date": st.dates(),
    "ts": micros,
    "local": micros, "uuid": st.uuids(), "amount": fast.decimals(12, 2), "clock": st.times(),
    "longs": st.lists(fast.longs, max_size=3), "strings": st.lists(fast.text, max_size=3),
    "dates": st.lists(st.dates(), max_size=3),
    "uuids": st.lists(st.none() | st.uuids(), max_size=3),
    "amounts": st.lists(fast.decimals(12, 2), max_size=3),
    "nested": st.lists(st.lists(fast.longs, max_size=2), max_size=2),
})


@SETTINGS
@given(plain_rows)
def test_rows_without_nulls_read_alike_in_c_python_and_fastavro(row: dict) -> None:
    data = written(PLAIN_PARSED, [row])
    got, end = PLAIN_C(data, 0)
    python, python_end = PLAIN_PYTHON(data, 0)
    want, want_end = fastavro_reads(data, PLAIN_PARSED)
    assert_identical(got, python)
    assert_identical(got, want)
    assert end == python_end == want_end == len(data)


@SETTINGS
@given(fast.rows, fast.rows, fast.positions, fast.longs, fast.longs,
       st.lists(st.sampled_from(TABLE.column_names), max_size=3), st.sampled_from("cud"))
def test_change_events_decode_alike_in_c_python_and_fastavro(
        before: dict, after: dict, position: Position, xid: int, commit_ts: int,
        toast: list[str], op: str) -> None:
    event = fast.change(op, before if op != "c" else None, after if op != "d" else None,
                        position, xid, commit_ts, tuple(toast))
    value, in_c, in_python, registry = change_decoders(event)
    got = in_c(value)
    assert_identical(got, in_python(value))
    assert_identical(got, decode_generic(value, registry))


def change_decoders(event: Any) -> tuple[bytes, Any, Any, SchemaRegistry]:
    registry = SchemaRegistry()
    value = encode(event, registry)[1]
    fp = value[2:10]
    in_c = compile_decoder(fp, registry.parsed(fp), registry.table(fp))
    in_python = compile_decoder(fp, registry.parsed(fp), registry.table(fp), in_c=False)
    assert in_c is not None and in_python is not None and in_c is not in_python
    return value, in_c, in_python, registry


# -- hostile bytes: Unhandled where Python refuses, never past the buffer ------------------

@SETTINGS
@given(fast.rows)
def test_every_truncated_row_is_unhandled(row: dict) -> None:
    data = written(ROW_SCHEMA, [to_avro_row(TABLE, row)])
    for cut in range(len(data)):
        # a fresh object of exactly the cut's length: nothing of the rest to read by mistake
        part = bytes(bytearray(data[:cut]))
        with pytest.raises(Unhandled):
            READ_C(part, 0)
        assert_c_reads_as_python(READ_C, READ_PYTHON, part)


@SETTINGS
@given(plain_rows)
def test_every_truncated_row_without_nulls_is_unhandled(row: dict) -> None:
    data = written(PLAIN_PARSED, [row])
    for cut in range(len(data)):
        with pytest.raises(Unhandled):
            PLAIN_C(data[:cut], 0)


def test_every_truncated_change_event_is_unhandled() -> None:
    row = {c.name: None for c in fast.COLUMNS} | {
        "id": 1, "code": "x" * 30, "day": date(2024, 1, 1), "flag": True, "real": 1.5,
        "created": datetime(2024, 1, 1, 12, tzinfo=UTC), "amount": Decimal("12.34"),
        "texts": ["a", None], "uid": "12345678-1234-5678-1234-567812345678",
        "blob": b"\x00\xff", "flags": [True, None], "nums": [-1], "uids": [UUID(int=7)]}
    event = fast.change("u", row, row, Position(5, 1), 9, 1_000_000, ("json",))
    value, in_c, in_python, _ = change_decoders(event)
    assert_identical(in_c(value), in_python(value))
    for cut in range(len(value)):
        with pytest.raises(Unhandled):
            in_c(value[:cut])
        assert_c_reads_as_python(lambda v, _: in_c(v), lambda v, _: in_python(v),
                                 value[:cut], 0)


@SETTINGS
@given(fast.rows, st.integers(0, 10_000), st.binary(min_size=1, max_size=6), st.booleans())
def test_mutated_rows_read_as_python_or_are_unhandled(row: dict, index: int, patch: bytes,
                                                      insert: bool) -> None:
    data = written(ROW_SCHEMA, [to_avro_row(TABLE, row)])
    index %= len(data)
    end = index if insert else index + len(patch)
    assert_c_reads_as_python(READ_C, READ_PYTHON, data[:index] + patch + data[end:])


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_garbage_reads_as_python_or_is_unhandled(garbage: bytes, plain: bool) -> None:
    if plain:
        assert_c_reads_as_python(PLAIN_C, PLAIN_PYTHON, garbage)
    else:
        assert_c_reads_as_python(READ_C, READ_PYTHON, garbage)


def one_column(avro_type: Any) -> tuple[Any, Any]:
    return readers({"type": "record", "name": "One", "fields": [
        {"name": "v", "type": avro_type}]})


LONG = one_column("long")
NULLABLE_STRING = one_column(["null", "string"])
WITH_TEXT = one_column(["null", {"type": "int", "logicalType": "date"}, "string"])
STRING = one_column("string")
DATE = one_column({"type": "int", "logicalType": "date"})
TIMESTAMP = one_column({"type": "long", "logicalType": "timestamp-micros"})
LOCAL = one_column({"type": "long", "logicalType": "local-timestamp-micros"})
UUIDS = one_column({"type": "string", "logicalType": "uuid"})
STRINGS = one_column({"type": "array", "items": ["null", "string"]})


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


MAX_VARINT = b"\xff" * 9 + b"\x01"  # 64 bits: the least long, -2**63
HOSTILE: list[tuple[tuple[Any, Any], bytes]] = [
    (LONG, b"\x80" * 10 + b"\x00"),  # 11 bytes
    (LONG, b"\xff" * 9 + b"\x02"),  # bit 65
    (LONG, b"\xff" * 9 + b"\x7f"),
    (LONG, b"\xff" * 10),  # a continuation bit on the tenth byte, then the end
    (LONG, b"\x80" * 9),
    (STRING, b"\x01"),  # length -1
    (STRING, zigzag(-2**63)),  # the least length
    (STRING, zigzag(2**62) + b"abc"),  # a length far past the end
    (STRING, b"\x08abc"),  # one byte short
    (STRING, b"\x02\xff"),  # bad UTF-8
    (STRING, b"\x04\xc3\x28"),
    (STRING, b"\x06\xed\xa0\x80"),  # an encoded surrogate
    (STRING, b"\x04\xc3"),  # a sequence cut by the length
    (NULLABLE_STRING, b"\x04\x02a"),  # branch 2 of a two-branch union
    (NULLABLE_STRING, b"\x01"),  # branch -1
    (NULLABLE_STRING, b"\x06"),
    (NULLABLE_STRING, b"\xff\x01"),
    (NULLABLE_STRING, b""),
    (WITH_TEXT, b"\x06\x02"),
    (WITH_TEXT, b"\x04\x02\xff"),  # the text branch, bad UTF-8
    (DATE, zigzag(2_932_897)),  # 10000-01-01
    (DATE, zigzag(-719_163)),  # day 0
    (DATE, MAX_VARINT),
    (TIMESTAMP, zigzag(253_402_300_800_000_000)),  # 10000-01-01
    (TIMESTAMP, zigzag(-62_135_596_800_000_001)),
    (TIMESTAMP, zigzag(2**63 - 1)),
    (LOCAL, MAX_VARINT),
    (UUIDS, b"\x48" + b"g" * 36),  # alphanumeric, not hex
    (UUIDS, b"\x06abc"),
    (UUIDS, b"\x48" + b"\xff" * 36),
    (UUIDS, b"\x4a" + b"1" * 36),  # one byte short
    (STRINGS, b"\x01\x00"),  # a count of -1 (a block with its size: fastavro's)
    (STRINGS, zigzag(2**61) + b"\x00"),  # far more items than bytes
    (STRINGS, b"\x04\x00"),  # two items, one byte
    (STRINGS, b"\x02\x04\x02a"),  # an item's tag 2... its union has two branches: 4
    (STRINGS, b"\x02\x02\x02a"),  # no end of the array
]


@pytest.mark.parametrize("pair,data", HOSTILE)
def test_hostile_bytes_are_unhandled(pair: tuple[Any, Any], data: bytes) -> None:
    in_c, in_python = pair
    with pytest.raises(Unhandled):
        in_c(data, 0)
    assert_c_reads_as_python(in_c, in_python, data)


EDGES: list[tuple[tuple[Any, Any], bytes]] = [
    (LONG, MAX_VARINT), (LONG, b"\xfe" + b"\xff" * 8 + b"\x01"), (LONG, b"\x80\x00"),
    (LONG, b"\x80" * 9 + b"\x00"), (DATE, zigzag(2_932_896)), (DATE, zigzag(-719_162)),
    (TIMESTAMP, zigzag(253_402_300_799_999_999)), (TIMESTAMP, zigzag(-62_135_596_800_000_000)),
    (LOCAL, zigzag(-1)), (TIMESTAMP, zigzag(-86_400_000_001)),
    (UUIDS, b"\x48" + b"{12345678-1234-5678-1234-567812345678}"[1:-1]),
    (UUIDS, b"\x4c{12345678-1234-5678-1234-567812345678}"),
    (UUIDS, b"\x48" + b"-" * 4 + b"aBcDeF0123456789" * 2),
    (WITH_TEXT, b"\x04\x06abc"), (WITH_TEXT, b"\x00"),
    (STRINGS, b"\x03\x04\x00\x02\x02a\x00"),  # a negative count: left to fastavro
    (STRINGS, b"\x02\x00\x04\x02\x02a\x00\x00"),  # two blocks
]


@pytest.mark.parametrize("pair,data", EDGES)
def test_edge_values_read_as_python_reads_them(pair: tuple[Any, Any], data: bytes) -> None:
    assert_c_reads_as_python(*pair, data)


def test_a_position_outside_the_buffer_is_unhandled() -> None:
    for at in (-1, 1, 2, 2**40):
        with pytest.raises(Unhandled):
            LONG[0](b"\x02", at)


def test_float_bits_come_out_as_struct_reads_them() -> None:
    in_c, in_python = one_column("float")
    for bits in (0x7FA00000, 0xFFC00001, 0x00000001, 0x7F800000):
        data = struct.pack("<I", bits)
        assert_identical(in_c(data, 0), in_python(data, 0))
        assert_identical(in_c(data, 0)[0]["v"], struct.unpack("<f", data)[0])


def test_the_c_reader_is_the_default_and_python_reads_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(READ_C.__self__, codec_decoder._fastread.RowReader)
    data = written(ROW_SCHEMA, [to_avro_row(TABLE, {c.name: None for c in fast.COLUMNS})])
    monkeypatch.setattr(codec_decoder, "_fastread", None)  # as built without a compiler
    fallback = record_reader(ROW_SCHEMA)
    assert fallback is not None and not hasattr(fallback, "__self__")
    assert_identical(fallback(data, 0), READ_C(data, 0))
