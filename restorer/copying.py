"""COPY into a table or a staging table, one journal row at a time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import TableEntry
from journal.errors import RestoreError


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
