"""Avro codec: single-object encoding of stream records, schemas keyed by fingerprint.

Every value is ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint + the Avro binary body,
as the Avro specification's single-object encoding defines, so any Avro implementation
decodes it given the schema published under that fingerprint.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any
from uuid import UUID

import fastavro
from fastavro._logical_writers import LOGICAL_WRITERS
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
        # id(table) -> (table, encoder): hashing a TableSchema per record is measurable
        self._encoders: dict[int, tuple[TableSchema, _ChangeEncoder]] = {}
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

    def encoder(self, table: TableSchema) -> _ChangeEncoder:
        """The compiled envelope encoder of a table version, registering it on first use."""
        hit = self._encoders.get(id(table))
        if hit is None or hit[0] is not table:
            fp, parsed, key_schema = self.for_table(table)
            hit = self._encoders[id(table)] = (table, _ChangeEncoder(table, fp, parsed,
                                                                     key_schema))
        return hit[1]

    def fingerprint_of(self, name: str) -> bytes:
        return _packaged_fingerprint(name)

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


@cache
def _packaged_fingerprint(name: str) -> bytes:
    return fingerprint(packaged_schema(name))


@cache
def _field_names(table: TableSchema) -> tuple[str, ...]:
    return table.avro_field_names()


def _to_avro_row(table: TableSchema, row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {f: _avro_value(row.get(c.name)) for f, c in zip(_field_names(table),
                                                            table.columns, strict=True)}


def _avro_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_avro_value(v) for v in value]
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _from_avro_row(table: TableSchema, row: dict[str, Any] | None) -> dict[str, Any] | None:
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


def encode(record: Record, registry: SchemaRegistry) -> tuple[bytes | None, bytes]:
    """Encode a record to ``(key, value)``; the key is the row's primary key (Avro)."""
    try:
        return encode_compiled(record, registry)
    except Exception:  # fastavro writes it, or raises what it raises for such a value
        return encode_generic(record, registry)


def encode_compiled(record: Record, registry: SchemaRegistry) -> tuple[bytes | None, bytes]:
    """``encode`` with the encoders compiled per schema (see below); raises for any value
    they leave to fastavro's generic writer."""
    kind = type(record)
    if kind is ChangeEvent:
        return registry.encoder(record.table).encode(record)  # type: ignore[union-attr,arg-type]
    if kind is TransactionMarker:
        return _encode_marker(record)  # type: ignore[arg-type]
    if kind is LogicalMessage:
        return _encode_message(record)  # type: ignore[arg-type]
    raise _Unhandled(f"no compiled encoder for {kind.__name__}")


def encode_generic(record: Record, registry: SchemaRegistry) -> tuple[bytes | None, bytes]:
    """``encode`` through fastavro's generic writer: the reference the compiled encoders
    must match byte for byte, and what writes any value they do not handle."""
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


# -- compiled encoders -------------------------------------------------------------------
#
# fastavro's generic writer validates every union branch of every record it writes, which
# made encoding the most expensive step of capture. These encoders are built once per
# table version from the same Avro types, write the same bytes (tests/test_codec_fast.py
# proves it against fastavro), and hand any value they do not recognise to fastavro by
# raising: a record is always either encoded exactly as fastavro would, or by fastavro.

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_BYTE = tuple(bytes((i,)) for i in range(128))
_NULL = b"\x00"  # union branch 0 ("null")
_SOME = b"\x02"  # union branch 1
_TRUE, _FALSE = b"\x01", b"\x00"
_EMPTY_ARRAY = b"\x00"
_pack_float = struct.Struct("<f").pack
_pack_double = struct.Struct("<d").pack
_timestamp_micros = LOGICAL_WRITERS["long-timestamp-micros"]
_Encode = Callable[[Any], bytes]


class _Unhandled(ValueError):
    """A value the compiled encoders leave to fastavro."""


def _long(n: int) -> bytes:
    """Avro long: zigzag, then a little-endian base-128 varint."""
    if type(n) is not int or not _LONG_MIN <= n <= _LONG_MAX:
        raise _Unhandled
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int(n: Any) -> bytes:
    if type(n) is not int or not _INT_MIN <= n <= _INT_MAX:
        raise _Unhandled
    return _long(n)


def _boolean(v: Any) -> bytes:
    if v is True:
        return _TRUE
    if v is False:
        return _FALSE
    raise _Unhandled


def _float(v: Any) -> bytes:
    if type(v) is not float:
        raise _Unhandled
    return _pack_float(v)


def _double(v: Any) -> bytes:
    if type(v) is not float:
        raise _Unhandled
    return _pack_double(v)


def _string(v: Any) -> bytes:
    if type(v) is not str:
        raise _Unhandled
    data = v.encode()
    return _long(len(data)) + data


def _bytes(v: Any) -> bytes:
    if type(v) is memoryview:
        v = bytes(v)
    elif type(v) is not bytes:
        raise _Unhandled
    return _long(len(v)) + v


def _logical(kind: type, prepare: Callable[[Any, Any], Any], schema: dict[str, Any],
             base: _Encode) -> _Encode:
    # fastavro's own conversion (the function its writer calls), then the base type
    def write(v: Any) -> bytes:
        if type(v) is not kind:
            raise _Unhandled
        return base(prepare(v, schema))
    return write


def _uuid(v: Any) -> bytes:
    if type(v) is UUID:
        v = str(v)
    return _string(v)


def _array(items: _Encode) -> _Encode:
    def write(v: Any) -> bytes:
        if type(v) is not list:
            raise _Unhandled
        if not v:
            return _EMPTY_ARRAY
        parts = [_long(len(v))]
        for item in v:
            parts.append(_NULL if item is None else _SOME + items(item))
        parts.append(_EMPTY_ARRAY)
        return b"".join(parts)
    return write


_PRIMITIVES: dict[str, _Encode] = {
    "boolean": _boolean, "int": _int, "long": _long, "float": _float, "double": _double,
    "string": _string, "bytes": _bytes,
}
_LOGICAL_KINDS: dict[str, type] = {
    "long-timestamp-micros": datetime, "long-local-timestamp-micros": datetime,
    "int-date": date, "long-time-micros": time, "bytes-decimal": Decimal,
}


def _compile(avro_type: Any) -> _Encode:
    """The encoder of one non-union Avro type as ``catalog._avro_base`` spells it."""
    if isinstance(avro_type, str):
        return _PRIMITIVES[avro_type]
    if avro_type["type"] == "array":
        items = avro_type["items"]
        if not (isinstance(items, list) and len(items) == 2 and items[0] == "null"):
            raise ValueError(f"unexpected array items {items!r}")
        return _array(_compile(items[1]))
    base = _PRIMITIVES[avro_type["type"]]
    logical = f"{avro_type['type']}-{avro_type.get('logicalType')}"
    if logical == "string-uuid":
        return _uuid
    if logical in _LOGICAL_KINDS:
        return _logical(_LOGICAL_KINDS[logical], LOGICAL_WRITERS[logical], avro_type, base)
    if "logicalType" in avro_type:
        raise ValueError(f"unexpected logical type {avro_type!r}")
    return base


class _ChangeEncoder:
    """The envelope (and key) of one table version's change events."""

    def __init__(self, table: TableSchema, fp: bytes, parsed: Any, key_schema: Any) -> None:
        self.table = table
        self.header = MAGIC + fp
        row_schema = parsed["fields"][0]["type"][1]
        self.columns: tuple[tuple[str, _Encode], ...] = tuple(
            (c.name, _compile(f["type"][1]))
            for c, f in zip(table.columns, row_schema["fields"], strict=True))
        names = table.column_names
        self.key_indexes = tuple(names.index(n) for n in table.primary_key)
        self.ops: dict[str, bytes] = {}
        self.sources: dict[str, bytes] = {}  # database -> its encoded source strings
        # the longs every record of a transaction repeats (commit LSN, xid, timestamps)
        self.longs: dict[int, bytes] = {}

    def _txn_long(self, n: int) -> bytes:
        if type(n) is int:  # not a bool or float that compares equal to a cached int
            hit = self.longs.get(n)
            if hit is not None:
                return hit
        if len(self.longs) >= 1024:
            self.longs.clear()
        hit = self.longs[n] = _long(n)
        return hit

    def _bases(self, row: dict[str, Any]) -> list[bytes | None]:
        get = row.get
        return [None if (v := get(name)) is None else write(v) for name, write in self.columns]

    def encode(self, record: ChangeEvent) -> tuple[bytes | None, bytes]:
        parts = [self.header]
        add = parts.append
        before_bases = after_bases = None
        if record.before is None:
            add(_NULL)
        else:
            before_bases = self._bases(record.before)
            add(_SOME)
            parts.extend([_NULL if b is None else _SOME + b for b in before_bases])
        if record.after is None:
            add(_NULL)
        else:
            after_bases = self._bases(record.after)
            add(_SOME)
            parts.extend([_NULL if b is None else _SOME + b for b in after_bases])
        op = self.ops.get(record.op)
        if op is None:
            op = self.ops[record.op] = _string(record.op)
        add(op)
        source = self.sources.get(record.database)
        if source is None:
            table = self.table
            source = self.sources[record.database] = (
                _string(record.database) + _string(table.schema) + _string(table.name))
        add(source)
        pos = record.position
        txn_long = self._txn_long
        add(txn_long(pos.commit_lsn))
        add(_long(pos.seq))
        add(txn_long(record.xid))
        commit_ts = record.commit_ts
        add(txn_long(commit_ts if type(commit_ts) is int else _timestamp_micros(commit_ts, None)))
        add(_boolean(record.snapshot))
        add(txn_long(record.ts_ms))
        toast = record.unchanged_toast
        if toast:
            add(_long(len(toast)))
            parts.extend([_string(name) for name in toast])
        add(_EMPTY_ARRAY)
        return self._key(record, before_bases, after_bases), b"".join(parts)

    def _key(self, record: ChangeEvent, before: list[bytes | None] | None,
             after: list[bytes | None] | None) -> bytes | None:
        # the key record's fields are the primary key columns' row fields without the union
        # branch: the same bytes the row encoding just produced
        bases = after if record.after is not None else before
        if bases is None or not self.key_indexes:
            return None
        parts = [bases[i] for i in self.key_indexes]
        if None in parts:
            raise _Unhandled  # a missing or null key column: fastavro reports it
        return b"".join(parts)  # type: ignore[arg-type]


_MARKER_STATUS = {"BEGIN": b"\x00", "END": b"\x02"}  # enum index as an Avro int


def _encode_marker(record: TransactionMarker) -> tuple[bytes | None, bytes]:
    pos = record.position
    return str(record.xid).encode(), b"".join((
        MAGIC, _packaged_fingerprint("transaction"), _MARKER_STATUS[record.status],
        _string(record.database), _long(pos.commit_lsn), _long(pos.seq), _long(record.xid),
        _long(_timestamp_micros(record.commit_ts, None)), _long(record.event_count)))


def _encode_message(record: LogicalMessage) -> tuple[bytes | None, bytes]:
    if type(record.content) is not bytes:
        raise _Unhandled
    pos = record.position
    return record.prefix.encode(), b"".join((
        MAGIC, _packaged_fingerprint("message"), _string(record.database),
        _string(record.prefix), _bytes(record.content), _boolean(record.transactional),
        _long(pos.commit_lsn), _long(pos.seq), _long(record.xid),
        _long(_timestamp_micros(record.commit_ts, None))))


def split_header(value: bytes) -> tuple[bytes, bytes]:
    """(fingerprint, body) of a single-object encoded value, or ValidationError."""
    if len(value) < 10 or value[:2] != MAGIC:
        raise ValidationError("value is not Avro single-object encoded (no C3 01 marker)")
    return value[2:10], value[10:]


def decode(value: bytes, registry: SchemaRegistry) -> Record:
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
