"""COPY into a table or a staging table, one journal row at a time.

Rows are formatted as COPY text in C (``journal/codec/_copytext.pyx``, built at install
when a C compiler is present) into chunks sent whole: psycopg's ``write_row`` looks up a
dumper for every value, about half of a restore's time. The C formatter writes the bytes
psycopg would (``tests/test_copytext.py`` proves it, value type by value type, and by the
rows PostgreSQL stores); any row it does not handle is formatted by psycopg's own
formatter into the same chunk, so the rows keep their order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import TableEntry
from journal.codec import copytext
from journal.codec.wire import Unhandled
from journal.errors import RestoreError

IN_C = copytext.BUILT  # whether rows are formatted in C (tests turn it off)

# psycopg hands libpq at most 128 KiB at a time and slices (copies) anything larger:
# chunks a little under that go out whole
CHUNK = 120 * 1024


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
            return [row[c] for c in self._columns]
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
