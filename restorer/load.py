"""Loading a full snapshot's rows: COPY into an empty target (a package's members written
as COPY text without building their rows, ``restorer.copying.copy_member``), batches
through natural keys into a populated one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import psycopg

from journal.catalog import Catalog, TableEntry
from journal.packages import PackageReader
from restorer import schema
from restorer.copying import CopyWriter, copy_member
from restorer.graph import LoadOrder
from restorer.report import TableCounts
from restorer.staged_remap import why_not_staged, write_staged
from restorer.target import TargetWriter

BATCH_SIZE = 5000
RowSource = Callable[[str], Iterable[dict[str, Any]]]


def batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


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


def copy_package_rows(conn: psycopg.Connection[Any], table: TableEntry,
                      package: PackageReader, name: str) -> int:
    """COPY the rows of ``package``'s member of ``name`` into ``table``; returns how many."""
    out = CopyWriter.into(conn, table)
    try:
        copy_member(out, package, name)
    except BaseException as exc:
        out.close(exc)
        raise
    out.close()
    return out.rows


def load_empty(conn: psycopg.Connection[Any], catalog: Catalog, order: LoadOrder,
               rows_of: RowSource, counts: dict[str, TableCounts],
               progress: Callable[[str, int], None] | None = None,
               package: PackageReader | None = None) -> None:
    """pg_restore's order: types and tables, data, constraints and indexes, foreign keys,
    sequences. ``package``: the full snapshot ``rows_of`` reads, whose members are then
    COPYed block by block rather than row by row."""
    schema.create_types(conn, catalog)
    schema.create_tables(conn, catalog, order.tables)
    for name in order.tables:
        if package is not None:
            n = copy_package_rows(conn, catalog.tables[name], package, name)
        else:
            n = copy_rows(conn, catalog.tables[name], rows_of(name))
        counts.setdefault(name, TableCounts()).inserted += n
        if progress is not None:
            progress(name, n)
    schema.add_constraints(conn, catalog, order.tables)
    schema.add_foreign_keys(conn, catalog, order.tables)
    schema.add_sequences(conn, catalog, order.tables)


def load_populated(writer: TargetWriter, order: LoadOrder, rows_of: RowSource,
                   batch_size: int = BATCH_SIZE,
                   progress: Callable[[str, int], None] | None = None,
                   package: PackageReader | None = None) -> None:
    """Every table parents first, in batches matched by natural key; cycle edges second.
    ``package``: the full snapshot ``rows_of`` reads, whose members are staged block by
    block rather than row by row."""
    graph = writer.remapper.graph
    for name in order.tables:
        deferred = frozenset(fk.name for fk in order.deferred_keys(
            name, graph.foreign_keys.get(name, ())))
        if why_not_staged(writer, name, deferred) is None:
            n = write_staged(writer, name, rows_of(name), deferred, package)
        else:
            n = 0
            for batch in batches(rows_of(name), batch_size):
                writer.write_rows(name, batch, deferred)
                n += len(batch)
        if progress is not None:
            progress(name, n)
    writer.apply_fixups()
    # generic references to objects of tables loaded after their row's: known now
    writer.apply_generic_fixups(final=False)
