"""Writing rows into the target database, one batch or one event at a time.

Two modes. *Identity* (the target was empty, ids are the source's): rows are written as
they come. *Remap* (a populated target): foreign keys are rewritten through the key map,
rows are matched by natural key with one query per batch, and each row is inserted,
inserted under a fresh id, updated or skipped as ``restorer.remap.decide`` says.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import psycopg
from psycopg import postgres, sql

from journal.catalog import Catalog, TableEntry, oid_of
from journal.errors import RestoreError, RestoreRefused
from restorer.keystore import encode
from restorer.natural_keys import NaturalKey, config_line, is_surrogate_key
from restorer.remap import Decision, KeyMap, RowRemapper, decide
from restorer.report import TableCounts

# Matching a row by all its columns (tables without a primary key). Types whose equality
# means "the same value" are compared with it; for these, equality merges different
# values (-0 and 0, 1.0 and 1.00, json with other spacing) or does not exist (json), so
# they are compared as text, the parameter read through the column's (builtin) type.
_EXACT_SCALARS = ("bool", "int8", "int2", "int4", "text", "varchar", "bpchar", "bytea", "date",
                  "time", "timestamp", "timestamptz", "uuid")
_EXACT_EQUALITY = frozenset({oid_of(n) for n in (*_EXACT_SCALARS, "name")}
                            | {postgres.types[n].array_oid for n in _EXACT_SCALARS})
_TEXT_THROUGH_TYPES = {"float4": "real", "float8": "double precision", "numeric": "numeric",
                       "json": "json", "jsonb": "jsonb"}
_TEXT_THROUGH = {oid_of(n): t for n, t in _TEXT_THROUGH_TYPES.items()} | {
    postgres.types[n].array_oid: f"{t}[]" for n, t in _TEXT_THROUGH_TYPES.items()}
# The output formats capture reads values in (journal.values.SESSION_SETTINGS, which
# the restorer may not import): for the rest of the restore transaction.
_TEXT_FORMATS = (("DateStyle", "ISO, MDY"), ("IntervalStyle", "postgres"), ("TimeZone", "UTC"),
                 ("bytea_output", "hex"), ("extra_float_digits", "1"))
COPY_ROWS = 64  # a batch this large is inserted with COPY rather than executemany
FIXUP_BATCH = 5000  # deferred foreign keys held in memory before they go to the target
FIXUPS_TABLE = "journal_restore_fixups_work"


@dataclass
class Fixup:
    """A deferred foreign key to set once its referenced row has a target id."""

    table: str
    source_key: tuple[Any, ...]
    fk_name: str
    source_value: tuple[Any, ...]


@dataclass
class TargetWriter:
    conn: psycopg.Connection[Any]
    catalog: Catalog
    remapper: RowRemapper
    keys: Mapping[str, NaturalKey | None]
    counts: dict[str, TableCounts]
    remap: bool = False
    on_conflict: str = "update"
    dry_run: bool = False
    content_matched: frozenset[str] = frozenset()  # tables without a natural key
    strict: bool = False  # a generic reference to nothing in the restore is refused
    # per "table.column": generic references left as they were (their object is in no
    # table of the restore, or no longer in the source)
    dangling: dict[str, int] = field(default_factory=dict)
    fixups: list[Fixup] = field(default_factory=list)  # the ones not yet spilled
    _spilled: set[tuple[str, str]] = field(default_factory=set)  # (table, fk) in the table
    _fixup_seq: int = 0
    pipeline: Any = None  # psycopg Pipeline while replaying identity writes
    _unsynced: int = 0
    # statements composed once per table (and column set), reused for every row
    _queries: dict[tuple[Any, ...], str] = field(default_factory=dict)
    _cur: psycopg.Cursor[Any] | None = None
    _text_formats_set: bool = False

    @property
    def cursor(self) -> psycopg.Cursor[Any]:
        """One cursor for every write (a new one per statement cost more than the
        statement's own client-side work)."""
        if self._cur is None:
            self._cur = self.conn.cursor()
        return self._cur

    @property
    def keymap(self) -> KeyMap:
        return self.remapper.keymap

    def schema_changed(self, catalog: Catalog) -> None:
        """A schema change of the stream: write through ``catalog`` from now on, with
        statements composed anew."""
        self.catalog = catalog
        self._queries.clear()

    def _table(self, name: str) -> TableEntry:
        return self.catalog.tables[name]

    def _count(self, name: str) -> TableCounts:
        return self.counts.setdefault(name, TableCounts())

    # -- inserts ---------------------------------------------------------------------------

    def write_rows(self, table: str, rows: Sequence[dict[str, Any]],
                   deferred: frozenset[str] = frozenset()) -> None:
        """Insert (or match) a batch of source rows of ``table``."""
        if not rows:
            return
        spec = self._table(table)
        pk = spec.primary_key
        for row in rows:
            self.remapper.observe(table, row)
        if not self.remap:
            self._insert(table, rows)
            self._count(table).inserted += len(rows)
            return
        self.remapper.prefetch(table, rows, deferred)
        mapped = [self.remapper.remap(table, row, deferred) for row in rows]
        self.defer(table, rows, deferred)
        nk = self.keys.get(table)
        if nk:
            by_key = self._match(table, nk, mapped)
            matches = {i: m for i, out in enumerate(mapped)
                       if (m := by_key.get(_nk_value(nk, out))) is not None}
        elif table in self.content_matched:
            matches = self._match_content(table, mapped)
        else:
            matches = {}
        taken = self._taken(table, pk, [tuple(out[c] for c in pk)
                                        for i, out in enumerate(mapped) if i not in matches])
        inserts, updates, fresh = [], [], []
        counts = self._count(table)
        for i, out in enumerate(mapped):
            source_key = tuple(rows[i][c] for c in pk)
            match = matches.get(i)
            decision = decide(matched=match is not None,
                              id_taken=tuple(out[c] for c in pk) in taken,
                              on_conflict=self.on_conflict)
            if decision is Decision.REFUSE:
                counts.refused += 1
                if not self.dry_run:
                    what = (f"natural key {dict(zip(nk.columns, _nk_value(nk, out), strict=True))}"
                            if nk else "the same content")
                    raise RestoreRefused(
                        f"{table}: a row with {what} already exists in the target (source "
                        f"row {_key_text(pk, source_key)}; --on-conflict fail); choose "
                        "--on-conflict update or --on-conflict skip to use the target's row")
                # the rehearsal goes on as if skipped, so references to it still map
                self.keymap.set(table, source_key, match)
                continue
            if match is not None:
                self.keymap.set(table, source_key, match)
                out.update(zip(pk, match, strict=True))
                counts.remapped += match != source_key
                if decision is Decision.UPDATE and nk:
                    updates.append(out)
                else:  # skip, or an equal row found by content: nothing to change
                    counts.skipped += 1
            elif decision is Decision.INSERT_FRESH:
                if not is_surrogate_key(self._table(table)):
                    raise RestoreRefused(
                        f"{table}: the target already has a row with primary key "
                        f"{_key_text(pk, source_key)}, the key is not generated (so no fresh "
                        "id can be given) and no natural key matched it"
                        + _suggestion(table, self.catalog))
                fresh.append(out)
            else:
                inserts.append((source_key, out))
        with self._explained(table, pk, rows, mapped):
            self._insert(table, [out for _, out in inserts])
        for source_key, out in inserts:
            target_key = tuple(out[c] for c in pk)
            if target_key != source_key or table in self.keymap.tracked:
                self.keymap.set(table, source_key, target_key)
        if fresh:
            # after the rows that keep their ids, so the sequence can be moved past them
            ids = self._fresh_ids(table, pk[0], len(fresh))
            for out, new_id in zip(fresh, ids, strict=True):
                source_id = out[pk[0]]
                out[pk[0]] = new_id
                self.keymap.set(table, (source_id,), (new_id,))
            with self._explained(table, pk, rows, mapped):
                self._insert(table, fresh)
            counts.remapped += len(fresh)
        counts.inserted += len(inserts) + len(fresh)
        with self._explained(table, pk, rows, mapped):
            self._update_many(table, [(tuple(out[c] for c in pk), out) for out in updates],
                              set(pk))
        counts.updated += len(updates)

    @contextmanager
    def _explained(self, table: str, pk: tuple[str, ...], rows: Sequence[Mapping[str, Any]],
                   mapped: Sequence[Mapping[str, Any]]) -> Iterator[None]:
        """A constraint violation while writing, told with what leads somewhere: the
        constraint, PostgreSQL's DETAIL, the source row and a way out."""
        try:
            yield
        except psycopg.errors.IntegrityError as exc:
            raise RestoreRefused(
                violation_message(table, exc, pk, rows, mapped, self.catalog)) from exc

    def _content_query(self, table: str) -> tuple[str, list[str]]:
        """``_match_content``'s statement for ``table``, and the columns it compares."""
        spec = self._table(table)
        pk = spec.primary_key
        cols = [c.name for c in spec.columns if not c.generated
                and not (is_surrogate_key(spec) and c.name in pk)]
        ident = sql.Identifier(spec.schema, spec.name)

        def row_text(alias: str) -> sql.Composable:
            # one text per row: equal texts, equal rows (and a join the planner can hash)
            return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(
                sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
                for c in cols))

        claimed = sql.SQL("")
        if self.keymap.store.in_database:
            claimed = sql.SQL(
                " WHERE NOT EXISTS (SELECT 1 FROM {keymap} m WHERE m.table_name = {name}"
                " AND m.value = jsonb_build_array({pk}))").format(
                    keymap=self.keymap.store.table, name=sql.Placeholder(),
                    pk=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c))
                                          for c in pk))
        query = sql.SQL(
            "SELECT e.i, {tpk} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(doc, i)"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, e.doc) AS r"
            " JOIN {table} AS t ON {t_text} = {r_text}{claimed} ORDER BY e.i, {tpk}").format(
                tpk=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in pk),
                table=ident, t_text=row_text("t"), r_text=row_text("r"), claimed=claimed)
        return query.as_string(self.conn), cols

    def _match_content(self, table: str, rows: Sequence[Mapping[str, Any]]
                       ) -> dict[int, tuple[Any, ...]]:
        """Row index -> target primary key of an equal row (every column but a surrogate
        key, foreign keys already remapped), as a multiset: each target row matches at
        most one source row, and rows an earlier restore or batch claimed match none."""
        spec = self._table(table)
        pk = spec.primary_key
        if not pk:
            return {}
        self.keymap.store.flush()
        key = ("content", table)
        if key not in self._queries:  # composed once per table, run once per batch
            self._queries[key] = self._content_query(table)  # type: ignore[assignment]
        query, cols = self._queries[key]  # type: ignore[misc]
        document = json.dumps([{c: _json_value(r.get(c)) for c in cols} for r in rows])
        found: dict[int, list[tuple[Any, ...]]] = {}
        params = (document, table) if self.keymap.store.in_database else (document,)
        for r in self.conn.execute(query, params).fetchall():
            found.setdefault(r[0] - 1, []).append(tuple(r[1:]))
        matches: dict[int, tuple[Any, ...]] = {}
        used: set[tuple[Any, ...]] = set()
        for i in sorted(found):
            choice = next((k for k in found[i] if k not in used), None)
            if choice is not None:
                used.add(choice)
                matches[i] = choice
        return matches

    def defer(self, table: str, rows: Sequence[Mapping[str, Any]], deferred: frozenset[str]
              ) -> None:
        """Remember the deferred foreign keys of ``rows`` for ``apply_fixups``."""
        if not deferred:
            return
        pk = self._table(table).primary_key
        for fk in self.remapper.graph.foreign_keys.get(table, ()):
            if fk.name in deferred:
                for row in rows:
                    if (value := fk.value_of(row)) is not None:
                        self.fixups.append(Fixup(table, tuple(row[c] for c in pk), fk.name,
                                                 value))
                        if len(self.fixups) >= FIXUP_BATCH and self.keymap.store.in_database:
                            self._spill_fixups()

    @property
    def pending_fixups(self) -> bool:
        return bool(self.fixups or self._spilled)

    def _match(self, table: str, nk: NaturalKey, rows: Sequence[dict[str, Any]]
               ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """Natural key -> target primary key for the rows that exist in the target."""
        spec = self._table(table)
        pk = spec.primary_key
        values = list({_nk_value(nk, r) for r in rows})
        if not values:
            return {}
        n = len(nk.columns)
        found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for r in self._lookup(table, tuple(nk.columns), tuple(nk.columns) + pk, values):
            key = tuple(r[:n])
            if key in found:
                raise RestoreError(f"{table}: natural key {nk.columns} is not unique in the "
                                   f"target ({key} matches several rows); configure another "
                                   "one under [natural_keys]")
            found[key] = tuple(r[n:])
        # values typed as text in the journal (enums...) come back as str too: same keys
        return found

    def _taken(self, table: str, pk: tuple[str, ...], keys: list[tuple[Any, ...]]
               ) -> set[tuple[Any, ...]]:
        if not keys or not pk:
            return set()
        return {tuple(r) for r in self._lookup(table, pk, pk, keys)}

    def _lookup(self, table: str, cols: tuple[str, ...], select: tuple[str, ...],
                keys: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The target rows (``select`` columns) whose ``cols`` equal one of ``keys``.

        One short prepared query, ``col = ANY($n)`` per column, each array sent as an
        untyped literal so PostgreSQL reads it as the column's own type (an enum, a uuid,
        a varchar); with several columns that selects a superset, narrowed here to the
        exact tuples. Keys holding other values than ints and strings use a row-wise IN
        list (exact, but a long query to compose, send and plan).
        """
        spec = self._table(table)
        ident = sql.Identifier(spec.schema, spec.name)
        sel = sql.SQL(", ").join(sql.Identifier(c) for c in select)
        literals = _array_literals(keys, len(cols))
        if literals is None:
            one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(cols)))
            query = sql.SQL("SELECT {sel} FROM {table} WHERE ({cols}) IN ({values})").format(
                sel=sel, table=ident, cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
                values=sql.SQL(", ").join([one] * len(keys)))
            return self.conn.execute(query, [v for k in keys for v in k]).fetchall()
        key = ("lookup", table, cols, select)
        if (query := self._queries.get(key)) is None:
            query = self._queries[key] = sql.SQL("SELECT {sel} FROM {table} WHERE {cond}").format(
                sel=sel, table=ident, cond=sql.SQL(" AND ").join(
                    sql.SQL("{} = ANY(%s)").format(sql.Identifier(c)) for c in cols)
            ).as_string(self.conn)
        rows = self.conn.execute(query, literals).fetchall()  # type: ignore[arg-type]
        if len(cols) == 1:
            return rows
        wanted = set(keys)
        where = [select.index(c) for c in cols]
        return [r for r in rows if tuple(r[i] for i in where) in wanted]

    def _fresh_ids(self, table: str, column: str, n: int) -> list[Any]:
        """``n`` new ids from the column's sequence, first moved past every id in use (rows
        inserted with their source ids did not advance it)."""
        spec = self._table(table)
        ident = sql.Identifier(spec.schema, spec.name).as_string(self.conn)
        self.conn.execute(sql.SQL(
            "SELECT setval(s, greatest(m, (SELECT last_value FROM pg_sequences WHERE "
            "format('%%I.%%I', schemaname, sequencename)::regclass = s::regclass)))"
            " FROM (SELECT pg_get_serial_sequence(%s, %s) AS s, max({col}) AS m FROM {table}) x"
            " WHERE m IS NOT NULL AND s IS NOT NULL").format(
                col=sql.Identifier(column), table=sql.Identifier(spec.schema, spec.name)),
            (ident, column))
        rows = self.conn.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            (ident, column, n)).fetchall()
        if rows and rows[0][0] is None:
            raise RestoreError(f"{table}.{column} has no sequence in the target: "
                               "cannot give fresh ids")
        return [r[0] for r in rows]

    def _columns(self, table: str) -> list[str]:
        key = ("columns", table)
        if key not in self._queries:
            self._queries[key] = [c.name for c in self._table(table).columns  # type: ignore[assignment]
                                  if not c.generated]
        return self._queries[key]  # type: ignore[return-value]

    def _insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        cols = self._columns(table)
        key = ("insert", table)
        if (query := self._queries.get(key)) is None:
            spec = self._table(table)
            always = any(c.identity == "a" for c in spec.columns)
            query = self._queries[key] = sql.SQL("INSERT INTO {} ({}) {}VALUES ({})").format(
                sql.Identifier(spec.schema, spec.name),
                sql.SQL(", ").join(sql.Identifier(c) for c in cols),
                sql.SQL("OVERRIDING SYSTEM VALUE " if always else ""),
                sql.SQL(", ").join(sql.Placeholder() * len(cols))).as_string(self.conn)
        if len(rows) == 1:  # replay: one row at a time, pipelined
            self.cursor.execute(query, [rows[0].get(c) for c in cols])  # type: ignore[arg-type]
            return
        if len(rows) >= COPY_ROWS and self.pipeline is None:  # COPY cannot be pipelined
            # what the INSERTs would write (COPY writes identity columns' values as given,
            # as OVERRIDING SYSTEM VALUE does), at a fraction of the per-row cost
            spec = self._table(table)
            copy_query = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(spec.schema, spec.name),
                sql.SQL(", ").join(sql.Identifier(c) for c in cols))
            with self.cursor.copy(copy_query) as copy:
                for r in rows:
                    copy.write_row([r.get(c) for c in cols])
            return
        self.cursor.executemany(query, [[r.get(c) for c in cols] for r in rows])  # type: ignore[arg-type]

    # -- updates and deletes ---------------------------------------------------------------

    def _update_query(self, table: str, cols: tuple[str, ...]) -> str:
        key = ("update", table, cols)
        if (query := self._queries.get(key)) is None:
            spec = self._table(table)
            query = self._queries[key] = sql.SQL("UPDATE {} SET {} WHERE {}").format(
                sql.Identifier(spec.schema, spec.name),
                sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in cols),
                sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c))
                                      for c in spec.primary_key)).as_string(self.conn)
        return query

    def _always_identity(self, table: str) -> set[str]:
        """GENERATED ALWAYS identity columns: PostgreSQL lets no UPDATE set them (so no
        source update changed them either). Worked out once per table: replay asks per
        event."""
        key = ("always identity", table)
        if key not in self._queries:
            self._queries[key] = {c.name for c in self._table(table).columns  # type: ignore[assignment]
                                  if c.identity == "a"}
        return self._queries[key]  # type: ignore[return-value]

    def _update(self, table: str, target_key: tuple[Any, ...], values: Mapping[str, Any],
                skip: set[str]) -> None:
        skip = skip | self._always_identity(table)
        cols = tuple(c for c in self._columns(table) if c in values and c not in skip)
        if not cols:
            return
        # no rowcount read back: that would end the pipeline's batching
        self.cursor.execute(self._update_query(table, cols),
                            [values[c] for c in cols] + list(target_key))  # type: ignore[arg-type]

    def _update_many(self, table: str, items: Sequence[tuple[tuple[Any, ...],
                                                              Mapping[str, Any]]],
                     skip: set[str]) -> None:
        """``_update`` for many rows: one executemany (one round trip) per column set.
        Each row is updated once per call, so the order between rows does not matter."""
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        columns = self._columns(table)
        skip = skip | self._always_identity(table)
        for target_key, values in items:
            cols = tuple(c for c in columns if c in values and c not in skip)
            if cols:
                groups.setdefault(cols, []).append([values[c] for c in cols]
                                                   + list(target_key))
        for cols, params in groups.items():
            if len(params) == 1:
                self.cursor.execute(self._update_query(table, cols), params[0])
            else:
                self.cursor.executemany(self._update_query(table, cols), params)

    def update_row(self, table: str, before: Mapping[str, Any] | None, after: dict[str, Any],
                   unchanged: Sequence[str] = ()) -> None:
        """Apply a source update: ``after`` minus the columns PostgreSQL did not send."""
        spec = self._table(table)
        pk = spec.primary_key
        if not pk:
            self._update_keyless(table, before, after, unchanged)
            return
        self.remapper.observe(table, after)
        source_key = tuple((before if before and all(c in before for c in pk) else after)[c]
                           for c in pk)
        if self.remap:
            self.remapper.prefetch(table, [after], keys=[(table, source_key)])
        target_key = self.keymap.target_of(table, source_key) if self.remap else source_key
        values = self.remapper.remap(table, after) if self.remap else dict(after)
        for c in unchanged:
            values.pop(c, None)
        new_key = tuple(after[c] for c in pk)
        skip = set(pk) if (self.remap or new_key == source_key) else set()
        self._update(table, target_key, values, skip)
        self._count(table).updated += 1

    def delete_row(self, table: str, before: Mapping[str, Any]) -> None:
        spec = self._table(table)
        pk = spec.primary_key
        if not pk:
            self._delete_keyless(table, before)
            return
        source_key = tuple(before[c] for c in pk)
        target_key = self.keymap.target_of(table, source_key) if self.remap else source_key
        key = ("delete", table)
        if (query := self._queries.get(key)) is None:
            query = self._queries[key] = sql.SQL("DELETE FROM {} WHERE {}").format(
                sql.Identifier(spec.schema, spec.name),
                sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c))
                                      for c in pk)).as_string(self.conn)
        self.cursor.execute(query, list(target_key))  # type: ignore[arg-type]
        self.keymap.forget(table, source_key)
        self.remapper.forget(table, before)
        self._count(table).deleted += 1

    # -- tables without a primary key (REPLICA IDENTITY FULL) ------------------------------

    def _update_keyless(self, table: str, before: Mapping[str, Any] | None,
                        after: dict[str, Any], unchanged: Sequence[str]) -> None:
        """One row equal to ``before`` (of possibly several equal ones) becomes ``after``;
        unchanged TOAST columns keep their value (the whole old row came with the event)."""
        old = self._whole_old_row(table, before, "update")
        self.remapper.observe(table, after)
        values = self.remapper.remap(table, after) if self.remap else dict(after)
        for c in unchanged:
            values.pop(c, None)
        cols = tuple(c for c in self._columns(table) if c in values)
        key = ("update keyless", table, cols)
        if (query := self._queries.get(key)) is None:
            spec = self._table(table)
            query = self._queries[key] = _exactly_one(table, "update", sql.SQL(
                "UPDATE {table} AS t SET {sets} FROM ({one}) AS x "
                "WHERE t.tableoid = x.rel AND t.ctid = x.tid RETURNING 1").format(
                    table=sql.Identifier(spec.schema, spec.name),
                    sets=sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c))
                                            for c in cols),
                    one=self._one_equal_row(table))).as_string(self.conn)
        self._execute_one(table, "update", query,
                          [values[c] for c in cols] + self._match_values(table, old))
        self._count(table).updated += 1

    def _delete_keyless(self, table: str, before: Mapping[str, Any]) -> None:
        """Delete one row equal to ``before``, however many equal rows there are."""
        old = self._whole_old_row(table, before, "delete")
        key = ("delete keyless", table)
        if (query := self._queries.get(key)) is None:
            spec = self._table(table)
            query = self._queries[key] = _exactly_one(table, "delete", sql.SQL(
                "DELETE FROM {table} AS t USING ({one}) AS x "
                "WHERE t.tableoid = x.rel AND t.ctid = x.tid RETURNING 1").format(
                    table=sql.Identifier(spec.schema, spec.name),
                    one=self._one_equal_row(table))).as_string(self.conn)
        self._execute_one(table, "delete", query, self._match_values(table, old))
        self.remapper.forget(table, before)
        self._count(table).deleted += 1

    def _whole_old_row(self, table: str, before: Mapping[str, Any] | None,
                       what: str) -> dict[str, Any]:
        cols = self._columns(table)
        if not self._text_formats_set:
            # text-kept values were printed in capture's session formats: compare in them
            self.cursor.execute("SELECT " + ", ".join(
                f"set_config('{name}', '{value}', true)" for name, value in _TEXT_FORMATS))
            self._text_formats_set = True
        if before is None or any(c not in before for c in cols):
            raise RestoreError(f"{table} has no primary key and the journal's {what} does not "
                               "carry the whole old row (the source table was not REPLICA "
                               "IDENTITY FULL): the row to change is unknown")
        return self.remapper.remap(table, dict(before)) if self.remap else dict(before)

    def _one_equal_row(self, table: str) -> sql.Composable:
        """``SELECT`` of the (tableoid, ctid) of one row whose every column equals the
        parameters: ``IS NOT DISTINCT FROM`` (NULL equals NULL). Values the journal keeps
        as PostgreSQL's text (intervals, ranges, user types…), floats, numerics and json
        are compared as text, so 1.0 and 1.00, or -0 and 0, are different rows (and json,
        which has no equality, can be compared at all). A partitioned table's ctids
        repeat across partitions: tableoid tells them apart."""
        spec = self._table(table)
        conditions = []
        for c in spec.columns:
            if c.generated:
                continue
            ident = sql.Identifier(c.name)
            oid = c.type_oid
            if oid in _EXACT_EQUALITY:
                conditions.append(sql.SQL("{} IS NOT DISTINCT FROM %s").format(ident))
            elif oid in _TEXT_THROUGH:
                conditions.append(sql.SQL("{}::text IS NOT DISTINCT FROM (%s::{})::text").format(
                    ident, sql.SQL(_TEXT_THROUGH[oid])))
            else:
                conditions.append(sql.SQL("{}::text IS NOT DISTINCT FROM %s::text").format(ident))
        return sql.SQL("SELECT tableoid AS rel, ctid AS tid FROM {} WHERE {} LIMIT 1").format(
            sql.Identifier(spec.schema, spec.name),
            sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"))

    def _match_values(self, table: str, row: Mapping[str, Any]) -> list[Any]:
        return [row.get(c) for c in self._columns(table)]

    def _execute_one(self, table: str, what: str, query: str, params: list[Any]) -> None:
        self.cursor.execute(query, params)  # type: ignore[arg-type]

    def truncate(self, tables: Sequence[str]) -> None:
        if self.remap:
            raise RestoreError(f"the journal truncates {', '.join(tables)}: a truncate cannot "
                               "be replayed into a populated target without losing its own "
                               "rows; restore into an empty database")
        self.conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(
            sql.Identifier(self._table(t).schema, self._table(t).name) for t in tables)))

    def end_transaction(self, events: int) -> None:
        """After each replayed source transaction: sync the pipeline now and then, so
        its queued results do not pile up in memory."""
        self._unsynced += events
        if self.pipeline is not None and self._unsynced >= 2000:
            self.pipeline.sync()
            self._unsynced = 0

    def apply_fixups(self) -> None:
        """Second pass for foreign keys deferred to break cycles."""
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
            self._update_many(table, items, set())
        self.fixups.clear()

    def apply_generic_fixups(self, final: bool) -> None:
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
            self._update_many(table, items, set())
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
        with self.cursor.copy(copy_query) as copy:
            for f in self.fixups:
                self._fixup_seq += 1
                copy.write_row((self._fixup_seq, f.table, f.fk_name, encode(f.source_key),
                                encode(f.source_value)))
                self._spilled.add((f.table, f.fk_name))
        self.fixups.clear()

    def _apply_spilled_fixups(self) -> None:
        """``apply_fixups`` for fixups in the temporary table: per foreign key, one
        UPDATE joined with the key map there. Each key goes through the table's own row
        type (``jsonb_populate_record``), so it takes the column's type as the
        one-row-at-a-time UPDATE's parameters do; of several fixups of one row, the
        last wins, as it does there."""
        self.keymap.store.flush()
        graph = self.remapper.graph
        fixups = sql.Identifier("pg_temp", FIXUPS_TABLE)
        for table, fk_name in sorted(self._spilled):
            spec = self._table(table)
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


def _exactly_one(table: str, what: str, statement: sql.Composable) -> sql.Composable:
    """``statement`` (``… RETURNING 1``) made to fail, naming the table, when it changed no
    row: a row the journal changes but the target lacks means the two differ. Checked by
    the server, so it holds inside a pipeline, where no row count is read back."""
    message = (f"no row of {table} (no primary key) equals the old row of the journal's "
               f"{what}: the target differs from the journal")
    # the error text depends on count(*), so the planner cannot fold it into an error
    return sql.SQL("WITH changed AS ({}) SELECT CASE WHEN count(*) = 1 THEN 1 "
                   "ELSE ({} || left(count(*)::text, 0))::int END FROM changed").format(
                       statement, sql.Literal(message))


def _array_literals(keys: Sequence[tuple[Any, ...]], width: int) -> list[str] | None:
    """Per key column, a PostgreSQL array literal of its distinct values (keys with a NULL
    match nothing and are left out); None when a value is neither an int nor a str."""
    columns: list[set[str]] = [set() for _ in range(width)]
    for key in keys:
        if None in key:
            continue
        for i, v in enumerate(key):
            kind = type(v)
            if kind is int:
                columns[i].add(str(v))
            elif kind is str:
                columns[i].add('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
            else:
                return None
    return ["{" + ",".join(sorted(c)) + "}" for c in columns]


def _nk_value(nk: NaturalKey | None, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in nk.columns) if nk else ()


def _json_value(value: Any) -> Any:
    """A journal value as JSON that PostgreSQL's input functions read back as the same
    value (``jsonb_populate_record`` parses each field with the column's type)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return str(value)  # Decimal, UUID, text-form values


def _key_text(columns: Sequence[str], key: Sequence[Any]) -> str:
    return ", ".join(f"{c}={v!r}" for c, v in zip(columns, key, strict=False)) or "(no key)"


def _suggestion(table: str, catalog: Catalog, columns: Sequence[str] = ()) -> str:
    """A journal.toml entry that makes the row match instead of collide, when there is one
    that works: the violated key's own columns, or an identifier-like column."""
    spec = catalog.tables.get(table)
    known = set(spec.column_names) if spec is not None else set()
    if columns and set(columns) <= known:
        cols = ", ".join(f'"{c}"' for c in columns)
        return (f"; to match such rows by these columns instead, add to journal.toml:\n"
                f'[natural_keys]\n"{table}" = [{cols}]')
    line = config_line(table, catalog)
    return f"; to match such rows by a natural key, add to journal.toml:\n{line}" if line else ""


_DETAIL_KEY = re.compile(r"^Key \((?P<cols>.+?)\)=\((?P<values>.*)\)")


def violation_message(table: str, exc: psycopg.Error, pk: Sequence[str],
                      rows: Sequence[Mapping[str, Any]], mapped: Sequence[Mapping[str, Any]],
                      catalog: Catalog) -> str:
    """``table``: what PostgreSQL refused (constraint and DETAIL), the source row that
    caused it, and what avoids it."""
    diag = exc.diag
    primary = (diag.message_primary or str(exc)).strip()
    detail = (diag.message_detail or "").strip()
    text = f"{table}: {primary}"
    if diag.constraint_name:
        text += f" (constraint {diag.constraint_name})"
    if detail:
        text += f"; DETAIL: {detail}"
    columns: list[str] = []
    m = _DETAIL_KEY.match(detail)
    if m:
        columns = [c.strip().strip('"') for c in m.group("cols").split(",")]
        values = [v.strip() for v in m.group("values").split(",")]
        for source, out in zip(rows, mapped, strict=False):
            if len(values) == len(columns) and all(
                    str(out.get(c)) == v for c, v in zip(columns, values, strict=True)):
                text += f"; source row {_key_text(pk, [source.get(c) for c in pk])}"
                break
    if isinstance(exc, psycopg.errors.UniqueViolation):
        text += _suggestion(table, catalog, columns)
        text += " (then --on-conflict update or skip decides what happens to the match)"
    return text
