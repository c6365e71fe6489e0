"""Avro codec: single-object encoding of stream records, schemas keyed by fingerprint.

Every value is ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint + the Avro binary body,
as the Avro specification's single-object encoding defines, so any Avro implementation
decodes it given the schema published under that fingerprint.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from journal.catalog import TableSchema
from journal.errors import ValidationError
from journal.events import ChangeEvent, LogicalMessage, Record, TransactionMarker
from journal.positions import Position

MAGIC = b"\xc3\x01"


@cache
def packaged_schema(name: str) -> dict[str, Any]:
    """One of the fixed schemas shipped in the ``schemas`` package."""
    return json.loads(resources.files("schemas").joinpath(f"{name}.avsc").read_text())


def fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, in header (little-endian) byte order."""
    return bytes.fromhex(_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def envelope_schema(table: TableSchema) -> dict[str, Any]:
    row = table.avro_row_schema()
    ns = table.avro_namespace()
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": ns,
        "pg_schema": table.schema,
        "pg_table": table.name,
        "pg_primary_key": list(table.primary_key),
        "fields": [
            {"name": "before", "type": ["null", row], "default": None},
            {"name": "after", "type": ["null", f"{ns}.Row"], "default": None},
            {"name": "op", "type": "string"},
            {"name": "source", "type": packaged_schema("source")},
            {"name": "ts_ms", "type": "long"},
            {"name": "unchanged_toast", "type": {"type": "array", "items": "string"}},
        ],
    }


class SchemaRegistry:
    """Schemas by fingerprint: what a transport publishes and a package copies."""

    def __init__(self) -> None:
        self._json: dict[bytes, str] = {}
        self._parsed: dict[bytes, Any] = {}
        self._tables: dict[bytes, TableSchema] = {}
        self._by_table: dict[TableSchema, tuple[bytes, Any, Any]] = {}
        for name in ("transaction", "message"):
            self.add(json.dumps(packaged_schema(name)))

    def add(self, schema_json: str) -> bytes:
        schema = json.loads(schema_json)
        fp = fingerprint(schema)
        if fp not in self._json:
            self._json[fp] = schema_json
            self._parsed[fp] = fastavro.parse_schema(schema)
            if schema.get("name") == "Envelope" and "pg_table" in schema:
                self._tables[fp] = TableSchema.from_avro_envelope(schema)
        return fp

    def for_table(self, table: TableSchema) -> tuple[bytes, Any, Any]:
        """(fingerprint, parsed envelope, parsed key schema), registering on first use."""
        hit = self._by_table.get(table)
        if hit is None:
            fp = self.add(json.dumps(envelope_schema(table)))
            key = fastavro.parse_schema(table.avro_key_schema())
            hit = self._by_table[table] = (fp, self._parsed[fp], key)
            self._tables[fp] = table
        return hit

    def fingerprint_of(self, name: str) -> bytes:
        return fingerprint(packaged_schema(name))

    def schema_json(self, fp: bytes) -> str:
        try:
            return self._json[fp]
        except KeyError:
            raise ValidationError(f"no schema with fingerprint {fp.hex()} is known") from None

    def items(self) -> list[tuple[bytes, str]]:
        return list(self._json.items())

    def __contains__(self, fp: bytes) -> bool:
        return fp in self._json

    def parsed(self, fp: bytes) -> Any:
        if fp not in self._parsed:
            self.schema_json(fp)
        return self._parsed[fp]

    def table(self, fp: bytes) -> TableSchema | None:
        return self._tables.get(fp)


def _to_avro_row(table: TableSchema, row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {f: _avro_value(row.get(c.name)) for f, c in zip(table.avro_field_names(),
                                                            table.columns, strict=True)}


def _avro_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_avro_value(v) for v in value]
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _from_avro_row(table: TableSchema, row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {c.name: row[f] for f, c in zip(table.avro_field_names(), table.columns, strict=True)}


def _write(parsed: Any, datum: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def encode(record: Record, registry: SchemaRegistry) -> tuple[bytes | None, bytes]:
    """Encode a record to ``(key, value)``; the key is the row's primary key (Avro)."""
    if isinstance(record, ChangeEvent):
        t = record.table
        fp, parsed, key_schema = registry.for_table(t)
        pos = record.position
        datum = {
            "before": _to_avro_row(t, record.before),
            "after": _to_avro_row(t, record.after),
            "op": record.op,
            "source": {"database": record.database, "schema": t.schema, "table": t.name,
                       "commit_lsn": pos.commit_lsn, "seq": pos.seq, "xid": record.xid,
                       "commit_ts": record.commit_ts, "snapshot": record.snapshot},
            "ts_ms": record.ts_ms,
            "unchanged_toast": list(record.unchanged_toast),
        }
        key = None
        if record.key and t.primary_key:
            key = _write(key_schema, dict(zip([f["name"] for f in key_schema["fields"]],
                                              record.key, strict=True)))
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


def split_header(value: bytes) -> tuple[bytes, bytes]:
    """(fingerprint, body) of a single-object encoded value, or ValidationError."""
    if len(value) < 10 or value[:2] != MAGIC:
        raise ValidationError("value is not Avro single-object encoded (no C3 01 marker)")
    return value[2:10], value[10:]


def decode(value: bytes, registry: SchemaRegistry) -> Record:
    fp, body = split_header(value)
    parsed = registry.parsed(fp)
    try:
        datum = fastavro.schemaless_reader(io.BytesIO(body), parsed, None)
    except Exception as exc:  # fastavro raises several types on garbage
        raise ValidationError(f"cannot decode record with schema {fp.hex()}: {exc}") from exc
    try:
        return _record(datum, registry.table(fp))
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        # the body decoded but is no valid record (e.g. an unknown op): still bad input
        raise ValidationError(f"record with schema {fp.hex()} is invalid: {exc}") from exc


def _record(datum: dict[str, Any], table: TableSchema | None) -> Record:
    if table is not None:
        src = datum["source"]
        return ChangeEvent(
            op=datum["op"], database=src["database"], table=table,
            position=Position(src["commit_lsn"], src["seq"]), xid=src["xid"],
            commit_ts=_micros(src["commit_ts"]),
            before=_from_avro_row(table, datum["before"]),
            after=_from_avro_row(table, datum["after"]),
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


def decimal_fits(value: Decimal, scale: int) -> bool:
    return value.is_finite() and -value.as_tuple().exponent <= scale
