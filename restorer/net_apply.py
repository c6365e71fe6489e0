"""Net changes applied set-wise: per table, the keys' final rows staged with COPY, then one
statement for each step, never one per row.

The tables have their keys and indexes (a restored snapshot's are built first), so each
step finds its rows through them. Per table: the values kept from the target (unchanged
TOAST) are read into the staging table; the deleted keys' rows are deleted; the other
rows are written with ``INSERT ... ON CONFLICT DO UPDATE``, which fires no ``ON DELETE``
action of a foreign key on a row that stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import TableEntry
from journal.errors import RestoreError
from journal.fold import NetChange
from restorer.copying import CopyWriter

_OP, _KEEP = "_journal_op", "_journal_keep"  # staging columns: 'p' put / 'd' delete; kept


class Staged:
    """One table's net changes in a temporary table of the restore's transaction."""

    def __init__(self, conn: psycopg.Connection[Any], table: TableEntry,
                 changes: Iterable[NetChange], number: int = 0) -> None:
        self.conn, self.table = conn, table
        self.ident = sql.Identifier(table.schema, table.name)
        self.stage = sql.Identifier(f"_journal_net_{number}")
        self.columns = [c.name for c in table.columns if not c.generated]
        self.puts = self.deletes = self.partial = 0
        self.kept: set[str] = set()
        pk = table.primary_key
        self.on_key = sql.SQL(" AND ").join(
            sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in pk)
        types = staging_types(conn, self.ident)
        conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}, {} \"char\" NOT NULL, {} text[]) "
                             "ON COMMIT DROP").format(
            self.stage,
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c]))
                               for c in self.columns),
            sql.Identifier(_OP), sql.Identifier(_KEEP)))
        out = CopyWriter(conn, self.stage, [*self.columns, _OP, _KEEP], table.qualified)
        blank = dict.fromkeys([*self.columns, _KEEP])
        try:
            for change in changes:
                if change.row is None:
                    out.write({**blank, **dict(zip(pk, change.key, strict=True)), _OP: "d"})
                    self.deletes += 1
                    continue
                row = dict(change.row)
                for c in change.from_target:
                    row[c] = None
                self.kept.update(change.from_target)
                self.partial += bool(change.from_target)
                row[_OP], row[_KEEP] = "p", list(change.from_target) or None
                out.write(row)
                self.puts += 1
        except BaseException as exc:
            out.close(exc)
            raise
        out.close()
        # the planner knows no statistics of the stage (nor, before its indexes, of a
        # freshly loaded table): without them it joins them by nested loops
        conn.execute(sql.SQL("ANALYZE {}").format(self.stage))

    def keep_target_values(self) -> None:
        """The unchanged TOAST columns take the value of the target's row of the same
        key; a row that keeps a value from a row the target does not hold is refused."""
        if not self.kept:
            return
        keep = sql.Identifier(_KEEP)
        updated = self.conn.execute(sql.SQL(
            "UPDATE {} s SET {} FROM {} t WHERE {} AND s.{} IS NOT NULL").format(
            self.stage,
            sql.SQL(", ").join(
                sql.SQL("{c} = CASE WHEN {n} = ANY(s.{k}) THEN t.{c} ELSE s.{c} END")
                .format(c=sql.Identifier(c), n=sql.Literal(c), k=keep)
                for c in sorted(self.kept)),
            self.ident, self.on_key, keep)).rowcount
        if updated == self.partial:
            return
        missing = self.conn.execute(sql.SQL(
            "SELECT s.{k} FROM {s} s LEFT JOIN {t} t ON {on} WHERE s.{k} IS NOT NULL "
            "AND t.ctid IS NULL").format(k=keep, s=self.stage, t=self.ident, on=self.on_key)
        ).fetchone()
        raise RestoreError(f"an update of {self.table.qualified} leaves column(s) "
                           f"{', '.join(missing[0] if missing else sorted(self.kept))} "
                           "unchanged, but the target holds no row of its key to keep them "
                           "from: the packages, or the target an earlier restore left, do "
                           "not fit these changes")

    def delete(self) -> int:
        """The deleted keys' rows; how many."""
        return self.conn.execute(sql.SQL("DELETE FROM {} t USING {} s WHERE {} AND s.{} = 'd'")
                                 .format(self.ident, self.stage, self.on_key,
                                         sql.Identifier(_OP))).rowcount

    def write(self) -> tuple[int, int]:
        """The put rows, inserted, or updated where the key is there; returns (inserted,
        updated)."""
        always = {c.name for c in self.table.columns if c.identity == "a"}
        names = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        insert = sql.SQL("INSERT INTO {} AS t ({}) {}SELECT {} FROM {} WHERE {} = 'p'").format(
            self.ident, names, sql.SQL("OVERRIDING SYSTEM VALUE " if always else ""), names,
            self.stage, sql.Identifier(_OP))
        pk = set(self.table.primary_key)
        settable = [c for c in self.columns if c not in pk and c not in always]
        action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in settable))
            if settable else sql.SQL("DO NOTHING"))
        row = self.conn.execute(sql.SQL(
            "WITH w AS ({} ON CONFLICT ({}) {} RETURNING (t.xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
            "FROM w").format(insert, sql.SQL(", ").join(
                sql.Identifier(c) for c in self.table.primary_key), action)).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def drop(self) -> None:
        self.conn.execute(sql.SQL("DROP TABLE {}").format(self.stage))


def staging_types(conn: psycopg.Connection[Any], ident: sql.Composable) -> dict[str, str]:
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


def apply_to_live(conn: psycopg.Connection[Any],
                  tables: Iterable[tuple[TableEntry, Iterable[NetChange]]],
                  order: list[str], truncated: Iterable[TableEntry] = ()
                  ) -> dict[str, tuple[int, int, int]]:
    """Net changes (per table: its entry and its ``NetChange`` iterator, in the sorted
    changes' order, each read before the next is asked for) into tables with their keys
    and constraints: all staged first; then the deleted rows, children before parents
    (which frees their unique values); then the other rows, parents before children.
    ``truncated`` tables are emptied first, in one statement (as the source's
    TRUNCATE of tables that reference each other was). Returns per table (inserted,
    updated, deleted)."""
    emptied = sorted(truncated, key=lambda t: t.qualified)
    if emptied:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(
            sql.Identifier(t.schema, t.name) for t in emptied)))
    staged = {entry.qualified: Staged(conn, entry, changes, n)
              for n, (entry, changes) in enumerate(tables)}
    rank = {name: i for i, name in enumerate(order)}
    by_order = sorted(staged, key=lambda name: (rank.get(name, len(rank)), name))
    for name in by_order:
        staged[name].keep_target_values()
    deleted = {name: staged[name].delete() for name in reversed(by_order)}
    counts = {}
    for name in by_order:
        inserted, updated = staged[name].write()
        counts[name] = (inserted, updated, deleted[name])
        staged[name].drop()
    return counts
