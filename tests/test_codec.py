"""The Avro codec: round trips of every mapped column type, fingerprints, and decoding with
the Apache reference implementation."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import avro.io
import avro.schema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal.catalog import Column, TableSchema
from journal.codec import (
    MAGIC,
    SchemaRegistry,
    decode,
    decode_compiled,
    decode_generic,
    encode,
    fingerprint,
    packaged_schema,
    split_header,
)
from journal.errors import ValidationError
from journal.events import ChangeEvent, LogicalMessage, TransactionMarker
from journal.positions import Position

ENUM_OID = 16_390  # a user type: travels as its text form

TABLE = TableSchema("public", "document", (
    Column("id", "integer", 23, True),
    Column("big", "bigint", 20),
    Column("amount", "numeric(12,2)", 1700),
    Column("title", "text", 25),
    Column("code", "character varying(40)", 1043),
    Column("active", "boolean", 16),
    Column("created", "timestamp with time zone", 1184),
    Column("local", "timestamp without time zone", 1114),
    Column("due", "date", 1082),
    Column("uuid", "uuid", 2950),
    Column("meta", "jsonb", 3802),
    Column("content", "bytea", 17),
    Column("tags", "text[]", 1009),
    Column("status", "document_status", ENUM_OID),
    Column("order id", "integer", 23),  # not an Avro name: gets a positional field name
), ("id",))

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

nul_free_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                        max_size=40)
MAX_AMOUNT = 10**12 - 1  # numeric(12,2): 9999999999.99
amounts = st.one_of(st.sampled_from([0, 1, -1, MAX_AMOUNT, -MAX_AMOUNT]),
                    st.integers(-MAX_AMOUNT, MAX_AMOUNT)).map(lambda n: Decimal(n).scaleb(-2))
aware = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.just(UTC))
naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))


def nullable(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


def or_text(strategy: st.SearchStrategy, *texts: str) -> st.SearchStrategy:
    """Values of a column with a text branch: typed ones, or PostgreSQL's text form of a
    value the typed branch cannot hold."""
    return st.one_of(strategy, st.sampled_from(texts))


BEYOND_DATES = ("infinity", "-infinity", "0044-03-15 BC", "20000-01-01")
BEYOND_TIMESTAMPS = ("infinity", "-infinity", "0044-03-15 10:00:00 BC",
                     "12000-01-01 00:00:00", "294276-12-31 23:59:59.999999")


rows = st.fixed_dictionaries({
    "id": st.integers(-2**31, 2**31 - 1),
    "big": nullable(st.integers(-2**63, 2**63 - 1)),
    "amount": nullable(or_text(amounts, "NaN")),
    "title": nullable(nul_free_text),
    "code": nullable(nul_free_text),
    "active": nullable(st.booleans()),
    "created": nullable(or_text(aware, *(t + "+00" for t in BEYOND_TIMESTAMPS[2:]),
                                "infinity", "-infinity")),
    "local": nullable(or_text(naive, *BEYOND_TIMESTAMPS)),
    "due": nullable(or_text(st.dates(), *BEYOND_DATES)),
    "uuid": nullable(st.uuids()),
    "meta": nullable(st.dictionaries(nul_free_text, st.integers(), max_size=3).map(json.dumps)),
    "content": nullable(st.binary(max_size=64)),
    "tags": nullable(or_text(st.lists(nullable(nul_free_text), max_size=5),
                             "{{a,b},{c,d}}", "[0:1]={x,y}", "[2:2][1:2]={{a,NULL}}")),
    "status": nullable(st.sampled_from(["draft", "review", "published", "rétracté"])),
    "order id": nullable(st.integers(-2**31, 2**31 - 1)),
})


def change(op: str, before: dict | None, after: dict | None, toast: tuple[str, ...] = ()
           ) -> ChangeEvent:
    return ChangeEvent(op, "edms", TABLE, Position(0x16B374D848, 3), 742,
                       1_714_564_800_123_456, before, after, toast, snapshot=op == "r",
                       ts_ms=1_714_564_801_000)


@SETTINGS
@given(rows, st.sampled_from("cru"))
def test_every_column_type_round_trips(row: dict, op: str) -> None:
    registry = SchemaRegistry()
    event = change(op, None, row)
    key, value = encode(event, registry)
    assert value[:2] == MAGIC
    assert decode(value, registry) == event
    assert key is not None


@SETTINGS
@given(rows)
def test_compiled_decoder_reads_text_branch_values_as_fastavro_does(row: dict) -> None:
    registry = SchemaRegistry()
    _, value = encode(change("c", None, row), registry)
    assert decode_compiled(value, registry) == decode_generic(value, registry)


def test_values_beyond_the_typed_branch_travel_as_their_text_form() -> None:
    registry = SchemaRegistry()
    row = {c.name: None for c in TABLE.columns} | {
        "id": 1, "amount": "NaN", "created": "-infinity", "local": "infinity",
        "due": "0044-03-15 BC", "tags": "[0:1]={x,y}"}
    event = change("c", None, row)
    _, value = encode(event, registry)
    assert b"\x04\x1a0044-03-15 BC" in value  # branch 2 ("string"), 13 bytes of text
    assert decode_compiled(value, registry) == event


@SETTINGS
@given(rows, rows)
def test_update_with_before_image_and_unchanged_toast_round_trips(before: dict, after: dict
                                                                  ) -> None:
    registry = SchemaRegistry()
    after = {**after, "content": None}
    event = change("u", before, after, ("content",))
    assert decode(encode(event, registry)[1], registry) == event


def test_delete_with_key_only_before_image_round_trips() -> None:
    registry = SchemaRegistry()
    before = {c.name: None for c in TABLE.columns} | {"id": 7}
    event = change("d", before, None)
    assert decode(encode(event, registry)[1], registry) == event


def test_markers_and_messages_round_trip() -> None:
    registry = SchemaRegistry()
    records = [TransactionMarker("BEGIN", "edms", Position(5, 0), 9, 1_000_000),
               TransactionMarker("END", "edms", Position(5, 3), 9, 1_000_000, 2),
               LogicalMessage("edms", "edms_journal.mark", "vor dem Update ✓".encode(), True,
                              Position(5, 1), 9, 1_000_000)]
    for record in records:
        assert decode(encode(record, registry)[1], registry) == record


# -- decoding with the Apache reference implementation ----------------------------------

def _as_reference_decodes(row: dict) -> dict:
    """What the avro library returns for our values: uuid as text, local-timestamp-micros
    (a logical type it does not know) as the plain long of microseconds."""
    out = {}
    for name, field in zip(TABLE.column_names, TABLE.avro_field_names(), strict=True):
        value = row[name]
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif name == "local" and isinstance(value, datetime):
            value = (value - datetime(1970, 1, 1)) // timedelta(microseconds=1)
        out[field] = value
    return out


@SETTINGS
@given(rows)
def test_apache_avro_decodes_the_same_values(row: dict) -> None:
    registry = SchemaRegistry()
    _, value = encode(change("c", None, row), registry)
    fp, body = split_header(value)
    schema = avro.schema.parse(registry.schema_json(fp))
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(body)))
    assert datum["op"] == "c"
    assert datum["before"] is None
    assert datum["source"]["commit_lsn"] == 0x16B374D848
    assert datum["source"]["commit_ts"] == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert datum["after"] == _as_reference_decodes(row)


def test_apache_avro_decodes_a_transaction_marker() -> None:
    registry = SchemaRegistry()
    marker = TransactionMarker("END", "edms", Position(5, 3), 9, 1_000_000, 2)
    fp, body = split_header(encode(marker, registry)[1])
    schema = avro.schema.parse(registry.schema_json(fp))
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(body)))
    assert (datum["status"], datum["event_count"], datum["seq"]) == ("END", 2, 3)


# -- fingerprints -------------------------------------------------------------------------

def _rabin(text: str) -> bytes:
    """CRC-64-AVRO as the Avro specification gives it, little-endian as in the header."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in text.encode():
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_fingerprint_is_the_specified_crc64_of_the_canonical_form() -> None:
    from fastavro.schema import to_parsing_canonical_form

    for schema in (packaged_schema("transaction"), packaged_schema("message"),
                   TABLE.avro_key_schema()):
        assert fingerprint(schema) == _rabin(to_parsing_canonical_form(schema))


def test_fingerprint_matches_apache_avro_for_schemas_without_logical_types() -> None:
    # The Python avro library keeps {"type": "long"} for a logical type in its canonical
    # form, unlike the specification (and Java), so only plain schemas can be compared.
    key = TABLE.avro_key_schema()
    assert fingerprint(key) == avro.schema.parse(json.dumps(key)).fingerprint()


def test_fingerprints_are_stable() -> None:
    # pinned: a change here breaks every journal and package already written
    assert fingerprint(packaged_schema("transaction")).hex() == "941951aa0dd5ef14"
    registry = SchemaRegistry()
    first = registry.for_table(TABLE)[0]
    assert SchemaRegistry().for_table(TABLE)[0] == first
    reordered = dict(reversed(json.loads(registry.schema_json(first)).items()))
    assert fingerprint(reordered) == first  # key order of the JSON does not matter
    changed = TableSchema(TABLE.schema, TABLE.name,
                          (Column("id", "bigint", 20, True), *TABLE.columns[1:]), ("id",))
    assert SchemaRegistry().for_table(changed)[0] != first


def test_registry_rebuilt_from_published_json_decodes() -> None:
    writer_registry = SchemaRegistry()
    event = change("c", None, {c.name: None for c in TABLE.columns} | {"id": 1})
    _, value = encode(event, writer_registry)
    reader_registry = SchemaRegistry()
    for _, text in writer_registry.items():
        reader_registry.add(text)
    assert decode(value, reader_registry) == event


# -- bad input ----------------------------------------------------------------------------

def _valid_value() -> tuple[bytes, SchemaRegistry]:
    registry = SchemaRegistry()
    row = {c.name: None for c in TABLE.columns} | {"id": 1, "title": "x" * 30,
                                                   "tags": ["a", None], "due": date(2024, 1, 1)}
    return encode(change("u", row, row), registry)[1], registry


VALUE, REGISTRY = _valid_value()


@SETTINGS
@given(st.integers(0, len(VALUE) - 1))
def test_truncated_values_raise_validation_error(cut: int) -> None:
    with pytest.raises(ValidationError):
        decode(VALUE[:cut], REGISTRY)


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([b"", b"header"]))
def test_garbage_raises_validation_error_or_decodes_never_crashes(garbage: bytes, kind: bytes
                                                                   ) -> None:
    value = VALUE[:10] + garbage if kind else garbage
    try:
        decode(value, REGISTRY)
    except ValidationError:
        pass


@SETTINGS
@given(st.integers(10, len(VALUE) - 1), st.integers(1, 255))
def test_flipped_bytes_raise_validation_error_or_decode_never_crash(index: int, mask: int
                                                                    ) -> None:
    value = bytearray(VALUE)
    value[index] ^= mask
    try:
        decode(bytes(value), REGISTRY)
    except ValidationError:
        pass


def test_unknown_fingerprint_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="no schema with fingerprint"):
        decode(MAGIC + b"\x00" * 8 + b"\x00", REGISTRY)


def test_a_value_no_branch_holds_is_refused_naming_table_column_and_value() -> None:
    from journal.errors import UnencodableValue

    row = {c.name: None for c in TABLE.columns} | {"id": 1, "due": object()}
    with pytest.raises(UnencodableValue) as refused:
        encode(change("c", None, row), SchemaRegistry())
    assert (refused.value.table, refused.value.column) == ("public.document", "due")
    assert "public.document" in str(refused.value) and "column due" in str(refused.value)
