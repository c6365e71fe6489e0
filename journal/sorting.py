"""Sorting rows by key with bounded memory: what folds and snapshots write members with.

``ExternalSorter`` sorts ``(key, payload)`` pairs, spilling sorted runs to temporary files
and merging them; ``SortedRowSink`` writes a table's rows to its package member in
``row_sort_key`` order, straight through while they arrive sorted and through the external
sort from the first row that does not.
"""

from __future__ import annotations

import heapq
import logging
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from journal.catalog import TableSchema
from journal.errors import ValidationError
from journal.packages import (
    PackageBuilder,
    RowWriter,
    sort_key,
)
from journal.row_identity import is_keyless, row_identity

log = logging.getLogger(__name__)

DEFAULT_SPILL_BYTES = 64 * 1024 * 1024
RUN_CHUNK = 512  # pairs pickled together in a run file (memory: a chunk per run merged)


# -- external sort ------------------------------------------------------------------------

class ExternalSorter:
    """Sorts ``(key, payload)`` pairs by key with bounded memory: payloads are pickled at
    once, and the buffer spills to a sorted run file whenever it holds ``spill_bytes``."""

    def __init__(self, directory: Path, spill_bytes: int = DEFAULT_SPILL_BYTES, *,
                 frozen: tuple[Path, list[Path]] | None = None) -> None:
        self._dir = (frozen[0] if frozen is not None else Path(tempfile.mkdtemp(
            prefix=f".build-{os.getpid()}-sort-", dir=directory)))
        self._spill_bytes = spill_bytes
        self._buffer: list[tuple[Any, bytes]] = []
        self._buffered = 0
        self._runs: list[Path] = list(frozen[1]) if frozen is not None else []
        self.count = 0

    def add(self, key: Any, payload: Any) -> None:
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        self._buffer.append((key, data))
        self._buffered += len(data) + 128
        self.count += 1
        if self._buffered >= self._spill_bytes:
            self._spill()

    def add_sized(self, key: Any, payload: Any, size: int) -> None:
        """``add`` for a payload the caller has sized (about its pickled length): kept as
        it is until the buffer spills, which saves pickling what never leaves memory. The
        payload must not change afterwards; ``items`` may hand out the object itself."""
        self._buffer.append((key, _Live(payload)))
        self._buffered += size + 128
        self.count += 1
        if self._buffered >= self._spill_bytes:
            self._spill()

    def _spill(self) -> None:
        self._buffer.sort(key=lambda item: item[0])
        path = self._dir / f"run{len(self._runs)}.pickle"
        # a run is pickled a chunk of pairs at a time: one call per pair cost more than
        # the sort; a sized payload goes as the object it is, an added one as its bytes
        with path.open("wb") as fh:
            buffer = self._buffer
            for start in range(0, len(buffer), RUN_CHUNK):
                pickle.dump([(key, data.payload, True) if type(data) is _Live
                             else (key, data, False)
                             for key, data in buffer[start:start + RUN_CHUNK]],
                            fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._runs.append(path)
        self._buffer = []
        self._buffered = 0

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every pair in key order (may be called more than once)."""
        self._buffer.sort(key=lambda item: item[0])
        buffered = ((key, data.payload, True) if type(data) is _Live else (key, data, False)
                    for key, data in self._buffer)
        streams = [_read_run(p) for p in self._runs] + [buffered]
        for key, data, live in heapq.merge(*streams, key=lambda item: item[0]):
            yield key, data if live else pickle.loads(data)

    def freeze(self) -> tuple[Path, list[Path]]:
        """Everything spilled to run files, for another process to ``thaw``; this object
        is done with (its files are not removed)."""
        if self._buffer:
            self._spill()
        return self._dir, list(self._runs)

    @classmethod
    def thaw(cls, frozen: tuple[Path, list[Path]],
             spill_bytes: int = DEFAULT_SPILL_BYTES) -> ExternalSorter:
        """The sorter ``freeze`` left, read from its run files (``close`` removes them)."""
        return cls(frozen[0].parent, spill_bytes, frozen=frozen)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)
        self._buffer = []


class _Live:
    """A payload kept in memory, not pickled (``add_sized``)."""

    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload


def approximate_size(row: dict[str, Any]) -> int:
    """About what ``row`` takes as Python objects in memory: its text and bytes values,
    plus what a dict entry and a small value cost (a value of a kilobyte counts)."""
    size = 96 * len(row)
    for v in row.values():
        kind = type(v)
        if kind is str or kind is bytes:
            size += len(v)
    return size


def _read_run(path: Path) -> Iterator[tuple[Any, Any, bool]]:
    with path.open("rb") as fh:
        while True:
            try:
                chunk = pickle.load(fh)  # noqa: S301 - our own temporary file
            except EOFError:
                return
            yield from chunk


def row_sort_key(table: TableSchema, row: dict[str, Any]) -> tuple[Any, ...]:
    """Where ``row`` sits in a sorted member: its primary key's order, or, in a table
    without one, the order of its whole-row identity (equal rows next to each other)."""
    if is_keyless(table):
        return sort_key((row_identity(table.column_names, row),))
    return sort_key(table.key_of(row))


# -- rows arriving in (mostly) key order ----------------------------------------------

class SortedRowSink:
    """Writes a table's rows to its member in primary-key order (``row_sort_key``). Rows
    that already come in order (a snapshot's ``ORDER BY`` primary key, when the collation
    agrees) go straight through; on the first row out of order everything switches to an
    external sort. A table without a primary key may hold equal rows, several times."""

    def __init__(self, builder: PackageBuilder, table: TableSchema, workdir: Path,
                 spill_bytes: int = DEFAULT_SPILL_BYTES) -> None:
        self.table = table
        self._builder = builder
        self._workdir = workdir
        self._spill_bytes = spill_bytes
        self._writer: RowWriter | None = builder.table(table)
        self._written: list[dict[str, Any]] | None = None
        self._sorter: ExternalSorter | None = None
        self._last: tuple[Any, ...] | None = None
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        key = row_sort_key(self.table, row)
        self.rows += 1
        if self._sorter is not None:
            self._sorter.add((key, self.rows), row)
            return
        keyless = is_keyless(self.table)
        if self._last is not None and (self._last > key if keyless else not self._last < key):
            self._switch_to_sort(key, row)
            return
        self._last = key
        assert self._writer is not None
        self._writer.write(row)

    def _switch_to_sort(self, key: Any, row: dict[str, Any]) -> None:
        log.info("rows of %s are not in primary-key order: sorting them", self.table.qualified)
        # restart the member: the rows written so far are read back into the sort
        self._sorter = ExternalSorter(self._workdir, self._spill_bytes)
        assert self._writer is not None
        for i, old in enumerate(self._builder.take_back(self.table)):
            self._sorter.add((row_sort_key(self.table, old), i), old)
        self._sorter.add((key, self.rows), row)
        self._writer = None

    def close(self) -> None:
        if self._sorter is None:
            return
        writer = self._builder.table(self.table)
        previous = None
        keyless = is_keyless(self.table)
        for (key, _), row in self._sorter.items():
            if previous is not None and key == previous and not keyless:
                raise ValidationError(f"table {self.table.qualified} holds primary key "
                                      f"{self.table.key_of(row)!r} twice in one snapshot")
            previous = key
            writer.write(row)
        self._sorter.close()
