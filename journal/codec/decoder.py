"""The compiled decoder: stream records and package rows read as fastavro reads them,
without its generic walk, from readers built once per writer schema. Rows and change
event envelopes are read in C (``_fastread.pyx``, built at install when a C compiler is
present) from a program of column kinds; the same program generated as straight-line
Python is the fallback and the reference the C reader is tested against.

``decode`` is what every reader of the stream calls: the compiled decoder first, the
reference path for any bytes it leaves to fastavro (which reads them or raises
ValidationError exactly as it would alone). ``record_reader`` is what a package reader
reads its row and event members with; ``record_walker`` what verification walks a table
member's blocks with, judging their rows as the C reader does without building them;
``record_copier`` what a restore writes them into COPY with, without building them.

It is kept because it pays for itself: ``bench/codec.py`` measures it at about 1.4-1.5x
the reference path on table rows, change events and package rows, and 1.4x on
transaction markers; the C reader at a further 2.8x on change events and 4.8x on package
rows (4x and 7x fastavro alone). Should the Python path fall under 1.2x, routing
``decode`` to the reference path and deleting this module is the simpler house.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID, SafeUUID

from fastavro._logical_readers import LOGICAL_READERS

from journal.catalog import TableSchema
from journal.codec.reference import decode_generic
from journal.codec.wire import (
    MAGIC,
    Unhandled,
    column_shape,
    packaged_fingerprint,
    type_key,
)
from journal.events import ChangeEvent, LogicalMessage, Record, TransactionMarker
from journal.positions import Position

if TYPE_CHECKING:
    from journal.codec.registry import SchemaRegistry

try:  # the C reader of rows and change events (_fastread.pyx), compiled at install
    from journal.codec import _fastread
except ImportError:  # built without a C compiler: the generated Python readers do it all
    _fastread = None

IN_C = _fastread is not None  # whether rows and change events are read in C


def decode(value: bytes, registry: SchemaRegistry) -> Record:
    """The record of a single-object encoded value, or ValidationError."""
    try:
        return decode_compiled(value, registry)
    except Exception:  # fastavro reads it, or raises what the codec raises for such bytes
        return decode_generic(value, registry)


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
_time_micros = LOGICAL_READERS["long-time-micros"]
_decimal = LOGICAL_READERS["bytes-decimal"]


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
    raise Unhandled  # over 10 bytes or 64 bits: fastavro's C reader wraps; it decides


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    b = buf[pos]
    if b < 0x80 and not b & 1:  # a short non-negative length: one byte
        pos += 1
        end = pos + (b >> 1)
    else:
        size, pos = _read_long(buf, pos)
        if size < 0:
            raise Unhandled
        end = pos + size
    if end > len(buf):  # checked before slicing: a declared length allocates nothing
        raise Unhandled
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
                raise Unhandled
            for _ in range(count):
                if nullable:
                    tag = buf[pos]
                    if tag == 0:
                        add(None)
                        pos += 1
                        continue
                    if tag != 2:
                        raise Unhandled
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
{i}        raise Unhandled
{i}    end = pos + size
{i}if end > length:
{i}    raise Unhandled
{i}v{n} = buf[pos:end]
{i}pos = end
"""
# by column kind, the names the C reader (_fastread.pyx) knows them by too
_INLINE: dict[str, str] = {
    "long": _INLINE_LONG,
    "bytes": _INLINE_BYTES,
    "string": _INLINE_BYTES + "{i}v{n} = v{n}.decode()\n",
    "boolean": "{i}v{n} = buf[pos] != 0\n{i}pos += 1\n",
    "float": "{i}v{n} = _unpack_float(buf, pos)[0]\n{i}pos += 4\n",
    "double": "{i}v{n} = _unpack_double(buf, pos)[0]\n{i}pos += 8\n",
    "date": _INLINE_LONG + "{i}v{n} = _date_from_ordinal(v{n} + _DAYS_SHIFT)\n",
    "timestamp-micros": _INLINE_LONG + "{i}v{n} = _EPOCH + timedelta(0, 0, v{n})\n",
    "local-timestamp-micros": _INLINE_LONG
    + "{i}v{n} = _EPOCH_NAIVE + timedelta(0, 0, v{n})\n",
}
_KINDS: dict[Any, str] = {
    "int": "long", "long": "long", "bytes": "bytes", "string": "string",
    "boolean": "boolean", "float": "float", "double": "double", ("int", "date"): "date",
    ("long", "timestamp-micros"): "timestamp-micros",
    ("long", "local-timestamp-micros"): "local-timestamp-micros",
}


# A row program: per column (name, kind, nullable, text, read, extra), ``text`` for the
# third union branch ("string": PostgreSQL's text form of the value), ``read`` the Python
# reader of a type the generated Python does not inline (uuid, time, decimal, arrays);
# the C reader reads "uuid", "decimal" (``extra``: fastavro's conversion and the schema)
# and "array" (``extra``: item kind, nullable items) itself and calls ``read`` for the
# other such kinds ("delegate").
_Column = tuple[str, str, bool, bool, _Read | None, Any]


def _c_kind(avro_type: Any) -> tuple[str, Any]:
    """(kind, extra) of a type the Python rows delegate: what the C reader reads itself."""
    key = type_key(avro_type)
    if key == ("string", "uuid"):
        return "uuid", None
    if isinstance(avro_type, dict) and avro_type.get("logicalType") == "decimal" \
            and avro_type.get("type") == "bytes":
        return "decimal", (_decimal, avro_type)
    if isinstance(avro_type, dict) and avro_type.get("type") == "array":
        items = avro_type.get("items")
        nullable = isinstance(items, list) and len(items) == 2 and items[0] == "null"
        item_key = type_key(items[1] if nullable else items)
        item = "uuid" if item_key == ("string", "uuid") else _KINDS.get(item_key)
        if item is not None:
            return "array", (item, nullable)
    return "delegate", None


def _row_program(row_schema: Any, names: tuple[str, ...]) -> list[_Column] | None:
    """The program of a Row record schema, or None if a column's type is fastavro's."""
    if not (isinstance(row_schema, dict) and row_schema.get("type") == "record"):
        return None
    fields = row_schema["fields"]
    if len(fields) != len(names):
        return None
    program: list[_Column] = []
    for name, f in zip(names, fields, strict=True):
        shape = column_shape(f["type"])
        if shape is None:
            return None
        avro_type, nullable, text = shape
        kind = _KINDS.get(type_key(avro_type))
        read_value, extra = None, None
        if kind is None:
            read_value = _compile_reader(avro_type)
            if read_value is None:
                return None
            kind, extra = _c_kind(avro_type)
        program.append((name, kind, nullable, text, read_value, extra))
    return program


def _python_row_reader(program: list[_Column]) -> _Read:
    """The program as generated Python: the reference the C reader is tested against."""
    namespace: dict[str, Any] = {
        "Unhandled": Unhandled, "_read_long": _read_long, "_unpack_float": _unpack_float,
        "_unpack_double": _unpack_double, "_date_from_ordinal": _date_from_ordinal,
        "_DAYS_SHIFT": _DAYS_SHIFT, "_EPOCH": _EPOCH, "_EPOCH_NAIVE": _EPOCH_NAIVE,
        "timedelta": timedelta}
    lines = ["def read(buf, pos):", "    length = len(buf)"]
    for n, (_, kind, nullable, text, read_value, _extra) in enumerate(program):
        indent = "        " if nullable else "    "
        inline = _INLINE.get(kind)
        if inline is None:
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
            lines += ["    else:", "        raise Unhandled"]
    items = ", ".join(f"{name!r}: v{n}" for n, (name, *_) in enumerate(program))
    lines.append(f"    return {{{items}}}, pos")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from fixed templates
    return namespace["read"]  # type: ignore[no-any-return]


def _row_reader(row_schema: Any, names: tuple[str, ...], in_c: bool = True) -> _Read | None:
    """The reader of a Row record, returning a dict keyed by column name: in C where the
    extension is built (unless ``in_c`` is false), else generated Python."""
    program = _row_program(row_schema, names)
    if program is None:
        return None
    if in_c and _fastread is not None:
        return _fastread.RowReader(program).read  # type: ignore[no-any-return]
    return _python_row_reader(program)


def _field_names(schema: Any) -> tuple[str, ...] | None:
    try:
        names = tuple(f["name"] for f in schema["fields"])
    except (KeyError, TypeError, AttributeError):
        return None
    return names if all(type(n) is str for n in names) else None


def record_reader(schema: Any, in_c: bool = True
                  ) -> Callable[[bytes, int], tuple[dict[str, Any], int]] | None:
    """A compiled reader of one record of ``schema`` (as fastavro parses it): given the bytes
    and a position, the dict fastavro's schemaless_reader returns there (keyed by field
    name) and the position after it. Raises for any bytes it leaves to fastavro; None for
    a schema with a type it does not read. ``in_c=False``: the Python reader even where
    the C one is built."""
    names = _field_names(schema)
    if names is None:
        return None
    try:
        return _row_reader(schema, names, in_c)
    except (KeyError, TypeError, AttributeError):
        return None


RecordWalk = Callable[[bytes, int, int, tuple[int, ...], Any, Callable[[tuple[Any, ...]], Any]],
                      tuple[int, Any]]


def record_walker(schema: Any) -> RecordWalk | None:
    """The C walk over records of ``schema`` (``RowReader.check`` in ``_fastread.pyx``):
    ``walk(buf, pos, count, key_columns, previous, order)`` judges ``count`` records as
    ``record_reader``'s C reader does, without building them, and checks their keys'
    order. None where that reader is not the C one (no extension, or a type it leaves to
    fastavro): then records are read one by one."""
    reader = _c_row_reader(schema)
    return None if reader is None else reader.check  # type: ignore[no-any-return]


# (buf, pos, count, fields, chunk) -> (chunks of (COPY text, rows), rows, position after)
RecordCopy = Callable[[bytes, int, int, tuple[int, ...], int],
                      tuple[list[tuple[bytes, int]], int, int]]


def record_copier(schema: Any) -> RecordCopy | None:
    """The C writer of records of ``schema`` as COPY text (``RowReader.copy`` in
    ``_fastread.pyx``): ``copy(buf, pos, count, fields, chunk)`` writes up to ``count``
    records' fields at indices ``fields`` as ``_copytext`` formats the rows
    ``record_reader``'s C reader makes, stopping before a record it leaves to that
    reader. None where there is no C reader for ``schema``."""
    reader = _c_row_reader(schema)
    return None if reader is None else reader.copy  # type: ignore[no-any-return]


def _c_row_reader(schema: Any) -> Any | None:
    """The C ``RowReader`` of records of ``schema``, or None (no extension, or a type it
    leaves to fastavro)."""
    names = _field_names(schema)
    if names is None or _fastread is None:
        return None
    try:
        program = _row_program(schema, names)
    except (KeyError, TypeError, AttributeError):
        return None
    return None if program is None else _fastread.RowReader(program)


def _read_optional_row(buf: bytes, pos: int, read_row: _Read) -> tuple[Any, int]:
    tag = buf[pos]
    if tag == 0:
        return None, pos + 1
    if tag != 2:
        raise Unhandled
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

    @staticmethod
    def compile(parsed: Any, table: TableSchema, in_c: bool = True
                ) -> Callable[[bytes], ChangeEvent] | None:
        """The decoder of an envelope schema, or None if it is not exactly the shape this
        decoder reads (an older or foreign writer): fastavro then reads it. In C where the
        extension is built, unless ``in_c`` is false."""
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
            program = _row_program(before[1], table.column_names)
        except (KeyError, TypeError, AttributeError):
            return None
        if program is None:
            return None
        if in_c and _fastread is not None:
            rows = _fastread.RowReader(program)
            return _fastread.ChangeReader(rows, table).decode  # type: ignore[no-any-return]
        return _ChangeDecoder(table, _python_row_reader(program)).decode

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
                raise Unhandled
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


def compile_decoder(fp: bytes, parsed: Any, table: TableSchema | None, in_c: bool = True
                    ) -> Callable[[bytes], Record] | None:
    """The compiled decoder of the values written with schema ``fp`` (``parsed`` by fastavro;
    ``table`` the version an envelope schema describes), or None for a schema it does not
    read (fastavro does). ``in_c=False``: change events in Python even where C is built."""
    if fp == packaged_fingerprint("transaction"):
        return _decode_marker
    if fp == packaged_fingerprint("message"):
        return _decode_message
    if table is not None:
        return _ChangeDecoder.compile(parsed, table, in_c)
    return None


def decode_compiled(value: bytes, registry: SchemaRegistry) -> Record:
    """``decode`` with the decoders compiled per schema; raises (not necessarily a
    ValidationError) for any input it leaves to fastavro's generic reader."""
    if type(value) is not bytes or value[:2] != MAGIC:
        raise Unhandled
    decoder = registry.decoder(value[2:10])
    if decoder is None:
        raise Unhandled
    return decoder(value)
