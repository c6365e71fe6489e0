"""Reading packages: ``open_package`` checks a package's layout and returns a reader.

Reading never trusts the archive. Opening parses the tar strictly and the manifest
against its schema and id, checks every member's size (and, with ``verify``, hashes
every member and decodes every record); members are then streamed straight from the
package's bytes, hashed again as they are read, and a segment's records are checked
against the stream contract (positions in ``(from, to]``, whole transactions) as they
are grouped into transactions.

A package is read from a ``PackageSource``: a local file (a ``Path``), or whatever a
package store opens for reading.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from journal.catalog import TableSchema
from journal.codec import SchemaRegistry, decode, from_avro_row, split_header
from journal.codec.decoder import RecordWalk
from journal.errors import PackageCorrupt, ValidationError
from journal.events import ChangeEvent, LogicalMessage, Record, Transaction, TransactionMarker
from journal.packages.manifest import EVENTS, MANIFEST, STREAM_RECORD_SCHEMA, Manifest, MemberInfo
from journal.packages.ocf import BlockCheck, CopyChunk, CopyText, read_ocf
from journal.packages.tar import READ_CHUNK, Span, TarMember, iter_tar, read_exact, sha256_of
from journal.positions import Position

MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # bounds what a hostile manifest makes us parse


class PackageSource(Protocol):
    """A package's bytes, opened for reading as often as a reader needs: a ``Path`` is
    one; a store that keeps packages elsewhere gives its own. ``name`` labels errors."""

    @property
    def name(self) -> str: ...

    def open(self, mode: str = "rb") -> IO[bytes]: ...


def as_source(path: Path | str | PackageSource) -> PackageSource:
    """A path given as text becomes a ``Path``; any other source is used as it is."""
    return Path(path) if isinstance(path, str | os.PathLike) else path


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


def read_layout(source: PackageSource, *, hash_members: bool
                ) -> tuple[Manifest, dict[str, TarMember]]:
    """Stages 1-4: archive structure and names, sizes, manifest, (optionally) SHA-256."""
    package = source.name
    try:
        fh = source.open("rb")
    except OSError as exc:
        raise ValidationError(f"cannot open package {source}: {exc.strerror}") from None
    with fh:
        size = fh.seek(0, os.SEEK_END)
        manifest: Manifest | None = None
        found: dict[str, TarMember] = {}
        for member in iter_tar(fh, package, file_size=size):
            if manifest is None:
                if member.size > MAX_MANIFEST_BYTES:
                    raise PackageCorrupt(package, MANIFEST,
                                         f"at most {MAX_MANIFEST_BYTES} bytes",
                                         f"{member.size} bytes")
                manifest = _parse_manifest_bytes(read_exact(fh, member.offset, member.size),
                                                 package)
                package = f"{manifest.package_id} ({source.name})"
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
                actual = sha256_of(fh, member.offset, member.size)
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


def read_manifest(path: Path | PackageSource) -> Manifest:
    """The manifest, with the archive's structure and sizes checked (no member hashing)."""
    return read_layout(as_source(path), hash_members=False)[0]


class PackageReader:
    """Reads the members of a package straight from the tar, never extracting it.

    Each member is hashed again while it is read; a member that changed since the
    package was opened raises PackageCorrupt when its end is reached.
    """

    def __init__(self, source: PackageSource, manifest: Manifest,
                 layout: dict[str, TarMember]) -> None:
        self.source = source
        self.manifest = manifest
        self._layout = layout
        self._registry: SchemaRegistry | None = None
        self._closed = False

    @property
    def label(self) -> str:
        return f"{self.manifest.package_id} ({self.source.name})"

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

    def _member(self, info: MemberInfo, schema: dict[str, Any] | None, *, check_hash: bool = True,
                check_block: BlockCheck | None = None,
                copy: CopyText | None = None) -> Iterator[Any]:
        if self._closed:
            raise ValidationError(f"package {self.label} is closed")
        where = self._layout[info.name]
        hasher = hashlib.sha256() if check_hash else None
        with self.source.open("rb") as fh:
            span = Span(fh, where.offset, where.size, self.label, info.name, hasher)
            yield from read_ocf(span, info, schema, check_block, copy)
            if hasher is not None:
                self._check_hash(info, hasher)

    def _check_hash(self, info: MemberInfo, hasher: Any) -> None:
        if hasher.hexdigest() != info.sha256:
            raise PackageCorrupt(self.label, info.name, f"SHA-256 {info.sha256}",
                                 f"SHA-256 {hasher.hexdigest()}")

    def member_bytes(self, info: MemberInfo) -> Iterator[bytes]:
        """A member's bytes as stored, in chunks, its SHA-256 checked at the end: for
        copying a member into another package without decoding it."""
        where = self._layout[info.name]
        hasher = hashlib.sha256()
        with self.source.open("rb") as fh:
            span = Span(fh, where.offset, where.size, self.label, info.name, hasher)
            while span.left:
                yield span.read(min(span.left, READ_CHUNK), "the member")
        self._check_hash(info, hasher)

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        """A full snapshot's rows of ``table`` ("schema.name"), in primary-key order."""
        info = self.manifest.table_member(table)
        schema = self.table_schema(table)
        for datum in self._member(info, schema.avro_row_schema()):
            yield from_avro_row(schema, datum)

    def copy_text(self, table: str, columns: Sequence[str], chunk: int
                  ) -> Iterator[CopyChunk | dict[str, Any]]:
        """``rows(table)`` as COPY text of ``columns`` (every one a column of the member:
        ValueError otherwise), in chunks of about ``chunk`` bytes written in C from the
        member's bytes; a row the C writer leaves comes as the row ``rows`` yields, for
        the caller to format, in its place. The member is checked (SHA-256, counts,
        records) exactly as ``rows`` checks it, with the same PackageCorrupt."""
        info = self.manifest.table_member(table)
        schema = self.table_schema(table)
        names = schema.column_names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{table} has no column {', '.join(missing)}")
        copy = CopyText(tuple(names.index(c) for c in columns), chunk)
        for item in self._member(info, schema.avro_row_schema(), copy=copy):
            yield item if type(item) is CopyChunk else from_avro_row(schema, item)

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
    changes = 0  # the change events of the current transaction, counted as they come
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
            changes = 0
            continue
        if current is None or pos.commit_lsn != current.commit_lsn:
            raise corrupt("records inside a transaction", f"{type(record).__name__} at {pos}")
        if pos.seq != len(current.records) + 1:
            raise corrupt(f"seq {len(current.records) + 1}", f"{pos}")
        if isinstance(record, TransactionMarker):
            if record.event_count != changes:
                raise corrupt(f"END counting {changes} changes", f"{record.event_count}")
            current.end = record
            yield current
            current = None
        else:
            current.records.append(record)
            changes += type(record) is ChangeEvent
    if current is not None:
        raise corrupt("the last transaction to end", f"no END after {current.begin.position}")
    if last != high:
        raise corrupt(f"the last record at to_position {high}", f"{last}")


def open_package(path: Path | PackageSource, *, verify: bool = True) -> PackageReader:
    """Open a package; with ``verify`` every stage of ``verify_package`` runs first,
    without it the structure, sizes and manifest are still checked (not the contents)."""
    source = as_source(path)
    if verify:
        manifest, layout = read_layout(source, hash_members=True)
        reader = PackageReader(source, manifest, layout)
        _decode_all(reader)
        return reader
    manifest, layout = read_layout(source, hash_members=False)
    return PackageReader(source, manifest, layout)


def _decode_all(reader: PackageReader) -> None:
    """The last stage of verification: every record decodes, a segment's records form
    whole transactions matching the manifest's times and marks, rows are in key order."""
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
        _check_rows(reader, table)


def _check_rows(reader: PackageReader, table: str) -> None:
    """Every row of a full snapshot's table decodes, and the rows are in key order: block
    by block with the C walk where it is built (about 9x faster on ``bench/packages.py``'s
    rows), row by row for any block it does not accept whole."""
    info = reader.manifest.table_member(table)
    schema = reader.table_schema(table)
    key_cols = tuple(schema.column_names.index(c) for c in schema.primary_key)
    names = schema.avro_field_names()
    previous = None

    def walked(walk: RecordWalk, data: bytes, count: int) -> bool:
        # a block walked whole in C builds no rows (building them was most of verify's
        # time); a block the walk refuses for any reason is read row by row below, which
        # accepts or refuses it, and says why, as it always did
        nonlocal previous
        try:
            end, last = walk(data, 0, count, key_cols, previous, sort_key)
        except Exception:
            return False
        if end != len(data):
            return False
        previous = last
        return True

    for datum in reader._member(info, schema.avro_row_schema(), check_hash=False,
                                check_block=walked):
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
    if len(key) == 1:  # most keys: no generator
        v = key[0]
        return ((2, 0, 0) if v is None else (1, 1, v) if type(v) is str else (1, 0, v),)
    return tuple((2, 0, 0) if v is None else (1, 1, v) if type(v) is str else (1, 0, v)
                 for v in key)


