"""Replay: apply source transactions, in position order, up to the restore target.

Each source transaction is applied whole; the first one the cutoff excludes ends the
replay (``recovery_target_time`` semantics). Transactions at or below the start position
(already in the snapshot, or applied by an earlier incremental restore) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from journal.events import CATALOG_PREFIX, SNAPSHOT_PREFIX, ChangeEvent, LogicalMessage, Transaction
from journal.positions import Position
from restorer.graph import LoadOrder
from restorer.plan import Cutoff
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


def included(transactions: Iterable[Transaction], cutoff: Cutoff, start: Position | None,
             result: ReplayResult) -> Iterator[Transaction]:
    """The transactions after ``start`` that the cutoff keeps, stopping at the first it
    excludes (setting ``result.stopped_at_target``)."""
    for tx in transactions:
        if start is not None and end_position(tx) <= start:
            continue
        if not cutoff.includes(tx.commit_lsn, tx.begin.commit_ts):
            result.stopped_at_target = True
            return
        yield tx


def replay(segments: Iterable[tuple[Any, Iterable[Transaction]]], writer: TargetWriter,
           cutoff: Cutoff, start: Position, order: LoadOrder,
           on_catalog: Callable[[dict[str, Any]], None] | None = None,
           progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Apply the transactions of each (manifest, transactions) pair in turn."""
    result = ReplayResult(start)
    for manifest, transactions in segments:
        for tx in included(transactions, cutoff, start, result):
            _apply(tx, writer, order, on_catalog, result)
            result.transactions += 1
            result.reached = end_position(tx)
            if progress is not None:
                progress(result.events)
        if result.stopped_at_target:
            break
        # the whole segment is applied: its end (perhaps past the last commit) is reached
        result.reached = max(result.reached, manifest.to_position)
    return result


def _apply(tx: Transaction, writer: TargetWriter, order: LoadOrder,
           on_catalog: Callable[[dict[str, Any]], None] | None, result: ReplayResult) -> None:
    truncates: list[str] = []
    for record in tx.records:
        if isinstance(record, LogicalMessage):
            if record.prefix == CATALOG_PREFIX and on_catalog is not None:
                on_catalog(json.loads(record.content)["catalog"])
            elif record.prefix == SNAPSHOT_PREFIX and on_catalog is not None:
                on_catalog(json.loads(record.content)["catalog"])
            continue
        assert isinstance(record, ChangeEvent)
        result.events += 1
        table = record.table.qualified
        if record.op == "t":
            truncates.append(table)
            continue
        if truncates:  # one TRUNCATE for the run, as the source issued it
            writer.truncate(truncates)
            truncates = []
        if record.op in ("c", "r"):
            assert record.after is not None
            deferred = frozenset(fk.name for fk in order.deferred_keys(
                table, writer.remapper.graph.foreign_keys.get(table, ())))
            writer.write_rows(table, [record.after], deferred if writer.remap else frozenset())
        elif record.op == "u":
            assert record.after is not None
            writer.update_row(table, record.before, record.after, record.unchanged_toast)
        elif record.op == "d":
            assert record.before is not None
            writer.delete_row(table, record.before)
    if truncates:
        writer.truncate(truncates)
    if writer.fixups:
        writer.apply_fixups()  # the transaction's cycle is complete: set deferred keys
    writer.end_transaction(len(tx.records))
