"""The compiled encoders write exactly the bytes of fastavro's generic writer.

``encode_compiled`` (one encoder built per table version) is checked byte for byte against
``encode_generic`` (fastavro's ``schemaless_writer``) over every column type the catalog
maps, and ``encode`` against ``encode_generic`` for values outside those types, where the
compiled encoders must hand the record to fastavro rather than write something else.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal.codec import SchemaRegistry, encode, encode_compiled, encode_generic
from journal.errors import UnencodableValue
from journal.events import ChangeEvent, LogicalMessage, TransactionMarker
from journal.positions import Position
from tests.support.every_type import (
    COLUMNS,
    SETTINGS,
    TABLE,
    aware,
    change,
    longs,
    naive,
    positions,
    row_of,
    rows,
    text,
)


def assert_same_bytes(record: Any) -> None:
    registry = SchemaRegistry()
    assert encode_compiled(record, registry) == encode_generic(record, registry)


@SETTINGS
@given(st.sampled_from("cr"), rows, positions, longs, longs, longs)
def test_insert_of_every_column_type_is_byte_identical(op: str, row: dict, position: Position,
                                                       xid: int, commit_ts: int, ts_ms: int
                                                       ) -> None:
    assert_same_bytes(change(op, None, row, position, xid, commit_ts, ts_ms=ts_ms))


@SETTINGS
@given(rows, rows, positions, st.lists(st.sampled_from(TABLE.column_names), max_size=3))
def test_update_with_before_image_and_toast_names_is_byte_identical(
        before: dict, after: dict, position: Position, toast: list[str]) -> None:
    assert_same_bytes(change("u", before, after, position, 7, 1_714_564_800_123_456,
                             tuple(toast)))


@SETTINGS
@given(row_of(nullable=False), positions)
def test_delete_with_key_only_before_image_is_byte_identical(row: dict, position: Position
                                                              ) -> None:
    before = {c.name: (row[c.name] if c.name in TABLE.primary_key else None) for c in COLUMNS}
    assert_same_bytes(change("d", before, None, position, 2**40, 0))


def test_truncate_has_no_key_and_is_byte_identical() -> None:
    event = change("t", None, None, Position(5, 1), 9, 1_000_000)
    assert encode_compiled(event, SchemaRegistry())[0] is None
    assert_same_bytes(event)


def test_key_is_the_primary_key_record() -> None:
    row = {c.name: None for c in COLUMNS} | {"id": -1, "code": "ab", "day": date(1970, 1, 2)}
    key, _ = encode_compiled(change("c", None, row, Position(5, 1), 9, 0), SchemaRegistry())
    # long -1 (zigzag 1), string "ab", date 1 (zigzag 2) in branch 0 of [date, string]
    assert key == b"\x01" + b"\x04ab" + b"\x00\x02"
    text_day = row | {"day": "infinity"}
    key, _ = encode(change("c", None, text_day, Position(5, 1), 9, 0), SchemaRegistry())
    assert key == b"\x01" + b"\x04ab" + b"\x02\x10infinity"  # branch 1: the text form


def test_float_special_values_are_byte_identical() -> None:
    specials = [math.nan, -math.nan, math.inf, -math.inf, -0.0, 5e-324,
                struct.unpack("<f", b"\x01\x00\x00\x00")[0], 3.4028234663852886e38]
    for value in specials:
        row = {c.name: None for c in COLUMNS} | {"id": 1, "code": "", "day": date(2000, 1, 1),
                                                 "real": value, "double": value,
                                                 "reals": [value, None]}
        assert_same_bytes(change("c", None, row, Position(5, 1), 9, 0))


@SETTINGS
@given(st.sampled_from(["BEGIN", "END"]), positions, longs, longs, longs)
def test_transaction_markers_are_byte_identical(status: str, position: Position, xid: int,
                                                commit_ts: int, count: int) -> None:
    assert_same_bytes(TransactionMarker(status, "édms", position, xid, commit_ts, count))


@SETTINGS
@given(text, st.binary(max_size=100), st.booleans(), positions, longs, longs)
def test_logical_messages_are_byte_identical(prefix: str, content: bytes, transactional: bool,
                                             position: Position, xid: int, commit_ts: int
                                             ) -> None:
    assert_same_bytes(LogicalMessage("edms", prefix, content, transactional, position, xid,
                                     commit_ts))


# -- values outside the mapped types: fastavro decides ------------------------------------

EDGES = [0, 1, -1, 0.0, 1.0, True, False, None, 2**31, -2**31 - 1, 2**63, -2**63 - 1, "",
         b"", [], (), "2024-01-01", Decimal("1.5"), Decimal("1.234"), Decimal("-0"),
         datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=UTC), date(2024, 1, 1),
         time(1, 2, 3), time(1, 2, 3, tzinfo=UTC), memoryview(b"x"), [memoryview(b"y")]]
ODD_VALUES = st.one_of(
    st.sampled_from(EDGES), st.booleans(), st.integers(-2**70, 2**70), st.floats(), text,
    st.text(max_size=3),  # lone surrogates: not UTF-8
    st.binary(max_size=5), st.dates(), st.times(), naive, aware, st.uuids(),
    st.decimals(allow_nan=True, allow_infinity=True), st.tuples(st.integers()),
    st.lists(st.one_of(st.integers(), st.lists(st.integers(), max_size=2)), max_size=3),
    st.builds(bytearray, st.binary(max_size=3)),
)


def outcome(write: Any, record: Any) -> tuple[Any, ...]:
    try:
        return ("bytes", *write(record, SchemaRegistry()))
    except UnencodableValue as exc:  # encode names the value; fastavro's error is its cause
        return ("error", type(exc.__cause__))
    except Exception as exc:  # which error fastavro raises is the reference
        return ("error", type(exc))


@SETTINGS
@given(rows, st.sampled_from([c.name for c in COLUMNS]), ODD_VALUES)
def test_any_value_encodes_as_fastavro_encodes_it_or_fails_as_it_fails(
        row: dict, column: str, value: Any) -> None:
    event = change("c", None, {**row, column: value}, Position(5, 1), 9, 0)
    assert outcome(encode, event) == outcome(encode_generic, event)


def test_edge_values_in_every_column_encode_as_fastavro_does() -> None:
    row = {c.name: None for c in COLUMNS} | {"id": 1, "code": "", "day": date(2000, 1, 1)}
    for column in COLUMNS:
        for value in EDGES:
            for where in ("plain", "in an array"):
                if where == "in an array":
                    value = [value]
                event = change("c", None, {**row, column.name: value}, Position(5, 1), 9, 0)
                assert outcome(encode, event) == outcome(encode_generic, event), (column,
                                                                                  value)


@SETTINGS
@given(st.sampled_from(["commit_ts", "xid", "ts_ms", "snapshot"]), ODD_VALUES)
def test_odd_envelope_fields_encode_as_fastavro_does(field: str, value: Any) -> None:
    fields = {"commit_ts": 0, "xid": 9, "ts_ms": 0, "snapshot": False, field: value}
    row = {c.name: None for c in COLUMNS} | {"id": 1, "code": "", "day": date(2000, 1, 1)}
    event = ChangeEvent("c", "edms", TABLE, Position(5, 1), fields["xid"],
                        fields["commit_ts"], None, row, snapshot=fields["snapshot"],
                        ts_ms=fields["ts_ms"])
    assert outcome(encode, event) == outcome(encode_generic, event)


def test_missing_key_column_fails_as_before() -> None:
    row = {c.name: None for c in COLUMNS} | {"id": 1, "code": "x"}  # "day" is null
    event = change("c", None, row, Position(5, 1), 9, 0)
    with pytest.raises(ValueError):
        encode_compiled(event, SchemaRegistry())
    assert outcome(encode, event) == outcome(encode_generic, event)
