"""Loading a full snapshot's rows: COPY into an empty target, batches through natural keys
into a populated one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import Catalog, TableEntry
from journal.errors import RestoreError
from restorer import schema
from restorer.graph import LoadOrder
from restorer.report import TableCounts
from restorer.target import TargetWriter

BATCH_SIZE = 5000
RowSource = Callable[[str], Iterable[dict[str, Any]]]


def batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


class CopyWriter:
    """One table's COPY, row by row; journal values go as they are (text-form ones
    included, which PostgreSQL parses as it would its own output)."""

    def __init__(self, conn: psycopg.Connection[Any], target: sql.Composable,
                 columns: list[str], name: str) -> None:
        self.name = name
        self._columns = columns
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(
            target, sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        self._cursor = conn.cursor()
        self._context = self._cursor.copy(query)
        self._copy = self._context.__enter__()
        self.rows = 0

    @classmethod
    def into(cls, conn: psycopg.Connection[Any], table: TableEntry) -> CopyWriter:
        """A COPY into ``table``'s columns (generated ones are computed, not written)."""
        return cls(conn, sql.Identifier(table.schema, table.name),
                   [c.name for c in table.columns if not c.generated], table.qualified)

    def write(self, row: Mapping[str, Any]) -> None:
        try:
            values = [row[c] for c in self._columns]
        except KeyError as exc:
            raise RestoreError(f"a row of {self.name} lacks column {exc.args[0]!r}") from None
        self._copy.write_row(values)
        self.rows += 1

    def close(self, exc: BaseException | None = None) -> None:
        """Ends the COPY (``exc``: abandons it)."""
        try:
            self._context.__exit__(type(exc) if exc else None, exc,
                                   exc.__traceback__ if exc else None)
        finally:
            self._cursor.close()


def copy_rows(conn: psycopg.Connection[Any], table: TableEntry,
              rows: Iterable[Mapping[str, Any]]) -> int:
    """COPY ``rows`` into ``table``; returns how many."""
    out = CopyWriter.into(conn, table)
    try:
        for row in rows:
            out.write(row)
    except BaseException as exc:
        out.close(exc)
        raise
    out.close()
    return out.rows


def load_empty(conn: psycopg.Connection[Any], catalog: Catalog, order: LoadOrder,
               rows_of: RowSource, counts: dict[str, TableCounts],
               progress: Callable[[str, int], None] | None = None) -> None:
    """pg_restore's order: types and tables, data, constraints and indexes, foreign keys,
    sequences."""
    schema.create_types(conn, catalog)
    schema.create_tables(conn, catalog, order.tables)
    for name in order.tables:
        n = copy_rows(conn, catalog.tables[name], rows_of(name))
        counts.setdefault(name, TableCounts()).inserted += n
        if progress is not None:
            progress(name, n)
    schema.add_constraints(conn, catalog, order.tables)
    schema.add_foreign_keys(conn, catalog, order.tables)
    schema.add_sequences(conn, catalog, order.tables)


def load_populated(writer: TargetWriter, order: LoadOrder, rows_of: RowSource,
                   batch_size: int = BATCH_SIZE,
                   progress: Callable[[str, int], None] | None = None) -> None:
    """Every table parents first, in batches matched by natural key; cycle edges second."""
    graph = writer.remapper.graph
    for name in order.tables:
        deferred = frozenset(fk.name for fk in order.deferred_keys(
            name, graph.foreign_keys.get(name, ())))
        n = 0
        for batch in batches(rows_of(name), batch_size):
            writer.write_rows(name, batch, deferred)
            n += len(batch)
        if progress is not None:
            progress(name, n)
    writer.apply_fixups()
    # generic references to objects of tables loaded after their row's: known now
    writer.apply_generic_fixups(final=False)
