"""A populated target's foreign keys checked once per constraint instead of row by row.

A natural-key restore writes a snapshot's rows into tables whose foreign keys PostgreSQL
checks row by row: an index probe and a lock of the referenced row, per row and key, queued
until commit where the keys are deferred. That was about two fifths of such a restore
(``pg_restore --data-only`` into the same schema: 24.8 s with its keys checked, 14.8 s
without). Where the restoring role may do it and the restore holds both tables locked
against other writers, the referencing side's check triggers are disabled for the load;
each constraint is then checked over its whole table by one anti-join — what ``ALTER
TABLE … VALIDATE CONSTRAINT`` does — and its triggers enabled again, in the same
transaction. A row without its referenced row refuses the restore, naming the constraint
and the row's key values, as the row's own check would have; a crash before the end
leaves nothing disabled (the transaction rolls back). A table already holding many rows
beside those the load adds keeps its checks row by row: checking it whole would cost more.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from journal.errors import RestoreRefused

log = logging.getLogger(__name__)

# a table whose incoming rows are at least this share of those it holds is checked whole
WHOLE_TABLE_SHARE = 0.25
_OPERATOR = re.compile(r"[-+*/<>=~!@#%^&|`?]+")

# the constraints on ordinary tables whose referencing-side checks are enabled, validated
# and not inherited from a partitioned parent, with their columns, operators and triggers
_KEYS = """
SELECT con.conname, cn.nspname, c.relname, fn.nspname, f.relname,
       con.confmatchtype = 'f',
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT ARRAY[n.nspname::text, o.oprname::text]
             FROM unnest(con.conpfeqop) WITH ORDINALITY k(op, i)
             JOIN pg_operator o ON o.oid = k.op
             JOIN pg_namespace n ON n.oid = o.oprnamespace ORDER BY k.i),
       ARRAY(SELECT t.tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
             WHERE t.tgconstraint = con.oid AND t.tgrelid = con.conrelid
               AND p.proname IN ('RI_FKey_check_ins', 'RI_FKey_check_upd')
               AND t.tgenabled <> 'D' ORDER BY t.tgname),
       greatest(c.reltuples, 0)::bigint
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class f ON f.oid = con.confrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace
WHERE con.contype = 'f' AND con.convalidated AND con.conparentid = 0
  AND c.relkind = 'r' AND f.relkind = 'r'
  AND con.conrelid = ANY(%(tables)s::regclass[]) AND con.confrelid = ANY(%(locked)s::regclass[])
ORDER BY cn.nspname, c.relname, con.conname
"""


def _ident(qualified: str) -> sql.Identifier:
    """``schema.name`` (as the catalog and the restore name tables) as an identifier."""
    schema, _, name = qualified.partition(".")
    return sql.Identifier(schema, name)


@dataclass(frozen=True)
class ForeignKey:
    """One constraint checked once: its table and referenced table ("schema.name")."""

    name: str
    table: str
    ref_table: str
    columns: tuple[str, ...]
    ref_columns: tuple[str, ...]
    operators: tuple[tuple[str, str], ...]  # (schema, name): referenced = referencing
    match_full: bool
    triggers: tuple[str, ...]

    def violation_query(self) -> sql.Composed:
        """A row of the table breaking the constraint, PostgreSQL's rules for it (MATCH
        SIMPLE: any null column passes; MATCH FULL: all or none null), the constraint's own
        equality operators."""
        cols = [sql.SQL("c.{}").format(sql.Identifier(c)) for c in self.columns]
        matched = sql.SQL(" AND ").join(
            sql.SQL("p.{} OPERATOR({}.{}) {}").format(
                sql.Identifier(ref), sql.Identifier(schema), sql.SQL(op), col)
            for ref, (schema, op), col in zip(self.ref_columns, self.operators, cols, strict=True))
        missing = sql.SQL("NOT EXISTS (SELECT 1 FROM ONLY {} p WHERE {})").format(
            _ident(self.ref_table), matched)
        all_set = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in cols)
        if self.match_full:
            none_set = sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(c) for c in cols)
            where = sql.SQL("NOT ({}) AND (NOT ({}) OR {})").format(none_set, all_set, missing)
        else:
            where = sql.SQL("{} AND {}").format(all_set, missing)
        return sql.SQL("SELECT {} FROM ONLY {} c WHERE {} LIMIT 1").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(c) for c in cols),
            _ident(self.table), where)

    def triggers_sql(self, enable: bool) -> Iterator[sql.Composed]:
        verb = sql.SQL("ENABLE" if enable else "DISABLE")
        for trigger in self.triggers:
            yield sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                _ident(self.table), verb, sql.Identifier(trigger))


def checked_once_keys(conn: psycopg.Connection[Any], incoming: Mapping[str, int],
                      locked: Collection[str]) -> list[ForeignKey]:
    """The foreign keys of the tables in ``incoming`` (table → rows the load adds) to check
    once: the role is a superuser (only one may disable a constraint's triggers), the
    referenced table is among ``locked`` (held against other writers until commit, so no
    referenced row goes away between the check and the commit), and the rows the load adds
    are at least WHOLE_TABLE_SHARE of those the table holds."""
    if not incoming or conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = "
                                    "current_user").fetchone() != (True,):
        return []

    def regclasses(names: Collection[str]) -> list[str]:
        return [_ident(n).as_string(conn) for n in sorted(names)]

    keys = []
    for (name, schema, table, ref_schema, ref_table, full, columns, ref_columns,
         operators, triggers, held) in conn.execute(
            _KEYS, {"tables": regclasses(incoming), "locked": regclasses(locked)}):
        qualified = f"{schema}.{table}"
        if not triggers or incoming.get(qualified, 0) < WHOLE_TABLE_SHARE * held:
            continue
        ops = tuple((nsp, op) for nsp, op in operators)
        if len(ops) != len(columns) or not all(_OPERATOR.fullmatch(op) for _, op in ops):
            continue  # not an operator name (never, from the catalog): keep the row checks
        keys.append(ForeignKey(name, qualified, f"{ref_schema}.{ref_table}", tuple(columns),
                               tuple(ref_columns), ops, bool(full), tuple(triggers)))
    return keys


@contextmanager
def foreign_keys_checked_once(conn: psycopg.Connection[Any], incoming: Mapping[str, int],
                              locked: Collection[str]) -> Iterator[list[ForeignKey]]:
    """Inside, the keys ``checked_once_keys`` chooses are not checked row by row; on a
    normal exit each is checked over its table and its triggers enabled again. Raises
    RestoreRefused for a row without its referenced row. Must be entered before the load
    writes any of those tables in the transaction (PostgreSQL refuses to alter a table
    with trigger events pending)."""
    keys = checked_once_keys(conn, incoming, locked)
    if keys:
        log.info("foreign keys checked once after the load, not row by row: %s",
                 ", ".join(f"{k.table}.{k.name}" for k in keys))
    for key in keys:
        for statement in key.triggers_sql(enable=False):
            conn.execute(statement)
    yield keys
    for key in keys:
        row = conn.execute(key.violation_query()).fetchone()
        if row is not None:
            values = ", ".join("null" if v is None else v for v in row)
            raise RestoreRefused(
                f"{key.table} would violate foreign key constraint {key.name!r}: key "
                f"({', '.join(key.columns)})=({values}) is not present in {key.ref_table} "
                "(checked once over the table after the load)")
        for statement in key.triggers_sql(enable=True):
            _enable(conn, statement)


def _enable(conn: psycopg.Connection[Any], statement: sql.Composed) -> None:
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.errors.ObjectInUse:
        log.info("deferred trigger events pending before %s: fired now",
                 statement.as_string(conn))
        # deferred trigger events are pending on the table (another key's checks, a
        # trigger of its own): fire them now, as the commit would, and go back to the
        # restore's mode, every constraint deferred
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        conn.execute(statement)
