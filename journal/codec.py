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
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any
from uuid import UUID, SafeUUID

import fastavro
from fastavro._logical_readers import LOGICAL_READERS
from fastavro._logical_writers import LOGICAL_WRITERS
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from journal.catalog import TableSchema, avro_value_type, has_text_fallback
from journal.errors import UnencodableValue, ValidationError
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
        # fingerprint -> compiled decoder, or None where fastavro reads the schema
        self._decoders: dict[bytes, Callable[[bytes], Record] | None] = {}
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

    def decoder(self, fp: bytes) -> Callable[[bytes], Record] | None:
        """The compiled decoder of a schema's values, or None: unknown fingerprint, or a
        schema the compiled decoders do not read (fastavro does)."""
        try:
            return self._decoders[fp]
        except KeyError:
            pass
        if fp not in self._parsed:
            return None
        decoder: Callable[[bytes], Record] | None = None
        if fp == _packaged_fingerprint("transaction"):
            decoder = _decode_marker
        elif fp == _packaged_fingerprint("message"):
            decoder = _decode_message
        elif (table := self._tables.get(fp)) is not None:
            compiled = _ChangeDecoder.compile(self._parsed[fp], table)
            decoder = None if compiled is None else compiled.decode
        self._decoders[fp] = decoder
        return decoder

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


def encode(record: Record, registry: SchemaRegistry) -> tuple[bytes | None, bytes]:
    """Encode a record to ``(key, value)``; the key is the row's primary key (Avro).

    A change whose value no branch of its column's type holds raises UnencodableValue
    naming the table, the column and the value."""
    try:
        return encode_compiled(record, registry)
    except Exception:  # fastavro writes it, or raises what it raises for such a value
        try:
            return encode_generic(record, registry)
        except Exception as exc:
            if isinstance(record, ChangeEvent):
                raise unencodable(record, exc) from exc
            raise


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
_time_micros = LOGICAL_READERS["long-time-micros"]
_decimal = LOGICAL_READERS["bytes-decimal"]
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


def avro_long(n: int) -> bytes:
    """Avro's zigzag varint for a long: also what container-file block headers use."""
    return _long(n)


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


def _typed_branch(field_type: Any) -> Any:
    """The typed branch of a row field's union, as ``catalog.avro_value_type`` spells it."""
    if (isinstance(field_type, list) and field_type[0] == "null"
            and (len(field_type) == 2 or (len(field_type) == 3 and field_type[2] == "string"))):
        return field_type[1]
    raise ValueError(f"unexpected row field type {field_type!r}")


class _ChangeEncoder:
    """The envelope (and key) of one table version's change events."""

    def __init__(self, table: TableSchema, fp: bytes, parsed: Any, key_schema: Any) -> None:
        self.table = table
        self.header = MAGIC + fp
        row_schema = parsed["fields"][0]["type"][1]
        # A field is ["null", typed] or ["null", typed, "string"] (catalog.avro_value_type):
        # only the typed branch is compiled; a value in the text branch (a str where the
        # typed encoder wants a date, a list…) raises _Unhandled, and fastavro writes it.
        self.columns: tuple[tuple[str, _Encode], ...] = tuple(
            (c.name, _compile(_typed_branch(f["type"])))
            for c, f in zip(table.columns, row_schema["fields"], strict=True))
        names = table.column_names
        self.key_indexes = tuple(names.index(n) for n in table.primary_key)
        # a key field with a text branch is the union [typed, "string"]: branch 0 first
        self.key_prefixes = tuple(_NULL if isinstance(f["type"], list) else b""
                                  for f in key_schema["fields"])
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
        if any(self.key_prefixes):
            parts = [p + b for p, b in zip(self.key_prefixes, parts, strict=True)]  # type: ignore[operator]
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
    """The record of a single-object encoded value, or ValidationError."""
    try:
        return decode_compiled(value, registry)
    except Exception:  # fastavro reads it, or raises what the codec raises for such bytes
        return decode_generic(value, registry)


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


# -- compiled decoders -------------------------------------------------------------------
#
# fastavro's schemaless_reader parses the writer schema again on every call and walks it
# generically, which bounded restore replay. These decoders are built once per writer
# schema, read the same values (tests/test_codec_decode.py proves it against fastavro,
# type for type), and leave to fastavro, by raising, every input they do not recognise as
# plainly valid: an overlong varint, a negative or too large length or count, a union or
# enum index outside the schema, bad UTF-8, a date out of range. Such bytes are then read
# (or rejected with ValidationError) exactly as before.

_Read = Callable[[bytes, int], tuple[Any, int]]
_unpack_float = struct.Struct("<f").unpack_from
_unpack_double = struct.Struct("<d").unpack_from
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # as fastavro's logical readers
_EPOCH_NAIVE = datetime(1970, 1, 1)
_DAYS_SHIFT = date(1970, 1, 1).toordinal()
_date_from_ordinal = date.fromordinal
_new_object = object.__new__
_set_attribute = object.__setattr__


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    # unrolled: a loop with a shift counter costs a third more per multi-byte value
    b = buf[pos]
    n = b & 0x7F
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 1
    b = buf[pos + 1]
    n |= (b & 0x7F) << 7
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 2
    b = buf[pos + 2]
    n |= (b & 0x7F) << 14
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 3
    b = buf[pos + 3]
    n |= (b & 0x7F) << 21
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 4
    b = buf[pos + 4]
    n |= (b & 0x7F) << 28
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 5
    b = buf[pos + 5]
    n |= (b & 0x7F) << 35
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 6
    b = buf[pos + 6]
    n |= (b & 0x7F) << 42
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 7
    b = buf[pos + 7]
    n |= (b & 0x7F) << 49
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 8
    b = buf[pos + 8]
    n |= (b & 0x7F) << 56
    if b < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 9
    b = buf[pos + 9]
    n |= (b & 0x7F) << 63
    if b < 0x80 and not n >> 64:
        return (n >> 1) ^ -(n & 1), pos + 10
    raise _Unhandled  # over 10 bytes or 64 bits: fastavro's C reader wraps; it decides


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    b = buf[pos]
    if b < 0x80 and not b & 1:  # a short non-negative length: one byte
        pos += 1
        end = pos + (b >> 1)
    else:
        size, pos = _read_long(buf, pos)
        if size < 0:
            raise _Unhandled
        end = pos + size
    if end > len(buf):  # checked before slicing: a declared length allocates nothing
        raise _Unhandled
    return buf[pos:end], end


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    data, pos = _read_bytes(buf, pos)
    return data.decode(), pos


def _read_boolean(buf: bytes, pos: int) -> tuple[bool, int]:
    return buf[pos] != 0, pos + 1  # fastavro: any byte but 0 is true


def _read_float(buf: bytes, pos: int) -> tuple[float, int]:
    return _unpack_float(buf, pos)[0], pos + 4


def _read_double(buf: bytes, pos: int) -> tuple[float, int]:
    return _unpack_double(buf, pos)[0], pos + 8


def _read_date(buf: bytes, pos: int) -> tuple[date, int]:
    n, pos = _read_long(buf, pos)
    return _date_from_ordinal(n + _DAYS_SHIFT), pos


def _read_timestamp(buf: bytes, pos: int) -> tuple[datetime, int]:
    n, pos = _read_long(buf, pos)
    return _EPOCH + timedelta(0, 0, n), pos  # fastavro's sum; positional is faster


def _read_local_timestamp(buf: bytes, pos: int) -> tuple[datetime, int]:
    n, pos = _read_long(buf, pos)
    return _EPOCH_NAIVE + timedelta(0, 0, n), pos


def _read_uuid(buf: bytes, pos: int) -> tuple[UUID, int]:
    text, pos = _read_string(buf, pos)
    digits = text.replace("-", "")
    if len(digits) == 32 and digits.isascii() and digits.isalnum():
        # what UUID(text) does for such text (nothing to strip), without its other checks
        value = _new_object(UUID)
        _set_attribute(value, "int", int(digits, 16))
        _set_attribute(value, "is_safe", SafeUUID.unknown)
        return value, pos
    return UUID(text), pos


def _read_time(buf: bytes, pos: int) -> tuple[time, int]:
    n, pos = _read_long(buf, pos)
    return _time_micros(n), pos  # fastavro's own conversion (float division and all)


def _read_decimal(schema: dict[str, Any]) -> _Read:
    def read(buf: bytes, pos: int) -> tuple[Decimal, int]:
        data, pos = _read_bytes(buf, pos)
        return _decimal(data, schema), pos  # fastavro's own conversion and context
    return read


def _read_array(items: _Read, nullable: bool) -> _Read:
    def read(buf: bytes, pos: int) -> tuple[list[Any], int]:
        count, pos = _read_long(buf, pos)
        out: list[Any] = []
        add = out.append
        while count:
            # every item takes at least one byte: a count beyond the bytes left is garbage
            if count < 0 or count > len(buf) - pos:
                raise _Unhandled
            for _ in range(count):
                if nullable:
                    tag = buf[pos]
                    if tag == 0:
                        add(None)
                        pos += 1
                        continue
                    if tag != 2:
                        raise _Unhandled
                    pos += 1
                value, pos = items(buf, pos)
                add(value)
            count, pos = _read_long(buf, pos)
        return out, pos
    return read


_PRIMITIVE_READERS: dict[str, _Read] = {
    "boolean": _read_boolean, "int": _read_long, "long": _read_long, "float": _read_float,
    "double": _read_double, "string": _read_string, "bytes": _read_bytes,
}
_LOGICAL_READERS: dict[str, _Read] = {
    "int-date": _read_date, "long-time-micros": _read_time,
    "long-timestamp-micros": _read_timestamp,
    "long-local-timestamp-micros": _read_local_timestamp, "string-uuid": _read_uuid,
}


def _compile_reader(avro_type: Any) -> _Read | None:
    """The reader of one non-union Avro type, or None for one fastavro must read."""
    if isinstance(avro_type, str):
        return _PRIMITIVE_READERS.get(avro_type)
    if not isinstance(avro_type, dict):
        return None
    kind = avro_type.get("type")
    if kind == "array":
        items = avro_type.get("items")
        if isinstance(items, list) and len(items) == 2 and items[0] == "null":
            item = _compile_reader(items[1])
            return None if item is None else _read_array(item, True)
        item = _compile_reader(items)
        return None if item is None else _read_array(item, False)
    if kind not in _PRIMITIVE_READERS:
        return None
    if "logicalType" not in avro_type:
        return _PRIMITIVE_READERS[kind]
    logical = f"{kind}-{avro_type['logicalType']}"
    if logical == "bytes-decimal":
        return _read_decimal(avro_type)
    return _LOGICAL_READERS.get(logical)  # another logical type: fastavro's business


# Row readers are generated as straight-line code per table version: a call and a tuple
# per column cost more than reading most column values, so the common types are inlined.
_INLINE_LONG = """\
{i}b = buf[pos]
{i}if b < 0x80:
{i}    v{n} = (b >> 1) ^ -(b & 1)
{i}    pos += 1
{i}else:
{i}    v{n}, pos = _read_long(buf, pos)
"""
_INLINE_BYTES = """\
{i}b = buf[pos]
{i}if b < 0x80 and not b & 1:
{i}    pos += 1
{i}    end = pos + (b >> 1)
{i}else:
{i}    size, pos = _read_long(buf, pos)
{i}    if size < 0:
{i}        raise _Unhandled
{i}    end = pos + size
{i}if end > length:
{i}    raise _Unhandled
{i}v{n} = buf[pos:end]
{i}pos = end
"""
_INLINE: dict[Any, str] = {
    "int": _INLINE_LONG, "long": _INLINE_LONG,
    "bytes": _INLINE_BYTES,
    "string": _INLINE_BYTES + "{i}v{n} = v{n}.decode()\n",
    "boolean": "{i}v{n} = buf[pos] != 0\n{i}pos += 1\n",
    "float": "{i}v{n} = _unpack_float(buf, pos)[0]\n{i}pos += 4\n",
    "double": "{i}v{n} = _unpack_double(buf, pos)[0]\n{i}pos += 8\n",
    ("int", "date"): _INLINE_LONG + "{i}v{n} = _date_from_ordinal(v{n} + _DAYS_SHIFT)\n",
    ("long", "timestamp-micros"): _INLINE_LONG
    + "{i}v{n} = _EPOCH + timedelta(0, 0, v{n})\n",
    ("long", "local-timestamp-micros"): _INLINE_LONG
    + "{i}v{n} = _EPOCH_NAIVE + timedelta(0, 0, v{n})\n",
}


def _inline_key(avro_type: Any) -> Any:
    if isinstance(avro_type, dict) and set(avro_type) <= {"type", "logicalType"}:
        return (avro_type["type"], avro_type["logicalType"]) if "logicalType" in avro_type \
            else avro_type["type"]
    return avro_type if isinstance(avro_type, str) else None


def _row_reader(row_schema: Any, names: tuple[str, ...]) -> _Read | None:
    """The reader of a Row record, returning a dict keyed by column name."""
    if not (isinstance(row_schema, dict) and row_schema.get("type") == "record"):
        return None
    fields = row_schema["fields"]
    if len(fields) != len(names):
        return None
    namespace: dict[str, Any] = {
        "_Unhandled": _Unhandled, "_read_long": _read_long, "_unpack_float": _unpack_float,
        "_unpack_double": _unpack_double, "_date_from_ordinal": _date_from_ordinal,
        "_DAYS_SHIFT": _DAYS_SHIFT, "_EPOCH": _EPOCH, "_EPOCH_NAIVE": _EPOCH_NAIVE,
        "timedelta": timedelta}
    lines = ["def read(buf, pos):", "    length = len(buf)"]
    for n, f in enumerate(fields):
        avro_type = f["type"]
        nullable = isinstance(avro_type, list)
        text = False  # a third branch, "string": PostgreSQL's text form of the value
        if nullable:
            if len(avro_type) == 3 and avro_type[0] == "null" and avro_type[2] == "string":
                text = True
            elif len(avro_type) != 2 or avro_type[0] != "null":
                return None
            avro_type = avro_type[1]
        indent = "        " if nullable else "    "
        inline = _INLINE.get(_inline_key(avro_type))
        if inline is None:
            read_value = _compile_reader(avro_type)
            if read_value is None:
                return None
            namespace[f"read{n}"] = read_value
            inline = "{i}v{n}, pos = read{n}(buf, pos)\n"
        if nullable:
            lines += ["    tag = buf[pos]", "    if tag == 0:", f"        v{n} = None",
                      "        pos += 1", "    elif tag == 2:", "        pos += 1"]
        lines += inline.format(i=indent, n=n).splitlines()
        if text:
            lines += ["    elif tag == 4:", "        pos += 1"]
            lines += _INLINE["string"].format(i=indent, n=n).splitlines()
        if nullable:
            lines += ["    else:", "        raise _Unhandled"]
    items = ", ".join(f"{name!r}: v{n}" for n, name in enumerate(names))
    lines.append(f"    return {{{items}}}, pos")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from fixed templates
    return namespace["read"]  # type: ignore[no-any-return]


def record_reader(schema: Any) -> Callable[[bytes, int], tuple[dict[str, Any], int]] | None:
    """A compiled reader of one record of ``schema`` (as fastavro parses it): given the bytes
    and a position, the dict fastavro's schemaless_reader returns there (keyed by field
    name) and the position after it. Raises for any bytes it leaves to fastavro; None for
    a schema with a type it does not read."""
    try:
        names = tuple(f["name"] for f in schema["fields"])
        if not all(type(n) is str for n in names):
            return None
        return _row_reader(schema, names)
    except (KeyError, TypeError, AttributeError):
        return None


def _read_optional_row(buf: bytes, pos: int, read_row: _Read) -> tuple[Any, int]:
    tag = buf[pos]
    if tag == 0:
        return None, pos + 1
    if tag != 2:
        raise _Unhandled
    return read_row(buf, pos + 1)


def _field_types(schema: Any) -> list[tuple[str, Any]]:
    return [(f["name"], f["type"]) for f in schema["fields"]]


_SOURCE_FIELDS = [("database", "string"), ("schema", "string"), ("table", "string"),
                  ("commit_lsn", "long"), ("seq", "long"), ("xid", "long"),
                  ("commit_ts", {"type": "long", "logicalType": "timestamp-micros"}),
                  ("snapshot", "boolean")]


class _ChangeDecoder:
    """The envelope of one table version's change events, as ``envelope_schema`` writes it."""

    def __init__(self, table: TableSchema, read_row: _Read) -> None:
        self.table = table
        self.read_row = read_row

    @classmethod
    def compile(cls, parsed: Any, table: TableSchema) -> _ChangeDecoder | None:
        """The decoder of an envelope schema, or None if it is not exactly the shape this
        decoder reads (an older or foreign writer): fastavro then reads it."""
        try:
            fields = _field_types(parsed)
            names = [n for n, _ in fields]
            if names != ["before", "after", "op", "source", "ts_ms", "unchanged_toast"]:
                return None
            before, after = fields[0][1], fields[1][1]
            if not (isinstance(before, list) and len(before) == 2 and before[0] == "null"
                    and isinstance(before[1], dict)
                    and after == ["null", before[1].get("name")]):
                return None
            source = fields[3][1]
            if (fields[2][1] != "string" or fields[4][1] != "long"
                    or fields[5][1] != {"type": "array", "items": "string"}
                    or not isinstance(source, dict) or source.get("type") != "record"
                    or _field_types(source) != _SOURCE_FIELDS):
                return None
            read_row = _row_reader(before[1], table.column_names)
        except (KeyError, TypeError, AttributeError):
            return None
        return None if read_row is None else cls(table, read_row)

    def decode(self, buf: bytes) -> ChangeEvent:
        read_row = self.read_row
        before, pos = _read_optional_row(buf, 10, read_row)
        after, pos = _read_optional_row(buf, pos, read_row)
        op, pos = _read_string(buf, pos)
        database, pos = _read_string(buf, pos)
        _, pos = _read_string(buf, pos)  # schema and table: the registry's TableSchema
        _, pos = _read_string(buf, pos)  # names them; read to reject what fastavro rejects
        commit_lsn, pos = _read_long(buf, pos)
        seq, pos = _read_long(buf, pos)
        xid, pos = _read_long(buf, pos)
        commit_ts, pos = _read_long(buf, pos)
        snapshot = buf[pos] != 0
        ts_ms, pos = _read_long(buf, pos + 1)
        count, pos = _read_long(buf, pos)
        toast: list[str] = []
        while count:
            if count < 0 or count > len(buf) - pos:
                raise _Unhandled
            for _ in range(count):
                name, pos = _read_string(buf, pos)
                toast.append(name)
            count, pos = _read_long(buf, pos)
        return ChangeEvent(op, database, self.table, Position(commit_lsn, seq), xid, commit_ts,
                           before, after, tuple(toast), snapshot, ts_ms)


_MARKER_STATUSES = {0: "BEGIN", 2: "END"}  # the enum index's zigzag byte -> symbol


def _decode_marker(buf: bytes) -> TransactionMarker:
    status = _MARKER_STATUSES[buf[10]]  # KeyError: an index fastavro must judge
    database, pos = _read_string(buf, 11)
    commit_lsn, pos = _read_long(buf, pos)
    seq, pos = _read_long(buf, pos)
    xid, pos = _read_long(buf, pos)
    commit_ts, pos = _read_long(buf, pos)
    event_count, pos = _read_long(buf, pos)
    return TransactionMarker(status, database, Position(commit_lsn, seq), xid, commit_ts,
                             event_count)


def _decode_message(buf: bytes) -> LogicalMessage:
    database, pos = _read_string(buf, 10)
    prefix, pos = _read_string(buf, pos)
    content, pos = _read_bytes(buf, pos)
    transactional = buf[pos] != 0
    commit_lsn, pos = _read_long(buf, pos + 1)
    seq, pos = _read_long(buf, pos)
    xid, pos = _read_long(buf, pos)
    commit_ts, pos = _read_long(buf, pos)
    return LogicalMessage(database, prefix, content, transactional, Position(commit_lsn, seq),
                          xid, commit_ts)


def decode_compiled(value: bytes, registry: SchemaRegistry) -> Record:
    """``decode`` with the decoders compiled per schema; raises (not necessarily a
    ValidationError) for any input it leaves to fastavro's generic reader."""
    if type(value) is not bytes or value[:2] != MAGIC:
        raise _Unhandled
    decoder = registry.decoder(value[2:10])
    if decoder is None:
        raise _Unhandled
    return decoder(value)
