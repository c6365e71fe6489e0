"""Writing rows into the target database, one batch or one event at a time.

Two modes. *Identity* (the target was empty, ids are the source's): rows are written as
they come. *Remap* (a populated target): foreign keys are rewritten through the key map,
rows are matched by natural key with one query per batch, and each row is inserted,
inserted under a fresh id, updated or skipped as ``restorer.remap.decide`` says.
What the target already holds is asked through ``restorer.target_lookup``; keys set after
their row (cycles, generic references) are ``restorer.fixups``'.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import postgres, sql

from journal.catalog import Catalog, TableEntry, oid_of
from journal.errors import RestoreError, RestoreRefused
from restorer.fixups import Fixups
from restorer.natural_keys import NaturalKey, is_surrogate_key
from restorer.refusals import no_fresh_id, refused_match, violation_message
from restorer.remap import Decision, KeyMap, RowRemapper, decide
from restorer.report import TableCounts
from restorer.target_lookup import TargetLookup, nk_value

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
    pipeline: Any = None  # psycopg Pipeline while replaying identity writes
    _unsynced: int = 0
    # statements composed once per table (and column set), reused for every row
    _queries: dict[tuple[Any, ...], str] = field(default_factory=dict)
    _cur: psycopg.Cursor[Any] | None = None
    _text_formats_set: bool = False
    lookup: TargetLookup = field(init=False)
    fixups: Fixups = field(init=False)

    def __post_init__(self) -> None:
        self.lookup = TargetLookup(self.conn, self.catalog, self.remapper.keymap)
        self.fixups = Fixups(self.conn, self.remapper, self._table, self._update_many,
                             strict=self.strict)

    @property
    def dangling(self) -> dict[str, int]:
        """Per "table.column": generic references left as they were (their object is in
        no table of the restore, or no longer in the source)."""
        return self.fixups.dangling

    @property
    def pending_fixups(self) -> bool:
        return self.fixups.pending

    def defer(self, table: str, rows: Sequence[Mapping[str, Any]], deferred: frozenset[str]
              ) -> None:
        self.fixups.defer(table, rows, deferred)

    def apply_fixups(self) -> None:
        """Second pass for foreign keys deferred to break cycles."""
        self.fixups.apply()

    def apply_generic_fixups(self, final: bool) -> None:
        self.fixups.apply_generic(final)

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
        self.lookup.schema_changed(catalog)

    def _table(self, name: str) -> TableEntry:
        return self.catalog.tables[name]

    def counts_of(self, name: str) -> TableCounts:
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
            self.counts_of(table).inserted += len(rows)
            return
        self.remapper.prefetch(table, rows, deferred)
        mapped = [self.remapper.remap(table, row, deferred) for row in rows]
        nk = self.keys.get(table)
        if nk:
            by_key = self.lookup.match(table, nk, mapped)
            matches = {i: m for i, out in enumerate(mapped)
                       if (m := by_key.get(nk_value(nk, out))) is not None}
        elif table in self.content_matched:
            matches = self.lookup.match_content(table, mapped)
        else:
            matches = {}
        taken = self.lookup.taken(table, pk, [tuple(out[c] for c in pk)
                                        for i, out in enumerate(mapped) if i not in matches])
        inserts, updates, fresh = [], [], []
        unwritten: set[int] = set()  # skipped or refused: their deferred keys stay too
        counts = self.counts_of(table)
        for i, out in enumerate(mapped):
            source_key = tuple(rows[i][c] for c in pk)
            match = matches.get(i)
            decision = decide(matched=match is not None,
                              id_taken=tuple(out[c] for c in pk) in taken,
                              on_conflict=self.on_conflict)
            if decision is Decision.REFUSE:
                counts.refused += 1
                if not self.dry_run:
                    what = (f"natural key {dict(zip(nk.columns, nk_value(nk, out), strict=True))}"
                            if nk else "the same content")
                    raise RestoreRefused(refused_match(table, what, pk, source_key))
                # the rehearsal goes on as if skipped, so references to it still map
                self.keymap.set(table, source_key, match)
                unwritten.add(i)
                continue
            if match is not None:
                self.keymap.set(table, source_key, match)
                out.update(zip(pk, match, strict=True))
                counts.remapped += match != source_key
                if decision is Decision.UPDATE and nk:
                    updates.append(out)
                else:  # skip, or an equal row found by content: nothing to change
                    counts.skipped += 1
                    unwritten.add(i)
            elif decision is Decision.INSERT_FRESH:
                if not is_surrogate_key(self._table(table)):
                    raise RestoreRefused(no_fresh_id(table, pk, source_key, self.catalog))
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
            ids = self.lookup.fresh_ids(table, pk[0], len(fresh))
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
        self.defer(table, [row for i, row in enumerate(rows) if i not in unwritten], deferred)
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

    def columns_of(self, table: str) -> list[str]:
        key = ("columns", table)
        if key not in self._queries:
            self._queries[key] = [c.name for c in self._table(table).columns  # type: ignore[assignment]
                                  if not c.generated]
        return self._queries[key]  # type: ignore[return-value]

    def _insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        cols = self.columns_of(table)
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
        cols = tuple(c for c in self.columns_of(table) if c in values and c not in skip)
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
        columns = self.columns_of(table)
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
        self.counts_of(table).updated += 1

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
        self.counts_of(table).deleted += 1

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
        cols = tuple(c for c in self.columns_of(table) if c in values)
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
        self.counts_of(table).updated += 1

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
        self.counts_of(table).deleted += 1

    def _whole_old_row(self, table: str, before: Mapping[str, Any] | None,
                       what: str) -> dict[str, Any]:
        cols = self.columns_of(table)
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
        return [row.get(c) for c in self.columns_of(table)]

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
