"""Net changes applied set-wise: per table, the keys' final rows staged with COPY, then one
statement for each step, never one per row.

For a target whose table holds the base's rows and no indexes or constraints yet (an
empty target loaded with the snapshot): the values kept from the target (unchanged
TOAST) are read into the staging table, every changed key's row is deleted, and the
rows that remain are inserted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import TableEntry
from journal.errors import RestoreError
from journal.fold import NetChange
from restorer.load import CopyWriter

_OP, _KEEP = "_journal_op", "_journal_keep"  # staging columns: 'p' put / 'd' delete; kept


def apply_net(conn: psycopg.Connection[Any], table: TableEntry, truncated: bool,
              changes: Iterable[NetChange]) -> tuple[int, int]:
    """Apply one table's net changes; returns (rows put, keys deleted)."""
    ident = sql.Identifier(table.schema, table.name)
    if truncated:
        conn.execute(sql.SQL("TRUNCATE {}").format(ident))
    columns = [c.name for c in table.columns if not c.generated]
    stage = sql.Identifier("_journal_net")
    types = _staging_types(conn, ident)
    conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}, {} \"char\" NOT NULL, {} text[]) "
                         "ON COMMIT DROP").format(
        stage, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c]))
                                  for c in columns),
        sql.Identifier(_OP), sql.Identifier(_KEEP)))
    out = CopyWriter(conn, stage, [*columns, _OP, _KEEP], table.qualified)
    puts = deletes = 0
    kept: set[str] = set()
    partial = 0  # rows that keep a value of the target's
    pk = table.primary_key
    blank = dict.fromkeys([*columns, _KEEP])
    try:
        for change in changes:
            if change.row is None:
                out.write({**blank, **dict(zip(pk, change.key, strict=True)), _OP: "d"})
                deletes += 1
                continue
            row = dict(change.row)
            for c in change.from_target:
                row[c] = None
            kept.update(change.from_target)
            partial += bool(change.from_target)
            row[_OP], row[_KEEP] = "p", list(change.from_target) or None
            out.write(row)
            puts += 1
    except BaseException as exc:
        out.close(exc)
        raise
    out.close()
    # the planner knows neither table yet (no statistics, no index): without them it
    # joins them by nested loops
    conn.execute(sql.SQL("ANALYZE {}").format(stage))
    on_key = sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c))
                                   for c in pk)
    if kept:
        _keep_target_values(conn, table, ident, stage, on_key, sorted(kept), partial)
    conn.execute(sql.SQL("DELETE FROM {} t USING {} s WHERE {}").format(ident, stage, on_key))
    always = any(c.identity == "a" for c in table.columns)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    conn.execute(sql.SQL("INSERT INTO {} ({}) {}SELECT {} FROM {} WHERE {} = 'p'").format(
        ident, names, sql.SQL("OVERRIDING SYSTEM VALUE " if always else ""), names, stage,
        sql.Identifier(_OP)))
    conn.execute(sql.SQL("DROP TABLE {}").format(stage))
    return puts, deletes


def _staging_types(conn: psycopg.Connection[Any], ident: sql.Composable) -> dict[str, str]:
    """Each column's type with its domains taken off (as PostgreSQL spells it): a staged
    delete holds NULLs, and a kept value is NULL until it is read, where a domain may
    forbid them; the insert applies the domains."""
    rows = conn.execute(sql.SQL("""
        WITH RECURSIVE base(attname, typ, typmod, depth) AS (
            SELECT a.attname, a.atttypid, a.atttypmod, 0 FROM pg_attribute a
             WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped
            UNION ALL
            SELECT b.attname, t.typbasetype, t.typtypmod, b.depth + 1
              FROM base b JOIN pg_type t ON t.oid = b.typ WHERE t.typtype = 'd')
        SELECT DISTINCT ON (attname) attname, format_type(typ, typmod) FROM base
         ORDER BY attname, depth DESC""").format(sql.Literal(ident.as_string(conn))))
    return {name: text for name, text in rows}


def _keep_target_values(conn: psycopg.Connection[Any], table: TableEntry,
                        ident: sql.Composable, stage: sql.Composable, on_key: sql.Composable,
                        kept: list[str], rows: int) -> None:
    """The unchanged TOAST columns take the value of the target's row of the same key;
    a row that keeps a value from a row the target does not hold is refused."""
    keep = sql.Identifier(_KEEP)
    updated = conn.execute(sql.SQL(
        "UPDATE {} s SET {} FROM {} t WHERE {} AND s.{} IS NOT NULL").format(
        stage,
        sql.SQL(", ").join(sql.SQL("{c} = CASE WHEN {n} = ANY(s.{k}) THEN t.{c} ELSE s.{c} END")
                           .format(c=sql.Identifier(c), n=sql.Literal(c), k=keep)
                           for c in kept),
        ident, on_key, keep)).rowcount
    if updated == rows:
        return
    missing = conn.execute(sql.SQL(
        "SELECT s.{k} FROM {s} s LEFT JOIN {t} t ON {on} WHERE s.{k} IS NOT NULL "
        "AND t.ctid IS NULL").format(k=keep, s=stage, t=ident, on=on_key)).fetchone()
    raise RestoreError(f"an update of {table.qualified} leaves column(s) "
                       f"{', '.join(missing[0] if missing else kept)} unchanged, but the "
                       "snapshot holds no row of its key: the packages do not fit together")
