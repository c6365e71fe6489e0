"""Replay: apply source transactions, in position order, up to the restore target.

Each source transaction is applied whole; the first one the cutoff excludes ends the
replay (``recovery_target_time`` semantics). Transactions at or below the start position
(already in the snapshot, or applied by an earlier incremental restore) are skipped, but
their schema changes still move the catalog on. A schema change applies at its position,
in the restore's transaction, through ``on_catalog(before, after, change)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from journal import schema_change
from journal.catalog import Catalog
from journal.errors import RestoreError
from journal.events import CATALOG_PREFIX, SNAPSHOT_PREFIX, ChangeEvent, LogicalMessage, Transaction
from journal.positions import Position
from journal.schema_change import CatalogChange
from journal.targets import Cutoff
from restorer.graph import LoadOrder
from restorer.target import TargetWriter


@dataclass
class ReplayResult:
    reached: Position
    transactions: int = 0
    events: int = 0
    stopped_at_target: bool = False


def end_position(tx: Transaction) -> Position:
    if tx.end is not None:
        return tx.end.position
    return tx.records[-1].position if tx.records else tx.begin.position


OnCatalog = Callable[[Catalog, Catalog, CatalogChange], None]


class CatalogTracker:
    """The catalog as of the last applied (or skipped) schema change of the stream."""

    def __init__(self, catalog: Catalog, on_change: OnCatalog | None = None) -> None:
        self.catalog = catalog
        self.on_change = on_change

    def message(self, record: LogicalMessage, apply: bool) -> None:
        if record.prefix == SNAPSHOT_PREFIX:
            # the compactor ends every segment where a generation starts
            raise RestoreError(f"a new snapshot generation starts at {record.position} inside "
                               "a segment: restore from that generation's full snapshot")
        if record.prefix != CATALOG_PREFIX:
            return
        after, change = schema_change.apply(self.catalog, record.content, record.position)
        if apply and self.on_change is not None:
            self.on_change(self.catalog, after, change)
        self.catalog = after


def included(transactions: Iterable[Transaction], cutoff: Cutoff, start: Position | None,
             result: ReplayResult, skipped: Callable[[Transaction], None] | None = None
             ) -> Iterator[Transaction]:
    """The transactions after ``start`` that the cutoff keeps, stopping at the first it
    excludes (setting ``result.stopped_at_target``); ``skipped`` sees the ones at or
    below ``start``."""
    for tx in transactions:
        if start is not None and end_position(tx) <= start:
            if skipped is not None:
                skipped(tx)
            continue
        if not cutoff.includes(tx.commit_lsn, tx.begin.commit_ts):
            result.stopped_at_target = True
            return
        yield tx


def replay(segments: Iterable[tuple[Any, Iterable[Transaction]]], writer: TargetWriter,
           cutoff: Cutoff, start: Position, order: LoadOrder,
           catalog: CatalogTracker | None = None,
           progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Apply the transactions of each (manifest, transactions) pair in turn."""
    result = ReplayResult(start)
    deferred = _Deferred(writer, order)

    def skipped(tx: Transaction) -> None:
        for record in tx.records:
            if isinstance(record, LogicalMessage) and catalog is not None:
                catalog.message(record, apply=False)

    for manifest, transactions in segments:
        for tx in included(transactions, cutoff, start, result, skipped):
            _apply(tx, writer, deferred, catalog, result)
            result.transactions += 1
            result.reached = end_position(tx)
            if progress is not None:
                progress(result.events)
        if result.stopped_at_target:
            break
        # the whole segment is applied: its end (perhaps past the last commit) is reached
        result.reached = max(result.reached, manifest.to_position)
    return result


class _Deferred(dict[str, frozenset[str]]):
    """Per table, the foreign keys (names) a remapping insert leaves for the second pass;
    worked out once per table instead of once per event."""

    def __init__(self, writer: TargetWriter, order: LoadOrder) -> None:
        super().__init__()
        self.writer, self.order = writer, order

    def __missing__(self, table: str) -> frozenset[str]:
        if not self.writer.remap:
            found: frozenset[str] = frozenset()
        else:
            found = frozenset(fk.name for fk in self.order.deferred_keys(
                table, self.writer.remapper.graph.foreign_keys.get(table, ())))
        self[table] = found
        return found


def _apply(tx: Transaction, writer: TargetWriter, deferred: _Deferred,
           catalog: CatalogTracker | None, result: ReplayResult) -> None:
    truncates: list[str] = []
    # consecutive inserts into one table go out as one batch; in identity mode only, where
    # a batch writes exactly what the single inserts would (remapping matches natural keys
    # per batch, which must see the rows inserted before)
    batch_table: str | None = None
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal batch_table, batch
        if batch_table is not None:
            writer.write_rows(batch_table, batch, deferred[batch_table])
            batch_table, batch = None, []

    for record in tx.records:
        if isinstance(record, LogicalMessage):
            if catalog is not None and record.prefix in (CATALOG_PREFIX, SNAPSHOT_PREFIX):
                flush()  # a schema change applies after the rows before it
                if truncates:
                    writer.truncate(truncates)
                    truncates = []
                catalog.message(record, apply=True)
            continue
        assert isinstance(record, ChangeEvent)
        result.events += 1
        table = record.table.qualified
        op = record.op
        if op in ("c", "r") and not writer.remap and not truncates:
            assert record.after is not None
            if table != batch_table:
                flush()
                batch_table = table
            batch.append(record.after)
            continue
        flush()
        if op == "t":
            truncates.append(table)
            continue
        if truncates:  # one TRUNCATE for the run, as the source issued it
            writer.truncate(truncates)
            truncates = []
        if op in ("c", "r"):
            assert record.after is not None
            writer.write_rows(table, [record.after], deferred[table])
        elif op == "u":
            assert record.after is not None
            writer.update_row(table, record.before, record.after, record.unchanged_toast)
        elif record.op == "d":
            assert record.before is not None
            writer.delete_row(table, record.before)
    flush()
    if truncates:
        writer.truncate(truncates)
    if writer.pending_fixups:
        writer.apply_fixups()  # the transaction's cycle is complete: set deferred keys
    writer.end_transaction(len(tx.records))
