"""Net changes applied set-wise: per table, the keys' final rows staged with COPY, then one
statement for each step, never one per row.

The tables have their keys and indexes (a restored snapshot's are built first), so each
step finds its rows through them. Per table: the deleted keys' rows are deleted; the other
rows are written with ``INSERT ... ON CONFLICT DO UPDATE``, which fires no ``ON DELETE``
action of a foreign key on a row that stays, and those that keep values of the target's
row (unchanged TOAST) with an ``UPDATE`` that leaves them in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import TableEntry
from journal.codec import copytext
from journal.codec.wire import Unhandled
from journal.errors import RestoreError
from journal.fold import NetChange
from journal.packages.ocf import CopyChunk
from restorer.copying import CHUNK, CopyWriter

# a stage of fewer rows than a quarter of its table's finds them through the primary key
FEW_ROWS = 4
# staging columns: 'p' put / 'd' delete / 'o' put left to be replayed in order; kept
_OP, _KEEP = "_journal_op", "_journal_keep"


def aliased(alias: str, names: Iterable[str]) -> sql.Composable:
    """``alias.a, alias.b, ...``"""
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
                              for c in names)


def equal(left: str, lcols: Iterable[str], right: str, rcols: Iterable[str]) -> sql.Composable:
    """``left.a = right.x AND ...``, the columns paired in order."""
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(sql.Identifier(left), sql.Identifier(a),
                                        sql.Identifier(right), sql.Identifier(b))
        for a, b in zip(lcols, rcols, strict=True))


class StageRows:
    """A table's net changes as the rows of its stage, counted as they go: a delete is
    its key, a put its row with the values kept from the target's row NULL and named."""

    def __init__(self, table: TableEntry) -> None:
        self.table = table
        self.columns = [c.name for c in table.columns if not c.generated]
        self.puts = self.deletes = self.partial = 0
        self.kept: set[str] = set()

    @property
    def stage_columns(self) -> list[str]:
        return [*self.columns, _OP, _KEEP]

    def rows(self, changes: Iterable[NetChange]) -> Iterator[dict[str, Any]]:
        pk = self.table.primary_key
        blank = dict.fromkeys([*self.columns, _KEEP])
        for change in changes:
            if change.row is None:
                self.deletes += 1
                yield {**blank, **dict(zip(pk, change.key, strict=True)), _OP: "d"}
                continue
            row = dict(change.row)
            for c in change.from_target:
                row[c] = None
            self.kept.update(change.from_target)
            self.partial += bool(change.from_target)
            row[_OP], row[_KEEP] = "p", list(change.from_target) or None
            self.puts += 1
            yield row


@dataclass(frozen=True)
class StageText:
    """A table's stage written ahead as COPY text (by the process that read the changes,
    while the snapshot was being COPYed), with its counts."""

    path: Path
    puts: int
    deletes: int
    partial: int
    kept: frozenset[str]


def write_stage_text(table: TableEntry, changes: Iterable[NetChange], path: Path
                     ) -> StageText | None:
    """``changes`` as ``Staged`` would COPY them, into the file ``path``: the bytes the C
    formatter writes, which ``CopyWriter`` writes too. None where a row is not one the C
    formatter handles (or it is not built): the stage is then written from the rows."""
    if not copytext.BUILT:
        return None
    shape = StageRows(table)
    formatter = copytext.row_formatter(shape.stage_columns)
    with path.open("wb") as out:
        for row in shape.rows(changes):
            try:
                if formatter.add(row) >= CHUNK:
                    out.write(formatter.take())
            except (KeyError, Unhandled):
                return None
        if formatter.buffered:
            out.write(formatter.take())
    return StageText(path, shape.puts, shape.deletes, shape.partial, frozenset(shape.kept))


class Staged:
    """One table's net changes in a temporary table of the restore's transaction."""

    def __init__(self, conn: psycopg.Connection[Any], table: TableEntry,
                 changes: Iterable[NetChange] | StageText, number: int = 0) -> None:
        self.conn, self.table = conn, table
        self.ident = sql.Identifier(table.schema, table.name)
        self.stage = sql.Identifier(f"_journal_net_{number}")
        shape = StageRows(table)
        self.columns = shape.columns
        pk = table.primary_key
        self.on_key = equal("t", pk, "s", pk)
        types = staging_types(conn, self.ident)
        conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}, {} \"char\" NOT NULL, {} text[]) "
                             "ON COMMIT DROP").format(
            self.stage,
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c]))
                               for c in self.columns),
            sql.Identifier(_OP), sql.Identifier(_KEEP)))
        out = CopyWriter(conn, self.stage, shape.stage_columns, table.qualified)
        counted: StageRows | StageText = shape
        try:
            if isinstance(changes, StageText):  # written ahead: sent as it is
                counted = changes
                with changes.path.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        out.write_text(CopyChunk(chunk, 0))
            else:
                for row in shape.rows(changes):
                    out.write(row)
        except BaseException as exc:
            out.close(exc)
            raise
        out.close()
        self.puts, self.deletes, self.partial = counted.puts, counted.deletes, counted.partial
        self.kept = set(counted.kept)
        # the planner knows no statistics of the stage (nor, before its indexes, of a
        # freshly loaded table): without them it joins them by nested loops. The columns
        # the joins and filters read only (the others may hold large values)
        conn.execute(sql.SQL("ANALYZE {} ({})").format(self.stage, sql.SQL(", ").join(
            sql.Identifier(c) for c in (*pk, _OP, _KEEP))))

    def delete(self) -> int:
        """The deleted keys' rows; how many."""
        with self._through_key(self.deletes):
            return self.conn.execute(sql.SQL(
                "DELETE FROM {} t USING {} s WHERE {} AND s.{} = 'd'").format(
                    self.ident, self.stage, self.on_key, sql.Identifier(_OP))).rowcount

    @contextmanager
    def _through_key(self, rows: int) -> Iterator[None]:
        """A statement joining ``rows`` staged rows to the table: where they are few beside
        the table's rows, each finds its row through the primary key, rather than the
        whole table being read into a hash join, which the planner prefers (it costs each
        probe as a read from disk): at 1,000,000 documents, 20,000 rows' UPDATE took 1.6 s
        that way. The table's row count is the one its primary key's build recorded."""
        (tuples,) = self.conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
            (self.ident.as_string(self.conn),)).fetchone() or (-1,)
        if not rows or rows * FEW_ROWS >= tuples:
            yield
            return
        names = ("enable_hashjoin", "enable_mergejoin")
        before = [self.conn.execute("SELECT current_setting(%s)", (n,)).fetchone()
                  for n in names]
        for n in names:
            self.conn.execute("SELECT set_config(%s, 'off', true)", (n,))
        yield
        # not on an error: the transaction (or the savepoint around it, which takes the
        # settings back with it) is rolled back
        for n, value in zip(names, before, strict=True):
            self.conn.execute("SELECT set_config(%s, %s, true)", (n, value[0] if value else "on"))

    def write_or_set_aside(self, more: Iterable[tuple[Any, ...]] = ()
                           ) -> tuple[int, int, list[tuple[Any, ...]]]:
        """``write``, the put rows of the keys ``more`` set aside first; where a
        non-deferrable unique value refuses that (rows exchanging values: each meets the
        other's old one), the rows involved are set aside too and the others written.
        Returns (inserted, updated, the keys set aside); a refusal with no exchange to
        explain it is raised."""
        op = sql.Identifier(_OP)
        for key in more:
            self.conn.execute(sql.SQL("UPDATE {} s SET {} = 'o' WHERE s.{} = 'p' AND {}").format(
                self.stage, op, op, sql.SQL(" AND ").join(
                    sql.SQL("s.{} = %s").format(sql.Identifier(c))
                    for c in self.table.primary_key)), key)
        try:
            with self.conn.transaction():
                written = self.write()
        except psycopg.errors.UniqueViolation:
            if not self._exchanging():
                raise
            written = self.write()
        return (*written, [tuple(r) for r in self.conn.execute(sql.SQL(
            "SELECT {} FROM {} s WHERE s.{} = 'o'").format(
                aliased("s", self.table.primary_key), self.stage, op))])

    def _exchanging(self) -> bool:
        """The put rows whose value of a non-deferrable unique index (not the primary key,
        no expression, no predicate) another put row holds in the target, and that row:
        marked in the stage so ``write`` leaves them; whether there were any."""
        pk = self.table.primary_key
        indexes = self.conn.execute(
            "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i"
            " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass AND i.indisunique AND NOT i.indisprimary"
            " AND i.indexprs IS NULL AND i.indpred IS NULL"
            " AND NOT coalesce(c.condeferrable, false)"
            " GROUP BY i.indexrelid", (self.ident.as_string(self.conn),)).fetchall()
        op = sql.Identifier(_OP)
        put = sql.SQL("{} IN ('p', 'o')").format(op)  # 'o': left to be replayed in order
        s_keys = [f"s_{i}" for i in range(len(pk))]
        o_keys = [f"o_{i}" for i in range(len(pk))]
        for (columns,) in indexes:
            if not set(columns) <= set(self.columns):
                continue
            # s would take the value t holds, t being another put row (o); both set aside
            clash = sql.SQL(
                "JOIN {table} t ON {same} JOIN {stage} o ON {o_is_t} AND o.{put}"
                " WHERE s.{put} AND NOT ({s_is_t})").format(
                    table=self.ident, stage=self.stage, o_is_t=equal("o", pk, "t", pk), put=put,
                    same=equal("t", columns, "s", columns), s_is_t=equal("s", pk, "t", pk))
            pairs = sql.SQL(", ").join(
                sql.SQL("{}.{} AS {}").format(sql.Identifier(a), sql.Identifier(c),
                                              sql.Identifier(k))
                for a, keys in (("s", s_keys), ("o", o_keys))
                for c, k in zip(pk, keys, strict=True))
            self.conn.execute(sql.SQL(
                "UPDATE {stage} x SET {op} = 'o' FROM (SELECT {pairs} FROM {stage} s {clash}) m"
                " WHERE x.{op} = 'p' AND (({s_side}) OR ({o_side}))").format(
                    stage=self.stage, op=op, pairs=pairs, clash=clash,
                    s_side=equal("x", pk, "m", s_keys), o_side=equal("x", pk, "m", o_keys)))
        return self.conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE {} = 'o')").format(
            self.stage, op)).fetchone() == (True,)

    def write(self) -> tuple[int, int]:
        """The put rows, inserted, or updated where the key is there; returns (inserted,
        updated). Rows that keep values of the target's row (unchanged TOAST) update it
        in place, after the others (which they may reference): the kept values are never
        read, nor written again."""
        always = {c.name for c in self.table.columns if c.identity == "a"}
        names = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        op, keep = sql.Identifier(_OP), sql.Identifier(_KEEP)
        insert = sql.SQL("INSERT INTO {} AS t ({}) {}SELECT {} FROM {} WHERE {} = 'p'{}").format(
            self.ident, names, sql.SQL("OVERRIDING SYSTEM VALUE " if always else ""), names,
            self.stage, op,
            sql.SQL(" AND {} IS NULL").format(keep) if self.kept else sql.SQL(""))
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
        inserted, updated = (int(row[0]), int(row[1])) if row else (0, 0)
        if self.kept:
            updated += self._write_keeping(settable)
        return inserted, updated

    def _write_keeping(self, settable: list[str]) -> int:
        """The put rows that keep values of the target's row, as updates of it; a row
        that keeps a value from a row the target does not hold is refused."""
        op, keep = sql.Identifier(_OP), sql.Identifier(_KEEP)
        where = sql.SQL("s.{} = 'p' AND s.{} IS NOT NULL").format(op, keep)
        with self._through_key(self.partial):
            updated = self.conn.execute(sql.SQL(
                "UPDATE {} t SET {} FROM {} s WHERE {} AND {}").format(
                    self.ident,
                    sql.SQL(", ").join(
                        sql.SQL("{c} = CASE WHEN {n} = ANY(s.{k}) THEN t.{c} ELSE s.{c} END")
                        .format(c=sql.Identifier(c), n=sql.Literal(c), k=keep)
                        if c in self.kept else sql.SQL("{c} = s.{c}").format(
                            c=sql.Identifier(c))
                        for c in settable),
                    self.stage, self.on_key, where)).rowcount
        missing = self.conn.execute(sql.SQL(
            "SELECT s.{k} FROM {s} s LEFT JOIN {t} t ON {on} WHERE {where} AND t.ctid IS NULL "
            "LIMIT 1").format(k=keep, s=self.stage, t=self.ident, on=self.on_key, where=where)
        ).fetchone() if updated < self.partial else None
        if missing is not None:
            raise RestoreError(f"an update of {self.table.qualified} leaves column(s) "
                               f"{', '.join(missing[0])} unchanged, but the target holds no "
                               "row of its key to keep them from: the packages, or the target "
                               "an earlier restore left, do not fit these changes")
        return updated

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


@dataclass
class LiveApplied:
    # per table: inserted, updated, deleted
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    # per table: the keys of rows exchanging unique values, left as they were, for the
    # caller to replay in order
    aside: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


def apply_to_live(conn: psycopg.Connection[Any],
                  tables: Iterable[tuple[TableEntry, Iterable[NetChange] | StageText]],
                  order: list[str], truncated: Iterable[TableEntry] = (),
                  aside: Mapping[str, Iterable[tuple[Any, ...]]] | None = None
                  ) -> LiveApplied:
    """Net changes (per table: its entry and its ``NetChange`` iterator, in the sorted
    changes' order, each read before the next is asked for, or its stage's text) into
    tables with their keys and constraints: all staged first; then the deleted rows,
    children before parents (which frees their unique values); then the other rows,
    parents before children.
    ``truncated`` tables are emptied first, in one statement (as the source's
    TRUNCATE of tables that reference each other was). Rows that exchange the values of
    a non-deferrable unique index are left as they were, for the caller to replay in
    order (``LiveApplied.aside``); ``aside``: keys (per table) whose put rows are set
    aside from the start."""
    emptied = sorted(truncated, key=lambda t: t.qualified)
    if emptied:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(
            sql.Identifier(t.schema, t.name) for t in emptied)))
    staged = {entry.qualified: Staged(conn, entry, changes, n)
              for n, (entry, changes) in enumerate(tables)}
    rank = {name: i for i, name in enumerate(order)}
    by_order = sorted(staged, key=lambda name: (rank.get(name, len(rank)), name))
    deleted = {name: staged[name].delete() for name in reversed(by_order)}
    result = LiveApplied()
    for name in by_order:
        inserted, updated, keys = staged[name].write_or_set_aside(
            (aside or {}).get(name, ()))
        result.counts[name] = (inserted, updated, deleted[name])
        if keys:
            result.aside[name] = keys
        staged[name].drop()
    return result
