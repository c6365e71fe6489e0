"""The file journal: the embedded default transport, an append-only segment log.

Layout, per source database::

    <dir>/<database>/segments/<20-digit base offset>.log   the records
    <dir>/<database>/schemas.log                            schemas by fingerprint
    <dir>/<database>/consumers/<name>.json                  committed consumer offsets
    <dir>/<database>/writer.lock                            held (flock) by the one writer

Every file of records is a sequence of frames ``u32 length | u32 CRC-32 | payload``
(big-endian; the CRC is ``zlib.crc32`` of the payload). A record payload is the 16-byte
``Position.to_bytes()``, a u16 key length (0xFFFF: no key), the key and the value; a
schema payload is the 8-byte fingerprint and the schema JSON. Offsets are global byte
offsets (segment base + position in the segment), as in Kafka's log, so a segment file
name says where it starts and whole segments can be deleted once every consumer is past
them.

Durability: ``append`` only buffers; ``flush`` writes and fsyncs (the file, and the
directory when it created a file) before it returns, so nothing is acknowledged before
it is on disk. A crash can leave a torn frame at the end of the last segment; the next
writer cuts it away on open. A bad frame anywhere else is corruption and is reported
with the file and offset, never skipped.

One module because the writer, the reader and retention share one on-disk format (frames,
segment names, the torn-tail rule): split, each half would have to restate it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from journal.codec import SchemaRegistry
from journal.config import file_url_path
from journal.durable import fsync_dir, storage, write_atomically
from journal.errors import ConfigError, StorageError, TransportError
from journal.positions import Position
from journal.transport import Committed, JournalReader, JournalWriter, RawRecord

SEGMENT_BYTES = 64 * 1024 * 1024
POLL_INTERVAL = 0.05  # seconds between looks for new data when following
_HEADER = struct.Struct(">II")
_KEY_LEN = struct.Struct(">H")
_NO_KEY = 0xFFFF
_SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")
_CONSUMER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# Appended frames are written through (not yet fsynced) once this much is buffered, so
# a writer that is flushed rarely does not hold unbounded memory.
_WRITE_THROUGH = 4 * 1024 * 1024
_READ_CHUNK = 1024 * 1024


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _record_payload(position: Position, key: bytes | None, value: bytes) -> bytes:
    if key is None:
        key_part = _KEY_LEN.pack(_NO_KEY)
    elif len(key) >= _NO_KEY:
        raise TransportError(f"record key of {len(key)} bytes at {position} is too long "
                             f"for the file journal (at most {_NO_KEY - 1})")
    else:
        key_part = _KEY_LEN.pack(len(key)) + key
    return position.to_bytes() + key_part + value


def _parse_record(payload: bytes, offset: int, next_offset: int) -> RawRecord:
    position = Position.from_bytes(payload[:16])
    (key_len,) = _KEY_LEN.unpack_from(payload, 16)
    if key_len == _NO_KEY:
        return RawRecord(position, None, payload[18:], offset, next_offset)
    return RawRecord(position, payload[18:18 + key_len], payload[18 + key_len:], offset,
                     next_offset)


def _make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents, each made durable in its parent directory."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def _segment_path(segments: Path, base: int) -> Path:
    return segments / f"{base:020d}.log"


class _Scan:
    """Result of walking the frames of one file: where the valid frames end and why."""

    __slots__ = ("end", "bad_offset", "reason", "torn")

    def __init__(self, end: int, bad_offset: int | None = None, reason: str = "",
                 torn: bool = False) -> None:
        self.end, self.bad_offset, self.reason, self.torn = end, bad_offset, reason, torn


def _scan_frames(path: Path) -> _Scan:
    """Check every frame of ``path``.

    A frame that runs past the end of the file, a bad last frame, or a bad frame followed
    only by zero bytes (blocks allocated but never written) is a torn tail; any other bad
    frame is corruption.
    """
    size = path.stat().st_size
    pos = 0
    with path.open("rb") as fh:
        while pos < size:
            fh.seek(pos)
            header = fh.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return _Scan(pos, pos, "incomplete frame header", torn=True)
            length, crc = _HEADER.unpack(header)
            end = pos + _HEADER.size + length
            if end > size:
                return _Scan(pos, pos, "frame runs past the end of the file", torn=True)
            payload = fh.read(length)
            if length == 0 or zlib.crc32(payload) != crc:
                torn = end == size or _only_zeros(fh, pos, size)
                return _Scan(pos, pos, "checksum mismatch" if length else "empty frame", torn)
            pos = end
    return _Scan(pos)


def _only_zeros(fh, start: int, size: int) -> bool:
    fh.seek(start)
    remaining = size - start
    while remaining:
        block = fh.read(min(remaining, _READ_CHUNK))
        if not block or block.count(0) != len(block):
            return False
        remaining -= len(block)
    return True


@dataclass(frozen=True)
class FileJournal:
    """The journal of one source database in a directory."""

    root: Path
    database: str
    segment_bytes: int = SEGMENT_BYTES

    def __post_init__(self) -> None:
        if (not self.database or self.database in (".", "..") or "/" in self.database
                or "\0" in self.database):
            raise ConfigError(f"database name {self.database!r} cannot name a journal directory")
        if self.segment_bytes < 1024:
            raise ConfigError(f"segment size {self.segment_bytes} is too small (at least 1024)")

    @classmethod
    def from_url(cls, url: str, database: str, *, segment_bytes: int | None = None
                 ) -> FileJournal:
        """``file:///dir`` or ``file://./dir`` (optionally ``?segment_bytes=N``)."""
        parts = urlsplit(url)
        path = file_url_path(url)
        if path is None:
            raise ConfigError(f"not a file journal URL: {url!r} (expected file:///dir)")
        if segment_bytes is None:
            query = parse_qs(parts.query)
            try:
                segment_bytes = int(query.get("segment_bytes", [SEGMENT_BYTES])[0])
            except ValueError:
                raise ConfigError(f"segment_bytes in {url!r} is not an integer") from None
        return cls(path, database, segment_bytes)

    @property
    def directory(self) -> Path:
        return self.root / self.database

    @property
    def segments_dir(self) -> Path:
        return self.directory / "segments"

    @property
    def schemas_path(self) -> Path:
        return self.directory / "schemas.log"

    @property
    def consumers_dir(self) -> Path:
        return self.directory / "consumers"

    def writer(self) -> FileJournalWriter:
        return FileJournalWriter(self)

    def reader(self) -> FileJournalReader:
        return FileJournalReader(self)

    def segments(self) -> list[tuple[int, Path]]:
        """(base offset, path) of every segment, oldest first."""
        try:
            names = os.listdir(self.segments_dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            m = _SEGMENT_NAME.match(name)
            if m:
                found.append((int(m.group(1)), self.segments_dir / name))
        return sorted(found)

    def consumer_offsets(self) -> dict[str, int]:
        """Committed offset of every consumer that ever committed."""
        result = {}
        try:
            names = os.listdir(self.consumers_dir)
        except FileNotFoundError:
            return {}
        for name in names:
            if name.endswith(".json") and _CONSUMER_NAME.match(name[:-5]):
                result[name[:-5]] = _read_consumer(self.consumers_dir / name).offset
        return result

    def truncate_before(self, offset: int, *, min_age_s: float = 0.0) -> list[Path]:
        """Delete whole segments that end at or before ``offset`` and before every
        consumer's committed offset, and were last written ``min_age_s`` ago or earlier;
        the newest segment is always kept.

        Retention is the consumers' business (the compactor has copied the records into
        packages when it commits), so a consumer that never commits holds everything.
        Returns the deleted files.
        """
        limit = min([offset, *self.consumer_offsets().values()])
        newest_kept = time.time() - min_age_s
        segments = self.segments()
        removed = []
        for (_, path), (next_base, _) in zip(segments, segments[1:], strict=False):
            if next_base > limit:
                break
            with storage(path, "delete"):
                try:
                    if path.stat().st_mtime > newest_kept:
                        break  # younger segments follow: keep them all
                    path.unlink()
                except FileNotFoundError:
                    continue
            removed.append(path)
        if removed:
            fsync_dir(self.segments_dir)
        return removed


def _check_consumer(name: str) -> None:
    if not _CONSUMER_NAME.match(name):
        raise ConfigError(f"consumer name {name!r} must be letters, digits, '.', '_' or '-'")


def _read_consumer(path: Path) -> Committed:
    try:
        data = json.loads(path.read_text())
        offset = data["offset"]
        position = Position.parse(data["position"]) if data.get("position") else None
    except FileNotFoundError:
        return Committed(0)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransportError(f"consumer offset file {path} is unreadable: {exc}") from exc
    if not isinstance(offset, int) or offset < 0:
        raise TransportError(f"consumer offset file {path} holds no valid offset")
    return Committed(offset, position)


def _write_consumer(journal: FileJournal, name: str, committed: Committed) -> None:
    _make_dirs(journal.consumers_dir)
    path = journal.consumers_dir / f"{name}.json"
    data: dict[str, Any] = {"consumer": name, "offset": committed.offset}
    if committed.position is not None:
        data["position"] = str(committed.position)
    write_atomically(path, json.dumps(data).encode())


class FileJournalWriter(JournalWriter):
    """The single writer of one file journal (an exclusive flock enforces "single")."""

    def __init__(self, journal: FileJournal) -> None:
        self.journal = journal
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._schemas_fd: int | None = None
        self._buffer = bytearray()
        self._broken: str | None = None
        try:
            _make_dirs(journal.segments_dir)
            self._lock()
            self._open_segments()
            self._published = self._open_schemas()
            self._clamp_consumers()
        except (OSError, StorageError) as exc:
            self.close()
            raise TransportError(f"cannot open file journal {journal.directory}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    # -- opening --------------------------------------------------------------------------

    def _lock(self) -> None:
        path = self.journal.directory / "writer.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TransportError(f"journal {self.journal.directory} is already being written "
                                 f"by pid {holder}: stop that process first") from None
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _open_segments(self) -> None:
        segments = self.journal.segments()
        if not segments:
            self._base, self._size = 0, 0
            self._fd = self._create(_segment_path(self.journal.segments_dir, 0))
            return
        for (base, path), (next_base, _) in zip(segments, segments[1:], strict=False):
            if base + path.stat().st_size != next_base:
                raise TransportError(f"journal segment {path} ends at offset "
                                     f"{base + path.stat().st_size} but the next segment "
                                     f"starts at {next_base}: the journal is corrupt")
        base, path = segments[-1]
        self._size = self._recover_tail(path, base)
        self._base = base
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _recover_tail(self, path: Path, base: int) -> int:
        scan = _scan_frames(path)
        if scan.bad_offset is None:
            return scan.end
        if not scan.torn:
            raise TransportError(f"journal segment {path} is corrupt at offset "
                                 f"{base + scan.bad_offset}: {scan.reason}")
        # a crash mid-write: nothing after the last fsync was acknowledged
        with path.open("r+b") as fh:
            fh.truncate(scan.end)
            os.fsync(fh.fileno())
        return scan.end

    def _open_schemas(self) -> set[bytes]:
        path = self.journal.schemas_path
        if not path.exists():
            self._schemas_fd = self._create(path)
            return set()
        end = self._recover_tail(path, 0)
        published = set()
        with path.open("rb") as fh:
            for payload, _, _ in _frames(fh, 0, end):
                published.add(payload[:8])
        self._schemas_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        return published

    def _clamp_consumers(self) -> None:
        # After a power loss the journal can be shorter than what a consumer committed
        # (it read data that was written but not yet fsynced). Those records were never
        # acknowledged and capture sends them again, at the same positions, from here.
        end = self.end_offset
        for name, offset in self.journal.consumer_offsets().items():
            if offset > end:  # the position it reached stays true: it is in packages
                committed = _read_consumer(self.journal.consumers_dir / f"{name}.json")
                _write_consumer(self.journal, name, Committed(end, committed.position))

    def _create(self, path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fsync(fd)
            fsync_dir(path.parent)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- JournalWriter --------------------------------------------------------------------

    @property
    def end_offset(self) -> int:
        """Offset where the next record will be written (after what is buffered)."""
        return self._base + self._size + len(self._buffer)

    def publish_schemas(self, registry: SchemaRegistry) -> None:
        self._check()
        new = [(fp, text) for fp, text in registry.items() if fp not in self._published]
        if not new:
            return
        data = b"".join(_frame(fp + text.encode()) for fp, text in new)
        try:
            os.write(self._schemas_fd, data)
            os.fsync(self._schemas_fd)
        except (OSError, StorageError) as exc:
            self._broken = f"writing {self.journal.schemas_path} failed: {exc}"
            raise TransportError(self._broken) from exc
        self._published.update(fp for fp, _ in new)

    def append(self, position: Position, key: bytes | None, value: bytes) -> None:
        self._check()
        frame = _frame(_record_payload(position, key, value))
        if self._size + len(self._buffer) + len(frame) > self.journal.segment_bytes and (
                self._size or self._buffer):
            self._write_buffer()
            self._roll()
        self._buffer += frame
        if len(self._buffer) >= _WRITE_THROUGH:
            self._write_buffer()

    def flush(self) -> None:
        self._check()
        self._write_buffer()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = f"fsync of {self._segment_name()} failed: {exc}"
            raise TransportError(self._broken) from exc

    def close(self) -> None:
        for name in ("_fd", "_schemas_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)  # closing the lock file releases the flock

    # -- internals ------------------------------------------------------------------------

    def _check(self) -> None:
        if self._fd is None:
            raise TransportError(f"file journal writer of {self.journal.directory} is closed")
        if self._broken:
            # after a failed write or fsync the file's state is unknown: only a new
            # writer, which checks the tail, may continue
            raise TransportError(f"file journal writer is unusable: {self._broken}")

    def _segment_name(self) -> Path:
        return _segment_path(self.journal.segments_dir, self._base)

    def _write_buffer(self) -> None:
        if not self._buffer:
            return
        try:
            view = memoryview(self._buffer)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except (OSError, StorageError) as exc:
            self._broken = f"writing {self._segment_name()} failed: {exc}"
            raise TransportError(self._broken) from exc
        self._size += len(self._buffer)
        self._buffer = bytearray()

    def _roll(self) -> None:
        try:
            os.fsync(self._fd)  # the old segment is complete before the new one exists
            new_base = self._base + self._size
            fd = self._create(_segment_path(self.journal.segments_dir, new_base))
        except (OSError, StorageError) as exc:
            self._broken = f"starting a new segment after {self._segment_name()} failed: {exc}"
            raise TransportError(self._broken) from exc
        os.close(self._fd)
        self._fd, self._base, self._size = fd, new_base, 0


def _frames(fh, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(payload, offset, next offset) of the frames of a checked file region."""
    fh.seek(start)
    pos = start
    while pos < end:
        length, _ = _HEADER.unpack(fh.read(_HEADER.size))
        yield fh.read(length), pos, pos + _HEADER.size + length
        pos += _HEADER.size + length


class FileJournalReader(JournalReader):
    """Reads a file journal; any number of readers run beside the writer."""

    def __init__(self, journal: FileJournal) -> None:
        self.journal = journal

    def registry(self) -> SchemaRegistry:
        registry = SchemaRegistry()
        path = self.journal.schemas_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return registry
        for payload, offset, _ in _checked_frames(data, path):
            fp, text = payload[:8], payload[8:].decode()
            if registry.add(text) != fp:
                raise TransportError(f"schema at offset {offset} of {path} does not match "
                                     f"its fingerprint {fp.hex()}: the journal is corrupt")
        return registry

    def read(self, from_offset: int = 0, *, follow: bool = False,
             idle_timeout: float = 1.0) -> Iterator[RawRecord]:
        offset = max(from_offset, 0)
        idle_since = time.monotonic()
        while True:
            segments = self.journal.segments()
            if not segments:
                if not follow or time.monotonic() - idle_since >= idle_timeout:
                    return
                time.sleep(POLL_INTERVAL)
                continue
            index = _segment_index(segments, offset)
            base, path = segments[index]
            if offset < base:  # before the oldest retained segment: start with it
                offset = base
            is_last = index == len(segments) - 1
            progressed = False
            for record in self._read_segment(path, base, offset, is_last):
                progressed = True
                offset = record.next_offset
                yield record
            if progressed:
                idle_since = time.monotonic()
            if not is_last:
                size = path.stat().st_size
                next_base = segments[index + 1][0]
                if offset == base + size == next_base:
                    continue
                if offset >= base + size:
                    raise TransportError(f"journal segment {path} ends at offset "
                                         f"{base + size} but the next segment starts at "
                                         f"{next_base}: the journal is corrupt")
                continue  # the segment grew after the listing; read the rest
            if progressed:
                continue
            if not follow or time.monotonic() - idle_since >= idle_timeout:
                return
            time.sleep(POLL_INTERVAL)

    def committed(self, consumer: str) -> Committed:
        _check_consumer(consumer)
        return _read_consumer(self.journal.consumers_dir / f"{consumer}.json")

    def release(self, offset: int, *, min_age_s: float = 0.0) -> int:
        return len(self.journal.truncate_before(offset, min_age_s=min_age_s))

    def commit_offset(self, consumer: str, offset: int, *,
                      position: Position | None = None) -> None:
        _check_consumer(consumer)
        if offset < 0:
            raise ValueError(f"offset {offset} is negative")
        try:
            _write_consumer(self.journal, consumer, Committed(offset, position))
        except (OSError, StorageError) as exc:
            raise TransportError(f"cannot record offset of consumer {consumer!r} in "
                                 f"{self.journal.consumers_dir}: {exc}") from exc

    def close(self) -> None:
        pass  # every read opens and closes its own files

    def _read_segment(self, path: Path, base: int, offset: int, is_last: bool
                      ) -> Iterator[RawRecord]:
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            # deleted by retention while we looked: the caller lists the segments again
            return
        with fh:
            pos = _frame_boundary(fh, path, base, offset - base) if offset > base else 0
            fh.seek(pos)
            pending = b""
            while True:
                chunk = fh.read(_READ_CHUNK)
                if not chunk:
                    break
                data = pending + chunk if pending else chunk
                consumed = 0
                for payload, frame_start, frame_end in _split(data, base + pos):
                    yield _parse_record(payload, frame_start, frame_end)
                    consumed = frame_end - base - pos
                pending = data[consumed:]
                pos += consumed
                if _complete(pending):  # a whole frame that failed its check
                    if _torn_at(fh, pos, is_last):
                        return  # a crashed writer's tail; the next writer cuts it away
                    raise TransportError(f"journal segment {path} is corrupt at offset "
                                         f"{base + pos}: checksum mismatch")
            if pending and not is_last:
                raise TransportError(f"journal segment {path} is corrupt at offset "
                                     f"{base + pos}: incomplete frame before the next segment")
            # an incomplete frame at the end of the newest segment is not yet written


def _segment_index(segments: list[tuple[int, Path]], offset: int) -> int:
    index = 0
    for i, (base, _) in enumerate(segments):
        if base <= offset:
            index = i
        else:
            break
    return index


def _frame_boundary(fh, path: Path, base: int, start: int) -> int:
    """The first frame boundary at or after ``start`` (a committed offset always is one;
    anything else is rounded up to the next record)."""
    size = os.fstat(fh.fileno()).st_size
    if start + _HEADER.size <= size:
        # fast path: a committed offset is a boundary, and a frame whose checksum holds
        # there is one (a misaligned match has odds of 2**-32)
        fh.seek(start)
        length, crc = _HEADER.unpack(fh.read(_HEADER.size))
        if 0 < length and start + _HEADER.size + length <= size \
                and zlib.crc32(fh.read(length)) == crc:
            return start
    pos = 0
    while pos < start and pos + _HEADER.size <= size:
        fh.seek(pos)
        length, _ = _HEADER.unpack(fh.read(_HEADER.size))
        if length == 0:
            raise TransportError(f"journal segment {path} is corrupt at offset {base + pos}: "
                                 "empty frame")
        pos += _HEADER.size + length
    # beyond what is written so far: wait there rather than re-read earlier records
    return max(pos, start)


def _split(data: bytes, start: int) -> Iterator[tuple[bytes, int, int]]:
    """(payload, offset, next offset) of the complete, valid frames at the front of
    ``data``, which begins at offset ``start``; stops at the first incomplete or bad one."""
    pos = 0
    size = len(data)
    while pos + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > size:
            return
        payload = data[pos + _HEADER.size:end]
        if length == 0 or zlib.crc32(payload) != crc:
            return
        yield payload, start + pos, start + end
        pos = end


def _complete(data: bytes) -> bool:
    return (len(data) >= _HEADER.size
            and _HEADER.size + _HEADER.unpack_from(data)[0] <= len(data))


def _torn_at(fh, pos: int, is_last: bool) -> bool:
    """Whether the bad frame at ``pos`` is a torn tail: the last frame of the newest
    file, or followed only by zero bytes."""
    if not is_last:
        return False
    size = os.fstat(fh.fileno()).st_size
    fh.seek(pos)
    (length,) = struct.unpack(">I", fh.read(4))
    return pos + _HEADER.size + length >= size or _only_zeros(fh, pos, size)


def _checked_frames(data: bytes, path: Path) -> Iterator[tuple[bytes, int, int]]:
    """The frames of a whole file read at once, ignoring a torn tail."""
    consumed = 0
    for payload, offset, end in _split(data, 0):
        consumed = end
        yield payload, offset, end
    rest = data[consumed:]
    if not _complete(rest):
        return
    end = _HEADER.size + _HEADER.unpack_from(rest)[0]
    if end == len(rest) or rest.count(0) == len(rest):
        return
    raise TransportError(f"{path} is corrupt at offset {consumed}: checksum mismatch")
