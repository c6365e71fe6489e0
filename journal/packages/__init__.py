"""Backup packages: one plain tar file, ``manifest.json`` first, then Avro container files.

A **full** package holds one member per table, ``tables/<schema>.<table>.avro``: every row
at ``to_position``, sorted by primary key, written with the table's Avro row schema. The
DDL an empty database needs is the CATALOG in the manifest. A **segment** holds one
member, ``events.avro``: the stream records in ``(from_position, to_position]``, whole
transactions only, each kept as the original single-object encoded bytes inside a
``StreamRecord`` (see ``STREAM_RECORD_SCHEMA``), so any Avro tool decodes every event
with the schemas the manifest carries.

Members are Avro Object Container Files with the ``zstandard`` codec. They are written
and read here, block by block, so that reading can bound its work: a block may not
declare more records than the manifest has left for the member, nor decompress to more
bytes than the manifest's ``decoded_bytes``.

Reading never trusts the archive: the tar is parsed strictly (POSIX ustar headers with
valid checksums, regular files only, safe and unique names, manifest first, zero
padding, nothing after the end marker) and members are streamed straight from the file,
never extracted. Verification runs in stages: structure and names, sizes, manifest
schema and id, SHA-256 of every member, every record decodes; ``verify_chain`` then
checks a sequence of packages for gaps, overlaps and missing parents.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import IO, Any

import fastavro
import zstandard
from fastavro.schema import to_parsing_canonical_form

from journal import __version__
from journal.catalog import TableSchema, has_text_fallback
from journal.codec import (
    SchemaRegistry,
    avro_field_value,
    avro_long,
    decode,
    envelope_schema,
    fingerprint,
    from_avro_row,
    record_reader,
    split_header,
)
from journal.durable import storage
from journal.errors import ChainBroken, PackageCorrupt, ValidationError
from journal.events import (
    ChangeEvent,
    LogicalMessage,
    Record,
    Transaction,
    TransactionMarker,
)
from journal.positions import Position

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EVENTS = "events.avro"
KINDS = ("full", "segment")
CODEC = "zstandard"

STREAM_RECORD_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "StreamRecord",
    "namespace": "edms_journal.package",
    "doc": "One record of the change stream as the journal transport held it: its "
           "position, its key and its single-object encoded value (C3 01, CRC-64-AVRO "
           "fingerprint, Avro body); the schema of every fingerprint is in the manifest.",
    "fields": [
        {"name": "commit_lsn", "type": "long"},
        {"name": "seq", "type": "long"},
        {"name": "key", "type": ["null", "bytes"], "default": None},
        {"name": "value", "type": "bytes"},
    ],
}

# Bounds that keep a hostile archive from making the reader do unbounded work.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_MAX_HEADER_VALUE = 16 * 1024 * 1024
_BLOCK_RECORDS = 4096
_BLOCK_BYTES = 1024 * 1024
_READ_CHUNK = 1024 * 1024
_ZERO_BLOCK = bytes(512)
_OCF_MAGIC = b"Obj\x01"
_ID = re.compile(r"^(full|segment)-[0-9A-F]{16}-[0-9A-F]{8}-[0-9a-f]{16}$")
_SAFE_TABLE_PART = re.compile(r"^[A-Za-z0-9_]{1,63}$")
_MEMBER_NAME = re.compile(r"^(events\.avro|tables/[A-Za-z0-9_.-]{1,150}\.avro)$")


# -- the manifest -----------------------------------------------------------------------

@dataclass(frozen=True)
class MemberInfo:
    """One Avro member: its name, SHA-256 (hex), size in the archive, record count.

    ``decoded_bytes`` is the size of its blocks once decompressed (the bound a reader
    holds a member to); ``table`` and ``fingerprint`` (the table's envelope schema, a
    key of ``Manifest.schemas``) are set for the table members of a full package.
    """

    name: str
    sha256: str
    bytes: int
    rows: int
    decoded_bytes: int = 0
    table: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Manifest:
    package_id: str
    kind: str  # "full" | "segment"
    format_version: int
    system_identifier: str
    database: str
    generation: str
    from_position: Position | None  # segment: exclusive lower bound; full: None
    to_position: Position  # inclusive: the state after this position
    first_commit_ts: int | None
    last_commit_ts: int | None
    parent_id: str | None
    members: tuple[MemberInfo, ...]
    catalog: dict[str, Any]
    schemas: dict[str, str]
    marks: tuple[tuple[str, Position, int], ...] = ()
    tool_version: str = __version__
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "package_id": self.package_id,
            "kind": self.kind,
            "system_identifier": self.system_identifier,
            "database": self.database,
            "generation": self.generation,
            "from_position": None if self.from_position is None else str(self.from_position),
            "to_position": str(self.to_position),
            "first_commit_ts": self.first_commit_ts,
            "last_commit_ts": self.last_commit_ts,
            "parent_id": self.parent_id,
            "members": [{"name": m.name, "sha256": m.sha256, "bytes": m.bytes, "rows": m.rows,
                         "decoded_bytes": m.decoded_bytes, "table": m.table,
                         "fingerprint": m.fingerprint} for m in self.members],
            "catalog": self.catalog,
            "schemas": dict(self.schemas),
            "marks": [{"name": n, "position": str(p), "commit_ts": ts} for n, p, ts in self.marks],
            "tool_version": self.tool_version,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        """Parse and validate (JSON schema, then consistency); raises ValidationError."""
        label = d.get("package_id") if isinstance(d, dict) else None
        problems = _validate(d, manifest_schema())
        if problems:
            raise ValidationError(f"manifest of {label or 'package'} does not match its "
                                  f"schema: {'; '.join(problems[:5])}")
        m = cls(
            package_id=d["package_id"], kind=d["kind"], format_version=d["format_version"],
            system_identifier=d["system_identifier"], database=d["database"],
            generation=d["generation"],
            from_position=None if d["from_position"] is None
            else Position.parse(d["from_position"]),
            to_position=Position.parse(d["to_position"]),
            first_commit_ts=d["first_commit_ts"], last_commit_ts=d["last_commit_ts"],
            parent_id=d["parent_id"],
            members=tuple(MemberInfo(**x) for x in d["members"]),
            catalog=d["catalog"], schemas=dict(d["schemas"]),
            marks=tuple((x["name"], Position.parse(x["position"]), x["commit_ts"])
                        for x in d["marks"]),
            tool_version=d["tool_version"], created_at=d["created_at"])
        m._check_consistency()
        return m

    def canonical_bytes(self) -> bytes:
        """The exact bytes of ``manifest.json`` (sorted keys, fixed layout)."""
        return _canonical(self.to_json())

    def derive_id(self) -> str:
        body = self.to_json()
        body.pop("package_id")
        digest = hashlib.sha256(_canonical(body)).hexdigest()
        pos = self.to_position
        return f"{self.kind}-{pos.commit_lsn:016X}-{pos.seq:08X}-{digest[:16]}"

    def with_id(self) -> Manifest:
        return replace(self, package_id=self.derive_id())

    def member(self, name: str) -> MemberInfo:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def table_member(self, table: str) -> MemberInfo:
        for m in self.members:
            if m.table == table:
                return m
        raise ValidationError(f"package {self.package_id} holds no table {table!r} "
                              f"(it holds {', '.join(self.tables()) or 'none'})")

    def tables(self) -> list[str]:
        return [m.table for m in self.members if m.table is not None]

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.members)

    @property
    def size(self) -> int:
        return sum(m.bytes for m in self.members)

    def _check_consistency(self) -> None:
        pid = self.package_id

        def bad(why: str) -> ValidationError:
            return ValidationError(f"manifest of {pid}: {why}")

        if self.kind == "full" and self.from_position is not None:
            raise bad("a full snapshot has no from_position")
        if self.kind == "segment":
            if self.from_position is None:
                raise bad("a segment needs a from_position")
            if not self.from_position < self.to_position:
                raise bad(f"from_position {self.from_position} is not below "
                          f"to_position {self.to_position}")
            if [m.name for m in self.members] != [EVENTS]:
                raise bad(f"a segment holds exactly one member {EVENTS!r}")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise bad("member names repeat")
        if self.kind == "full":
            tables = [m.table for m in self.members]
            if None in tables or len(set(tables)) != len(tables):
                raise bad("every member of a full snapshot names one table, once")
            for m in self.members:
                if m.name != member_name_for(m.table) or m.fingerprint not in self.schemas:
                    raise bad(f"member {m.name!r} does not match table {m.table!r} "
                              "or its schema is missing")
        for fp, text in self.schemas.items():
            try:
                actual = fingerprint(json.loads(text)).hex()
            except Exception as exc:  # a schema that does not even parse
                raise bad(f"schema {fp} does not parse: {exc}") from None
            if actual != fp:
                raise bad(f"schema listed under fingerprint {fp} has fingerprint {actual}")
        if self.derive_id() != pid:
            raise PackageCorrupt(pid, MANIFEST, f"content matching package id {pid}",
                                 f"content of id {self.derive_id()}")


def _canonical(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


@cache
def manifest_schema() -> dict[str, Any]:
    return json.loads(resources.files("schemas").joinpath("manifest.schema.json").read_text())


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The subset of JSON Schema the manifest schema uses; returns the problems found."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_JSON_TYPES[t](value) for t in names):
            return [f"{path}: expected {'/'.join(names)}, found {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{path}: {value[:80]!r} does not match {schema['pattern']}"]
    if isinstance(value, int) and "minimum" in schema and value < schema["minimum"]:
        return [f"{path}: {value} is below {schema['minimum']}"]
    problems: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        problems += [f"{path}: missing {k!r}" for k in schema.get("required", ())
                     if k not in value]
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                problems += _validate(v, props[k], f"{path}.{k}")
            elif extra is False:
                problems.append(f"{path}: unexpected {k!r}")
            elif isinstance(extra, dict):
                problems += _validate(v, extra, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            problems += _validate(v, schema["items"], f"{path}[{i}]")
    return problems


def member_name_for(table: str | None) -> str:
    """``tables/<schema>.<table>.avro``; names that are not plain identifiers get a hash,
    so a member name is always short and safe whatever the table is called."""
    if table is None:
        return EVENTS
    schema, _, name = table.partition(".")
    if _SAFE_TABLE_PART.match(schema) and _SAFE_TABLE_PART.match(name):
        return f"tables/{schema}.{name}.avro"
    return f"tables/t{hashlib.sha256(table.encode()).hexdigest()[:20]}.avro"


def positions_sort_key(m: Manifest) -> tuple[Position, int, str]:
    """Catalogue order: by to_position, a segment before the full folded at its end."""
    return (m.to_position, 0 if m.kind == "segment" else 1, m.package_id)


# -- strict tar -----------------------------------------------------------------------

_TYPE_NAMES = {
    b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device",
    b"4": "a block device", b"5": "a directory", b"6": "a FIFO",
    b"x": "a pax extended header", b"g": "a pax global header",
    b"L": "a GNU long-name header", b"K": "a GNU long-link header",
}


@dataclass(frozen=True)
class _TarMember:
    name: str
    offset: int  # of the data in the file
    size: int


def _octal(field_bytes: bytes) -> int | None:
    text = field_bytes.rstrip(b"\x00 ")
    if not text or not re.fullmatch(rb"[0-7]+", text):
        return None if text else 0
    return int(text, 8)


def _parse_header(block: bytes, at: int, package: str) -> tuple[str, int]:
    """(name, size) of one ustar header; PackageCorrupt for anything but a safe regular file."""
    stored = block[148:156]
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != b"%06o\x00 " % computed:
        raise PackageCorrupt(package, f"(tar header at byte {at})",
                             f"header checksum {computed:06o}", f"{stored!r}")
    raw_name = block[0:100].split(b"\x00", 1)[0]
    prefix = block[345:500].split(b"\x00", 1)[0]
    full = (prefix + b"/" + raw_name) if prefix else raw_name
    try:
        name = full.decode("utf-8")
    except UnicodeDecodeError:
        raise PackageCorrupt(package, repr(full), "a UTF-8 member name", "other bytes") from None
    kind = block[156:157]
    if kind not in (b"0", b"\x00"):
        what = _TYPE_NAMES.get(kind, f"of unknown type {kind!r}")
        raise PackageCorrupt(package, name, "a regular file", f"{what} (refused)")
    _check_member_name(name, package)
    if block[257:263] != b"ustar\x00" or block[263:265] != b"00":
        raise PackageCorrupt(package, name, "a POSIX ustar header", f"magic {block[257:265]!r}")
    size = _octal(block[124:136])
    if size is None:
        raise PackageCorrupt(package, name, "an octal size", f"{block[124:136]!r}")
    return name, size


def _check_member_name(name: str, package: str) -> None:
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise PackageCorrupt(package, name, "a relative member name", "an absolute path (refused)")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise PackageCorrupt(package, name, "a name inside the archive",
                             "a path with '..' (refused)")
    if "\\" in name or "\x00" in name or "" in parts or "." in parts:
        raise PackageCorrupt(package, name, "a plain member name", "an unusual path (refused)")
    if name != MANIFEST and not _MEMBER_NAME.match(name):
        raise PackageCorrupt(package, name, f"{MANIFEST}, {EVENTS} or tables/<name>.avro",
                             "an unknown member name (refused)")


def _iter_tar(fh: IO[bytes], package: str, *, file_size: int) -> Iterator[_TarMember]:
    """Members of a strictly-formed tar. The caller may read the member's data in
    between; this generator seeks past it, checks the padding and the end marker."""
    at = 0
    seen: set[str] = set()
    while True:
        fh.seek(at)
        block = fh.read(512)
        if len(block) < 512:
            raise PackageCorrupt(package, "(archive)", "an end-of-archive marker",
                                 f"end of file at byte {at + len(block)} (truncated?)")
        if block == _ZERO_BLOCK:
            _check_end(fh, at + 512, file_size, package)
            return
        name, size = _parse_header(block, at, package)
        if name in seen:
            raise PackageCorrupt(package, name, "unique member names", "a duplicate (refused)")
        if not seen and name != MANIFEST:
            raise PackageCorrupt(package, name, f"{MANIFEST} as the first member",
                                 f"{name!r} first (manifest missing or not first)")
        seen.add(name)
        data_at = at + 512
        padded = (size + 511) // 512 * 512
        if data_at + padded > file_size:
            raise PackageCorrupt(package, name, f"{size} bytes of data",
                                 f"{max(0, file_size - data_at)} bytes before end of file")
        yield _TarMember(name, data_at, size)
        if padded != size:
            fh.seek(data_at + size)
            if fh.read(padded - size) != bytes(padded - size):
                raise PackageCorrupt(package, name, "zero padding after the member",
                                     "non-zero bytes")
        at = data_at + padded


def _check_end(fh: IO[bytes], at: int, file_size: int, package: str) -> None:
    # the end marker is two zero blocks; tar pads the archive with more zeros
    if file_size < at + 512 or file_size % 512:
        raise PackageCorrupt(package, "(archive)",
                             "two zero blocks ending the archive, in 512-byte blocks",
                             f"{file_size - at + 512} bytes from the end marker to the end "
                             "of the file (truncated or appended to)")
    fh.seek(at)
    while chunk := fh.read(_READ_CHUNK):
        if chunk.count(0) != len(chunk):
            raise PackageCorrupt(package, "(archive)", "only zero bytes after the end marker",
                                 "data (appended or corrupted)")


def _read_exact(fh: IO[bytes], offset: int, size: int) -> bytes:
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise ValidationError(f"short read at byte {offset}")
    return data


def _sha256_of(fh: IO[bytes], offset: int, size: int) -> str:
    h = hashlib.sha256()
    fh.seek(offset)
    left = size
    while left:
        chunk = fh.read(min(left, _READ_CHUNK))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


# -- Avro object container files ----------------------------------------------------------

class _Span:
    """A bounded, optionally hashing view of one member's bytes in the archive."""

    def __init__(self, fh: IO[bytes], offset: int, size: int, package: str, member: str,
                 hasher: Any = None) -> None:
        self.fh, self.left, self.package, self.member, self.hasher = fh, size, package, member, \
            hasher
        fh.seek(offset)

    def read(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise PackageCorrupt(self.package, self.member, f"{n} more bytes for {what}",
                                 f"{self.left} left in the member")
        data = self.fh.read(n)
        if len(data) != n:
            raise PackageCorrupt(self.package, self.member, f"{n} bytes for {what}",
                                 f"{len(data)} (file changed or truncated)")
        self.left -= n
        if self.hasher is not None:
            self.hasher.update(data)
        return data

    def read_long(self, what: str) -> int:
        shift = result = 0
        for _ in range(10):
            b = self.read(1, what)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7
        raise PackageCorrupt(self.package, self.member, f"a varint for {what}", "over 10 bytes")


def _read_ocf(span: _Span, info: MemberInfo, expected_schema: dict[str, Any] | None,
              ) -> Iterator[Any]:
    """Records of one container file, holding it to the manifest's counts as it goes."""
    pkg, name = span.package, span.member

    def corrupt(expected: str, actual: str) -> PackageCorrupt:
        return PackageCorrupt(pkg, name, expected, actual)

    if span.read(4, "the container magic") != _OCF_MAGIC:
        raise corrupt("an Avro container file (Obj\\x01)", "other bytes")
    meta: dict[str, bytes] = {}
    while (count := span.read_long("the header map")) != 0:
        if count < 0:
            span.read_long("the header map block size")
            count = -count
        if count > 64:
            raise corrupt("a small header map", f"{count} entries")
        for _ in range(count):
            klen = span.read_long("a header key")
            if not 0 <= klen <= 256:
                raise corrupt("a short header key", f"{klen} bytes")
            key = span.read(klen, "a header key").decode("utf-8", "replace")
            vlen = span.read_long("a header value")
            if not 0 <= vlen <= _MAX_HEADER_VALUE:
                raise corrupt("a bounded header value", f"{vlen} bytes")
            meta[key] = span.read(vlen, "a header value")
    sync = span.read(16, "the sync marker")
    codec = meta.get("avro.codec", b"null").decode("utf-8", "replace")
    if codec != CODEC:
        raise corrupt(f"codec {CODEC}", f"codec {codec!r}")
    try:
        writer_schema = json.loads(meta["avro.schema"])
        parsed = fastavro.parse_schema(writer_schema)
    except Exception as exc:
        raise corrupt("a parseable avro.schema", f"{exc}") from None
    if expected_schema is not None and (to_parsing_canonical_form(writer_schema)
                                        != to_parsing_canonical_form(expected_schema)):
        raise corrupt("the schema named in the manifest", "a different writer schema")
    # compiled once per member: fastavro's reader parses the schema again for every record
    read_record = record_reader(parsed)
    rows_left, decoded_left = info.rows, info.decoded_bytes
    dctx = zstandard.ZstdDecompressor()
    while span.left:
        count = span.read_long("a block count")
        size = span.read_long("a block size")
        if not 0 < count <= rows_left:
            raise corrupt(f"at most {rows_left} more records (manifest rows {info.rows})",
                          f"a block of {count}")
        if not 0 <= size <= span.left:
            raise corrupt(f"a block within the member ({span.left} bytes left)",
                          f"a block of {size} bytes")
        data = _decompress(dctx, span.read(size, "a block"), decoded_left, corrupt)
        if span.read(16, "a sync marker") != sync:
            raise corrupt("the header's sync marker after each block", "other bytes")
        rows_left -= count
        decoded_left -= len(data)
        buf = io.BytesIO(data)
        at = 0
        try:
            for _ in range(count):
                try:
                    if read_record is None or type(data) is not bytes:
                        raise ValueError
                    datum, at = read_record(data, at)
                except Exception:  # bytes the compiled reader leaves to fastavro
                    buf.seek(at)
                    datum = fastavro.schemaless_reader(buf, parsed, None)
                    at = buf.tell()
                yield datum
        except Exception as exc:
            raise corrupt("records that decode with the member's schema",
                          f"{type(exc).__name__}: {exc}") from None
        if at != len(data):
            raise corrupt("blocks holding exactly their records",
                          f"{len(data) - at} trailing bytes")
    if rows_left or decoded_left:
        raise corrupt(f"{info.rows} records, {info.decoded_bytes} decoded bytes",
                      f"{info.rows - rows_left} records, "
                      f"{info.decoded_bytes - decoded_left} decoded bytes")


def _decompress(dctx: zstandard.ZstdDecompressor, data: bytes, limit: int,
                corrupt: Callable[[str, str], PackageCorrupt]) -> bytes:
    """Decompress at most ``limit`` bytes: a block that would expand further is refused
    before the excess is produced (a decompression bomb costs a bounded amount of work)."""
    out = bytearray()
    try:
        with dctx.stream_reader(io.BytesIO(data)) as reader:
            while chunk := reader.read(min(_READ_CHUNK, limit - len(out) + 1)):
                out += chunk
                if len(out) > limit:
                    raise corrupt(f"blocks decompressing to at most {limit} more bytes "
                                  "(manifest decoded_bytes)", "more (refused)")
    except zstandard.ZstdError as exc:
        raise corrupt("a zstandard block", f"{exc}") from None
    return bytes(out)


class _OcfWriter:
    """Writes one container file, hashing and counting what it writes."""

    def __init__(self, path: Path, schema: dict[str, Any]) -> None:
        self.path = path
        with storage(path):
            self._fh = path.open("wb")
        self._hash = hashlib.sha256()
        self.rows = 0
        self.decoded_bytes = 0
        self.bytes = 0
        self._parsed = fastavro.parse_schema(schema)
        self._cctx = zstandard.ZstdCompressor(level=3)
        schema_json = json.dumps(schema, separators=(",", ":")).encode()
        # deterministic sync marker: equal content gives equal bytes
        self._sync = hashlib.sha256(b"sync" + schema_json).digest()[:16]
        header = bytearray(_OCF_MAGIC)
        header += avro_long(2)
        for key, value in ((b"avro.codec", CODEC.encode()), (b"avro.schema", schema_json)):
            header += avro_long(len(key)) + key + avro_long(len(value)) + value
        header += avro_long(0) + self._sync
        self._write(bytes(header))
        self._buf = io.BytesIO()
        self._pending = 0

    def _write(self, data: bytes) -> None:
        with storage(self.path):
            self._fh.write(data)
        self._hash.update(data)
        self.bytes += len(data)

    def append(self, datum: dict[str, Any]) -> None:
        fastavro.schemaless_writer(self._buf, self._parsed, datum)
        self._pending += 1
        if self._pending >= _BLOCK_RECORDS or self._buf.tell() >= _BLOCK_BYTES:
            self._flush_block()

    def _flush_block(self) -> None:
        if not self._pending:
            return
        data = self._buf.getvalue()
        packed = self._cctx.compress(data)
        self._write(avro_long(self._pending) + avro_long(len(packed)) + packed + self._sync)
        self.rows += self._pending
        self.decoded_bytes += len(data)
        self._buf = io.BytesIO()
        self._pending = 0

    def close(self) -> tuple[str, int, int, int]:
        """(sha256, bytes, rows, decoded_bytes)."""
        self._flush_block()
        with storage(self.path):
            self._fh.close()
        return self._hash.hexdigest(), self.bytes, self.rows, self.decoded_bytes

    def abort(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass  # buffered bytes that cannot be written any more: the file is discarded


# -- writing ------------------------------------------------------------------------------

class RowWriter:
    """Appends the rows of one table (column name -> journal value) to its member."""

    def __init__(self, table: TableSchema, writer: _OcfWriter) -> None:
        self.table = table
        self._writer = writer
        self._names = table.avro_field_names()
        self._columns = table.column_names
        self._text_fallback = tuple(has_text_fallback(c.type_oid) for c in table.columns)

    def write(self, row: dict[str, Any]) -> None:
        self._writer.append({f: avro_field_value(row.get(c), text) for f, c, text in zip(
            self._names, self._columns, self._text_fallback, strict=True)})

    @property
    def rows(self) -> int:
        return self._writer.rows + self._writer._pending


class EventWriter:
    """Appends stream records (position, key, single-object value) to ``events.avro``."""

    def __init__(self, writer: _OcfWriter) -> None:
        self._writer = writer
        self.last: Position | None = None

    def write(self, position: Position, key: bytes | None, value: bytes) -> None:
        if self.last is not None and position <= self.last:
            raise ValueError(f"stream records out of order: {position} after {self.last}")
        self.last = position
        self._writer.append({"commit_lsn": position.commit_lsn, "seq": position.seq,
                             "key": key, "value": value})

    @property
    def bytes(self) -> int:
        return self._writer.bytes + self._writer._buf.tell()

    @property
    def rows(self) -> int:
        return self._writer.rows + self._writer._pending


class PackageBuilder:
    """Builds one package: members in a private directory under ``workdir``, then the tar
    (``finish``) as a temporary file in ``workdir``, fsynced, ready for ``PackageStore.put``.
    """

    def __init__(self, kind: str, workdir: Path) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown package kind {kind!r}")
        self.kind = kind
        self.workdir = Path(workdir)
        with storage(self.workdir):
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=self.workdir))
        self._writers: dict[str, tuple[_OcfWriter, TableSchema | None]] = {}
        self._copied: dict[str, tuple[Path, MemberInfo]] = {}
        self._names = itertools.count()
        self._schemas: dict[str, str] = {}

    def table(self, table: TableSchema) -> RowWriter:
        if self.kind != "full":
            raise ValueError("only a full snapshot holds table members")
        name = self._claim(table)
        w = _OcfWriter(self._dir / f"m{next(self._names)}.avro", table.avro_row_schema())
        self._writers[name] = (w, table)
        return RowWriter(table, w)

    def copy_table(self, reader: PackageReader, table: str) -> MemberInfo:
        """Copy a table member of another full package unchanged (no decoding), checking
        its SHA-256 on the way."""
        schema = reader.table_schema(table)
        name = self._claim(schema)
        info = reader.manifest.table_member(table)
        where = reader._layout[info.name]
        target = self._dir / f"m{next(self._names)}.avro"
        hasher = hashlib.sha256()
        with reader.path.open("rb") as src, storage(target), target.open("wb") as dst:
            span = _Span(src, where.offset, where.size, reader.label, info.name, hasher)
            while span.left:
                dst.write(span.read(min(span.left, _READ_CHUNK), "the member"))
        if hasher.hexdigest() != info.sha256:
            raise PackageCorrupt(reader.label, info.name, f"SHA-256 {info.sha256}",
                                 f"SHA-256 {hasher.hexdigest()}")
        self._copied[name] = (target, info)
        return info

    def take_back(self, table: TableSchema) -> Iterator[dict[str, Any]]:
        """Remove a table's member again, yielding the rows written to it so far."""
        name = member_name_for(table.qualified)
        w, _ = self._writers.pop(name)
        sha, size, rows, decoded = w.close()
        info = MemberInfo(name, sha, size, rows, decoded)
        try:
            with w.path.open("rb") as fh:
                span = _Span(fh, 0, size, "(package being built)", name)
                for datum in _read_ocf(span, info, None):
                    yield from_avro_row(table, datum)
        finally:
            w.path.unlink(missing_ok=True)

    def _claim(self, table: TableSchema) -> str:
        name = member_name_for(table.qualified)
        if name in self._writers or name in self._copied:
            raise ValueError(f"table {table.qualified} is already in the package")
        env = envelope_schema(table)
        self._schemas[fingerprint(env).hex()] = json.dumps(env)
        return name

    def events(self) -> EventWriter:
        if self.kind != "segment" or self._writers:
            raise ValueError("only a segment holds events, in one member")
        w = _OcfWriter(self._dir / "events.avro", STREAM_RECORD_SCHEMA)
        self._writers[EVENTS] = (w, None)
        return EventWriter(w)

    def add_schemas(self, schemas: dict[str, str]) -> None:
        self._schemas.update(schemas)

    def finish(self, *, system_identifier: str, database: str, generation: str,
               to_position: Position, from_position: Position | None = None,
               first_commit_ts: int | None = None, last_commit_ts: int | None = None,
               parent_id: str | None = None, catalog: dict[str, Any] | None = None,
               marks: Sequence[tuple[str, Position, int]] = ()) -> tuple[Path, Manifest]:
        """Close the members, write the tar to a temporary file (fsynced); return it and
        its manifest. The caller publishes it with ``PackageStore.put`` or a rename."""
        try:
            return self._finish(system_identifier=system_identifier, database=database,
                                generation=generation, to_position=to_position,
                                from_position=from_position, first_commit_ts=first_commit_ts,
                                last_commit_ts=last_commit_ts, parent_id=parent_id,
                                catalog=catalog, marks=marks)
        finally:
            self.discard()  # the members are in the tar now, or the package failed

    def _finish(self, *, system_identifier: str, database: str, generation: str,
                to_position: Position, from_position: Position | None,
                first_commit_ts: int | None, last_commit_ts: int | None,
                parent_id: str | None, catalog: dict[str, Any] | None,
                marks: Sequence[tuple[str, Position, int]]) -> tuple[Path, Manifest]:
        members = []
        for name, (w, table) in sorted(self._writers.items()):
            sha, size, rows, decoded = w.close()
            fp = fingerprint(envelope_schema(table)).hex() if table is not None else None
            members.append(MemberInfo(name, sha, size, rows, decoded,
                                      table.qualified if table is not None else None, fp))
        members += [info for _, info in self._copied.values()]
        members.sort(key=lambda m: m.name)
        manifest = Manifest(
            package_id="", kind=self.kind, format_version=FORMAT_VERSION,
            system_identifier=system_identifier, database=database, generation=generation,
            from_position=from_position, to_position=to_position,
            first_commit_ts=first_commit_ts, last_commit_ts=last_commit_ts,
            parent_id=parent_id, members=tuple(members), catalog=catalog or {},
            schemas=dict(sorted(self._schemas.items())), marks=tuple(marks),
            tool_version=__version__,
            created_at=datetime.now(UTC).isoformat(timespec="microseconds")).with_id()
        manifest._check_consistency()
        with storage(self.workdir):
            fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=".tar",
                                            dir=self.workdir)
        tmp = Path(tmp_name)
        try:
            with storage(tmp), os.fdopen(fd, "wb") as fh:
                paths = {n: w.path for n, (w, _) in self._writers.items()}
                paths.update({n: path for n, (path, _) in self._copied.items()})
                _write_tar(fh, manifest, paths)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, manifest

    def discard(self) -> None:
        for w, _ in self._writers.values():
            w.abort()
        shutil.rmtree(self._dir, ignore_errors=True)


def _write_tar(fh: IO[bytes], manifest: Manifest, paths: dict[str, Path]) -> None:
    import tarfile

    mtime = int(datetime.now(UTC).timestamp())
    with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        body = manifest.canonical_bytes()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(body), mtime, 0o644
        tar.addfile(info, io.BytesIO(body))
        for m in manifest.members:
            info = tarfile.TarInfo(m.name)
            info.size, info.mtime, info.mode = m.bytes, mtime, 0o644
            with paths[m.name].open("rb") as src:
                tar.addfile(info, src)


# -- reading ------------------------------------------------------------------------------

def _parse_manifest_bytes(raw: bytes, package: str) -> Manifest:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageCorrupt(package, MANIFEST, "a JSON document", f"{exc}") from None
    if not isinstance(data, dict):
        raise PackageCorrupt(package, MANIFEST, "a JSON object", type(data).__name__)
    manifest = Manifest.from_json(data)
    if manifest.canonical_bytes() != raw:
        raise PackageCorrupt(package, MANIFEST, "the canonical manifest serialisation",
                             "other bytes (edited or corrupted)")
    return manifest


def _layout(path: Path, *, hash_members: bool) -> tuple[Manifest, dict[str, _TarMember]]:
    """Stages 1-4: archive structure and names, sizes, manifest, (optionally) SHA-256."""
    package = path.name
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ValidationError(f"cannot open package {path}: {exc.strerror}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        manifest: Manifest | None = None
        found: dict[str, _TarMember] = {}
        for member in _iter_tar(fh, package, file_size=size):
            if manifest is None:
                if member.size > MAX_MANIFEST_BYTES:
                    raise PackageCorrupt(package, MANIFEST,
                                         f"at most {MAX_MANIFEST_BYTES} bytes",
                                         f"{member.size} bytes")
                manifest = _parse_manifest_bytes(_read_exact(fh, member.offset, member.size),
                                                 package)
                package = f"{manifest.package_id} ({path.name})"
                continue
            try:
                info = manifest.member(member.name)
            except KeyError:
                raise PackageCorrupt(package, member.name, "only members the manifest lists",
                                     "an unlisted member") from None
            if member.size != info.bytes:
                raise PackageCorrupt(package, member.name, f"{info.bytes} bytes (manifest)",
                                     f"{member.size} bytes (archive header)")
            if hash_members:
                actual = _sha256_of(fh, member.offset, member.size)
                if actual != info.sha256:
                    raise PackageCorrupt(package, member.name, f"SHA-256 {info.sha256}",
                                         f"SHA-256 {actual}")
            found[member.name] = member
        if manifest is None:
            raise PackageCorrupt(package, MANIFEST, f"{MANIFEST} as the first member",
                                 "an empty archive")
        for info in manifest.members:
            if info.name not in found:
                raise PackageCorrupt(package, info.name, "present in the archive", "missing")
    return manifest, found


def read_manifest(path: Path) -> Manifest:
    """The manifest, with the archive's structure and sizes checked (no member hashing)."""
    return _layout(Path(path), hash_members=False)[0]


class PackageReader:
    """Reads the members of a package straight from the tar file.

    Each member is hashed again while it is read; a member that changed since the
    package was opened raises PackageCorrupt when its end is reached.
    """

    def __init__(self, path: Path, manifest: Manifest, layout: dict[str, _TarMember]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._layout = layout
        self._registry: SchemaRegistry | None = None
        self._closed = False

    @property
    def label(self) -> str:
        return f"{self.manifest.package_id} ({self.path.name})"

    @property
    def registry(self) -> SchemaRegistry:
        if self._registry is None:
            reg = SchemaRegistry()
            for text in self.manifest.schemas.values():
                reg.add(text)
            self._registry = reg
        return self._registry

    def tables(self) -> list[str]:
        return self.manifest.tables()

    def table_schema(self, table: str) -> TableSchema:
        info = self.manifest.table_member(table)
        return TableSchema.from_avro_envelope(json.loads(self.manifest.schemas[info.fingerprint]))

    def _member(self, info: MemberInfo, schema: dict[str, Any] | None, *, check_hash: bool = True
                ) -> Iterator[Any]:
        if self._closed:
            raise ValidationError(f"package {self.label} is closed")
        where = self._layout[info.name]
        hasher = hashlib.sha256() if check_hash else None
        with self.path.open("rb") as fh:
            span = _Span(fh, where.offset, where.size, self.label, info.name, hasher)
            yield from _read_ocf(span, info, schema)
            if hasher is not None and hasher.hexdigest() != info.sha256:
                raise PackageCorrupt(self.label, info.name, f"SHA-256 {info.sha256}",
                                     f"SHA-256 {hasher.hexdigest()}")

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        """A full snapshot's rows of ``table`` ("schema.name"), in primary-key order."""
        info = self.manifest.table_member(table)
        schema = self.table_schema(table)
        for datum in self._member(info, schema.avro_row_schema()):
            yield from_avro_row(schema, datum)

    def raw_records(self) -> Iterator[tuple[Position, bytes | None, bytes]]:
        """A segment's stream records as stored: (position, key, single-object value)."""
        if self.manifest.kind != "segment":
            return
        info = self.manifest.member(EVENTS)
        for datum in self._member(info, STREAM_RECORD_SCHEMA):
            yield Position(datum["commit_lsn"], datum["seq"]), datum["key"], datum["value"]

    def records(self) -> Iterator[Record]:
        registry = self.registry
        for position, _, value in self.raw_records():
            record = _decode(value, registry, self.label)
            if record.position != position:
                raise PackageCorrupt(self.label, EVENTS, f"a record at {position}",
                                     f"one at {record.position}")
            yield record

    def transactions(self) -> Iterator[Transaction]:
        """A segment's complete transactions, in position order."""
        yield from _transactions(self.records(), self.manifest, self.label)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> PackageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(value: bytes, registry: SchemaRegistry, label: str) -> Record:
    try:
        fp, _ = split_header(value)
        if fp not in registry:
            raise PackageCorrupt(label, EVENTS, "events whose schema is in the manifest",
                                 f"an event with fingerprint {fp.hex()}")
        return decode(value, registry)
    except PackageCorrupt:
        raise
    except ValidationError as exc:
        raise PackageCorrupt(label, EVENTS, "events that decode", str(exc)) from None
    except Exception as exc:  # garbage inside a record that decoded as a container record
        raise PackageCorrupt(label, EVENTS, "events that decode",
                             f"{type(exc).__name__}: {exc}") from None


def _transactions(records: Iterator[Record], manifest: Manifest, label: str
                  ) -> Iterator[Transaction]:
    """Group a segment's records, checking the stream contract as it goes: records in
    (from, to], whole transactions, seq numbering and END's event count."""

    def corrupt(expected: str, actual: str) -> PackageCorrupt:
        return PackageCorrupt(label, EVENTS, expected, actual)

    low, high = manifest.from_position, manifest.to_position
    current: Transaction | None = None
    last: Position | None = None
    for record in records:
        pos = record.position
        if last is not None and pos <= last:
            raise corrupt("positions in increasing order", f"{pos} after {last}")
        if (low is not None and pos <= low) or pos > high:
            raise corrupt(f"positions in ({low}, {high}]", f"{pos}")
        last = pos
        if isinstance(record, TransactionMarker) and record.status == "BEGIN":
            if current is not None or pos.seq != 0:
                raise corrupt("BEGIN at seq 0 after a complete transaction", f"BEGIN at {pos}")
            current = Transaction(record)
            continue
        if current is None or pos.commit_lsn != current.commit_lsn:
            raise corrupt("records inside a transaction", f"{type(record).__name__} at {pos}")
        if pos.seq != len(current.records) + 1:
            raise corrupt(f"seq {len(current.records) + 1}", f"{pos}")
        if isinstance(record, TransactionMarker):
            changes = sum(isinstance(r, ChangeEvent) for r in current.records)
            if record.event_count != changes:
                raise corrupt(f"END counting {changes} changes", f"{record.event_count}")
            current.end = record
            yield current
            current = None
        else:
            current.records.append(record)
    if current is not None:
        raise corrupt("the last transaction to end", f"no END after {current.begin.position}")
    if last != high:
        raise corrupt(f"the last record at to_position {high}", f"{last}")


def open_package(path: Path, *, verify: bool = True) -> PackageReader:
    """Open a package file; with ``verify`` every stage of ``verify_package`` runs first,
    without it the structure, sizes and manifest are still checked (not the contents)."""
    path = Path(path)
    if verify:
        manifest, layout = _layout(path, hash_members=True)
        reader = PackageReader(path, manifest, layout)
        _decode_all(reader)
        return reader
    manifest, layout = _layout(path, hash_members=False)
    return PackageReader(path, manifest, layout)


def verify_package(path: Path, *, decode: bool = True) -> Manifest:
    """Every stage: structure and names, sizes, manifest schema and id, SHA-256 of every
    member, every record decodes (and a segment's records form whole transactions).

    ``decode=False`` stops after the SHA-256 of every member: the bytes are proven to be
    the ones the manifest (whose id is derived from its content) describes, at the cost of
    reading them once. What only decoding would find -- a record that does not decode, a
    segment that breaks the stream contract -- a reader finds too, as it reads: a restore
    meets it inside its single target transaction, which then rolls back. ``journal
    packages verify`` runs every stage.
    """
    if not decode:
        return _layout(Path(path), hash_members=True)[0]
    return open_package(path, verify=True).manifest


def _decode_all(reader: PackageReader) -> None:
    m = reader.manifest
    if m.kind == "segment":
        marks = []
        first_ts = last_ts = None
        for tx in _transactions(reader.records(), m, reader.label):
            first_ts = tx.begin.commit_ts if first_ts is None else first_ts
            last_ts = tx.begin.commit_ts
            marks += [(r.content.decode("utf-8", "replace"), r.position, r.commit_ts)
                      for r in tx.records if isinstance(r, LogicalMessage) and r.is_mark]
        if (first_ts, last_ts) != (m.first_commit_ts, m.last_commit_ts):
            raise PackageCorrupt(reader.label, EVENTS,
                                 f"commit times {m.first_commit_ts}..{m.last_commit_ts}",
                                 f"{first_ts}..{last_ts}")
        if tuple(marks) != m.marks:
            raise PackageCorrupt(reader.label, EVENTS, f"marks {list(m.marks)}", f"{marks}")
        return
    for table in m.tables():
        info = m.table_member(table)
        schema = reader.table_schema(table)
        key_cols = [schema.column_names.index(c) for c in schema.primary_key]
        names = schema.avro_field_names()
        previous = None
        for datum in reader._member(info, schema.avro_row_schema(), check_hash=False):
            key = sort_key(tuple(datum[names[i]] for i in key_cols)) if key_cols else None
            if key is not None and previous is not None and not previous < key:
                raise PackageCorrupt(reader.label, info.name, "rows in primary-key order",
                                     f"key {key} after {previous}")
            previous = key


def sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """How packages order primary keys: Python's order of the journal values, NULLs last.

    (It need not match a PostgreSQL collation; it only has to be the same everywhere a
    package is written or merged.) A key column with a text branch holds typed values and
    text forms ('infinity', a BC date) side by side: the text forms sort after the typed
    values, so the order stays total; a column holding only str keeps its order."""
    return tuple((2, 0, 0) if v is None else (1, 1, v) if type(v) is str else (1, 0, v)
                 for v in key)


# -- chains -------------------------------------------------------------------------------

def verify_chain(manifests: Sequence[Manifest]) -> None:
    """Check that packages form continuous chains, one per generation.

    Within a generation the segments must follow each other without gap or overlap, each
    naming the previous one as parent; the first segment must start at a full snapshot of
    the set (or follow its parent, when that is in the set); every full snapshot must sit
    on the chain. Raises ChainBroken naming the packages and positions involved.
    """
    if not manifests:
        return
    sources = {(m.system_identifier, m.database) for m in manifests}
    if len(sources) > 1:
        raise ChainBroken(f"packages of different sources in one chain: {sorted(sources)}")
    by_generation: dict[str, list[Manifest]] = {}
    for m in manifests:
        by_generation.setdefault(m.generation, []).append(m)
    for generation, group in by_generation.items():
        _verify_generation(generation, sorted(group, key=positions_sort_key))


def _verify_generation(generation: str, group: list[Manifest]) -> None:
    ids = {m.package_id for m in group}
    if len(ids) != len(group):
        raise ChainBroken(f"generation {generation}: a package is listed twice")
    fulls = [m for m in group if m.kind == "full"]
    segments = [m for m in group if m.kind == "segment"]
    for prev, seg in zip(segments, segments[1:], strict=False):
        assert seg.from_position is not None
        if seg.from_position > prev.to_position:
            raise ChainBroken(f"gap: {prev.package_id} ends at {prev.to_position} but the "
                              f"next segment {seg.package_id} starts after {seg.from_position}")
        if seg.from_position < prev.to_position:
            raise ChainBroken(f"overlap: {seg.package_id} starts after {seg.from_position}, "
                              f"inside {prev.package_id} which ends at {prev.to_position}")
        if seg.parent_id != prev.package_id:
            raise ChainBroken(f"segment {seg.package_id} names parent {seg.parent_id}, but "
                              f"the package before it is {prev.package_id}")
    if not segments:
        return
    first, last = segments[0], segments[-1]
    bases = [f for f in fulls if f.to_position == first.from_position]
    if not bases:
        raise ChainBroken(f"missing parent: segment {first.package_id} starts after "
                          f"{first.from_position} but no full snapshot in the set is at that "
                          f"position (its parent {first.parent_id} is not there)")
    if first.parent_id not in {b.package_id for b in bases} | {b.parent_id for b in bases}:
        raise ChainBroken(f"segment {first.package_id} names parent {first.parent_id}, which "
                          f"is not the full snapshot at {first.from_position}")
    ends = {s.to_position for s in segments} | {first.from_position}
    for f in fulls:
        if f.to_position < first.from_position:
            continue  # an older base, not needed by these segments
        if f.to_position > last.to_position or f.to_position not in ends:
            raise ChainBroken(f"full snapshot {f.package_id} at {f.to_position} is not on the "
                              f"chain of segments ({first.from_position} .. {last.to_position})")

