"""Writing packages: ``PackageBuilder`` gathers members, then writes the tar.

A full snapshot's rows go through a ``RowWriter`` per table (or a table member is copied
unchanged from another full package); a segment's stream records through one
``EventWriter``. Members are written to a private build directory under the store's
workdir; ``finish`` derives the manifest and its id from what was written and writes the
tar as a temporary, fsynced file for ``PackageStore.put``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from journal import __version__
from journal.catalog import TableSchema, has_text_fallback
from journal.codec import (
    avro_field_value,
    envelope_schema,
    fingerprint,
    from_avro_row,
    table_row_writer,
)
from journal.codec.wire import Unhandled
from journal.durable import storage
from journal.packages.manifest import (
    EVENTS,
    FORMAT_VERSION,
    KINDS,
    STREAM_RECORD_SCHEMA,
    Manifest,
    MemberInfo,
    member_name_for,
)
from journal.packages.ocf import OcfWriter, read_ocf
from journal.packages.reader import PackageReader
from journal.packages.tar import Span, write_tar
from journal.positions import Position


class RowWriter:
    """Appends the rows of one table (column name -> journal value) to its member."""

    def __init__(self, table: TableSchema, writer: OcfWriter) -> None:
        self.table = table
        self._writer = writer
        self._names = table.avro_field_names()
        self._columns = table.column_names
        self._text_fallback = tuple(has_text_fallback(c.type_oid) for c in table.columns)
        # the row written as it is, without building fastavro's datum first, where the
        # member's writer writes in C
        self._write_row = table_row_writer(table) if writer.in_c else None

    def write(self, row: dict[str, Any]) -> None:
        if self._write_row is not None:
            try:
                self._writer.append_encoded(self._write_row(row))
                return
            except Unhandled:
                pass  # the datum fastavro takes, written or refused as before
        self._writer.append({f: avro_field_value(row.get(c), text) for f, c, text in zip(
            self._names, self._columns, self._text_fallback, strict=True)})

    @property
    def rows(self) -> int:
        return self._writer.appended_rows


class EventWriter:
    """Appends stream records (position, key, single-object value) to ``events.avro``."""

    def __init__(self, writer: OcfWriter) -> None:
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
        return self._writer.appended_bytes

    @property
    def rows(self) -> int:
        return self._writer.appended_rows


class PackageBuilder:
    """Builds one package: members in a private directory under ``workdir``, then the tar
    (``finish``) as a temporary file in ``workdir``, fsynced, ready for ``PackageStore.put``.
    """

    ordered = True  # a table member holds its rows in primary-key order

    def __init__(self, kind: str, workdir: Path) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown package kind {kind!r}")
        self.kind = kind
        self.workdir = Path(workdir)
        with storage(self.workdir):
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=self.workdir))
        self._writers: dict[str, tuple[OcfWriter, TableSchema | None]] = {}
        self._copied: dict[str, tuple[Path, MemberInfo]] = {}
        self._names = itertools.count()
        self._schemas: dict[str, str] = {}

    def table(self, table: TableSchema) -> RowWriter:
        if self.kind != "full":
            raise ValueError("only a full snapshot holds table members")
        name = self._claim(table)
        w = OcfWriter(self._dir / f"m{next(self._names)}.avro", table.avro_row_schema())
        self._writers[name] = (w, table)
        return RowWriter(table, w)

    def copy_table(self, reader: PackageReader, table: str) -> MemberInfo:
        """Copy a table member of another full package unchanged (no decoding), checking
        its SHA-256 on the way."""
        schema = reader.table_schema(table)
        name = self._claim(schema)
        info = reader.manifest.table_member(table)
        target = self._dir / f"m{next(self._names)}.avro"
        with storage(target), target.open("wb") as dst:
            for chunk in reader.member_bytes(info):
                dst.write(chunk)
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
                span = Span(fh, 0, size, "(package being built)", name)
                for datum in read_ocf(span, info, None):
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
        w = OcfWriter(self._dir / "events.avro", STREAM_RECORD_SCHEMA)
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
        manifest.check_consistency()
        with storage(self.workdir):
            fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=".tar",
                                            dir=self.workdir)
        tmp = Path(tmp_name)
        try:
            with storage(tmp), os.fdopen(fd, "wb") as fh:
                paths = {n: w.path for n, (w, _) in self._writers.items()}
                paths.update({n: path for n, (path, _) in self._copied.items()})
                write_tar(fh, manifest, paths)
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


