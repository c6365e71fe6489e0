"""Decoder of the pgoutput logical replication protocol (proto_version 1, messages on).

Pure: bytes in, message values out. The byte layout is PostgreSQL's "Logical Replication
Message Formats" (protocol chapter): every integer is big-endian, strings are
NUL-terminated, timestamps are microseconds since 2000-01-01 UTC.

Tuple data keeps each column as one of: ``None`` (SQL NULL), ``UNCHANGED`` (an unchanged
TOASTed value PostgreSQL did not send) or the value's text bytes. ``row_of`` turns that
into a journal row with psycopg's loaders, listing unchanged columns instead of inventing
a value for them.

Row changes, begins and commits, most of what a slot sends, are decoded in C where
``_pgoutput.pyx`` is built (``IN_C``); ``decode_python``, which reads every message, is the
reference it is tested against.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from journal.errors import SourceError

try:  # the C decoder of row changes, begin and commit (_pgoutput.pyx), compiled at install
    from producers import _pgoutput
except ImportError:  # built without a C compiler: the Python decoder reads every message
    _pgoutput = None

IN_C = _pgoutput is not None  # whether row changes, begin and commit are decoded in C

# microseconds between the Unix epoch and PostgreSQL's (2000-01-01)
PG_EPOCH_OFFSET_US = 946_684_800_000_000


class _Unchanged:
    """Marker of an unchanged TOASTed column (tuple data kind 'u')."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()

TupleData = tuple[Any, ...]  # bytes | None | UNCHANGED per column


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record
    commit_ts: int  # µs since the Unix epoch, UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # end of the commit record: what the slot is confirmed to
    commit_ts: int


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    flags: int  # 1: part of the replica identity key
    name: str
    type_oid: int
    typmod: int

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d default, n nothing, f full, i index
    columns: tuple[RelationColumn, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace or 'pg_catalog'}.{self.name}"

    def signature(self) -> list[list[Any]]:
        """What identifies this table version on the wire (JSON-friendly, comparable)."""
        return [[c.name, c.type_oid, c.typmod] for c in self.columns]


@dataclass(frozen=True, slots=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    relid: int
    old_kind: str | None  # 'K' key columns only, 'O' whole old row, None not sent
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    relid: int
    old_kind: str  # 'K' or 'O'
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class Message:
    transactional: bool
    lsn: int  # end LSN of the message's WAL record
    prefix: str
    content: bytes


PgOutputMessage = (Begin | Commit | Origin | Relation | Type | Insert | Update | Delete
                   | Truncate | Message)

_BEGIN = struct.Struct(">qqI")
_COMMIT = struct.Struct(">bqqq")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_COLUMN = struct.Struct(">Ii")


class ProtocolError(SourceError):
    """A pgoutput message that does not follow the protocol."""


def decode(data: bytes | memoryview) -> PgOutputMessage:
    """Decode one pgoutput message (the payload of an XLogData message)."""
    if IN_C:
        return _pgoutput.decode(data)  # type: ignore[union-attr]
    return decode_python(data)


def decode_python(data: bytes | memoryview) -> PgOutputMessage:
    """``decode`` in Python: the reference the C decoder of row changes is tested against,
    and the decoder of every other message."""
    buf = bytes(data)
    if not buf:
        raise ProtocolError("empty pgoutput message")
    decoder = _DECODERS.get(buf[0])
    if decoder is None:
        raise ProtocolError(f"unknown pgoutput message type {chr(buf[0])!r}")
    try:
        return decoder(buf)
    except (struct.error, IndexError, ValueError) as exc:
        raise ProtocolError(f"malformed pgoutput {chr(buf[0])!r} message: {exc}") from exc


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    (count,) = _I16.unpack_from(buf, pos)
    if count < 0:
        raise ProtocolError(f"tuple data with a negative column count ({count})")
    pos += 2
    values: list[Any] = []
    append = values.append
    for _ in range(count):
        kind = buf[pos]
        pos += 1
        if kind == 0x74:  # 't' text
            (length,) = _I32.unpack_from(buf, pos)
            if length < 0:
                raise ProtocolError(f"tuple value with a negative length ({length})")
            pos += 4
            end = pos + length
            if end > len(buf):
                raise ProtocolError("tuple value is truncated")
            append(buf[pos:end])
            pos = end
        elif kind == 0x6E:  # 'n' null
            append(None)
        elif kind == 0x75:  # 'u' unchanged TOAST
            append(UNCHANGED)
        elif kind == 0x62:  # 'b' binary: only sent when asked for (binary 'true'); we never do
            raise ProtocolError("binary tuple data received; capture asks for text")
        else:
            raise ProtocolError(f"unknown tuple data kind {chr(kind)!r}")
    return tuple(values), pos


def _begin(buf: bytes) -> Begin:
    final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(final_lsn, ts + PG_EPOCH_OFFSET_US, xid)


def _commit(buf: bytes) -> Commit:
    flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
    return Commit(flags, commit_lsn, end_lsn, ts + PG_EPOCH_OFFSET_US)


def _origin(buf: bytes) -> Origin:
    (lsn,) = _I64.unpack_from(buf, 1)
    name, _ = _string(buf, 9)
    return Origin(lsn, name)


def _relation(buf: bytes) -> Relation:
    (relid,) = _U32.unpack_from(buf, 1)
    namespace, pos = _string(buf, 5)
    name, pos = _string(buf, pos)
    identity = chr(buf[pos])
    (count,) = _I16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = buf[pos]
        col, pos = _string(buf, pos + 1)
        oid, typmod = _COLUMN.unpack_from(buf, pos)
        pos += 8
        columns.append(RelationColumn(flags, col, oid, typmod))
    return Relation(relid, namespace, name, identity, tuple(columns))


def _type(buf: bytes) -> Type:
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, pos = _string(buf, 5)
    name, _ = _string(buf, pos)
    return Type(oid, namespace, name)


def _insert(buf: bytes) -> Insert:
    (relid,) = _U32.unpack_from(buf, 1)
    if buf[5] != 0x4E:  # 'N'
        raise ProtocolError(f"insert without new tuple (got {chr(buf[5])!r})")
    new, _ = _tuple(buf, 6)
    return Insert(relid, new)


def _update(buf: bytes) -> Update:
    (relid,) = _U32.unpack_from(buf, 1)
    kind = chr(buf[5])
    pos = 6
    old = None
    old_kind = None
    if kind in ("K", "O"):
        old_kind = kind
        old, pos = _tuple(buf, pos)
        kind = chr(buf[pos])
        pos += 1
    if kind != "N":
        raise ProtocolError(f"update without new tuple (got {kind!r})")
    new, _ = _tuple(buf, pos)
    return Update(relid, old_kind, old, new)


def _delete(buf: bytes) -> Delete:
    (relid,) = _U32.unpack_from(buf, 1)
    kind = chr(buf[5])
    if kind not in ("K", "O"):
        raise ProtocolError(f"delete without old tuple (got {kind!r})")
    old, _ = _tuple(buf, 6)
    return Delete(relid, kind, old)


def _truncate(buf: bytes) -> Truncate:
    (count,) = _I32.unpack_from(buf, 1)
    options = buf[5]
    relids = struct.unpack_from(f">{count}I", buf, 6)
    return Truncate(tuple(relids), bool(options & 1), bool(options & 2))


def _message(buf: bytes) -> Message:
    flags = buf[1]
    (lsn,) = _I64.unpack_from(buf, 2)
    prefix, pos = _string(buf, 10)
    (length,) = _I32.unpack_from(buf, pos)
    pos += 4
    content = buf[pos:pos + length]
    if len(content) != length:
        raise ProtocolError("logical message content is truncated")
    return Message(bool(flags & 1), lsn, prefix, content)


_DECODERS: dict[int, Any] = {
    ord("B"): _begin, ord("C"): _commit, ord("O"): _origin, ord("R"): _relation,
    ord("Y"): _type, ord("I"): _insert, ord("U"): _update, ord("D"): _delete,
    ord("T"): _truncate, ord("M"): _message,
}


if _pgoutput is not None:  # the C decoder makes these classes' values and raises this error
    _pgoutput.bind(Begin, Commit, Insert, Update, Delete, UNCHANGED, ProtocolError,
                   decode_python, PG_EPOCH_OFFSET_US)


def row_of(names: tuple[str, ...], loader: Any, values: TupleData
           ) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(row, unchanged column names) of one tuple, values loaded by ``loader``.

    ``loader`` is a ``journal.values.RowLoader`` of the same table version; an unchanged
    TOAST column is loaded as ``None`` and named in the second element, never filled in.
    """
    if len(values) != len(names):
        raise ProtocolError(f"tuple has {len(values)} columns, relation has {len(names)}")
    if UNCHANGED in values:
        unchanged = tuple(n for n, v in zip(names, values, strict=True) if v is UNCHANGED)
        fields = [None if v is UNCHANGED else v for v in values]
    else:
        unchanged = ()
        fields = values  # type: ignore[assignment]
    return dict(zip(names, loader.load_row(fields), strict=True)), unchanged
