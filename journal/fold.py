"""Folding: a full snapshot plus the segments after it gives the full snapshot at their end.

The fold is a streaming merge. The changes of the segments are collected (in position
order) into one external sort by ``(table, primary key, position)``; then, table by
table, the previous snapshot's member (already in primary-key order) is merged with the
sorted changes, and each key's changes are applied to its row in position order, the
last write winning. Memory stays flat: the sort spills to temporary files, rows stream.

The meaning of every change is ``journal.stream_state.StreamState``'s, which the tests hold the
fold to: an update whose key changed moves the row, unchanged-TOAST columns take the
value of the row the update replaced, a truncate empties the table. A moved row whose
TOAST columns were unchanged needs the value of *another* key at that moment; such
tables (rare) get extra passes that capture those values before the real one.

One module because collecting the changes, the schema evolutions between them and the
per-table merge are one algorithm whose invariants (position order, the last write wins,
rows in the table's final shape) hold only together.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from journal import schema_change
from journal.catalog import Catalog, TableEntry, TableSchema
from journal.errors import ValidationError
from journal.events import (
    CATALOG_PREFIX,
    SNAPSHOT_PREFIX,
    ChangeEvent,
    LogicalMessage,
    Transaction,
)
from journal.packages import (
    Manifest,
    PackageBuilder,
    PackageReader,
    sort_key,
    verify_chain,
)
from journal.positions import Position
from journal.row_identity import is_keyless, row_identity
from journal.sorting import (
    DEFAULT_SPILL_BYTES,
    ExternalSorter,
    SortedRowSink,
    approximate_size,
    row_sort_key,
)
from journal.targets import Cutoff

log = logging.getLogger(__name__)


_PUT, _DEL = 0, 1
_ADD, _REMOVE = 2, 3  # one row more, one row less, of a table without a primary key
_UNRESOLVED = object()  # a captured row that an earlier pass could not know yet



# -- the fold -----------------------------------------------------------------------------

_END = (2**63, 2**31)  # after every position


@dataclass(frozen=True)
class Evolution:
    """A schema change of one table, as it changes the rows written before it."""

    position: tuple[int, int]
    renames: dict[str, str]
    dropped: frozenset[str]
    added: dict[str, Any]  # column -> the value existing rows hold
    rekeyed: bool  # the primary key is made of other columns since
    primary_key: tuple[str, ...]  # as of this change

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {self.renames.get(c, c): v for c, v in row.items() if c not in self.dropped}
        for column, value in self.added.items():
            out.setdefault(column, value)
        return out


@dataclass
class _TableChanges:
    schema: TableSchema
    name: str = ""  # the table's name now (it may have been renamed)
    truncated_at: tuple[int, int] | None = None
    cross_key_toast: bool = False
    has_changes: bool = False
    evolutions: list[Evolution] = field(default_factory=list)
    schema_changed: bool = False  # a CATALOG message changed it: its entry is exact

    def evolve(self, row: dict[str, Any], after: tuple[int, int], upto: tuple[int, int]
               ) -> dict[str, Any]:
        """``row``, written at ``after``, in the shape the table has at ``upto``."""
        for e in self.evolutions:
            if after < e.position <= upto:
                row = e.row(row)
        return row

    @property
    def rekeyed(self) -> bool:
        return any(e.rekeyed for e in self.evolutions)


def _identity(name: str, entry: TableEntry | None) -> str:
    """A table's identity across renames: its source oid (a name for older catalogs)."""
    if entry is not None and entry.oid is not None:
        return f"o{entry.oid:012d}"
    return f"n{name}"


@dataclass
class FoldState:
    """What the change pass learned: where it stopped, the catalog, each table's schema."""

    position: Position
    commit_ts: int | None
    catalog: Catalog
    tables: dict[str, _TableChanges] = field(default_factory=dict)  # by identity
    ids: dict[str, str] = field(default_factory=dict)  # name now -> identity
    base_names: dict[str, str] = field(default_factory=dict)  # identity -> name in base
    transactions: int = 0
    events: int = 0
    stopped: bool = False  # a transaction past the cut ended the pass


class Sink(Protocol):
    """Where a fold's rows go: a package being built (``PackageBuilder``), or a
    restore's target tables. ``ordered`` says whether each table's rows must arrive in
    primary-key order (a package member must; a COPY need not)."""

    ordered: bool

    def table(self, table: TableSchema) -> Any: ...  # its write(row) takes the table's rows

    def copy_table(self, reader: PackageReader, table: str) -> Any: ...


def fold(base: PackageReader, segments: Sequence[PackageReader], workdir: Path, *,
         target: Cutoff | None = None, parent_id: str | None = None,
         spill_bytes: int = DEFAULT_SPILL_BYTES) -> tuple[Path, Manifest]:
    """Fold ``segments`` (the chain after ``base``) into ``base``, up to ``target``.

    Returns the finished full package as a temporary file in ``workdir`` (fsynced) and
    its manifest; the caller publishes it (``PackageStore.put``) or renames it.
    """
    verify_chain([base.manifest] + [s.manifest for s in segments])
    if base.manifest.kind != "full":
        raise ValidationError(f"fold needs a full snapshot as base, not {base.manifest.kind} "
                              f"{base.manifest.package_id}")
    sorter = ExternalSorter(Path(workdir), spill_bytes)
    builder = PackageBuilder("full", Path(workdir))
    try:
        state = collect_changes(
            base, itertools.chain.from_iterable(s.transactions() for s in segments),
            target or Cutoff(), sorter)
        merge_changes(base, state, sorter, builder, Path(workdir), spill_bytes)
        m = base.manifest
        tmp, manifest = builder.finish(
            system_identifier=m.system_identifier, database=m.database,
            generation=m.generation, to_position=state.position,
            first_commit_ts=state.commit_ts, last_commit_ts=state.commit_ts,
            parent_id=parent_id, catalog=state.catalog.to_json())
    except BaseException:
        builder.discard()
        raise
    finally:
        sorter.close()
    log.info("folded %d transactions (%d changes) into %s: %s", state.transactions,
             state.events, base.manifest.package_id, manifest.package_id)
    return tmp, manifest


def start_state(catalog: Catalog, position: Position, commit_ts: int | None,
                tables: dict[str, TableSchema]) -> FoldState:
    """A fold's state before its first change: the base's catalog and tables (a
    package's members, or the tables a target already holds)."""
    state = FoldState(position, commit_ts, catalog)
    for name, table in tables.items():
        ident = _identity(name, catalog.tables.get(name))
        state.tables[ident] = _TableChanges(table, name)
        state.ids[name] = ident
        state.base_names[ident] = name
    return state


def collect_changes(base: PackageReader | None, transactions: Iterable[Transaction],
                    target: Cutoff, sorter: ExternalSorter, state: FoldState | None = None
                    ) -> FoldState:
    """The first pass: every change of ``transactions`` (those after ``base``, in
    position order) up to ``target``, into ``sorter``; the schema changes on the way move
    the catalog on. Stops at the first transaction past the cut. ``state`` continues an
    earlier pass (its changes in another sorter, merged with this one's), or starts from
    ``start_state`` (``base`` None)."""
    if state is None:
        assert base is not None
        m = base.manifest
        state = start_state(Catalog.parse(m.catalog), m.to_position, m.last_commit_ts,
                            {name: base.table_schema(name) for name in base.tables()})
    if state.stopped:
        return state
    counter = itertools.count(state.events)
    for txn in transactions:
        if target.stops_before(txn):
            state.stopped = True
            return state
        for record in txn.records:
            if isinstance(record, LogicalMessage):
                _message(record, state)
            else:
                _change(record, state, sorter, counter)
                state.events += 1
        assert txn.end is not None
        state.position = txn.end.position
        state.commit_ts = txn.end.commit_ts
        state.transactions += 1
    return state


def _message(message: LogicalMessage, state: FoldState) -> None:
    if message.prefix == SNAPSHOT_PREFIX:
        raise ValidationError(f"a new snapshot generation starts at {message.position}: a fold "
                              "never crosses generations (the compactor ends segments there)")
    if message.prefix != CATALOG_PREFIX:
        return
    before = state.catalog.tables
    state.catalog, change = schema_change.apply(state.catalog, message.content,
                                                message.position)
    after = state.catalog.tables
    pos = (message.position.commit_lsn, message.position.seq)
    for old_name, new_name in change.renamed.items():
        ident = state.ids.pop(old_name, None)
        if ident is not None:
            state.ids[new_name] = ident
            state.tables[ident].name = new_name
    for name in change.dropped:
        state.ids.pop(name, None)
    renamed_from = {new: old for old, new in change.renamed.items()}
    for name in change.tables:
        entry = after[name]
        ident = state.ids.get(name)
        if ident is None:  # created (or created again after a drop)
            ident = state.ids[name] = _identity(name, entry)
            state.tables[ident] = _TableChanges(entry.table_schema(), name)
            continue
        state.tables[ident].schema_changed = True
        old = before.get(renamed_from.get(name, name))
        if old is not None:
            step = evolution(name, old, entry, pos, change.missing_values.get(name, {}))
            if step is not None:
                state.tables[ident].evolutions.append(step)


def evolution(name: str, old: TableEntry, new: TableEntry, pos: tuple[int, int],
              values: dict[str, Any]) -> Evolution | None:
    """How rows written before the change of ``old`` into ``new`` look after it."""
    if any(c.attnum is None for c in [*old.columns, *new.columns]):
        if old.column_names == new.column_names and old.primary_key == new.primary_key:
            return None
        raise ValidationError(f"{name} changed its columns in a catalog without attnums "
                              "(written by an older capture): the fold cannot follow it")
    before = {c.attnum: c for c in old.columns}
    after = {c.attnum: c for c in new.columns}
    renames = {before[n].name: c.name for n, c in after.items()
               if n in before and before[n].name != c.name}
    dropped = frozenset(before[n].name for n in set(before) - set(after))
    added = {after[n].name: values.get(after[n].name)
             for n in sorted(set(after) - set(before)) if not after[n].generated}
    attnum_old = {c.name: c.attnum for c in old.columns}
    attnum_new = {c.name: c.attnum for c in new.columns}
    rekeyed = ([attnum_old[c] for c in old.primary_key]
               != [attnum_new[c] for c in new.primary_key])
    if not (renames or dropped or added or rekeyed):
        return None
    return Evolution(pos, renames, dropped, added, rekeyed, new.primary_key)


def _change(event: ChangeEvent, state: FoldState, sorter: ExternalSorter,
            counter: Iterator[int]) -> None:
    table = event.table
    name = table.qualified
    ident = state.ids.get(name)
    if ident is None:
        ident = state.ids[name] = _identity(name, state.catalog.tables.get(name))
    info = state.tables.get(ident)
    if info is None:
        info = state.tables[ident] = _TableChanges(table, name)
    info.schema = table
    pos = (event.position.commit_lsn, event.position.seq)
    if event.op == "t":
        info.truncated_at = pos
        return
    info.has_changes = True

    # keys before and after a replaced primary key differ in kind: each epoch sorts apart
    epoch = sum(e.rekeyed for e in info.evolutions) if info.evolutions else 0
    add = sorter.add_sized  # per event: what follows is the fold's per-change cost

    if is_keyless(table):
        def put(key: tuple[Any, ...], kind: int, payload: tuple[Any, ...],
                row: dict[str, Any] | None = None) -> None:
            add((ident, (epoch, sort_key(key)), pos, next(counter)),
                (kind, key, *payload), 64 + (approximate_size(row) if row else 0))

        _keyless_change(event, put)
        return
    op = event.op
    if op == "c" or op == "r" or op == "u":
        after = _require(event, event.after, "after")
        new_key = table.key_of(after)
        old_key = table.key_of(event.before) if op == "u" and event.before else new_key
        toast = tuple(event.unchanged_toast) if op == "u" else ()
        row = dict(after)
        size = 64 + approximate_size(row)
        if old_key != new_key:
            info.cross_key_toast |= bool(toast)
            add((ident, (epoch, sort_key(old_key)), pos, next(counter)),
                (_DEL, old_key, bool(toast)), 64)
            add((ident, (epoch, sort_key(new_key)), pos, next(counter)),
                (_PUT, new_key, row, toast, old_key if toast else None), size)
        else:
            add((ident, (epoch, sort_key(new_key)), pos, next(counter)),
                (_PUT, new_key, row, toast, None), size)
    elif op == "d":
        key = table.key_of(_require(event, event.before, "before"))
        add((ident, (epoch, sort_key(key)), pos, next(counter)), (_DEL, key, False), 64)


def _keyless_change(event: ChangeEvent,
                    add: Callable[..., None]) -> None:
    """A change of a table without a primary key, keyed by whole-row identity: one row
    equal to the old image less, one row equal to the new image more (REPLICA IDENTITY
    FULL sends the whole old row, so unchanged TOAST columns of the new one are the old
    one's)."""
    table = event.table

    def put(row: dict[str, Any], kind: int) -> None:
        add((row_identity(table.column_names, row),), kind, (row,), row)

    if event.op in ("u", "d"):
        before = event.before
        if before is None or any(c not in before for c in table.column_names):
            raise ValidationError(
                f"{event.op!r} event on {table.qualified} (no primary key) at "
                f"{event.position} lacks the whole old row: the table must be REPLICA "
                "IDENTITY FULL at the source")
        put(dict(before), _REMOVE)
    if event.op in ("c", "r", "u"):
        after = dict(_require(event, event.after, "after"))
        if event.op == "u":
            for column in event.unchanged_toast:
                after[column] = event.before[column]  # type: ignore[index]
        put(after, _ADD)


def _require(event: ChangeEvent, row: dict[str, Any] | None, which: str) -> dict[str, Any]:
    if row is None:
        raise ValidationError(f"{event.op!r} event on {event.table.qualified} at "
                              f"{event.position} has no {which} image")
    return row


def _final_tables(state: FoldState) -> list[str]:
    """The identities of the tables the folded snapshot holds, in identity order (the
    order of the sorted changes)."""
    if not state.catalog.tables:
        return sorted(state.tables)
    final = []
    for name, spec in state.catalog.tables.items():
        if "primary_key" in spec.absent:
            continue
        ident = state.ids.get(name)
        if ident is None:
            ident = state.ids[name] = _identity(name, spec)
        if ident not in state.tables:
            state.tables[ident] = _TableChanges(spec.table_schema(), name)
        final.append(ident)
    return sorted(final)



def final_tables(state: FoldState) -> list[str]:
    """The names of the tables a fold's result holds (those ``merge_changes`` writes)."""
    return sorted(state.tables[ident].name for ident in _final_tables(state))


def merge_changes(base: PackageReader, state: FoldState, sorter: ExternalSorter, sink: Sink,
                  workdir: Path, spill_bytes: int = DEFAULT_SPILL_BYTES) -> None:
    """The second pass: per table, ``base``'s rows merged with the collected changes,
    into ``sink`` in the tables' final shape."""
    builder = sink
    changes = _by_table(sorter.items())
    pending = next(changes, None)
    catalog_tables = state.catalog.tables
    for ident in _final_tables(state):
        info = state.tables[ident]
        while pending is not None and pending[0] < ident:
            pending = next(changes, None)  # changes of a table that no longer exists
        table_changes: Iterable[Any] = ()
        if pending is not None and pending[0] == ident:
            table_changes = pending[1]
        base_name = state.base_names.get(ident)
        if info.name in catalog_tables and (info.schema_changed
                                            or info.schema.qualified != info.name):
            # rows come out in the table's shape now, whatever their last change's was
            info.schema = catalog_tables[info.name].table_schema()
        if (base_name is not None and base_name == info.name and not info.has_changes
                and info.truncated_at is None and not info.evolutions
                and info.schema == base.table_schema(base_name)):
            builder.copy_table(base, base_name)  # untouched: the bytes are already right
            continue

        def base_rows(base_name: str | None = base_name,
                      info: _TableChanges = info) -> Iterable[dict[str, Any]]:
            if base_name is None or info.truncated_at is not None:
                return ()
            return base.rows(base_name)

        base_schema = base.table_schema(base_name) if base_name is not None else info.schema
        if info.rekeyed:
            _rekeyed_table(info, base_schema, base_rows(), table_changes, builder, workdir,
                           spill_bytes)
            continue
        _merge_table(info, base_schema, base_rows, table_changes, builder, workdir,
                     spill_bytes)


def _rekeyed_table(info: _TableChanges, base_schema: TableSchema,
                   base_rows: Iterable[dict[str, Any]], changes: Iterable[Any],
                   builder: Sink, workdir: Path, spill_bytes: int) -> None:
    """A table whose primary key changed in the range: its changes keyed by the old key
    and the new cannot be merged by key, so they are applied in position order, in
    memory (rare: a replaced primary key), and the result sorted by the new key."""
    log.info("%s: primary key replaced, folding it in position order", info.name)
    truncated = info.truncated_at
    events = sorted(((pos, payload) for _, pos, payload in changes
                     if truncated is None or pos > truncated), key=lambda e: e[0])
    key_columns = base_schema.primary_key
    rows: dict[Any, tuple[dict[str, Any], tuple[int, int]]] = {}
    for row in base_rows:
        rows[tuple(row[c] for c in key_columns)] = (row, (0, 0))
    # a table between dropping its key and adding the next keeps being keyed by the last
    rekeys = [e for e in info.evolutions if e.rekeyed and e.primary_key]
    for pos, payload in events:
        while rekeys and rekeys[0].position < pos:  # rows are keyed by the new key since
            e = rekeys.pop(0)
            moved = [(info.evolve(r, p, e.position), e.position) for r, p in rows.values()]
            rows = {tuple(r[c] for c in e.primary_key): (r, p) for r, p in moved}
        kind, key = payload[0], payload[1]
        if kind == _DEL:
            rows.pop(key, None)
            continue
        after, toast, source = payload[2], payload[3], payload[4]
        row = dict(after)
        if toast:
            previous = rows.get(source if source is not None else key)
            if previous is None:
                raise ValidationError(f"{info.name}: unresolved unchanged TOAST at {pos}")
            old = info.evolve(previous[0], previous[1], pos)
            for column in toast:
                row[column] = old.get(column)
        rows[key] = (row, pos)
    if not builder.ordered:
        out = builder.table(info.schema)
        for row, pos in rows.values():
            out.write(info.evolve(row, pos, _END))
        return
    sink = SortedRowSink(builder, info.schema, workdir, spill_bytes)  # type: ignore[arg-type]
    for row, pos in rows.values():
        sink.write(info.evolve(row, pos, _END))
    sink.close()


def _by_table(items: Iterator[tuple[Any, Any]]) -> Iterator[tuple[str, Iterator[Any]]]:
    for name, group in itertools.groupby(items, key=lambda kv: kv[0][0]):
        yield name, ((key[1], key[2], payload) for key, payload in group)


def _merge_table(info: _TableChanges, base_schema: TableSchema,
                 base_rows: Callable[[], Iterable[dict[str, Any]]], changes: Iterable[Any],
                 builder: Sink, workdir: Path, spill_bytes: int) -> None:
    truncated = info.truncated_at
    # a truncate empties the table: only what came after it counts
    live = ((sk, pos, p) for sk, pos, p in changes if truncated is None or pos > truncated)
    if is_keyless(info.schema):
        _write_multiset(info.name, info, base_schema, base_rows(), live, builder, workdir,
                        spill_bytes)
        return
    captured: dict[tuple[int, int], Any] = {}
    if not info.cross_key_toast:
        _write_merged(info, base_schema, base_rows(), live, builder, captured)
        return
    # keep this table's changes on disk so that the capture passes can read them again
    own = ExternalSorter(workdir, spill_bytes)
    try:
        for sk, pos, payload in live:
            own.add((sk, pos), payload)

        def again() -> Iterator[Any]:
            return ((k[0], k[1], p) for k, p in own.items())

        _capture_passes(info, base_schema, base_rows, again, captured)
        _write_merged(info, base_schema, base_rows(), again(), builder, captured)
    finally:
        own.close()


def _write_multiset(name: str, info: _TableChanges, base_schema: TableSchema,
                    base_rows: Iterable[dict[str, Any]], changes: Iterable[Any],
                    builder: Sink, workdir: Path, spill_bytes: int) -> None:
    """The merge for a table without a primary key: per distinct row (``row_identity``),
    how many the base holds plus the rows added minus the rows removed."""
    # The base is sorted again: a member written before such tables were kept in
    # identity order (or by another writer) may come in any order. Both sides are keyed
    # in the table's shape of now: a row written before a schema change (an added
    # column) has another whole-row identity after it.
    base_sorted = ExternalSorter(workdir, spill_bytes)
    changes_sorted = ExternalSorter(workdir, spill_bytes)
    try:
        for i, row in enumerate(base_rows):
            row = info.evolve(row, (0, 0), _END) if info.evolutions else row
            base_sorted.add((row_sort_key(info.schema, row), i), row)
        for _, pos, payload in changes:
            row = info.evolve(payload[2], pos, _END) if info.evolutions else payload[2]
            changes_sorted.add((row_sort_key(info.schema, row), pos), (payload[0], row))
        writer = builder.table(info.schema)
        base_iter = ((key, row) for (key, _), row in base_sorted.items())
        change_groups = itertools.groupby(
            ((key, pos, (kind, None, row)) for (key, pos), (kind, row) in changes_sorted.items()),
            key=lambda e: e[0])
        b = next(base_iter, None)
        c = next(change_groups, None)
        while b is not None or c is not None:
            if c is None or (b is not None and b[0] < c[0]):
                assert b is not None
                writer.write(b[1])
                b = next(base_iter, None)
                continue
            key, group = c[0], list(c[1])
            c = next(change_groups, None)
            count, row = 0, None
            while b is not None and b[0] == key:
                count, row = count + 1, b[1]
                b = next(base_iter, None)
            for _, pos, payload in group:
                count += 1 if payload[0] == _ADD else -1
                if count < 0:
                    raise ValidationError(
                        f"{name}: the change at {Position(*pos)} removes a row the table "
                        f"does not hold: {_short(payload[2])}")
                if payload[0] == _ADD:
                    row = payload[2]
            for _ in range(count):
                writer.write(row)
    finally:
        base_sorted.close()
        changes_sorted.close()


def _short(row: dict[str, Any]) -> str:
    text = repr(row)
    return text if len(text) < 200 else text[:197] + "..."


def _capture_passes(info: _TableChanges, base_schema: TableSchema,
                    base_rows: Callable[[], Iterable[dict[str, Any]]],
                    changes: Callable[[], Iterable[Any]],
                    captured: dict[tuple[int, int], Any]) -> None:
    """Find the row each key-moving update left behind, for its unchanged TOAST columns.
    A value may depend on another such value; repeat until nothing changes."""
    while True:
        before = dict(captured)
        for _ in _merged_rows(info, base_schema, base_rows(), changes(), captured,
                              capture=True):
            pass
        unresolved = [p for p, v in captured.items() if v is _UNRESOLVED]
        if not unresolved or captured == before:
            if unresolved:
                raise ValidationError(f"{info.name}: cannot resolve unchanged TOAST columns "
                                      f"of rows moved at {unresolved[:3]}")
            return


def _write_merged(info: _TableChanges, base_schema: TableSchema,
                  base_rows: Iterable[dict[str, Any]], changes: Iterable[Any],
                  builder: Sink, captured: dict[tuple[int, int], Any]) -> None:
    writer = builder.table(info.schema)
    for row in _merged_rows(info, base_schema, base_rows, changes, captured, capture=False):
        writer.write(row)


def _merged_rows(info: _TableChanges, base_schema: TableSchema,
                 base_rows: Iterable[dict[str, Any]], changes: Iterable[Any],
                 captured: dict[tuple[int, int], Any], *,
                 capture: bool) -> Iterator[dict[str, Any]]:
    """The merge itself: rows of the base and the changes, both in key order."""
    name = info.name
    base_iter = (((0, sort_key(base_schema.key_of(r))), r) for r in base_rows)
    change_groups = itertools.groupby(changes, key=lambda e: e[0])
    b = next(base_iter, None)
    c = next(change_groups, None)
    last: Any = None
    while b is not None or c is not None:
        if c is None or (b is not None and b[0] < c[0]):
            assert b is not None
            key, row = b
            b = next(base_iter, None)
            if info.evolutions:
                row = info.evolve(row, (0, 0), _END)
        else:
            key, group = c[0], list(c[1])  # one key's changes; read before advancing
            c = next(change_groups, None)
            current = None
            if b is not None and b[0] == key:
                current = b[1]
                b = next(base_iter, None)
            row = _apply(info, current, group, captured, capture)
        if row is None or row is _UNRESOLVED:
            continue
        if last is not None and not last < key:
            raise ValidationError(f"{name}: rows out of primary-key order at {key!r}")
        last = key
        yield row


def _apply(info: _TableChanges, current: dict[str, Any] | None, entries: Iterable[Any],
           captured: dict[tuple[int, int], Any], capture: bool) -> Any:
    """One key's changes, in position order, applied to its row (None: no row). The row
    follows the table's schema changes: each change sees it in the shape of its time."""
    name = info.name
    at = (0, 0)  # when ``current`` was written (the base's rows: before every change)
    for _, pos, payload in entries:
        if isinstance(current, dict) and info.evolutions:
            current = info.evolve(current, at, pos)
        at = pos
        kind, key = payload[0], payload[1]
        if kind == _DEL:
            if payload[2] and capture:
                captured[pos] = current
            current = None
            continue
        after, toast, source = payload[2], payload[3], payload[4]
        if toast:
            previous = current if source is None else captured.get(pos, _UNRESOLVED)
            if previous is _UNRESOLVED or current is _UNRESOLVED:
                if not capture:
                    raise ValidationError(f"{name}: unresolved unchanged TOAST at {pos}")
                current = _UNRESOLVED
                continue
            if previous is None:
                raise ValidationError(
                    f"update of {name} key {key!r} at {Position(*pos)} leaves column(s) "
                    f"{', '.join(toast)} unchanged, but no earlier row is known")
            row = dict(after)
            for column in toast:
                row[column] = previous.get(column)
            current = row
        else:
            current = dict(after)
    if isinstance(current, dict) and info.evolutions:
        current = info.evolve(current, at, _END)
    return current


# -- net changes, for a target that already holds the base ---------------------------------

@dataclass(frozen=True)
class NetChange:
    """What one key's changes come to, applied to a target holding the base's rows:
    ``row`` None deletes the key's row; otherwise the key's row becomes ``row``, except
    the ``from_target`` columns (unchanged TOAST), which keep the target row's value."""

    key: tuple[Any, ...]
    row: dict[str, Any] | None
    from_target: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetTable:
    name: str
    schema: TableSchema
    truncated: bool  # the base's rows are gone before the changes
    changes: Iterator[NetChange]


def net_unsupported(state: FoldState, catalog: Catalog) -> str | None:
    """Why the collected changes cannot be applied key by key to a target holding the
    base (None: they can): schema changes on the way (``catalog`` is the base's), a
    table without a primary key, a key-moving update whose unchanged TOAST value lives
    under another key."""
    if state.catalog != catalog:
        return "the stream changes the schema"
    for ident, info in sorted(state.tables.items()):
        if not (info.has_changes or info.truncated_at is not None):
            continue
        if state.base_names.get(ident) != info.name:
            return f"{info.name} is not a table of the snapshot"
        if is_keyless(info.schema):
            return f"{info.name} has no primary key"
        if info.cross_key_toast:
            return f"{info.name} has a key-moving update with unchanged TOAST columns"
        snapshot = catalog.tables[info.name].table_schema()
        if info.evolutions or (info.schema.column_names, info.schema.primary_key) != (
                snapshot.column_names, snapshot.primary_key):
            return f"{info.name} changed its columns"
    return None


def net_changes(state: FoldState, sorter: Any) -> Iterator[NetTable]:
    """Per changed table (sorted changes, as ``merge_changes`` reads them), each key's
    net change. Call only when ``net_unsupported`` says None."""
    tables = {ident: info for ident, info in state.tables.items()
              if info.has_changes or info.truncated_at is not None}
    changes = _by_table(sorter.items())
    pending = next(changes, None)
    for ident in sorted(tables):
        info = tables[ident]
        while pending is not None and pending[0] < ident:
            pending = next(changes, None)
        group: Iterable[Any] = ()
        if pending is not None and pending[0] == ident:
            group = pending[1]
        truncated = info.truncated_at
        live = ((sk, pos, p) for sk, pos, p in group if truncated is None or pos > truncated)
        yield NetTable(info.name, info.schema, truncated is not None,
                       _net_keys(info.name, live, truncated is not None))


_TARGET = object()  # the row the target holds (the base's), unknown here


def _net_keys(name: str, changes: Iterable[Any], truncated: bool) -> Iterator[NetChange]:
    for _, group in itertools.groupby(changes, key=lambda e: e[0]):
        current: Any = None if truncated else _TARGET
        from_target: set[str] = set()
        key: tuple[Any, ...] = ()
        for _, pos, payload in group:
            kind, key = payload[0], payload[1]
            if kind == _DEL:
                current, from_target = None, set()
                continue
            after, toast = payload[2], payload[3]
            row = dict(after)
            kept: set[str] = set()
            for column in toast:
                if current is None:
                    raise ValidationError(
                        f"update of {name} key {key!r} at {Position(*pos)} leaves column(s) "
                        f"{', '.join(toast)} unchanged, but no earlier row is known")
                if current is _TARGET or column in from_target:
                    kept.add(column)
                else:
                    row[column] = current.get(column)
            current, from_target = row, kept
        if current is _TARGET:
            continue
        yield NetChange(key, current, tuple(sorted(from_target)))
