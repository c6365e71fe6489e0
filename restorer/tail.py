"""The journal's newest seconds: what capture wrote after the newest package.

A restore to the latest state, or to a target later than the newest package, reads the
journal itself past the end of the packages, through the same reader the compactor uses.
Where the packages end in the journal is what the compactor committed: an offset and the
stream position it reaches (the end of the package that covers it). If this store's
newest package ends before that position, the store is not the one the compactor writes
and the journal cannot continue it: refused, never a gap.

The tail is read twice. Before anything is written, every record is read (the file
journal checks each frame's CRC-32), decoded against its schema fingerprint and grouped
into complete transactions, up to the last complete one; a record that does not decode
refuses the restore then. Inside the restore's transaction the same records are read
again, up to the same offset. Between the two nothing is held in memory but counts.

To the planner the tail is one more segment (``JournalTail`` has the manifest fields it
reads), so targets inside it, marks and transaction ids included, work as in packages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from journal.codec import decode
from journal.compactor import CONSUMER
from journal.config import redact
from journal.errors import JournalError, RestoreError, TransportError, ValidationError
from journal.events import (
    MARK_PREFIX,
    SNAPSHOT_PREFIX,
    LogicalMessage,
    Transaction,
)
from journal.positions import Position
from journal.stream_state import TransactionGrouper
from journal.transport import JournalReader, RawRecord, deduplicate

log = logging.getLogger(__name__)

TAIL_ID = "journal"  # how the tail appears among package ids in plans and reports


@dataclass
class JournalTail:
    """The complete transactions in the journal after the newest package, as a segment."""

    url: str  # redacted
    system_identifier: str
    database: str
    generation: str
    from_position: Position  # the newest package's end
    start_offset: int
    to_position: Position = Position(0, 0)
    first_commit_ts: int | None = None
    last_commit_ts: int | None = None
    transactions: int = 0
    events: int = 0
    marks: list[tuple[str, Position, int]] = field(default_factory=list)
    xids: dict[int, int] = field(default_factory=dict)  # xid -> commit LSN (newest)
    stopped: str = ""  # why the tail ends before the journal does, if it does
    kind: str = "segment"
    package_id: str = TAIL_ID

    def describe(self) -> str:
        if not self.transactions:
            return f"nothing newer than the packages in the journal ({self.url})"
        return (f"{self.transactions} transaction(s), {self.events} change(s) from the "
                f"journal ({self.url}) up to {self.to_position}"
                + (f"; {self.stopped}" if self.stopped else ""))


def scan_tail(reader: JournalReader, newest: Any, url: str, *,
              wanted_xid: int | None = None) -> JournalTail:
    """Read and check the journal after ``newest`` (the store's newest package manifest)."""
    committed = reader.committed(CONSUMER)
    if committed.position is None:
        raise RestoreError(
            f"the journal ({redact(url)}) does not say where the packages end in it (the "
            "compactor has not committed with this version yet): run journal compact once, "
            "or restore with --packages-only")
    if committed.position > newest.to_position:
        raise RestoreError(
            f"the journal's compactor has packaged up to {committed.position}, past this "
            f"store's newest package ({newest.package_id}, up to {newest.to_position}): this "
            "is not the store the compactor writes, so the journal cannot continue it; "
            "restore from that store, or with --packages-only")
    tail = JournalTail(redact(url), newest.system_identifier, newest.database,
                       newest.generation, newest.to_position, committed.offset,
                       to_position=newest.to_position)
    for txn, raw in _transactions(reader, tail.start_offset, tail.from_position, None, url):
        if txn is None:  # a heartbeat after complete transactions: progress
            tail.to_position = raw.position
            continue
        if any(isinstance(r, LogicalMessage) and r.prefix == SNAPSHOT_PREFIX
               for r in txn.records):
            tail.stopped = (f"a new snapshot generation starts at {txn.begin.position}: the "
                            "journal tail ends before it (compact to restore past it)")
            break
        _count(tail, txn)
        if wanted_xid is not None and txn.begin.xid == wanted_xid:
            tail.xids[wanted_xid] = txn.commit_lsn
    log.info("journal tail: %s", tail.describe())
    return tail


def tail_transactions(reader: JournalReader, tail: JournalTail) -> Iterator[Transaction]:
    """The transactions ``scan_tail`` found, read again (inside the restore)."""
    for txn, _ in _transactions(reader, tail.start_offset, tail.from_position,
                                tail.to_position, tail.url):
        if txn is not None:
            yield txn


def _count(tail: JournalTail, txn: Transaction) -> None:
    assert txn.end is not None
    tail.transactions += 1
    tail.events += len(txn.changes)
    tail.to_position = txn.end.position
    ts = txn.begin.commit_ts
    tail.first_commit_ts = ts if tail.first_commit_ts is None else tail.first_commit_ts
    tail.last_commit_ts = ts
    for r in txn.records:
        if isinstance(r, LogicalMessage) and r.prefix == MARK_PREFIX:
            tail.marks.append((r.content.decode(errors="replace"), r.position, ts))


def _transactions(reader: JournalReader, start: int, after: Position, end: Position | None,
                  url: str) -> Iterator[tuple[Transaction | None, RawRecord]]:
    """Complete transactions after position ``after``, read from offset ``start`` (up to
    position ``end``: positions, not offsets, order every transport's records), each with
    its last raw record; ``(None, raw)`` for a heartbeat outside any transaction."""
    registry = reader.registry()
    grouper = TransactionGrouper()
    raws = reader.read(start)
    try:
        for raw in deduplicate(raws, after=after):
            if end is not None and raw.position > end:
                return
            try:
                record = decode(raw.value, registry)
            except (JournalError, KeyError, ValueError) as exc:
                raise ValidationError(
                    f"journal record at offset {raw.offset} ({redact(url)}, position "
                    f"{raw.position}) does not decode: {exc}; nothing was restored (restore "
                    "with --packages-only to stop at the newest package)") from exc
            if isinstance(record, LogicalMessage) and not record.transactional:
                if grouper.pending is None:
                    yield None, raw
                continue
            txn = grouper.feed(record)
            if txn is not None:
                yield txn, raw
    except TransportError as exc:  # a bad frame, an unreachable broker
        raise TransportError(f"reading the journal's newest records ({redact(url)}): {exc}; "
                             "nothing was restored (restore with --packages-only to stop at "
                             "the newest package)") from exc
