"""What the target already holds, asked in SQL: rows by natural key, rows by content,
primary keys in use, and fresh ids from a column's sequence.

One short query per batch, composed once per table and kept until the schema changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from itertools import count
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from journal.catalog import Catalog
from journal.errors import RestoreError
from restorer.natural_keys import NaturalKey, is_surrogate_key
from restorer.remap import KeyMap

_SNAPSHOTS = count()  # names of the temporary tables of candidate rows, unique per session


class TargetLookup:
    """The look-ups of a remapping restore, over one target connection."""

    def __init__(self, conn: psycopg.Connection[Any], catalog: Catalog, keymap: KeyMap) -> None:
        self.conn = conn
        self.catalog = catalog
        self.keymap = keymap
        self._queries: dict[tuple[Any, ...], Any] = {}

    def schema_changed(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._queries.clear()

    def _content_query(self, table: str) -> tuple[str, list[str]]:
        """``match_content``'s statement for ``table``, and the columns it compares.

        With the key map in the target, every row this restore (or an earlier one) wrote
        is claimed there, so only the target's other rows can match: those are copied
        once, as (hash of the row's text, primary key), into an indexed temporary table,
        and each batch looks its rows up there, then checks each candidate against the
        table itself (the row may have changed or gone since). Without that, a batch
        would compute the text of every row of a table the restore keeps growing."""
        spec = self.catalog.tables[table]
        pk = spec.primary_key
        cols = [c.name for c in spec.columns if not c.generated
                and not (is_surrogate_key(spec) and c.name in pk)]
        ident = sql.Identifier(spec.schema, spec.name)

        def row_text(alias: str) -> sql.Composable:
            # one text per row: equal texts, equal rows (and a join the planner can hash)
            return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(
                sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
                for c in cols))

        tpk = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in pk)
        rows = sql.SQL("jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(doc, i)"
                       " CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, e.doc) AS r"
                       ).format(table=ident)
        if not self.keymap.store.in_database:
            return sql.SQL("SELECT e.i, {tpk} FROM {rows} JOIN {table} AS t"
                           " ON {t_text} = {r_text} ORDER BY e.i, {tpk}").format(
                tpk=tpk, rows=rows, table=ident, t_text=row_text("t"),
                r_text=row_text("r")).as_string(self.conn), cols
        claimed = sql.SQL(
            "NOT EXISTS (SELECT 1 FROM {keymap} m WHERE m.table_name = %s"
            " AND m.value = jsonb_build_array({tpk}))").format(
                keymap=self.keymap.store.table, tpk=tpk)
        candidates = sql.Identifier("pg_temp", f"journal_restore_content_{next(_SNAPSHOTS)}")
        keys = [sql.Identifier(f"k{i}") for i in range(len(pk))]

        def hashed(text: sql.Composable) -> sql.Composable:
            # the text may be longer than an index entry can be: its 64-bit hash is not
            return sql.SQL('hashtextextended({} COLLATE "C", 0)').format(text)

        self.conn.execute(sql.SQL(
            "CREATE TEMP TABLE {candidates} ON COMMIT DROP AS SELECT {hash} AS row_hash, {keys}"
            " FROM {table} AS t WHERE {claimed}").format(
                candidates=candidates, hash=hashed(row_text("t")), table=ident,
                claimed=claimed, keys=sql.SQL(", ").join(
                    sql.SQL("t.{} AS {}").format(sql.Identifier(c), k)
                    for c, k in zip(pk, keys, strict=True))), (table,))
        self.conn.execute(sql.SQL("CREATE INDEX ON {} (row_hash)").format(candidates))
        self.conn.execute(sql.SQL("ANALYZE {}").format(candidates))
        query = sql.SQL(
            "SELECT e.i, {tpk} FROM {rows} JOIN {candidates} AS c ON c.row_hash = {r_hash}"
            " JOIN {table} AS t ON {same_key} AND {t_text} = {r_text}"
            " WHERE {claimed} ORDER BY e.i, {tpk}").format(
                tpk=tpk, rows=rows, candidates=candidates, r_hash=hashed(row_text("r")),
                table=ident, same_key=sql.SQL(" AND ").join(
                    sql.SQL("t.{} = c.{}").format(sql.Identifier(c), k)
                    for c, k in zip(pk, keys, strict=True)),
                t_text=row_text("t"), r_text=row_text("r"), claimed=claimed)
        return query.as_string(self.conn), cols

    def match_content(self, table: str, rows: Sequence[Mapping[str, Any]]
                       ) -> dict[int, tuple[Any, ...]]:
        """Row index -> target primary key of an equal row (every column but a surrogate
        key, foreign keys already remapped), as a multiset: each target row matches at
        most one source row, and rows an earlier restore or batch claimed match none."""
        spec = self.catalog.tables[table]
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

    def match(self, table: str, nk: NaturalKey, rows: Sequence[dict[str, Any]]
               ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """Natural key -> target primary key for the rows that exist in the target."""
        spec = self.catalog.tables[table]
        pk = spec.primary_key
        values = list({nk_value(nk, r) for r in rows})
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

    def taken(self, table: str, pk: tuple[str, ...], keys: list[tuple[Any, ...]]
               ) -> set[tuple[Any, ...]]:
        if not keys or not pk:
            return set()
        return {tuple(r) for r in self._lookup(table, pk, pk, keys)}

    def _lookup(self, table: str, cols: tuple[str, ...], select: tuple[str, ...],
                keys: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The target rows (``select`` columns) whose ``cols`` equal one of ``keys``.

        One short query, ``col = ANY($n)`` per column, each array sent as an
        untyped literal so PostgreSQL reads it as the column's own type (an enum, a uuid,
        a varchar); with several columns that selects a superset, narrowed here to the
        exact tuples. Keys holding other values than ints, strings and uuids use a row-wise IN
        list (exact, but a long query to compose, send and plan).
        """
        spec = self.catalog.tables[table]
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
        # never prepared: a generic plan knows nothing of the arrays' sizes, and picked for
        # two columns (document_id, tag_id) it scans ten times what the custom plan does
        rows = self.conn.execute(query, literals,  # type: ignore[arg-type]
                                 prepare=False).fetchall()
        if len(cols) == 1:
            return rows
        wanted = set(keys)
        where = [select.index(c) for c in cols]
        return [r for r in rows if tuple(r[i] for i in where) in wanted]

    def fresh_ids(self, table: str, column: str, n: int) -> list[Any]:
        """``n`` new ids from the column's sequence, first moved past every id in use (rows
        inserted with their source ids did not advance it)."""
        spec = self.catalog.tables[table]
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


def nk_value(nk: NaturalKey | None, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in nk.columns) if nk else ()


def _array_literals(keys: Sequence[tuple[Any, ...]], width: int) -> list[str] | None:
    """Per key column, a PostgreSQL array literal of its distinct values (keys with a NULL
    match nothing and are left out); None when a value is not an int, a str or a uuid."""
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
            elif kind is UUID:  # its text is canonical, and read back as the same uuid
                columns[i].add(str(v))
            else:
                return None
    return ["{" + ",".join(sorted(c)) + "}" for c in columns]


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
