"""COPY into a table or a staging table, one journal row at a time, or a package's table
member block by block.

Rows are formatted as COPY text in C (``journal/codec/_copytext.pyx``, built at install
when a C compiler is present) into chunks sent whole: psycopg's ``write_row`` looks up a
dumper for every value, about half of a restore's time. The C formatter writes the bytes
psycopg would (``tests/test_copytext.py`` proves it, value type by value type, and by the
rows PostgreSQL stores); any row it does not handle is formatted by psycopg's own
formatter into the same chunk, so the rows keep their order.

A package's table member is written without building its rows where it can be
(``copy_member``): the C reader writes each block's rows as COPY text straight from
their Avro bytes (``PackageReader.copy_text``), the same text the formatter writes of the
decoded rows (``tests/test_copy_direct.py``), without a dict and its values per row. A
row it leaves (decimals, arrays, ...) is decoded and written as above, in its place. On
``bench/restore.py``'s sample, where COPY text is about 1.3 KB a row, it takes the client's
CPU for a full restore from about 0.45 s to 0.4 s: the bytes, not the rows, cost most there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import TableEntry
from journal.codec import copytext
from journal.codec.wire import Unhandled
from journal.errors import RestoreError
from journal.packages import PackageReader
from journal.packages.ocf import CopyChunk

IN_C = copytext.BUILT  # whether rows are formatted in C (tests turn it off)
DIRECT = True  # whether package members go to COPY without their rows (tests turn it off)

# psycopg hands libpq at most 128 KiB at a time and slices (copies) anything larger:
# chunks a little under that go out whole
CHUNK = 120 * 1024


class CopyWriter:
    """One table's COPY, row by row; journal values go as they are (text-form ones
    included, which PostgreSQL parses as it would its own output)."""

    def __init__(self, conn: psycopg.Connection[Any], target: sql.Composable,
                 columns: list[str], name: str) -> None:
        self.name = name
        self.columns = columns
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(
            target, sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        self._cursor = conn.cursor()
        self._context = self._cursor.copy(query)
        self._copy = self._context.__enter__()
        # the C formatter writes UTF-8 only: another client encoding leaves it to psycopg
        self._formatter = (copytext.row_formatter(columns)
                           if IN_C and conn.info.encoding == "utf-8" else None)
        self.rows = 0

    @classmethod
    def into(cls, conn: psycopg.Connection[Any], table: TableEntry) -> CopyWriter:
        """A COPY into ``table``'s columns (generated ones are computed, not written)."""
        return cls(conn, sql.Identifier(table.schema, table.name),
                   [c.name for c in table.columns if not c.generated], table.qualified)

    def write(self, row: Mapping[str, Any]) -> None:
        formatter = self._formatter
        if formatter is None:
            self._copy.write_row(self._values(row))
        else:
            try:
                buffered = formatter.add(row)
            except KeyError as exc:
                raise self._lacks(exc) from None
            except Unhandled:
                formatter.append(_psycopg_row_text(self._copy, self._values(row)))
                buffered = formatter.buffered
            if buffered >= CHUNK:
                self._copy.write(formatter.take())
        self.rows += 1

    @property
    def in_c(self) -> bool:
        """Whether rows are formatted in C (not on a connection with another encoding)."""
        return self._formatter is not None

    def write_text(self, chunk: CopyChunk) -> None:
        """Sends COPY text of ``chunk.rows`` rows after the rows written before it."""
        if self._formatter is not None and self._formatter.buffered:
            self._copy.write(self._formatter.take())
        self._copy.write(chunk.text)
        self.rows += chunk.rows

    def close(self, exc: BaseException | None = None) -> None:
        """Ends the COPY (``exc``: abandons it)."""
        try:
            if exc is None and self._formatter is not None and self._formatter.buffered:
                self._copy.write(self._formatter.take())
        except BaseException as error:  # the server refused a chunk: end the COPY with it
            exc = error
            raise
        finally:
            try:
                self._context.__exit__(type(exc) if exc else None, exc,
                                       exc.__traceback__ if exc else None)
            finally:
                self._cursor.close()

    def _values(self, row: Mapping[str, Any]) -> list[Any]:
        try:
            return [row[c] for c in self.columns]
        except KeyError as exc:
            raise self._lacks(exc) from None

    def _lacks(self, exc: KeyError) -> RestoreError:
        return RestoreError(f"a row of {self.name} lacks column {exc.args[0]!r}")


def _psycopg_row_text(copy: psycopg.Copy, values: list[Any]) -> bytes:
    """One row as psycopg's ``write_row`` formats it, handed back instead of buffered:
    ``Copy.write`` does not flush what ``write_row`` buffers, so a row sent through it
    would land after the chunks written later."""
    formatter = copy.formatter
    return bytes(formatter.write_row(values)) + bytes(formatter.end())


def member_text(out: CopyWriter, reader: PackageReader, table: str, sources: list[str]
                ) -> Iterable[CopyChunk | dict[str, Any]] | None:
    """``reader``'s member of ``table`` as COPY text of its columns ``sources`` (one for
    each column ``out`` copies, in its order), written from the member's bytes, with the
    rows the C writer leaves in their places; None where that cannot be (rows not
    formatted in C, a column the member lacks): the caller writes rows."""
    columns = reader.table_schema(table).column_names
    if DIRECT and out.in_c and all(c in columns for c in sources):
        return reader.copy_text(table, sources, CHUNK)
    return None


def copy_member(out: CopyWriter, reader: PackageReader, table: str) -> None:
    """Writes the rows of ``reader``'s member of ``table`` into ``out``: as COPY text
    written from the member's bytes where the rows are formatted in C and the member has
    every column ``out`` copies, else row by row (which says what a member lacks)."""
    items = member_text(out, reader, table, out.columns)
    write_items(out, reader.rows(table) if items is None else items)


def write_items(out: CopyWriter, items: Iterable[CopyChunk | Mapping[str, Any]],
                shape: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None) -> None:
    """Writes ``items`` into ``out`` in their order: COPY text as it is, a row (given the
    columns ``out`` copies by ``shape``, where there is one) formatted."""
    for item in items:
        if isinstance(item, CopyChunk):
            out.write_text(item)
        else:
            out.write(item if shape is None else shape(item))
