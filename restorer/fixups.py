"""Foreign keys set after their row: the deferred ones that break cycles, and generic
references whose object arrives later.

Deferred keys are held in memory up to FIXUP_BATCH, then spilled to a temporary table and
applied with one UPDATE per foreign key, joined with the key map in the target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import TableEntry
from journal.errors import RestoreRefused
from restorer.keystore import encode
from restorer.remap import KeyMap, RowRemapper

FIXUP_BATCH = 5000  # deferred foreign keys held in memory before they go to the target
FIXUPS_TABLE = "journal_restore_fixups_work"

Updates = Callable[[str, Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]], set[str]], None]


@dataclass
class Fixup:
    """A deferred foreign key to set once its referenced row has a target id."""

    table: str
    source_key: tuple[Any, ...]
    fk_name: str
    source_value: tuple[Any, ...]


@dataclass
class Fixups:
    """The fix-ups of one restore; ``update_many`` is the writer's batched UPDATE."""

    conn: psycopg.Connection[Any]
    remapper: RowRemapper
    table_of: Callable[[str], TableEntry]
    update_many: Updates
    strict: bool = False  # a generic reference to nothing in the restore is refused
    # per "table.column": generic references left as they were (their object is in no
    # table of the restore, or no longer in the source)
    dangling: dict[str, int] = field(default_factory=dict)
    fixups: list[Fixup] = field(default_factory=list)  # the ones not yet spilled
    _spilled: set[tuple[str, str]] = field(default_factory=set)  # (table, fk) in the table
    _fixup_seq: int = 0
    # set-wise fix-ups of tables loaded whole (``restorer.staged_remap``), run by ``apply``
    _later: list[Callable[[], None]] = field(default_factory=list)

    @property
    def keymap(self) -> KeyMap:
        return self.remapper.keymap

    def defer(self, table: str, rows: Sequence[Mapping[str, Any]], deferred: frozenset[str]
              ) -> None:
        """Remember the deferred foreign keys of ``rows`` for ``apply``."""
        if not deferred:
            return
        pk = self.table_of(table).primary_key
        for fk in self.remapper.graph.foreign_keys.get(table, ()):
            if fk.name in deferred:
                for row in rows:
                    if (value := fk.value_of(row)) is not None:
                        self.fixups.append(Fixup(table, tuple(row[c] for c in pk), fk.name,
                                                 value))
                        if len(self.fixups) >= FIXUP_BATCH and self.keymap.store.in_database:
                            self._spill_fixups()

    def later(self, fixup: Callable[[], None]) -> None:
        """A table's deferred foreign keys, set by ``fixup`` in SQL when ``apply`` runs."""
        self._later.append(fixup)

    @property
    def pending(self) -> bool:
        return bool(self.fixups or self._spilled or self._later)

    def apply(self) -> None:
        """Second pass for foreign keys deferred to break cycles."""
        for fixup in self._later:
            fixup()
        self._later.clear()
        if self._spilled:
            self._spill_fixups()
            self._apply_spilled_fixups()
            return
        graph = self.remapper.graph
        by_table: dict[str, list[tuple[tuple[Any, ...], Mapping[str, Any]]]] = {}
        fks = {(f.table, f.fk_name): next(k for k in graph.foreign_keys[f.table]
                                          if k.name == f.fk_name) for f in self.fixups}
        self.keymap.prefetch([(f.table, f.source_key) for f in self.fixups]
                             + [(fks[f.table, f.fk_name].ref_table, f.source_value)
                                for f in self.fixups])
        for f in self.fixups:
            fk = fks[f.table, f.fk_name]
            target = self.keymap.target_of(fk.ref_table, f.source_value)
            by_table.setdefault(f.table, []).append(
                (self.keymap.target_of(f.table, f.source_key),
                 dict(zip(fk.columns, target, strict=True))))
        for table, items in by_table.items():
            # each fixup sets one foreign key of one row: batched per table and columns
            self.update_many(table, items, set())
        self.fixups.clear()

    def apply_generic(self, final: bool) -> None:
        """Set the generic references whose object has arrived since their row did; with
        ``final`` (every row is in), count the rest as dangling, or refuse them when
        ``strict``."""
        pending = self.remapper.pending
        if not pending:
            return
        self.keymap.prefetch([obj for obj, _ in pending.values()]
                             + [(t, k) for t, k, _ in pending])
        updates: dict[str, list[tuple[tuple[Any, ...], Mapping[str, Any]]]] = {}
        for (table, row_key, column), (obj, source_value) in list(pending.items()):
            if self.keymap.known(*obj):
                mapped = self.keymap.target_of(*obj)[0]
                value = str(mapped) if isinstance(source_value, str) else mapped
                updates.setdefault(table, []).append(
                    (self.keymap.target_of(table, row_key), {column: value}))
            elif final:
                label = f"{table}.{column}"
                self.dangling[label] = self.dangling.get(label, 0) + 1
            else:
                continue
            del pending[(table, row_key, column)]
        for table, items in updates.items():
            self.update_many(table, items, set())
        if final:
            for label, n in self.remapper.outside.items():
                self.dangling[label] = self.dangling.get(label, 0) + n
            self.remapper.outside.clear()
            if self.strict and self.dangling:
                raise RestoreRefused(
                    "--strict: generic foreign key values point at nothing in the restore: "
                    + ", ".join(f"{label}: {n}" for label, n in sorted(self.dangling.items()))
                    + " (their objects are gone from the source, or in tables the restore "
                    "does not hold)")

    def _spill_fixups(self) -> None:
        """Move the fixups held in memory to a temporary table (created on first use):
        a load defers one per row of a cycle, all applied at its end."""
        if not self._spilled:
            self.conn.execute(sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (seq bigint NOT NULL, table_name text"
                " NOT NULL, fk_name text NOT NULL, source_key jsonb NOT NULL, source_value"
                " jsonb NOT NULL) ON COMMIT DROP").format(sql.Identifier(FIXUPS_TABLE)))
        copy_query = sql.SQL("COPY {} FROM STDIN").format(
            sql.Identifier("pg_temp", FIXUPS_TABLE))
        with self.conn.cursor() as cur, cur.copy(copy_query) as copy:
            for f in self.fixups:
                self._fixup_seq += 1
                copy.write_row((self._fixup_seq, f.table, f.fk_name, encode(f.source_key),
                                encode(f.source_value)))
                self._spilled.add((f.table, f.fk_name))
        self.fixups.clear()

    def _apply_spilled_fixups(self) -> None:
        """``apply`` for fixups in the temporary table: per foreign key, one
        UPDATE joined with the key map there. Each key goes through the table's own row
        type (``jsonb_populate_record``), so it takes the column's type as the
        one-row-at-a-time UPDATE's parameters do; of several fixups of one row, the
        last wins, as it does there."""
        self.keymap.store.flush()
        graph = self.remapper.graph
        fixups = sql.Identifier("pg_temp", FIXUPS_TABLE)
        for table, fk_name in sorted(self._spilled):
            spec = self.table_of(table)
            ident = sql.Identifier(spec.schema, spec.name)
            pk = list(spec.primary_key)
            fk = next(k for k in graph.foreign_keys[table] if k.name == fk_name)

            def fields(cols: Sequence[str], value: str) -> sql.Composable:
                return sql.SQL(", ").join(
                    sql.SQL("{}, {} -> {}").format(sql.Literal(c), sql.SQL(value),
                                                   sql.Literal(i))
                    for i, c in enumerate(cols))

            self.conn.execute(sql.SQL(
                "WITH f AS (SELECT DISTINCT ON (source_key) source_key, source_value"
                " FROM {fixups} WHERE table_name = %(table)s AND fk_name = %(fk)s"
                " ORDER BY source_key, seq DESC)"
                " UPDATE {table} AS t SET {sets} FROM f"
                " LEFT JOIN {keymap} mk ON mk.table_name = %(table)s"
                " AND mk.key = f.source_key::text"
                " LEFT JOIN {keymap} mv ON mv.table_name = %(ref)s"
                " AND mv.key = f.source_value::text"
                " CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, jsonb_build_object("
                "{pk_fields}, {fk_fields})) AS r"
                " WHERE {match}").format(
                    fixups=fixups, table=ident, keymap=self.keymap.store.table,
                    sets=sql.SQL(", ").join(sql.SQL("{c} = r.{c}").format(c=sql.Identifier(c))
                                            for c in fk.columns),
                    pk_fields=fields(pk, "coalesce(mk.value, f.source_key)"),
                    fk_fields=fields(fk.columns, "coalesce(mv.value, f.source_value)"),
                    match=sql.SQL(" AND ").join(sql.SQL("t.{c} = r.{c}").format(
                        c=sql.Identifier(c)) for c in pk)),
                {"table": table, "fk": fk_name, "ref": fk.ref_table})
        self.conn.execute(sql.SQL("TRUNCATE {}").format(fixups))
        self._spilled.clear()
