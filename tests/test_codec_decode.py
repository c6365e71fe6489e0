"""The compiled decoders read exactly the values of fastavro's generic reader.

``decode_compiled`` (one decoder built per writer schema) is checked against
``decode_generic`` (fastavro's ``schemaless_reader``) type for type and value for value,
NaN payloads, Decimal exponents and time zones included, over every column type the
catalog maps; and ``decode`` against ``decode_generic`` for truncated, mutated and garbage
bytes, where it must return what fastavro returns or raise the same ValidationError.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.support.every_type as fast
from journal.catalog import Column, TableSchema
from journal.codec import (
    MAGIC,
    SchemaRegistry,
    decode,
    decode_compiled,
    decode_generic,
    encode,
    envelope_schema,
    record_reader,
    to_avro_row,
)
from journal.errors import ValidationError
from journal.events import ChangeEvent, LogicalMessage, TransactionMarker
from journal.packages import STREAM_RECORD_SCHEMA
from journal.positions import Position
from tests.support.identical import assert_identical

SETTINGS = fast.SETTINGS
TABLE, COLUMNS = fast.TABLE, fast.COLUMNS


def assert_decodes_identically(value: bytes, registry: SchemaRegistry) -> Any:
    record = decode_compiled(value, registry)  # no fallback: it must read valid bytes
    assert_identical(record, decode_generic(value, registry))
    return record


def outcome(read: Any, value: bytes, registry: SchemaRegistry) -> tuple[Any, ...]:
    try:
        return ("record", read(value, registry))
    except ValidationError as exc:  # fastavro's message names its buffer's address
        return ("error", type(exc), re.sub(r" at 0x[0-9a-f]+", "", str(exc)))


def assert_same_outcome(value: bytes, registry: SchemaRegistry) -> None:
    got, want = outcome(decode, value, registry), outcome(decode_generic, value, registry)
    assert got[0] == want[0], (got, want)
    if got[0] == "record":
        assert_identical(got[1], want[1])
    else:
        assert got == want


def encoded(record: Any) -> tuple[bytes, SchemaRegistry]:
    registry = SchemaRegistry()
    return encode(record, registry)[1], registry


# -- valid values: identical ----------------------------------------------------------------

@SETTINGS
@given(st.sampled_from("cr"), fast.rows, fast.positions, fast.longs, fast.longs, fast.longs)
def test_insert_of_every_column_type_decodes_identically(op: str, row: dict,
                                                         position: Position, xid: int,
                                                         commit_ts: int, ts_ms: int) -> None:
    value, registry = encoded(fast.change(op, None, row, position, xid, commit_ts, ts_ms=ts_ms))
    assert_decodes_identically(value, registry)


@SETTINGS
@given(fast.rows, fast.rows, fast.positions, st.lists(st.sampled_from(TABLE.column_names),
                                                      max_size=3))
def test_update_with_before_image_and_toast_names_decodes_identically(
        before: dict, after: dict, position: Position, toast: list[str]) -> None:
    value, registry = encoded(fast.change("u", before, after, position, 7,
                                          1_714_564_800_123_456, tuple(toast)))
    record = assert_decodes_identically(value, registry)
    assert record.unchanged_toast == tuple(toast)


@SETTINGS
@given(fast.row_of(nullable=False), fast.positions)
def test_delete_with_key_only_before_image_decodes_identically(row: dict, position: Position
                                                               ) -> None:
    before = {c.name: (row[c.name] if c.name in TABLE.primary_key else None) for c in COLUMNS}
    value, registry = encoded(fast.change("d", before, None, position, 2**40, 0))
    assert_decodes_identically(value, registry)


def test_truncate_decodes_identically() -> None:
    value, registry = encoded(fast.change("t", None, None, Position(5, 1), 9, 1_000_000))
    assert assert_decodes_identically(value, registry).before is None


def test_float_special_values_decode_identically() -> None:
    # NaNs with payloads and signalling NaNs: the float's bits as fastavro reads them
    singles = [struct.unpack("<f", struct.pack("<I", bits))[0]
               for bits in (0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FA00000, 0x00000001,
                            0x7F7FFFFF, 0x80000000)]
    doubles = [struct.unpack("<d", struct.pack("<Q", bits))[0]
               for bits in (0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001,
                            0x0000000000000001, 0x8000000000000000)]
    values = [math.nan, -math.nan, math.inf, -math.inf, -0.0, 5e-324, *singles, *doubles]
    for value in values:
        row = {c.name: None for c in COLUMNS} | {"id": 1, "code": "", "day": date(2000, 1, 1),
                                                 "real": value, "double": value,
                                                 "reals": [value, None], "doubles": [value]}
        assert_decodes_identically(*encoded(fast.change("c", None, row, Position(5, 1), 9, 0)))


def test_float_bits_written_by_hand_decode_identically() -> None:
    # signalling NaNs the encoder cannot produce from a Python float: patch the bytes
    row = {c.name: None for c in COLUMNS} | {"id": 1, "code": "", "day": date(2000, 1, 1),
                                             "real": 1.5, "double": 2.5}
    value, registry = encoded(fast.change("c", None, row, Position(5, 1), 9, 0))
    single, double = struct.pack("<f", 1.5), struct.pack("<d", 2.5)
    for bits in (b"\x01\x00\x80\x7f", b"\x01\x00\x80\xff", b"\xff\xff\xff\x7f"):
        assert_decodes_identically(value.replace(single, bits, 1), registry)
    for bits in (b"\x01\x00\x00\x00\x00\x00\xf0\x7f", b"\xff" * 8):
        assert_decodes_identically(value.replace(double, bits, 1), registry)


@SETTINGS
@given(st.sampled_from(["BEGIN", "END"]), fast.positions, fast.longs, fast.longs, fast.longs)
def test_transaction_markers_decode_identically(status: str, position: Position, xid: int,
                                                commit_ts: int, count: int) -> None:
    marker = TransactionMarker(status, "édms", position, xid, commit_ts, count)
    assert decode_compiled(*encoded(marker)) == marker
    assert_decodes_identically(*encoded(marker))


@SETTINGS
@given(fast.text, st.binary(max_size=100), st.booleans(), fast.positions, fast.longs,
       fast.longs)
def test_logical_messages_decode_identically(prefix: str, content: bytes, transactional: bool,
                                             position: Position, xid: int, commit_ts: int
                                             ) -> None:
    message = LogicalMessage("edms", prefix, content, transactional, position, xid, commit_ts)
    assert decode_compiled(*encoded(message)) == message
    assert_decodes_identically(*encoded(message))


ODD_UUIDS = ["12345678-1234-5678-1234-567812345678", "12345678123456781234567812345678",
             "{12345678-1234-5678-1234-567812345678}", "URN:UUID:12345678-1234-5678-1234-5678",
             "urn:uuid:12345678-1234-5678-1234-567812345678",
             "ABCDEF00-1234-5678-1234-56781234ABCD",
             "1234_678-1234-5678-1234-567812345678", "+2345678-1234-5678-1234-567812345678",
             " 2345678-1234-5678-1234-567812345678", "١٢٣٤٥٦٧٨-1234-5678-1234-567812345678",
             "--12345678123456781234567812345678--", "", "g2345678-1234-5678-1234-567812345678"]


@pytest.mark.parametrize("text", ODD_UUIDS)
def test_uuid_text_of_any_form_decodes_as_fastavro_decodes_it(text: str) -> None:
    row = {c.name: None for c in COLUMNS} | {"id": 1, "code": "", "day": date(2000, 1, 1),
                                             "uid": text, "uids": [text, None]}
    value, registry = encoded(fast.change("c", None, row, Position(5, 1), 9, 0))
    assert_same_outcome(value, registry)
    if outcome(decode_generic, value, registry)[0] == "record":
        assert_decodes_identically(value, registry)


def test_registry_rebuilt_from_published_json_decodes_compiled() -> None:
    row = {c.name: None for c in COLUMNS} | {"id": 1, "code": "x", "day": date(2000, 1, 1),
                                             "order id": 5}
    value, writer = encoded(fast.change("c", None, row, Position(5, 1), 9, 0))
    reader = SchemaRegistry()
    for _, text in writer.items():
        reader.add(text)
    assert decode_compiled(value, reader).after == row
    assert_decodes_identically(value, reader)


def test_an_envelope_of_another_shape_is_left_to_fastavro() -> None:
    table = TableSchema("public", "odd", (Column("id", "integer", 23, True),), ("id",))
    schema = envelope_schema(table)
    schema["fields"][0]["type"][1]["fields"][0]["type"] = ["null", {"type": "fixed",
                                                                     "name": "F", "size": 2}]
    registry = SchemaRegistry()
    fp = registry.add(json.dumps(schema))
    assert registry.decoder(fp) is None
    body = b"\x02\x02ab\x00" + b"\x02c" + b"\x08edms\x0cpublic\x06odd" + b"\x02\x02\x04\x06\x00"
    value = MAGIC + fp + body + b"\x08\x00"
    record = decode(value, registry)
    assert record.before == {"id": b"ab"}
    assert_same_outcome(value, registry)


# -- bytes fastavro reads leniently, truncated, mutated and garbage: same outcome -----------

def _valid() -> tuple[bytes, SchemaRegistry]:
    row = {c.name: None for c in COLUMNS} | {
        "id": 1, "code": "x" * 30, "day": date(2024, 1, 1), "flag": True, "real": 1.5,
        "created": datetime(2024, 1, 1, 12), "amount": Decimal("12.34"), "texts": ["a", None],
        "uid": "12345678-1234-5678-1234-567812345678", "clock": None, "blob": b"\x00\xff",
        "flags": [True, None], "nums": [-1]}
    row["created"] = row["created"].astimezone()
    return encoded(fast.change("u", row, row, Position(5, 1), 9, 1_000_000, ("json",)))


VALUE, REGISTRY = _valid()
MARKER, MARKER_REGISTRY = encoded(TransactionMarker("END", "edms", Position(5, 3), 9, 1, 2))


@pytest.mark.parametrize("value,registry", [(VALUE, REGISTRY), (MARKER, MARKER_REGISTRY)])
def test_every_truncation_fails_as_fastavro_fails(value: bytes, registry: SchemaRegistry
                                                  ) -> None:
    for cut in range(len(value)):
        assert_same_outcome(value[:cut], registry)
        with pytest.raises(ValidationError):
            decode(value[:cut], registry)


@SETTINGS
@given(st.integers(10, len(VALUE) - 1), st.integers(1, 255), st.booleans())
def test_flipped_byte_decodes_or_fails_as_fastavro(index: int, mask: int, marker: bool
                                                    ) -> None:
    value, registry = (MARKER, MARKER_REGISTRY) if marker else (VALUE, REGISTRY)
    data = bytearray(value)
    data[10 + index % (len(value) - 10)] ^= mask
    assert_same_outcome(bytes(data), registry)


@SETTINGS
@given(st.integers(10, len(VALUE)), st.binary(min_size=1, max_size=12))
def test_inserted_bytes_decode_or_fail_as_fastavro(index: int, extra: bytes) -> None:
    assert_same_outcome(VALUE[:index] + extra + VALUE[index:], REGISTRY)


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from(["envelope", "marker", "message", "none"]))
def test_garbage_decodes_or_fails_as_fastavro(garbage: bytes, header: str) -> None:
    registry = SchemaRegistry()
    prefixes = {"envelope": VALUE[:10], "marker": MARKER[:10], "none": b"",
                "message": MAGIC + registry.fingerprint_of("message")}
    value = prefixes[header] + garbage
    registry = REGISTRY if header == "envelope" else registry
    assert_same_outcome(value, registry)


LENIENT = [
    b"\x02\x02",  # before present, its first field "id" present
    b"\x01",  # union index -1: fastavro reads the last branch
    b"\x05",  # a boolean byte other than 0 and 1, or an odd union index
    b"\x80\x00",  # a non-minimal varint
    b"\xff" * 9 + b"\x01",  # a 10-byte varint using the top bit
    b"\xff" * 9 + b"\x7f",  # a 10-byte varint over 64 bits: fastavro's C reader wraps it
    b"\xff" * 12 + b"\x00",  # an 13-byte varint
    b"\x03\x02",  # a negative array block count with its byte size
]


@pytest.mark.parametrize("patch", LENIENT)
def test_lenient_encodings_at_every_offset_decode_as_fastavro_does(patch: bytes) -> None:
    for value, registry in ((VALUE, REGISTRY), (MARKER, MARKER_REGISTRY)):
        for index in range(10, len(value)):
            assert_same_outcome(value[:index] + patch + value[index + len(patch):], registry)
            assert_same_outcome(value[:index] + patch + value[index:], registry)


def test_enum_index_minus_one_reads_as_fastavro_reads_it() -> None:
    value = MARKER[:10] + b"\x01" + MARKER[11:]  # fastavro: symbols[-1]
    assert_same_outcome(value, MARKER_REGISTRY)


@pytest.mark.parametrize("length", [b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f",  # 2**62 - 1
                                    b"\x80\x80\x80\x80\x08"])  # 1 GiB
def test_huge_declared_length_is_rejected_without_allocating(length: bytes) -> None:
    # the first string of a marker (its database) declared far longer than the value
    value = MARKER[:11] + length + b"edms"
    start = time.perf_counter()
    with pytest.raises(ValueError):
        decode_compiled(value, MARKER_REGISTRY)
    with pytest.raises(ValidationError):
        decode(value, MARKER_REGISTRY)
    assert time.perf_counter() - start < 1


def test_huge_array_count_is_rejected_without_looping() -> None:
    # unchanged_toast, the envelope's last field, declared with 2**61 names
    assert VALUE.endswith(b"\x02\x08json\x00")
    value = VALUE[:-7] + b"\x80\x80\x80\x80\x80\x80\x80\x80\x40" + b"\x08json\x00"
    start = time.perf_counter()
    with pytest.raises(ValueError):
        decode_compiled(value, REGISTRY)
    with pytest.raises(ValidationError):
        decode(value, REGISTRY)
    assert time.perf_counter() - start < 1


def test_unknown_fingerprint_fails_as_before() -> None:
    assert_same_outcome(MAGIC + b"\x00" * 8 + b"\x00", REGISTRY)
    with pytest.raises(ValidationError, match="no schema with fingerprint"):
        decode(MAGIC + b"\x00" * 8 + b"\x00", REGISTRY)


def test_unknown_op_is_a_validation_error() -> None:
    bad = VALUE.replace(b"\x02u\x08edms", b"\x02x\x08edms", 1)
    assert bad != VALUE
    with pytest.raises(ValidationError, match="invalid"):
        decode(bad, REGISTRY)
    assert_same_outcome(bad, REGISTRY)


def test_change_event_fields_come_from_the_bytes() -> None:
    event = ChangeEvent("u", "edms", TABLE, Position(5, 1), 9, 1_000_000,
                        decode(VALUE, REGISTRY).before, None, ("json",), False, 7)
    value, registry = encoded(event)
    assert decode_compiled(value, registry) == event


# -- package members: one record of a container file's schema --------------------------------

ROW_SCHEMA = fastavro.parse_schema(TABLE.avro_row_schema())
READ_ROW = record_reader(ROW_SCHEMA)


def fastavro_reads(data: bytes, schema: Any, at: int = 0) -> tuple[Any, int]:
    buf = io.BytesIO(data)
    buf.seek(at)
    return fastavro.schemaless_reader(buf, schema, None), buf.tell()


@SETTINGS
@given(st.lists(fast.rows, min_size=1, max_size=3))
def test_package_rows_decode_identically(rows: list[dict]) -> None:
    assert READ_ROW is not None
    buf = io.BytesIO()
    for row in rows:
        fastavro.schemaless_writer(buf, ROW_SCHEMA, to_avro_row(TABLE, row))
    data, at = buf.getvalue(), 0
    for _ in rows:
        got, end = READ_ROW(data, at)
        want, want_end = fastavro_reads(data, ROW_SCHEMA, at)
        assert_identical(got, want)
        assert end == want_end
        at = end
    assert at == len(data)


@SETTINGS
@given(st.integers(0, 2**63 - 1), st.integers(0, 2**31), st.none() | st.binary(max_size=20),
       st.binary(max_size=50))
def test_package_stream_records_decode_identically(lsn: int, seq: int, key: bytes | None,
                                                   value: bytes) -> None:
    schema = fastavro.parse_schema(STREAM_RECORD_SCHEMA)
    read = record_reader(schema)
    assert read is not None
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, {"commit_lsn": lsn, "seq": seq, "key": key,
                                             "value": value})
    got, end = read(buf.getvalue(), 0)
    assert_identical(got, fastavro_reads(buf.getvalue(), schema)[0])
    assert end == len(buf.getvalue())


@SETTINGS
@given(fast.rows, st.integers(0, 10_000), st.binary(min_size=1, max_size=6))
def test_package_row_garbage_reads_as_fastavro_or_is_refused(row: dict, index: int,
                                                              patch: bytes) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, ROW_SCHEMA, to_avro_row(TABLE, row))
    data = buf.getvalue()
    index %= len(data)
    data = data[:index] + patch + data[index + len(patch):]
    try:
        got = READ_ROW(data, 0)  # type: ignore[misc]
    except Exception:  # left to fastavro, which the member reader then asks
        return
    want = fastavro_reads(data, ROW_SCHEMA)
    assert_identical(got[0], want[0])
    assert got[1] == want[1]


def test_schema_with_a_type_the_reader_leaves_to_fastavro_has_no_reader() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "m", "type": {"type": "map", "values": "long"}}]})
    assert record_reader(schema) is None
