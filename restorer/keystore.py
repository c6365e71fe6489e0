"""Per-table maps of source keys, kept in the target database rather than in memory.

A restore into a populated database remembers, for the rows it loads, things that grow
with the data: the source ids that have another id in the target (the key map), and the
source rows that exist (what generic foreign keys may point at). Held in Python that is a
few hundred bytes per row. A ``KeyStore`` with a connection keeps them in a table of the
restore's own transaction: a temporary one (dropped at commit), or with ``schema`` a
table the caller keeps by renaming it before commit (a rollback takes either away), with a
bounded cache and a bounded buffer of unwritten entries in front, so its memory depends
on batch sizes, not table sizes. Callers ``prefetch`` the keys a batch will ask for: one
query per batch. A key asked for without that is still answered, by a query of its own.

In the table a key is its JSON as PostgreSQL prints it (``jsonb::text``, one canonical
form whoever wrote it) under the "C" collation: a text index is several times cheaper
to maintain than a jsonb one. ``moved`` says the entry's value differs from its key; every
writer sets it (a generated column would print every value again as text).

Without a connection it is a plain dict (unit tests, small in-memory uses).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

CACHE_SIZE = 60_000  # answers kept in memory (a batch's look-ups must fit with room to spare)
FLUSH_AT = 5_000  # unwritten entries written out in one statement
# entries written since the planner last counted them, past which it counts them again:
# autovacuum never sees the map (a temporary table, or one not committed yet), and a join
# planned for a map it believes empty probes it row by row, at random
ANALYZE_AT = 10_000

Key = tuple[Any, ...]
Decode = Callable[[str, Any], Any]

_ABSENT = object()  # cached or buffered "no entry"


INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})  # as format_type spells them


def integer_key(types: Sequence[str]) -> bool:
    """Whether a key of columns of ``types`` is one integer (its text is its value's)."""
    return len(types) == 1 and types[0] in INTEGER_TYPES


def key_text(values: Sequence[sql.Composable], integer: bool = False) -> sql.Composable:
    """SQL for the key map's text of a key of ``values``: what
    ``jsonb_build_array(...)::text`` prints; for one ``integer`` the same text
    concatenated, which costs a fraction of building and printing the jsonb (a NULL gives
    NULL, which matches no entry, as ``[null]`` does not)."""
    if integer and len(values) == 1:
        return sql.SQL("('[' || {} || ']')").format(values[0])
    return sql.SQL("jsonb_build_array({})::text").format(sql.SQL(", ").join(values))


def encode(value: Any) -> str:
    """A key or value as JSON (tuples as arrays, uuids and other values as their text):
    the representation journal_restore_keymap has always used."""
    return json.dumps(value, default=str)


class KeyStore:
    """``(table, source key) -> value``; absent entries read as the caller's default."""

    def __init__(self, conn: psycopg.Connection[Any] | None = None, name: str = "",
                 decode: Decode | None = None, cache_size: int = CACHE_SIZE,
                 flush_at: int = FLUSH_AT, schema: str | None = None) -> None:
        self.conn = conn
        self._decode = decode or (lambda table, value: value)
        self._cache_size, self._flush_at = cache_size, flush_at
        # no connection: every entry; with one: entries not yet written (_ABSENT: delete)
        self._memory: dict[tuple[str, Key], Any] = {}
        self._cache: OrderedDict[tuple[str, Key], Any] = OrderedDict()
        # tables that may have an entry: a look-up into any other needs no query
        self._tables: set[str] = set()
        self._analyzed = self._unanalyzed = 0  # entries written, as the planner knows them
        self.schema, self.name = schema, name
        self.table = sql.Identifier(schema or "pg_temp", name)
        if conn is not None:
            conn.execute(sql.SQL(
                "CREATE {temp}TABLE {table} (table_name text COLLATE \"C\" NOT NULL,"
                " key text COLLATE \"C\" NOT NULL, value jsonb NOT NULL, moved boolean NOT NULL,"
                " PRIMARY KEY (table_name, key)){drop}"
            ).format(table=self.table, temp=sql.SQL("" if schema else "TEMP "),
                     drop=sql.SQL("" if schema else " ON COMMIT DROP")))
            # the entries whose key differs, on their own: a join of many rows against
            # them finds the few that move without probing every entry that maps to itself
            conn.execute(sql.SQL("CREATE INDEX ON {} (table_name, key) WHERE moved").format(
                self.table))

    @property
    def in_database(self) -> bool:
        return self.conn is not None

    def may_have(self, table: str) -> bool:
        """False when ``table`` certainly has no entry (so its look-ups cost nothing)."""
        return self.conn is None or table in self._tables

    def note_tables(self, tables: Iterable[str], rows: int = 0) -> None:
        """Tables that got ``rows`` entries into the table some other way (a copy)."""
        self._tables.update(tables)
        self._wrote(rows)

    def written_in_database(self, table: str, rows: int) -> None:
        """``rows`` entries of ``table`` were written to the table by a statement of the
        caller's: what the cache holds of the table is no longer the answer."""
        self._tables.add(table)
        for k in [k for k in self._cache if k[0] == table]:
            del self._cache[k]
        self._wrote(rows)

    def _wrote(self, rows: int) -> None:
        """Tell the planner of the entries written, each time they double: an estimate
        within a factor of two plans the same joins, and a growing map is sampled a
        logarithmic number of times."""
        self._unanalyzed += rows
        if self.conn is not None and self._unanalyzed >= max(ANALYZE_AT, self._analyzed):
            self.conn.execute(sql.SQL("ANALYZE {}").format(self.table))
            self._analyzed += self._unanalyzed
            self._unanalyzed = 0

    def get(self, table: str, key: Key, default: Any = None) -> Any:
        k = (table, key)
        if self.conn is None:
            return self._memory.get(k, default)
        if table not in self._tables:
            return default
        if k in self._memory:
            value = self._memory[k]
        else:
            if k in self._cache:
                self._cache.move_to_end(k)
            else:
                self.prefetch([k])
            value = self._cache.get(k, _ABSENT)
        return default if value is _ABSENT else value

    def put(self, table: str, key: Key, value: Any) -> None:
        """Set an entry; ``None`` removes it."""
        k = (table, key)
        if self.conn is None:
            if value is None:
                self._memory.pop(k, None)
            else:
                self._memory[k] = value
            return
        if value is None and table not in self._tables:
            return  # nothing was ever stored for the table
        self._tables.add(table)
        self._memory[k] = _ABSENT if value is None else value
        self._cache.pop(k, None)  # the buffered write is the answer until flushed
        if len(self._memory) >= self._flush_at:
            self.flush()

    def prefetch(self, keys: Iterable[tuple[str, Key]]) -> None:
        """Load the entries of ``keys`` (``(table, key)`` pairs) with one query, so the
        ``get`` calls that follow are answered from memory."""
        if self.conn is None:
            return
        wanted: dict[tuple[str, Key], None] = {}
        cache = self._cache
        for k in keys:
            if k in cache:
                cache.move_to_end(k)  # so the entries this batch adds do not evict it
            elif k[0] in self._tables and k not in self._memory:
                wanted[k] = None
        if not wanted:
            return
        # the keys travel as one JSON document: one C-level dump, not one per key. Never
        # prepared: a plan cached while the table was small would scan it all once large
        found = dict(self.conn.execute(sql.SQL(
            "SELECT u.i, m.value FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY"
            " AS u(e, i) JOIN {} m ON m.table_name = u.e ->> 0 AND m.key = (u.e -> 1)::text"
        ).format(self.table), (encode(list(wanted)),), prepare=False).fetchall())
        for i, k in enumerate(wanted, 1):
            self._cache[k] = self._decode(k[0], found[i]) if i in found else _ABSENT
        self._trim()

    def flush(self) -> None:
        """Write the buffered entries to the temporary table."""
        if self.conn is None or not self._memory:
            return
        puts = [(t, key, v) for (t, key), v in self._memory.items() if v is not _ABSENT]
        drops = [k for k, v in self._memory.items() if v is _ABSENT]
        if drops:
            self.conn.execute(sql.SQL(
                "DELETE FROM {} m USING jsonb_array_elements(%s::jsonb) AS u(e)"
                " WHERE m.table_name = u.e ->> 0 AND m.key = (u.e -> 1)::text"
            ).format(self.table),
                (encode(drops),), prepare=False)
        if puts:
            insert = sql.SQL(
                "INSERT INTO {} (table_name, key, value, moved) SELECT e ->> 0, (e -> 1)::text,"
                " e -> 2, (e -> 1)::text <> (e -> 2)::text"
                " FROM jsonb_array_elements(%s::jsonb) AS u(e)").format(self.table)
            document = encode(puts)
            try:
                # new keys, nearly always: a plain insert costs half an upsert's time
                with self.conn.transaction():
                    self.conn.execute(insert, (document,), prepare=False)
            except psycopg.errors.UniqueViolation:
                self.conn.execute(insert + sql.SQL(
                    " ON CONFLICT (table_name, key) DO UPDATE SET value = excluded.value,"
                    " moved = excluded.moved"),
                    (document,), prepare=False)
        # what was just written is what is most likely asked for next
        self._cache.update(self._memory)
        self._memory.clear()
        self._trim()
        self._wrote(len(puts))

    def count(self, table: str) -> int:
        if self.conn is None:
            return sum(1 for t, _ in self._memory if t == table)
        self.flush()
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE table_name = %s")
                                .format(self.table), (table,)).fetchone()
        return int(row[0]) if row else 0

    def items(self) -> Iterator[tuple[str, Key, Any]]:
        """Every entry, as ``(table, key, value)``; keys as stored (JSON arrays as lists)
        when the entries live in the database."""
        if self.conn is None:
            for (t, key), value in self._memory.items():
                yield t, key, value
            return
        self.flush()
        with self.conn.cursor(name="journal_restore_keystore_items") as cur:
            cur.execute(sql.SQL("SELECT table_name, key, value FROM {}").format(self.table))
            for t, key, value in cur:
                yield t, tuple(json.loads(key)), self._decode(t, value)

    def _trim(self) -> None:
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
