"""The target's schema as it is now, spelled as the CATALOG spells it (read with an empty
``search_path``, as producers/source_catalog.py reads the source), for restorer/evolve.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from restorer.evolve import EnumColumn, LiveKeys


@contextmanager
def _empty_search_path(conn: psycopg.Connection[Any]) -> Iterator[None]:
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    conn.execute("SELECT set_config('search_path', '', true)")
    try:
        yield
    finally:
        conn.execute("SELECT set_config('search_path', %s, true)", (row[0] if row else "",))


def live_keys(conn: psycopg.Connection[Any], schema: str, name: str) -> LiveKeys:
    """Constraints (primary key, unique, check, exclusion), foreign keys and the other
    indexes of the target table ``schema.name``."""
    with _empty_search_path(conn):
        constraints = conn.execute(
            """
            SELECT format('ALTER TABLE ONLY %%I.%%I ADD CONSTRAINT %%I %%s', n.nspname, c.relname,
                          con.conname, pg_get_constraintdef(con.oid)), con.conname,
                   con.contype = 'f'
            FROM pg_constraint con
            JOIN pg_class c ON c.oid = con.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND con.contype IN ('p', 'u', 'c', 'x', 'f')
            """, (schema, name)).fetchall()
        indexes = conn.execute(
            """
            SELECT pg_get_indexdef(i.indexrelid), ic.relname
            FROM pg_index i
            JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s
              AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                              WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                AND con.contype IN ('p', 'u', 'x'))
            """, (schema, name)).fetchall()
    return LiveKeys({d: n for d, n, fk in constraints if not fk},
                    {d: n for d, n, fk in constraints if fk},
                    {d: n for d, n in indexes})


def enum_columns(conn: psycopg.Connection[Any], schema: str, name: str) -> list[EnumColumn]:
    """Every target column of the enum type ``schema.name`` or of an array of it."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, a.attname, ty.typelem <> 0, a.atthasdef
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p')
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type ty ON ty.oid = a.atttypid
        JOIN pg_type e ON e.oid = coalesce(nullif(ty.typelem, 0), ty.oid)
        JOIN pg_namespace en ON en.oid = e.typnamespace
        WHERE en.nspname = %s AND e.typname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2, a.attnum
        """, (schema, name)).fetchall()
    return [EnumColumn(*r) for r in rows]


def enum_labels(conn: psycopg.Connection[Any], schema: str, name: str) -> list[str] | None:
    row = conn.execute(
        "SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e "
        "JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = %s AND t.typname = %s", (schema, name)).fetchone()
    return list(row[0]) if row and row[0] is not None else None
