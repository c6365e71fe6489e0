"""The reference path: fastavro's generic writer and reader, and the row conversions.

What every compiled path must equal, byte for byte when encoding and value for value
when decoding (tests/test_codec_fast.py, tests/test_codec_decode.py), and what encodes or
decodes whatever a compiled path leaves to it. The row conversions (journal row to Avro
datum and back) are also what a package's row members are written and read with.
"""

from __future__ import annotations

import io
import json
from functools import cache
from typing import TYPE_CHECKING, Any

import fastavro

from journal.catalog import TableSchema, avro_value_type, has_text_fallback
from journal.codec.wire import MAGIC, split_header
from journal.errors import UnencodableValue, ValidationError
from journal.events import ChangeEvent, LogicalMessage, Record, TransactionMarker
from journal.positions import Position

if TYPE_CHECKING:
    from journal.codec.registry import SchemaRegistry


@cache
def _field_names(table: TableSchema) -> tuple[str, ...]:
    return table.avro_field_names()


@cache
def _text_fallback(table: TableSchema) -> tuple[bool, ...]:
    return tuple(has_text_fallback(c.type_oid) for c in table.columns)


def to_avro_row(table: TableSchema, row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {f: avro_field_value(row.get(c.name), text)
            for f, c, text in zip(_field_names(table), table.columns, _text_fallback(table),
                                  strict=True)}


def avro_field_value(value: Any, text_fallback: bool) -> Any:
    # A str in a column with a text branch is PostgreSQL's text form of the value: fastavro's
    # tuple notation names the branch, as its date and timestamp writers would otherwise
    # try to parse the text ("infinity", "0044-03-15 BC") as an ISO date.
    if text_fallback and type(value) is str:
        return ("string", value)
    return avro_value(value)


def avro_value(value: Any) -> Any:
    """A journal value as fastavro takes it (psycopg may hand out memoryviews)."""
    if isinstance(value, list):
        return [avro_value(v) for v in value]
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def from_avro_row(table: TableSchema, row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A decoded Avro row (field names) as a journal row (column names)."""
    if row is None:
        return None
    pairs = _row_renames(table)
    if pairs is None:  # every column name is its Avro field name: the dict is the row
        return row
    return {c: row[f] for f, c in pairs}


# id(table) -> (table, (field, column) pairs or None when the names are the same): hashing
# a TableSchema per decoded record cost more than decoding the row (as on the encode side)
_RENAMES: dict[int, tuple[TableSchema, tuple[tuple[str, str], ...] | None]] = {}


def _row_renames(table: TableSchema) -> tuple[tuple[str, str], ...] | None:
    hit = _RENAMES.get(id(table))
    if hit is None or hit[0] is not table:
        names, columns = table.avro_field_names(), table.column_names
        if len(_RENAMES) >= 4096:
            _RENAMES.clear()
        hit = _RENAMES[id(table)] = (table, None if names == columns
                                     else tuple(zip(names, columns, strict=True)))
    return hit[1]


def _write(parsed: Any, datum: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def encode_generic(record: Record, registry: SchemaRegistry) -> tuple[bytes | None, bytes]:
    """``encode`` through fastavro's generic writer: the reference the compiled encoders
    must match byte for byte, and what writes any value they do not handle."""
    if isinstance(record, ChangeEvent):
        t = record.table
        fp, parsed, key_schema = registry.for_table(t)
        pos = record.position
        datum = {
            "before": to_avro_row(t, record.before),
            "after": to_avro_row(t, record.after),
            "op": record.op,
            "source": {"database": record.database, "schema": t.schema, "table": t.name,
                       "commit_lsn": pos.commit_lsn, "seq": pos.seq, "xid": record.xid,
                       "commit_ts": record.commit_ts, "snapshot": record.snapshot},
            "ts_ms": record.ts_ms,
            "unchanged_toast": list(record.unchanged_toast),
        }
        key = None
        if record.key and t.primary_key:
            texts = [has_text_fallback(t.column(c).type_oid) for c in t.primary_key]
            key = _write(key_schema, {f["name"]: avro_field_value(v, text) for f, v, text in zip(
                key_schema["fields"], record.key, texts, strict=True)})
        return key, MAGIC + fp + _write(parsed, datum)
    if isinstance(record, TransactionMarker):
        fp = registry.fingerprint_of("transaction")
        datum = {"status": record.status, "database": record.database,
                 "commit_lsn": record.position.commit_lsn, "seq": record.position.seq,
                 "xid": record.xid, "commit_ts": record.commit_ts,
                 "event_count": record.event_count}
        return str(record.xid).encode(), MAGIC + fp + _write(registry.parsed(fp), datum)
    if isinstance(record, LogicalMessage):
        fp = registry.fingerprint_of("message")
        datum = {"database": record.database, "prefix": record.prefix,
                 "content": record.content, "transactional": record.transactional,
                 "commit_lsn": record.position.commit_lsn, "seq": record.position.seq,
                 "xid": record.xid, "commit_ts": record.commit_ts}
        return record.prefix.encode(), MAGIC + fp + _write(registry.parsed(fp), datum)
    raise TypeError(f"cannot encode {type(record).__name__}")


def unencodable(record: ChangeEvent, exc: Exception) -> UnencodableValue:
    """The error naming the first value of ``record`` its column's Avro type cannot hold."""
    table = record.table
    for row in (record.before, record.after):
        for c in table.columns:
            if row is None or row.get(c.name) is None:
                continue
            schema = fastavro.parse_schema({"type": "record", "name": "Value", "fields": [
                {"name": "v", "type": avro_value_type(c.type_oid, c.pg_type)}]})
            try:
                _write(schema, {"v": avro_field_value(row[c.name], has_text_fallback(c.type_oid))})
            except Exception as column_exc:  # noqa: BLE001 - reported, with the value
                return UnencodableValue(table.qualified, c.name, row[c.name],
                                        str(column_exc) or type(column_exc).__name__)
    return UnencodableValue(table.qualified, "?", None, str(exc) or type(exc).__name__)


def decode_generic(value: bytes, registry: SchemaRegistry) -> Record:
    """``decode`` through fastavro's generic reader: the reference the compiled decoders
    must match value for value, and what reads any bytes they do not accept."""
    fp, _ = split_header(value)
    parsed = _reader_schema(registry.parsed(fp))
    body = io.BytesIO(value)
    body.seek(10)  # past the header, without copying the body
    try:
        datum = fastavro.schemaless_reader(body, parsed, None)
    except Exception as exc:  # fastavro raises several types on garbage
        raise ValidationError(f"cannot decode record with schema {fp.hex()}: {exc}") from exc
    try:
        return _record(datum, registry.table(fp))
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        # the body decoded but is no valid record (e.g. an unknown op): still bad input
        raise ValidationError(f"record with schema {fp.hex()} is invalid: {exc}") from exc


# id(parsed writer schema) -> (it, the schema decode reads with): the same schema, except
# that the commit_ts of the stream's own records (Source, TransactionMarker, LogicalMessage)
# is read as the plain long it is written as; the journal keeps it as µs, so fastavro's
# datetime would only be converted back (the bytes and the values are the same)
_READERS: dict[int, tuple[Any, Any]] = {}
_STREAM_RECORDS = ("edms_journal.Source", "edms_journal.TransactionMarker",
                   "edms_journal.LogicalMessage")


def _reader_schema(parsed: Any) -> Any:
    hit = _READERS.get(id(parsed))
    if hit is None or hit[0] is not parsed:
        if len(_READERS) >= 4096:
            _READERS.clear()
        hit = _READERS[id(parsed)] = (parsed, _plain_commit_ts(parsed))
    return hit[1]


def _plain_commit_ts(parsed: Any) -> Any:
    schema = json.loads(json.dumps({k: v for k, v in parsed.items()
                                    if not k.startswith("__")}))
    changed = False

    def walk(node: Any) -> None:
        nonlocal changed
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("type") == "record" and node.get("name") in _STREAM_RECORDS:
                for f in node["fields"]:
                    if (f["name"] == "commit_ts" and isinstance(f["type"], dict)
                            and f["type"].get("logicalType") == "timestamp-micros"):
                        f["type"] = "long"
                        changed = True
            for key in ("type", "fields", "items"):
                if key in node:
                    walk(node[key])

    walk(schema)
    return fastavro.parse_schema(schema) if changed else parsed


def _record(datum: dict[str, Any], table: TableSchema | None) -> Record:
    if table is not None:
        src = datum["source"]
        return ChangeEvent(
            op=datum["op"], database=src["database"], table=table,
            position=Position(src["commit_lsn"], src["seq"]), xid=src["xid"],
            commit_ts=_micros(src["commit_ts"]),
            before=from_avro_row(table, datum["before"]),
            after=from_avro_row(table, datum["after"]),
            unchanged_toast=tuple(datum["unchanged_toast"]), snapshot=src["snapshot"],
            ts_ms=datum["ts_ms"])
    if "status" in datum:
        return TransactionMarker(datum["status"], datum["database"],
                                 Position(datum["commit_lsn"], datum["seq"]), datum["xid"],
                                 _micros(datum["commit_ts"]), datum["event_count"])
    return LogicalMessage(datum["database"], datum["prefix"], datum["content"],
                          datum["transactional"], Position(datum["commit_lsn"], datum["seq"]),
                          datum["xid"], _micros(datum["commit_ts"]))


def _micros(value: Any) -> int:
    # fastavro returns timestamp-micros as an aware datetime
    if isinstance(value, int):
        return value
    from journal.events import datetime_to_micros

    return datetime_to_micros(value)
