"""A point-in-time restore into an empty database as one fold: the full snapshot merged
with the net effect of every transaction up to the target, COPYed once.

A restore is one target transaction, so the order of the source's transactions between
the snapshot and the target matters only through their net effect on each row. That
effect is the compactor's fold (``journal.fold``): the changes are collected into an
external sort by table and primary key (flat memory, spilling to disk), then each
table's snapshot rows are merged with them and streamed into COPY. Nothing is written
per event, and the tables are created in the shape the stream's schema changes left
them in, as a snapshot compacted at the target would hold them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from journal.catalog import Catalog, TableSchema
from journal.fold import collect_changes, final_tables, merge_changes
from journal.packages import PackageReader
from journal.positions import Position
from journal.sorting import ExternalSorter
from journal.targets import Cutoff
from restorer import schema
from restorer.load import CopyWriter
from restorer.replay import end_position
from restorer.report import TableCounts

Progress = Callable[[str, int], None]


def foldable(base: PackageReader) -> str | None:
    """Why ``base`` cannot be the fold's start (None: it can): a catalog written before
    every table carried its primary key, or rows of a table the catalog does not hold."""
    catalog = Catalog.parse(base.manifest.catalog)
    if not catalog.tables:
        return "its catalog lists no tables"
    old = sorted(t for t, spec in catalog.tables.items() if "primary_key" in spec.absent)
    if old:
        return f"its catalog does not record the primary key of {', '.join(old)}"
    unknown = sorted(set(base.tables()) - set(catalog.tables))
    if unknown:
        return f"it holds rows of {', '.join(unknown)}, which its catalog does not list"
    return None


@dataclass
class FoldedLoad:
    catalog: Catalog  # the tables as the target's position has them
    tables: list[str]
    reached: Position
    transactions: int
    events: int
    change_seconds: float  # reading and sorting the changes past the snapshot


class CopySink:
    """The fold's rows, table by table, into COPY (any order: the target's indexes are
    built after the data)."""

    ordered = False

    def __init__(self, conn: psycopg.Connection[Any], catalog: Catalog,
                 counts: dict[str, TableCounts], progress: Progress | None) -> None:
        self.conn, self.catalog, self.counts, self.progress = conn, catalog, counts, progress
        self._current: CopyWriter | None = None

    def table(self, table: TableSchema) -> CopyWriter:
        self._finish()
        self._current = CopyWriter(self.conn, self.catalog.tables[table.qualified])
        return self._current

    def copy_table(self, reader: PackageReader, table: str) -> None:
        out = self.table(reader.table_schema(table))
        for row in reader.rows(table):
            out.write(row)

    def _finish(self, exc: BaseException | None = None) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        current.close(exc)
        if exc is None:
            self.counts.setdefault(current.name, TableCounts()).inserted += current.rows
            if self.progress is not None:
                self.progress(current.name, current.rows)

    def __enter__(self) -> CopySink:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._finish(exc)


def load_folded(conn: psycopg.Connection[Any], base: PackageReader,
                segments: Iterable[tuple[Any, Iterable[Any]]], cutoff: Cutoff,
                start: Position | None, counts: dict[str, TableCounts],
                progress: Progress | None = None,
                after_rows: Callable[[psycopg.Connection[Any]], None] | None = None
                ) -> FoldedLoad:
    """``base`` plus the transactions of ``segments`` after ``start`` up to ``cutoff``,
    into the empty target: types and tables, rows, constraints and indexes, foreign keys,
    sequences (pg_restore's order)."""
    reached = [start or base.manifest.to_position]
    with tempfile.TemporaryDirectory(prefix="journal-restore-") as workdir:
        sorter = ExternalSorter(Path(workdir))
        try:
            started = time.monotonic()
            state = collect_changes(base, _after(segments, start, reached), cutoff, sorter)
            change_seconds = time.monotonic() - started
            catalog = state.catalog
            tables = final_tables(state)
            schema.create_types(conn, catalog)
            schema.create_tables(conn, catalog, tables)
            with CopySink(conn, catalog, counts, progress) as sink:
                merge_changes(base, state, sorter, sink, Path(workdir))
        finally:
            sorter.close()
    if after_rows is not None:
        after_rows(conn)
    schema.add_constraints(conn, catalog, tables)
    schema.add_foreign_keys(conn, catalog, tables)
    schema.add_sequences(conn, catalog, tables)
    if state.transactions:
        reached[0] = max(reached[0], state.position)
    return FoldedLoad(catalog, tables, reached[0], state.transactions, state.events,
                      change_seconds)


def _after(segments: Iterable[tuple[Any, Iterable[Any]]], start: Position | None,
           reached: list[Position]) -> Iterator[Any]:
    """The transactions after ``start``, segment by segment; a segment read to its end
    (the fold asked past it) is reached to its manifest's end, which may lie past its
    last commit."""
    for manifest, transactions in segments:
        for tx in transactions:
            if start is not None and end_position(tx) <= start:
                continue  # already in the snapshot
            yield tx
        reached[0] = max(reached[0], manifest.to_position)
