"""Avro object container files: the members of a package, written and read block by block.

Members use the ``zstandard`` codec. Reading bounds its work by the manifest: a block may
not declare more records than the manifest has left for the member, nor decompress to
more bytes than the manifest's ``decoded_bytes`` (a decompression bomb costs a bounded
amount of work), and the writer schema must be the one the manifest names. Writing uses a
sync marker derived from the schema, so equal content gives equal bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import zstandard
from fastavro.schema import to_parsing_canonical_form

from journal.codec import avro_long, record_copier, record_reader, record_walker, row_writer
from journal.codec.decoder import RecordWalk
from journal.codec.wire import Unhandled
from journal.durable import storage
from journal.errors import PackageCorrupt
from journal.packages.manifest import MemberInfo
from journal.packages.tar import READ_CHUNK, Span

CODEC = "zstandard"
_OCF_MAGIC = b"Obj\x01"
_MAX_HEADER_VALUE = 16 * 1024 * 1024  # bounds a hostile header's work
# the writer closes a block at whichever it reaches first
_BLOCK_RECORDS = 4096
_BLOCK_BYTES = 1024 * 1024


# given the member's compiled walk, a block's bytes and its record count: True when the
# block is judged whole, so its records need not be built
BlockCheck = Callable[[RecordWalk, bytes, int], bool]


@dataclass(frozen=True)
class CopyText:
    """What ``read_ocf`` writes records as COPY text of: the writer schema's fields at
    ``fields``, in that order, in chunks handed over from ``chunk`` bytes."""

    fields: tuple[int, ...]
    chunk: int


@dataclass(frozen=True)
class CopyChunk:
    """COPY text of ``rows`` consecutive records, each a line ending in a newline."""

    text: bytes
    rows: int


def read_ocf(span: Span, info: MemberInfo, expected_schema: dict[str, Any] | None,
             check_block: BlockCheck | None = None,
             copy: CopyText | None = None) -> Iterator[Any]:
    """Records of one container file, holding it to the manifest's counts as it goes.

    With ``check_block`` (verification), each block is first offered to it with the C walk
    over the writer schema's records (where there is one): a block it accepts yields no
    records; any other block is read record by record as without it, so what is accepted
    and what is refused, and how, stays the row by row path's.

    With ``copy`` (a restore's COPY), records the C writer writes as COPY text
    (``record_copier``) come as ``CopyChunk``s, and any record it leaves (or every one,
    where there is no C reader) as the record read as without ``copy``, in their order."""
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
    walk = record_walker(parsed) if check_block is not None else None
    copier = record_copier(parsed) if copy is not None else None
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
        if walk is not None and check_block is not None and check_block(walk, data, count):
            continue
        buf = io.BytesIO(data)
        at = 0
        left = count
        try:
            while left:
                if copier is not None and copy is not None:
                    chunks, rows, at = copier(data, at, left, copy.fields, copy.chunk)
                    for text, chunk_rows in chunks:
                        yield CopyChunk(text, chunk_rows)
                    left -= rows
                    if not left:
                        break
                try:
                    if read_record is None or type(data) is not bytes:
                        raise ValueError
                    datum, at = read_record(data, at)
                except Exception:  # bytes the compiled reader leaves to fastavro
                    buf.seek(at)
                    datum = fastavro.schemaless_reader(buf, parsed, None)
                    at = buf.tell()
                left -= 1
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
            while chunk := reader.read(min(READ_CHUNK, limit - len(out) + 1)):
                out += chunk
                if len(out) > limit:
                    raise corrupt(f"blocks decompressing to at most {limit} more bytes "
                                  "(manifest decoded_bytes)", "more (refused)")
    except zstandard.ZstdError as exc:
        raise corrupt("a zstandard block", f"{exc}") from None
    return bytes(out)


class OcfWriter:
    """Writes one container file, hashing and counting what it writes. Records are written
    by the compiled row writer (in C where built; ``in_c=False``: fastavro alone), any
    record it leaves to fastavro by fastavro's schemaless writer."""

    def __init__(self, path: Path, schema: dict[str, Any], in_c: bool = True) -> None:
        self.path = path
        with storage(path):
            self._fh = path.open("wb")
        self._hash = hashlib.sha256()
        self.rows = 0
        self.decoded_bytes = 0
        self.bytes = 0
        self._parsed = fastavro.parse_schema(schema)
        # compiled once per member: fastavro's writer walks and validates the schema per
        # record, which was most of the cost of writing a package
        self.in_c = in_c
        self._write_row = row_writer(self._parsed) if in_c else None
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
        self._buf = bytearray()
        self._pending = 0

    def _write(self, data: bytes) -> None:
        with storage(self.path):
            self._fh.write(data)
        self._hash.update(data)
        self.bytes += len(data)

    def append(self, datum: dict[str, Any]) -> None:
        try:
            if self._write_row is None:
                raise Unhandled
            self._buf += self._write_row(datum)
        except Unhandled:  # fastavro writes it, or raises what it raises for such a datum
            out = io.BytesIO()
            fastavro.schemaless_writer(out, self._parsed, datum)
            self._buf += out.getvalue()
        self._pending += 1
        if self._pending >= _BLOCK_RECORDS or len(self._buf) >= _BLOCK_BYTES:
            self._flush_block()

    def append_encoded(self, record: bytes) -> None:
        """Append one record already written as the schema's Avro binary."""
        self._buf += record
        self._pending += 1
        if self._pending >= _BLOCK_RECORDS or len(self._buf) >= _BLOCK_BYTES:
            self._flush_block()

    def _flush_block(self) -> None:
        if not self._pending:
            return
        data = bytes(self._buf)
        packed = self._cctx.compress(data)
        self._write(avro_long(self._pending) + avro_long(len(packed)) + packed + self._sync)
        self.rows += self._pending
        self.decoded_bytes += len(data)
        self._buf = bytearray()
        self._pending = 0

    @property
    def appended_rows(self) -> int:
        """Rows appended so far, in written blocks or the one being filled."""
        return self.rows + self._pending

    @property
    def appended_bytes(self) -> int:
        """Bytes written so far plus the uncompressed size of the block being filled."""
        return self.bytes + len(self._buf)

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


