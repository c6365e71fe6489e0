"""The C writer of rows (``journal/codec/_fastwrite.pyx``) writes exactly the bytes of
fastavro's ``schemaless_writer`` and of the Python writers it replaces; on any value they
would not write alike it raises Unhandled (and nothing else), so its callers fall back to
fastavro, which then writes or refuses the value exactly as without the C writer.
"""

from __future__ import annotations

import io
import math
import struct
import tempfile
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.support.every_type as fast
from journal.catalog import has_text_fallback
from journal.codec import (
    SchemaRegistry,
    encode_generic,
    from_avro_row,
    row_writer,
    table_row_writer,
    to_avro_row,
)
from journal.codec import encoder as codec_encoder
from journal.codec.encoder import ChangeEncoder
from journal.codec.wire import Unhandled
from journal.events import ChangeEvent
from journal.packages.builder import RowWriter
from journal.packages.ocf import OcfWriter
from journal.positions import Position
from tests.support.ci import unavailable

SETTINGS = fast.SETTINGS
TABLE = fast.TABLE


@pytest.fixture(autouse=True, scope="module")
def _c_writer_built() -> None:
    if not codec_encoder.IN_C:
        unavailable("journal.codec._fastwrite is not built: reinstall (pip install -e .) "
                    "with a C compiler and Python's headers (gcc libc6-dev python3-dev)")


def writers(schema: Any) -> tuple[Any, Any]:
    """(C writer, Python writer) of one record of ``schema`` (as fastavro parses it)."""
    in_c, in_python = row_writer(schema), row_writer(schema, in_c=False)
    assert in_c is not None and in_python is not None
    return in_c, in_python


def fastavro_writes(schema: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, datum)
    return buf.getvalue()


def outcome(write: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "bytes", write(*args)
    except Exception as exc:
        return "raises", type(exc)


def as_ocf_writes(write_c: Any, schema: Any, datum: Any) -> tuple[str, Any]:
    """What OcfWriter.append does: the C writer, fastavro on Unhandled (only)."""
    try:
        return "bytes", write_c(datum)
    except Unhandled:
        return outcome(fastavro_writes, schema, datum)


ROW_SCHEMA = fastavro.parse_schema(TABLE.avro_row_schema())
WRITE_C, WRITE_PYTHON = writers(ROW_SCHEMA)


# -- valid rows: C == Python == fastavro, and they read back -------------------------------

def with_text_values(row: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of a row's values as PostgreSQL text where their column has a text branch."""
    choices = {}
    for c in TABLE.columns:
        value = row[c.name]
        if has_text_fallback(c.type_oid) and c.name not in TABLE.primary_key:
            choices[c.name] = st.one_of(st.just(value), st.sampled_from(
                ["infinity", "-infinity", "0044-03-15 BC", "NaN", "{1,2}"]))
        else:
            choices[c.name] = st.just(value)
    return st.fixed_dictionaries(choices)


journal_rows = fast.rows.flatmap(with_text_values)


def read_back(data: bytes) -> Any:
    return from_avro_row(TABLE, fastavro.schemaless_reader(io.BytesIO(data), ROW_SCHEMA, None))


def as_read(column: Any, value: Any, item: bool = False) -> Any:
    """A journal value as the row schema reads it back."""
    if isinstance(value, list):
        return [as_read(column, v, True) for v in value]
    if isinstance(value, str) and (column.type_oid == 2950 or item and column.type_oid == 2951):
        return UUID(value)  # a uuid's text, not PostgreSQL's text form of the column
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, float) and column.type_oid in (700, 1021):
        return struct.unpack("<f", struct.pack("<f", value))[0]
    return value


def same_value(got: Any, want: Any) -> bool:
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            same_value(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, UUID) and isinstance(got, str):
        return UUID(got) == want
    return bool(got == want)


@SETTINGS
@given(journal_rows)
def test_rows_of_every_column_type_write_alike_in_c_python_and_fastavro(row: dict) -> None:
    datum = to_avro_row(TABLE, row)
    got = WRITE_C(datum)
    assert got == WRITE_PYTHON(datum)
    assert got == fastavro_writes(ROW_SCHEMA, datum)
    back = read_back(got)
    for c in TABLE.columns:
        want = as_read(c, row[c.name])
        assert same_value(back[c.name], want), (c.name, back[c.name], want)


TABLE_ROW_C, TABLE_ROW_PYTHON = table_row_writer(TABLE), table_row_writer(TABLE, in_c=False)


@SETTINGS
@given(journal_rows)
def test_journal_rows_write_as_fastavro_writes_their_datum(row: dict) -> None:
    got = TABLE_ROW_C(row)
    assert got == TABLE_ROW_PYTHON(row)
    assert got == fastavro_writes(ROW_SCHEMA, to_avro_row(TABLE, row))


# every kind the C writer writes itself, not nullable, and delegated ones beside them
PLAIN = fastavro.parse_schema({"type": "record", "name": "Plain", "fields": [
    *fast.PLAIN_FIELDS,
    {"name": "longs", "type": {"type": "array", "items": ["null", "long"]}},
]})
PLAIN_C, PLAIN_PYTHON = writers(PLAIN)
plain_rows = st.fixed_dictionaries({
    "long": fast.longs, "int": st.integers(-2**31, 2**31 - 1), "string": fast.text,
    "bytes": st.binary(max_size=20), "boolean": st.booleans(),
    "float": st.floats(width=32), "double": st.floats(), "date": st.dates(),
    "ts": fast.aware, "local": st.one_of(fast.naive, fast.aware), "uuid": st.uuids(),
    "amount": fast.decimals(12, 2), "clock": st.times(),
    "longs": st.lists(st.none() | fast.longs, max_size=3),
})


@SETTINGS
@given(plain_rows)
def test_rows_without_nulls_write_alike_in_c_python_and_fastavro(row: dict) -> None:
    got = PLAIN_C(row)
    assert got == PLAIN_PYTHON(row)
    assert got == fastavro_writes(PLAIN, row)


# -- change events: the row images in C, the same (key, value) as in Python ---------------

def change_encoders(table: Any) -> tuple[ChangeEncoder, ChangeEncoder, SchemaRegistry]:
    registry = SchemaRegistry()
    fp, parsed, key_schema = registry.for_table(table)
    in_c = ChangeEncoder(table, fp, parsed, key_schema)
    in_python = ChangeEncoder(table, fp, parsed, key_schema, in_c=False)
    return in_c, in_python, registry


ENCODE_C, ENCODE_PYTHON, REGISTRY = change_encoders(TABLE)


def test_change_events_have_their_rows_written_in_c_unless_told_not_to() -> None:
    assert ENCODE_C.write_row is not None and ENCODE_C.write_change is not None
    assert ENCODE_PYTHON.write_row is None and ENCODE_PYTHON.write_change is None


def encoded(encoder: ChangeEncoder, record: ChangeEvent) -> tuple[str, Any]:
    """What ``encode`` does with this encoder: it, then the reference path on any error."""
    try:
        return "bytes", encoder.encode(record)
    except Exception:
        return outcome(encode_generic, record, REGISTRY)


@SETTINGS
@given(journal_rows, journal_rows, fast.positions, fast.longs, fast.longs,
       st.lists(st.sampled_from(TABLE.column_names), max_size=3), st.sampled_from("crud"))
def test_change_events_encode_alike_with_rows_in_c_in_python_and_in_fastavro(
        before: dict, after: dict, position: Position, xid: int, commit_ts: int,
        toast: list[str], op: str) -> None:
    event = fast.change(op, before if op in "ud" else None, after if op != "d" else None,
                        position, xid, commit_ts, tuple(toast))
    # every value here is one the C path writes; the Python path leaves text values in
    # typed columns to fastavro
    got = ENCODE_C.encode(event)
    assert got == encode_generic(event, REGISTRY)
    assert ("bytes", got) == encoded(ENCODE_PYTHON, event)
    assert got == ENCODE_C.encode_in_python(event)  # C rows, the envelope in Python


# envelope fields the C envelope writes or leaves: the reference path's outcome either way
ODD_ENVELOPES = [
    {"commit_ts": datetime(2024, 5, 1, tzinfo=UTC)}, {"commit_ts": True}, {"xid": 1 << 64},
    {"xid": -(1 << 63)}, {"ts_ms": None}, {"ts_ms": 1.5}, {"snapshot": 1}, {"snapshot": True},
    {"op": None}, {"op": "r"}, {"database": b"db"}, {"database": "d\udc80"},
    {"unchanged_toast": ["txt"]}, {"unchanged_toast": ("txt", 3)},
    {"unchanged_toast": ("txt", "bin")}, {"position": Position(1 << 63, 1)},
    {"position": Position(5, -1)},
]


@pytest.mark.parametrize("change", ODD_ENVELOPES, ids=repr)
def test_a_change_with_an_odd_envelope_encodes_or_raises_as_the_python_envelope(
        change: dict) -> None:
    from dataclasses import replace

    row = odd_row("num", 3)
    for event in (fast.change("c", None, row, Position(5, 1), 7, 9),
                  fast.change("d", row, None, Position(5, 1), 7, 9)):
        try:
            event = replace(event, **change)
        except Exception:  # a field the dataclass refuses itself
            continue
        expected = encoded(ENCODE_PYTHON, event)
        assert encoded(ENCODE_C, event) == expected
        try:
            in_python = ("bytes", ENCODE_C.encode_in_python(event))
        except Exception:
            in_python = outcome(encode_generic, event, REGISTRY)
        assert in_python == expected


# -- values refused: the same outcome as without the C writer ------------------------------

AWARE = datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))


class Text(str):
    pass


class Day(date):
    pass


class NoOffset(tzinfo):
    """A tzinfo that knows no offset: the datetime is aware in form only."""

    def utcoffset(self, dt: Any) -> Any:
        return None


# (column, value) pairs no typed branch of the column holds, or only after a conversion
# fastavro makes and the compiled writers do not
ODD_VALUES = [
    ("id", 2**63), ("id", -2**63 - 1), ("id", True), ("id", 1.0), ("id", "7"),
    ("num", 2**31), ("num", -2**31 - 1), ("num", False), ("small", 2**40),
    ("real", 1e300), ("real", -1e300), ("real", 3), ("real", math.inf), ("real", math.nan),
    ("double", -math.inf), ("double", math.nan), ("double", 2), ("double", Decimal(1)),
    ("flag", 1), ("flag", 0), ("flag", None),
    ("code", "\ud800"), ("code", b"x"), ("code", Text("x")), ("varchar", "a\udfffb"),
    ("blob", bytearray(b"x")), ("blob", memoryview(b"xy")), ("blob", "x"),
    ("day", datetime(2024, 5, 1)), ("day", Day(2024, 5, 1)), ("day", 19000),
    ("day", "2024-05-01"), ("day", "infinity"),
    ("created", datetime(2024, 5, 1)), ("created", date(2024, 5, 1)), ("created", 5),
    ("created", AWARE.replace(tzinfo=NoOffset())), ("created", "infinity"),
    ("local", AWARE), ("local", date(2024, 5, 1)), ("local", "-infinity"),
    ("uid", "not a uuid"), ("uid", UUID(int=5).bytes), ("uid", 5), ("uid", "\ud800"),
    ("clock", "24:00:00"), ("clock", time(1, 2, tzinfo=UTC)),
    ("amount", Decimal("1e20")), ("amount", Decimal("NaN")), ("amount", 1.5),
    ("nums", [1, "x"]), ("nums", (1, 2)), ("texts", ["\ud800"]), ("blobs", [memoryview(b"x")]),
    ("day", ("string", "infinity")), ("day", ("string", 5)), ("id", ("string", "7")),
    ("day", ("int", 5)), ("day", ("string", "x", "y")), ("code", ("string", "x")),
]


def odd_row(column: str, value: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in TABLE.columns}
    row.update(id=1, code="k", day=date(2024, 5, 1))
    row[column] = value
    return row


@pytest.mark.parametrize(("column", "value"), ODD_VALUES)
def test_a_package_row_the_c_writer_leaves_is_written_or_refused_by_fastavro_alone(
        column: str, value: Any) -> None:
    datum = dict(odd_row(column, value))
    datum[TABLE.avro_field_names()[TABLE.column_names.index(column)]] = value  # unconverted
    got = as_ocf_writes(WRITE_C, ROW_SCHEMA, datum)
    assert got == outcome(fastavro_writes, ROW_SCHEMA, datum)
    try:
        python = WRITE_PYTHON(datum)
    except Exception:
        return
    assert got == ("bytes", python)


@pytest.mark.parametrize(("column", "value"), ODD_VALUES)
def test_a_journal_row_the_c_writer_leaves_is_written_or_refused_as_its_datum_by_fastavro(
        column: str, value: Any) -> None:
    row = odd_row(column, value)
    want = outcome(fastavro_writes, ROW_SCHEMA, to_avro_row(TABLE, row))
    try:
        got = ("bytes", TABLE_ROW_C(row))
    except Unhandled:
        got = want
    assert got == want


@pytest.mark.parametrize(("column", "value"), ODD_VALUES)
def test_the_c_writer_raises_only_unhandled(column: str, value: Any) -> None:
    for row in (odd_row(column, value), to_avro_row(TABLE, odd_row(column, value))):
        for write in (WRITE_C, TABLE_ROW_C):
            try:
                write(row)
            except Unhandled:
                pass


@pytest.mark.parametrize(("column", "value"), ODD_VALUES)
def test_a_change_with_an_odd_value_encodes_or_raises_as_with_rows_in_python(
        column: str, value: Any) -> None:
    row = odd_row(column, value)
    for event in (fast.change("c", None, row, Position(5, 1), 7, 9),
                  fast.change("u", row, odd_row("num", 3), Position(5, 1), 7, 9)):
        assert encoded(ENCODE_C, event) == encoded(ENCODE_PYTHON, event)


def test_rows_that_are_no_dict_or_miss_a_field_are_left_to_fastavro() -> None:
    datum = to_avro_row(TABLE, odd_row("num", None))
    assert datum is not None
    missing = {k: v for k, v in datum.items() if k != "num"}  # a missing nullable is null
    assert as_ocf_writes(WRITE_C, ROW_SCHEMA, missing) == ("bytes", WRITE_C(datum))
    plain = {"long": 1}  # a missing field without a null branch: fastavro's ValueError
    assert as_ocf_writes(PLAIN_C, PLAIN, plain) == outcome(fastavro_writes, PLAIN, plain)
    for odd in (None, [1], "row", tuple(datum.items())):
        with pytest.raises(Unhandled):
            WRITE_C(odd)


# -- the package writer ---------------------------------------------------------------------

@SETTINGS
@given(st.lists(journal_rows, max_size=5))
def test_a_package_member_is_the_same_file_written_in_c_or_by_fastavro(rows: list[dict]
                                                                        ) -> None:
    schema = TABLE.avro_row_schema()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, in_c in (("c.avro", True), ("fastavro.avro", False)):
            writer = OcfWriter(Path(tmp) / name, schema, in_c=in_c)
            for row in rows:
                writer.append(to_avro_row(TABLE, row))  # type: ignore[arg-type]
            writer.append(odd_row("real", 1e300))  # fastavro's, in both
            files.append((writer.close(), (Path(tmp) / name).read_bytes()))
        assert files[0] == files[1]


def test_a_row_written_while_the_same_writer_is_writing_another_leaves_both_intact() -> None:
    # what a thread switch inside a delegate's Python does: the inner write must not reuse
    # the outer write's buffer
    from journal.codec import _fastwrite  # here: without the extension the module skips

    inner: list[bytes] = []

    def nested(value: Any) -> bytes:
        if value:
            inner.append(writer.write({"a": 2**40, "b": 0}))
        return b"\x01\x02"

    program = [("a", "long", False, False, None, None),
               ("b", "delegate", False, False, nested, None)]
    writer = _fastwrite.RowWriter(program)
    assert writer.write({"a": 1, "b": 1}) == b"\x02\x01\x02"
    assert inner == [fastavro_writes(fastavro.parse_schema({
        "type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}),
        {"a": 2**40}) + b"\x01\x02"]


@SETTINGS
@given(st.lists(journal_rows, max_size=5), st.sampled_from(ODD_VALUES))
def test_a_package_member_of_journal_rows_is_the_same_file_written_in_c_or_by_fastavro(
        rows: list[dict], odd: tuple[str, Any]) -> None:
    odd_one = odd_row(*odd)
    try:  # only an odd value fastavro writes: the others fail the member either way
        fastavro_writes(ROW_SCHEMA, to_avro_row(TABLE, odd_one))
    except Exception:
        odd_one = odd_row("num", None)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, in_c in (("c.avro", True), ("fastavro.avro", False)):
            writer = OcfWriter(Path(tmp) / name, TABLE.avro_row_schema(), in_c=in_c)
            member = RowWriter(TABLE, writer)
            for row in [*rows, odd_one]:
                member.write(row)
            files.append((writer.close(), (Path(tmp) / name).read_bytes()))
        assert files[0] == files[1]


# -- decimals: written in C up to 18 digits, by fastavro's conversion beyond ----------------

DECIMALS = fastavro.parse_schema({"type": "record", "name": "Money", "fields": [
    {"name": "p18", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18,
                             "scale": 2}},
    {"name": "p30", "type": {"type": "bytes", "logicalType": "decimal", "precision": 30,
                             "scale": 0}},
]})
EDGE_DECIMALS = [
    Decimal("0"), Decimal("-0"), Decimal("0.00"), Decimal("-0.00"), Decimal("0.01"),
    Decimal("-0.01"), Decimal("1.27"), Decimal("1.28"), Decimal("-1.28"), Decimal("-1.29"),
    Decimal("327.67"), Decimal("-327.68"), Decimal("1E+2"), Decimal("1.5"),
    Decimal("9999999999999999.99"), Decimal("-9999999999999999.99"),
    Decimal("99999999999999999.9"),  # 18 digits at scale 2: 19 digits unscaled, Python's
    Decimal("1.234"),  # a scale beyond the schema's: refused
    Decimal("12345678901234567890"), Decimal("NaN"), Decimal("Infinity"), Decimal("-sNaN"),
]


@pytest.mark.parametrize("value", EDGE_DECIMALS, ids=str)
def test_decimals_write_as_fastavro_writes_them_or_are_refused_alike(value: Decimal) -> None:
    write_c = row_writer(DECIMALS)
    write_python = row_writer(DECIMALS, in_c=False)
    assert write_c is not None and write_python is not None
    for datum in ({"p18": value, "p30": Decimal(7)}, {"p18": Decimal("1.00"), "p30": value}):
        expected = outcome(fastavro_writes, DECIMALS, datum)
        assert as_ocf_writes(write_c, DECIMALS, datum) == expected
        # the Python reference raises where fastavro would (it is never the fallback)
        in_python = outcome(write_python, datum)
        assert in_python == expected if expected[0] == "bytes" else in_python[0] == "raises"


@SETTINGS
@given(st.integers(-(10**18) + 1, 10**18 - 1), st.integers(0, 6))
def test_decimals_up_to_eighteen_digits_write_as_fastavro_writes_them(unscaled: int,
                                                                      shift: int) -> None:
    value = Decimal(unscaled).scaleb(-2 - shift).quantize(Decimal("0.01")) if shift else \
        Decimal(unscaled).scaleb(-2)
    datum = {"p18": value, "p30": Decimal(unscaled)}
    assert as_ocf_writes(row_writer(DECIMALS), DECIMALS, datum) == outcome(
        fastavro_writes, DECIMALS, datum)


def test_a_decimal_of_up_to_eighteen_digits_is_written_without_its_python_writer() -> None:
    from journal.codec import _fastwrite  # here: without the extension the module skips

    called: list[Any] = []

    def python_writer(value: Any) -> bytes:
        called.append(value)
        return codec_encoder._compile(DECIMALS["fields"][1]["type"])(value)

    writer = _fastwrite.RowWriter([("d", "decimal", False, False, python_writer, (30, 0))])
    schema = fastavro.parse_schema({"type": "record", "name": "D", "fields": [
        {"name": "d", "type": DECIMALS["fields"][1]["type"]}]})
    for value in (Decimal(-(10**18) + 1), Decimal(0), Decimal(10**17 + 3)):
        assert writer.write({"d": value}) == fastavro_writes(schema, {"d": value})
    assert called == []
    wide = Decimal(10**18)  # 19 digits: Python's
    assert writer.write({"d": wide}) == fastavro_writes(schema, {"d": wide})
    assert called == [wide]
