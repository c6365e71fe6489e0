"""The journal's state at a position, folded in memory from a snapshot and transactions.

What ``journal verify`` compares a database with, and what a subset restore takes its
rows from. Memory grows with the data; a full restore never goes through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from journal import schema_change
from journal.catalog import Catalog
from journal.errors import RestoreError
from journal.events import CATALOG_PREFIX, ChangeEvent, LogicalMessage, Transaction
from journal.fold import evolution
from journal.positions import ORIGIN, Position
from journal.row_identity import KeylessRows
from journal.stream_state import apply_change
from journal.targets import Cutoff
from restorer.replay import ReplayResult, end_position, included

Key = tuple[Any, ...]


@dataclass
class JournalState:
    """Rows per table, keyed by primary key; a table without one is a multiset
    (``KeylessRows``): equal rows stay as many, an update or delete takes one away."""

    primary_keys: dict[str, tuple[str, ...]]
    tables: dict[str, dict[Key, dict[str, Any]]] = field(default_factory=dict)
    reached: Position | None = None
    catalog: Catalog = field(default_factory=Catalog)  # as of ``reached``

    def rows(self, table: str) -> list[dict[str, Any]]:
        return list(self.tables.get(table, {}).values())

    def load(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        pk = self.primary_keys[table]
        if not pk:
            bag = KeylessRows()
            for r in rows:
                bag.add(r)
            self.tables[table] = bag  # type: ignore[assignment]
            return
        self.tables[table] = {tuple(r[c] for c in pk): r for r in rows}

    def apply(self, event: ChangeEvent) -> None:
        self.primary_keys.setdefault(event.table.qualified, event.table.primary_key)
        apply_change(self.tables, event)


def _follow(state: JournalState, message: LogicalMessage, wanted: set[str],
            subset: bool) -> None:
    """A schema change on the way: rows move to the table's new shape (and name). A
    subset is refused instead: it is loaded with the schema it starts from."""
    before = state.catalog.tables
    after, change = schema_change.apply(state.catalog, message.content, message.position)
    touched = sorted(t for t in wanted if change.touches(t))
    if subset and touched:
        raise RestoreError(f"{', '.join(touched)} changed schema at {message.position}: a "
                           "--tables restore does not follow schema changes; restore every "
                           "table, or to a point before the change")
    pos = (message.position.commit_lsn, message.position.seq)
    for old_name, new_name in change.renamed.items():
        if old_name in wanted:
            wanted.discard(old_name)
            wanted.add(new_name)
            state.tables[new_name] = state.tables.pop(old_name, {})
            state.primary_keys[new_name] = state.primary_keys.pop(old_name, ())
    for name in change.dropped:
        wanted.discard(name)
        state.tables.pop(name, None)
    renamed_from = {new: old for old, new in change.renamed.items()}
    for name in change.tables:
        entry = after.tables[name]
        old = before.get(renamed_from.get(name, name))
        if old is None:  # created on the way
            if not subset:
                wanted.add(name)
                state.tables[name] = {}
                state.primary_keys[name] = entry.primary_key
            continue
        if name not in wanted:
            continue
        step = evolution(name, old, entry, pos, change.missing_values.get(name, {}))
        if step is None:
            continue
        key = entry.primary_key or state.primary_keys[name]
        rows = (step.row(r) for r in state.tables.get(name, {}).values())
        state.tables[name] = {tuple(r[c] for c in key): r for r in rows}
        state.primary_keys[name] = key
    state.catalog = after


def fold(catalog: Catalog, rows_of: Callable[[str], Iterable[dict[str, Any]]] | None,
         segments: Iterable[tuple[Any, Iterable[Transaction]]], cutoff: Cutoff,
         start: Position | None, tables: Iterable[str] | None = None, *,
         follow_schema: bool = False) -> JournalState:
    """Snapshot rows (``rows_of`` per table) plus the transactions up to the cutoff; with
    ``follow_schema``, through the stream's schema changes (``state.catalog`` then says
    what the tables are at the end), otherwise a schema change of a table is refused."""
    wanted = set(catalog.tables if tables is None else tables)
    subset = not follow_schema
    state = JournalState({t: catalog.tables[t].primary_key for t in wanted},
                         reached=start, catalog=catalog)
    if rows_of is not None:
        for t in sorted(wanted):
            state.load(t, rows_of(t))
    result = ReplayResult(start or ORIGIN)
    for manifest, transactions in segments:
        for tx in included(transactions, cutoff, start, result):
            for record in tx.records:
                if isinstance(record, ChangeEvent) and record.table.qualified in wanted:
                    state.apply(record)
                elif isinstance(record, LogicalMessage) and record.prefix == CATALOG_PREFIX:
                    _follow(state, record, wanted, subset)
            result.reached = end_position(tx)
        if result.stopped_at_target:
            break
        result.reached = max(result.reached, manifest.to_position)
    state.reached = result.reached
    return state
