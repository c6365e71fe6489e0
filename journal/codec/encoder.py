"""The compiled encoder: stream records written as fastavro writes them, without its
generic walk, from encoders built once per table version. Row images (of change events
and of package members) are written in C (``_fastwrite.pyx``) where the extension was
compiled at install, by the Python writers below elsewhere; ``bench/codec.py`` measures
both against fastavro.

``encode`` is what capture calls: the compiled encoder first, the reference path for any
value it leaves to fastavro, and an UnencodableValue naming the table, the column and the
value that no branch of its column's type holds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fastavro._logical_writers import LOGICAL_WRITERS

from journal.catalog import TableSchema
from journal.codec.reference import encode_generic, unencodable
from journal.codec.wire import (
    MAGIC,
    Unhandled,
    column_shape,
    packaged_fingerprint,
    type_key,
)
from journal.events import ChangeEvent, LogicalMessage, Record, TransactionMarker

if TYPE_CHECKING:
    from journal.codec.registry import SchemaRegistry

try:  # the C writer of rows (_fastwrite.pyx), compiled at install
    from journal.codec import _fastwrite
except ImportError:  # no C compiler at install: the Python writers below
    _fastwrite = None

IN_C = _fastwrite is not None  # whether row images are written in C


def encode(record: Record, registry: SchemaRegistry) -> tuple[bytes | None, bytes]:
    """Encode a record to ``(key, value)``; the key is the row's primary key (Avro).

    A change whose value no branch of its column's type holds raises UnencodableValue
    naming the table, the column and the value."""
    try:
        if type(record) is ChangeEvent:  # capture's every event: one call fewer
            return registry.encoder(record.table).encode(record)  # type: ignore[arg-type]
        return encode_compiled(record, registry)
    except Exception:  # fastavro writes it, or raises what it raises for such a value
        try:
            return encode_generic(record, registry)
        except Exception as exc:
            if isinstance(record, ChangeEvent):
                raise unencodable(record, exc) from exc
            raise


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
    raise Unhandled(f"no compiled encoder for {kind.__name__}")


# fastavro's generic writer validates every union branch of every record it writes, which
# made encoding the most expensive step of capture. These encoders are built once per
# table version from the same Avro types, write the same bytes (tests/test_codec_fast.py
# and, for the C row writer, tests/test_codec_fastwrite.py prove it against fastavro), and
# hand any value they do not recognise to fastavro by raising: a record is always either
# encoded exactly as fastavro would, or by fastavro.

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_BYTE = tuple(bytes((i,)) for i in range(128))
_NULL = b"\x00"  # union branch 0 ("null")
_SOME = b"\x02"  # union branch 1
_TEXT = b"\x04"  # union branch 2: the "string" branch of catalog.avro_value_type
_TRUE, _FALSE = b"\x01", b"\x00"
_EMPTY_ARRAY = b"\x00"
_pack_float = struct.Struct("<f").pack
_pack_double = struct.Struct("<d").pack
_timestamp_micros = LOGICAL_WRITERS["long-timestamp-micros"]
_Encode = Callable[[Any], bytes]


def _long(n: int) -> bytes:
    """Avro long: zigzag, then a little-endian base-128 varint."""
    if type(n) is not int or not _LONG_MIN <= n <= _LONG_MAX:
        raise Unhandled
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
        raise Unhandled
    return _long(n)


def _boolean(v: Any) -> bytes:
    if v is True:
        return _TRUE
    if v is False:
        return _FALSE
    raise Unhandled


def _float(v: Any) -> bytes:
    if type(v) is not float:
        raise Unhandled
    return _pack_float(v)


def _double(v: Any) -> bytes:
    if type(v) is not float:
        raise Unhandled
    return _pack_double(v)


def _string(v: Any) -> bytes:
    if type(v) is not str:
        raise Unhandled
    data = v.encode()
    return _long(len(data)) + data


def _bytes(v: Any) -> bytes:
    if type(v) is memoryview:
        v = bytes(v)
    elif type(v) is not bytes:
        raise Unhandled
    return _long(len(v)) + v


def _bytes_only(v: Any) -> bytes:
    # a datum as fastavro takes it: its union branches refuse a memoryview
    if type(v) is not bytes:
        raise Unhandled
    return _long(len(v)) + v


def _logical(kind: type, prepare: Callable[[Any, Any], Any], schema: dict[str, Any],
             base: _Encode) -> _Encode:
    # fastavro's own conversion (the function its writer calls), then the base type
    def write(v: Any) -> bytes:
        if type(v) is not kind:
            raise Unhandled
        return base(prepare(v, schema))
    return write


def _uuid(v: Any) -> bytes:
    if type(v) is UUID:
        v = str(v)
    return _string(v)


def _array(items: _Encode) -> _Encode:
    def write(v: Any) -> bytes:
        if type(v) is not list:
            raise Unhandled
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


def _compile(avro_type: Any, journal_rows: bool = True) -> _Encode:
    """The encoder of one non-union Avro type as ``catalog._avro_base`` spells it.
    ``journal_rows``: values as a journal row holds them (memoryviews for bytes)."""
    if isinstance(avro_type, str):
        return _PRIMITIVES[avro_type] if journal_rows or avro_type != "bytes" else _bytes_only
    if avro_type["type"] == "array":
        items = avro_type["items"]
        if not (isinstance(items, list) and len(items) == 2 and items[0] == "null"):
            raise ValueError(f"unexpected array items {items!r}")
        return _array(_compile(items[1], journal_rows))
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


# A row program: per column (name, kind, nullable, text, write, extra): ``text`` for the
# third union branch ("string": PostgreSQL's text form of the value), ``write`` the Python
# writer of the typed branch; the C writer writes the kinds below itself and calls
# ``write`` for the others ("delegate": time, arrays) and for decimals of more than 18
# digits; ``extra`` is a decimal's (precision, scale).
_WriteColumn = tuple[str, str, bool, bool, _Encode, Any]
_C_KINDS: dict[Any, str] = {
    "int": "int", "long": "long", "string": "string", "bytes": "bytes",
    "boolean": "boolean", "float": "float", "double": "double", ("int", "date"): "date",
    ("long", "timestamp-micros"): "timestamp-micros",
    ("long", "local-timestamp-micros"): "local-timestamp-micros", ("string", "uuid"): "uuid",
}


def _write_program(field_types: list[Any], names: tuple[str, ...], journal_rows: bool
                   ) -> list[_WriteColumn] | None:
    """The program of a Row record's fields, or None if a field's type is fastavro's."""
    if len(field_types) != len(names):
        return None
    program: list[_WriteColumn] = []
    for name, field_type in zip(names, field_types, strict=True):
        shape = column_shape(field_type)
        if shape is None:
            return None
        avro_type, nullable, text = shape
        try:
            write = _compile(avro_type, journal_rows)
        except (KeyError, ValueError, TypeError):
            return None
        decimal = _decimal_shape(avro_type)
        kind = "decimal" if decimal else _C_KINDS.get(type_key(avro_type), "delegate")
        program.append((name, kind, nullable, text, write, decimal))
    return program


def _decimal_shape(avro_type: Any) -> tuple[int, int] | None:
    """(precision, scale) of a bytes decimal, as fastavro's writer reads them; None else."""
    if not (isinstance(avro_type, dict) and avro_type.get("type") == "bytes"
            and avro_type.get("logicalType") == "decimal"):
        return None
    precision, scale = avro_type.get("precision"), avro_type.get("scale", 0)
    if type(precision) is not int or type(scale) is not int or precision < 1 or scale < 0:
        return None
    return precision, scale


def _python_row_writer(program: list[_WriteColumn], journal_rows: bool) -> _Encode:
    """The program in Python: what the C writer is tested against (same rules, see
    _fastwrite.pyx: a tuple only as ``("string", text)`` in a text or string column, a bare
    str in a text column and memoryviews only in journal rows)."""
    columns = tuple((name, nullable, text, kind == "string", write)
                    for name, kind, nullable, text, write, _ in program)

    def write_row(row: Any) -> bytes:
        if type(row) is not dict:
            raise Unhandled
        parts = []
        for name, nullable, text, plain_string, write in columns:
            v = row.get(name)
            if v is None:
                if not nullable:
                    raise Unhandled
                parts.append(_NULL)
            elif type(v) is tuple:
                if not (nullable and (text or plain_string) and len(v) == 2
                        and type(v[0]) is str and v[0] == "string"):
                    raise Unhandled
                parts.append((_TEXT if text else _SOME) + _string(v[1]))
            elif text and type(v) is str:
                if not journal_rows:
                    raise Unhandled
                parts.append(_TEXT + _string(v))
            elif type(v) is memoryview and not journal_rows:
                raise Unhandled
            else:
                parts.append(_SOME + write(v) if nullable else write(v))
        return b"".join(parts)
    return write_row


def row_writer(schema: Any, in_c: bool = True, journal_rows: bool = False) -> _Encode | None:
    """A compiled writer of one record of ``schema`` (as fastavro parses it): the bytes
    fastavro's schemaless_writer writes for a datum keyed by field name, or Unhandled for
    a datum it leaves to fastavro; None for a schema with a type it does not write. In C
    where the extension is built, unless ``in_c`` is false. ``journal_rows``: the datum
    is a journal row, as ``reference.to_avro_row`` converts it for fastavro."""
    try:
        fields = schema["fields"]
        names = tuple(f["name"] for f in fields)
        if not all(type(n) is str for n in names):
            return None
        program = _write_program([f["type"] for f in fields], names, journal_rows)
    except (KeyError, TypeError, AttributeError):
        return None
    if program is None:
        return None
    if in_c and _fastwrite is not None:
        return _fastwrite.RowWriter(program, journal_rows).write  # type: ignore[no-any-return]
    return _python_row_writer(program, journal_rows)


def table_row_writer(table: TableSchema, in_c: bool = True) -> _Encode | None:
    """A compiled writer of a table's journal rows (dicts keyed by column name) as its Row
    record: the bytes fastavro writes for ``reference.to_avro_row(table, row)``, without
    building that datum; Unhandled for a row it leaves to that path. In C where the
    extension is built, unless ``in_c`` is false."""
    fields = table.avro_row_schema()["fields"]
    program = _write_program([f["type"] for f in fields], table.column_names, True)
    if program is None:
        return None
    if in_c and _fastwrite is not None:
        return _fastwrite.RowWriter(program, True).write  # type: ignore[no-any-return]
    return _python_row_writer(program, True)


class ChangeEncoder:
    """The envelope (and key) of one table version's change events. ``in_c=False``: the
    row images in Python even where the C writer is built."""

    def __init__(self, table: TableSchema, fp: bytes, parsed: Any, key_schema: Any,
                 in_c: bool = True) -> None:
        self.table = table
        self.header = MAGIC + fp
        row_schema = parsed["fields"][0]["type"][1]
        # A field is ["null", typed] or ["null", typed, "string"] (catalog.avro_value_type):
        # only the typed branch is compiled; a value in the text branch (a str where the
        # typed encoder wants a date, a list…) raises Unhandled, and fastavro writes it.
        self.columns: tuple[tuple[str, _Encode], ...] = tuple(
            (c.name, _compile(_typed_branch(f["type"])))
            for c, f in zip(table.columns, row_schema["fields"], strict=True))
        names = table.column_names
        self.key_indexes = tuple(names.index(n) for n in table.primary_key)
        self.key_columns = tuple(self.columns[i] for i in self.key_indexes)
        # the whole row image in C, keyed by column name (a journal row): its text-branch
        # values and memoryviews as to_avro_row hands them to fastavro
        program = _write_program([f["type"] for f in row_schema["fields"]], names, True)
        self.write_row: _Encode | None = None
        # a key field with a text branch is the union [typed, "string"]: branch 0 first
        self.key_prefixes = tuple(_NULL if isinstance(f["type"], list) else b""
                                  for f in key_schema["fields"])
        # the whole event, envelope and key included, in C
        self.write_change: Callable[..., tuple[bytes | None, bytes]] | None = None
        if in_c and _fastwrite is not None and program is not None:
            rows = _fastwrite.RowWriter(program, True)
            self.write_row = rows.write
            self.write_change = _fastwrite.ChangeWriter(
                rows, self.header, table.schema, table.name, self.key_indexes,
                tuple(bool(p) for p in self.key_prefixes)).write
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
        if self.write_change is not None:
            pos = record.position
            return self.write_change(record.before, record.after, record.op, record.database,
                                     pos.commit_lsn, pos.seq, record.xid, record.commit_ts,
                                     record.snapshot, record.ts_ms, record.unchanged_toast)
        return self.encode_in_python(record)

    def encode_in_python(self, record: ChangeEvent) -> tuple[bytes | None, bytes]:
        """``encode`` with the envelope in Python (the reference for the C one)."""
        parts = [self.header]
        add = parts.append
        write_row = self.write_row
        if write_row is not None:
            add(_NULL if record.before is None else _SOME + write_row(record.before))
            add(_NULL if record.after is None else _SOME + write_row(record.after))
            key = self._row_key(record)
        else:
            bases: list[list[bytes | None] | None] = []
            for image in (record.before, record.after):
                if image is None:
                    add(_NULL)
                    bases.append(None)
                    continue
                columns = self._bases(image)
                add(_SOME)
                parts.extend([_NULL if b is None else _SOME + b for b in columns])
                bases.append(columns)
            key = self._key(record, bases[0], bases[1])
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
        return key, b"".join(parts)

    def _row_key(self, record: ChangeEvent) -> bytes | None:
        # _key's bytes where the row image was written whole (in C): the key columns again
        row = record.after if record.after is not None else record.before
        if row is None or not self.key_indexes:
            return None
        parts = []
        for prefix, (name, write) in zip(self.key_prefixes, self.key_columns, strict=True):
            v = row.get(name)
            if v is None:
                raise Unhandled  # a missing or null key column: fastavro reports it
            parts.append(prefix + write(v))
        return b"".join(parts)

    def _key(self, record: ChangeEvent, before: list[bytes | None] | None,
             after: list[bytes | None] | None) -> bytes | None:
        # the key record's fields are the primary key columns' row fields without the union
        # branch: the same bytes the row encoding just produced
        bases = after if record.after is not None else before
        if bases is None or not self.key_indexes:
            return None
        parts = [bases[i] for i in self.key_indexes]
        if None in parts:
            raise Unhandled  # a missing or null key column: fastavro reports it
        if any(self.key_prefixes):
            parts = [p + b for p, b in zip(self.key_prefixes, parts, strict=True)]  # type: ignore[operator]
        return b"".join(parts)  # type: ignore[arg-type]


_MARKER_STATUS = {"BEGIN": b"\x00", "END": b"\x02"}  # enum index as an Avro int


def _encode_marker(record: TransactionMarker) -> tuple[bytes | None, bytes]:
    pos = record.position
    return str(record.xid).encode(), b"".join((
        MAGIC, packaged_fingerprint("transaction"), _MARKER_STATUS[record.status],
        _string(record.database), _long(pos.commit_lsn), _long(pos.seq), _long(record.xid),
        _long(_timestamp_micros(record.commit_ts, None)), _long(record.event_count)))


def _encode_message(record: LogicalMessage) -> tuple[bytes | None, bytes]:
    if type(record.content) is not bytes:
        raise Unhandled
    pos = record.position
    return record.prefix.encode(), b"".join((
        MAGIC, packaged_fingerprint("message"), _string(record.database),
        _string(record.prefix), _bytes(record.content), _boolean(record.transactional),
        _long(pos.commit_lsn), _long(pos.seq), _long(record.xid),
        _long(_timestamp_micros(record.commit_ts, None))))
