"""The reference consumer: what the stream means, folded into table state.

``StreamState`` applies decoded records (in position order, already deduplicated) and
keeps every table as ``{primary key tuple: row}``. It is the specification every other
consumer (compactor, restore replay, verify) must agree with, and the oracle of their
tests, so it favours plainness over speed.

Only complete transactions are applied: a transaction's records are held until its END
marker. A transaction still open when a BEGIN of a higher position arrives was cut off
by a crash before a new generation started, and is discarded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from journal import schema_change
from journal.catalog import Catalog
from journal.errors import ValidationError
from journal.events import (
    CATALOG_PREFIX,
    MARK_PREFIX,
    SNAPSHOT_PREFIX,
    ChangeEvent,
    LogicalMessage,
    Record,
    Transaction,
    TransactionMarker,
)
from journal.positions import Position
from journal.row_identity import KeylessRows

Row = dict[str, Any]
Key = tuple[Any, ...]


class TransactionGrouper:
    """Turns records into complete transactions, one record at a time.

    Records outside any open transaction (the tail of one whose BEGIN was not read, as
    when reading starts inside a transaction) are skipped and counted; so are the records
    of discarded incomplete transactions. Non-transactional messages (heartbeats) belong
    to no transaction and are not passed through here.
    """

    def __init__(self) -> None:
        self._open: Transaction | None = None
        self.discarded = 0  # incomplete transactions dropped
        self.skipped = 0  # records that belonged to no open transaction

    @property
    def pending(self) -> Transaction | None:
        """The transaction whose END has not arrived yet."""
        return self._open

    def feed(self, record: Record) -> Transaction | None:
        """Take one record; returns a transaction when this record completed it."""
        if isinstance(record, TransactionMarker):
            if record.status == "BEGIN":
                if self._open is not None:
                    if record.position <= self._open.begin.position:
                        raise ValidationError(
                            f"BEGIN at {record.position} does not follow the open transaction "
                            f"at {self._open.begin.position}: records are out of order")
                    self._discard()
                self._open = Transaction(record)
                return None
            return self._end(record)
        if self._open is None or record.position.commit_lsn != self._open.commit_lsn:
            self.skipped += 1
            return None
        self._open.records.append(record)
        return None

    def _end(self, end: TransactionMarker) -> Transaction | None:
        txn = self._open
        if txn is None or end.position.commit_lsn != txn.commit_lsn:
            # the END of a transaction whose BEGIN we did not see
            if txn is not None:
                self._discard()
            self.skipped += 1
            return None
        changes = len(txn.changes)
        if changes != end.event_count:
            raise ValidationError(
                f"transaction xid {txn.begin.xid} at {txn.begin.position} ends with "
                f"event_count {end.event_count} but {changes} changes arrived: "
                "records are missing")
        txn.end = end
        self._open = None
        return txn

    def _discard(self) -> None:
        assert self._open is not None
        self.skipped += len(self._open.records) + 1
        self.discarded += 1
        self._open = None


def transactions(records: Iterable[Record]) -> Iterator[Transaction]:
    """Complete transactions of a position-ordered, deduplicated record stream.

    Streaming: only the records of the transaction being read are held in memory.
    """
    grouper = TransactionGrouper()
    for record in records:
        if isinstance(record, LogicalMessage) and not record.transactional:
            continue
        txn = grouper.feed(record)
        if txn is not None:
            yield txn


class StreamState:
    """Table state at the position of the last complete transaction applied."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[Key, Row]] = {}
        self._grouper = TransactionGrouper()
        self.catalog: dict[str, Any] | None = None
        self.generation: str | None = None
        self.position: Position | None = None  # last applied END marker (or heartbeat)
        self.commit_ts: int | None = None  # of the last applied transaction
        self.xid: int | None = None
        self.marks: list[tuple[str, Position]] = []  # (name, position) in stream order
        self.transactions_applied = 0

    @property
    def discarded(self) -> int:
        """Incomplete transactions dropped so far."""
        return self._grouper.discarded

    @property
    def skipped(self) -> int:
        """Records that belonged to no complete transaction."""
        return self._grouper.skipped

    @property
    def pending(self) -> Transaction | None:
        return self._grouper.pending

    def tables(self) -> dict[str, dict[Key, Row]]:
        """``{"schema.table": {primary key tuple: row}}``; tables seen empty stay listed."""
        return dict(self._tables)

    def rows(self, table: str) -> dict[Key, Row]:
        return self._tables.get(table, {})

    def apply_all(self, records: Iterable[Record]) -> StreamState:
        for record in records:
            self.apply(record)
        return self

    def apply(self, record: Record) -> None:
        if isinstance(record, LogicalMessage) and not record.transactional:
            # a heartbeat: progress, but never inside an unfinished transaction
            if self.pending is None and (self.position is None
                                         or record.position > self.position):
                self.position = record.position
            return
        txn = self._grouper.feed(record)
        if txn is not None:
            self.apply_transaction(txn)

    def apply_transaction(self, txn: Transaction) -> None:
        """Apply one complete transaction."""
        for record in txn.records:
            if isinstance(record, LogicalMessage):
                self._message(record)
            else:
                self._change(record)
        assert txn.end is not None
        self.position = txn.end.position
        self.commit_ts = txn.end.commit_ts
        self.xid = txn.begin.xid
        self.transactions_applied += 1

    def _message(self, message: LogicalMessage) -> None:
        if message.prefix == SNAPSHOT_PREFIX:
            content = _json(message)
            # a new generation: state is exactly the snapshot rows that follow
            self._tables = {}
            self.generation = content.get("generation")
            self.catalog = content.get("catalog")
        elif message.prefix == CATALOG_PREFIX:
            self.catalog = schema_change.apply(Catalog.parse(self.catalog or {}),
                                               message.content, message.position)[0].to_json()
        elif message.prefix == MARK_PREFIX:
            self.marks.append((message.content.decode(errors="replace"), message.position))

    def _change(self, event: ChangeEvent) -> None:
        apply_change(self._tables, event)


def apply_change(tables: dict[str, dict[Key, Row]], event: ChangeEvent) -> None:
    """Apply one row change to tables held in memory: the one meaning of a change (the
    compactor's fold, verify's state and the restore are held to it). An update leaving a
    TOAST column unchanged whose earlier row is unknown, or a change to a row a table
    without a primary key does not hold, is an error: never a guess."""
    table = event.table
    if not table.primary_key:
        _keyless_change(tables, event)
        return
    rows = tables.setdefault(event.table.qualified, {})
    if event.op == "t":
        rows.clear()
    elif event.op in ("r", "c"):
        row = _require(event, event.after, "after")
        rows[table.key_of(row)] = dict(row)
    elif event.op == "u":
        after = _require(event, event.after, "after")
        new_key = table.key_of(after)
        # the before image is there when the key changed (or REPLICA IDENTITY FULL)
        old_key = table.key_of(event.before) if event.before is not None else new_key
        previous = rows.pop(old_key, None)
        row = dict(after)
        for column in event.unchanged_toast:
            if previous is None:
                raise ValidationError(
                    f"update of {table.qualified} key {old_key!r} at {event.position} "
                    f"leaves column {column!r} unchanged, but no earlier row is known")
            row[column] = previous[column]
        rows[new_key] = row
    elif event.op == "d":
        before = _require(event, event.before, "before")
        rows.pop(table.key_of(before), None)


def _keyless_change(tables: dict[str, Any], event: ChangeEvent) -> None:
    """A table without a primary key (REPLICA IDENTITY FULL) is a multiset: an update
    or delete takes away one row equal to the whole old image."""
    rows = tables.get(event.table.qualified)
    if not isinstance(rows, KeylessRows):
        rows = tables[event.table.qualified] = KeylessRows()
    if event.op == "t":
        rows.clear()
        return
    if event.op in ("u", "d"):
        before = _require(event, event.before, "before")
        if not rows.remove(before):
            raise ValidationError(f"{event.op!r} event on {event.table.qualified} at "
                                  f"{event.position} changes a row the table does not "
                                  "hold")
    if event.op in ("r", "c", "u"):
        row = dict(_require(event, event.after, "after"))
        for column in event.unchanged_toast if event.op == "u" else ():
            row[column] = before[column]
        rows.add(row)


def _require(event: ChangeEvent, row: Row | None, which: str) -> Row:
    if row is None:
        raise ValidationError(f"{event.op!r} event on {event.table.qualified} at "
                              f"{event.position} has no {which} image")
    return row


def _json(message: LogicalMessage) -> dict[str, Any]:
    try:
        content = json.loads(message.content)
    except ValueError as exc:
        raise ValidationError(f"{message.prefix} message at {message.position} is not "
                              f"JSON: {exc}") from exc
    if not isinstance(content, dict):
        raise ValidationError(f"{message.prefix} message at {message.position} is not an "
                              "object")
    return content
