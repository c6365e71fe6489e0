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
from contextlib import ExitStack
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
from journal.targets import RestoreTarget
from journal.transport import Committed, JournalReader, RawRecord, deduplicate, open_reader
from restorer.plan import TAIL_ID

log = logging.getLogger(__name__)



class TailUnavailable(Exception):
    """The journal cannot say where the packages end in it: the restore stops at the
    newest package, and its report says why."""


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
    parent_id: str = ""  # the newest package, which the tail continues
    kind: str = "segment"
    package_id: str = TAIL_ID

    def describe(self) -> str:
        if not self.transactions:
            return f"nothing newer than the packages in the journal ({self.url})"
        return (f"{self.transactions} transaction(s), {self.events} change(s) from the "
                f"journal ({self.url}) up to {self.to_position}"
                + (f"; {self.stopped}" if self.stopped else ""))


def scan_tail(reader: JournalReader, newest: Any, url: str, committed: Committed, *,
              wanted_xid: int | None = None) -> JournalTail:
    """Read and check the journal after ``newest`` (the store's newest package manifest),
    from what the compactor ``committed`` (read before the store was listed)."""
    if committed.offset == 0 and committed.position is None:
        raise TailUnavailable(f"not read: no compactor ever committed in the journal "
                              f"({redact(url)}), so the packages come from elsewhere")
    if committed.position is None:
        raise TailUnavailable(
            f"not read: the journal ({redact(url)}) does not say where the packages end in "
            "it (its compactor last committed with an older version; the next package it "
            "writes records it)")
    if committed.position > newest.to_position:
        raise RestoreError(
            f"the journal's compactor has packaged up to {committed.position}, past this "
            f"store's newest package ({newest.package_id}, up to {newest.to_position}): this "
            "is not the store the compactor writes, so the journal cannot continue it; "
            "restore from that store, or with --packages-only")
    tail = JournalTail(redact(url), newest.system_identifier, newest.database,
                       newest.generation, newest.to_position, committed.offset,
                       to_position=newest.to_position, parent_id=newest.package_id)
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


def scan_after_packages(url: str, store: Any, target: RestoreTarget, reached: Any | None,
                        stack: ExitStack
                        ) -> tuple[JournalReader | None, JournalTail | None, str, list[Any]]:
    """The journal's transactions after the newest package of the source and generation a
    restore or verify would use (the newest full snapshot's, or that of ``reached``, the
    target's restore state), checked before anything is written: the open reader (closed
    with ``stack``), the tail (None when there is nothing newer), what to report, and the
    store's manifests the tail continues (plan with these).

    The compactor's commit is read before the store is listed: a package it publishes in
    between is then in the listing and its records are dropped from the tail as already
    packaged, where the other order would see a commit past the listing's newest package.
    """
    manifests = store.list()
    if not url:
        return None, None, "not read (packages only)", manifests
    head = _head(manifests, reached)
    if head is None:
        return None, None, "not read: no package to continue", manifests
    try:
        reader = open_reader(url, head.database)  # the journal is named by the source
        stack.callback(reader.close)
        committed = reader.committed(CONSUMER)
    except TransportError as exc:
        raise TransportError(f"{exc}; nothing was restored (restore with --packages-only "
                             "to stop at the newest package)") from exc
    manifests = store.list()
    same = [m for m in manifests if (m.system_identifier, m.database, m.generation)
            == (head.system_identifier, head.database, head.generation)]
    newest = max(same, key=lambda m: m.to_position)
    xid = int(target.value) if target.kind == "xid" else None  # type: ignore[arg-type]
    try:
        tail = scan_tail(reader, newest, url, committed, wanted_xid=xid)
    except TailUnavailable as exc:
        log.warning("journal tail %s", exc)
        return reader, None, str(exc), manifests
    if tail.to_position <= newest.to_position:
        return reader, None, tail.describe(), manifests
    return reader, tail, tail.describe(), manifests


def _head(manifests: list[Any], reached: Any | None) -> Any | None:
    """The package whose source and generation the restore continues."""
    if reached is None:
        fulls = [m for m in manifests if m.kind == "full"]
        return max(fulls, key=lambda m: m.to_position) if fulls else None
    return next((m for m in manifests if (m.system_identifier, m.database, m.generation)
                 == (reached.system_identifier, reached.database, reached.generation)), None)


def transactions_of(store: Any, m: Any, journal: JournalReader | None, stack: ExitStack
                    ) -> Iterator[Transaction]:
    """The transactions of one planned segment: a package's, or the journal tail's."""
    if isinstance(m, JournalTail):
        assert journal is not None
        return tail_transactions(journal, m)
    return stack.enter_context(store.open(m.package_id, verify=False)).transactions()


def segments(store: Any, plan: Any, stack: ExitStack, journal: JournalReader | None
             ) -> Iterator[tuple[Any, Iterator[Transaction]]]:
    """Each segment of a restore plan with its transactions, packages and tail alike."""
    for m in plan.segments:
        yield m, transactions_of(store, m, journal, stack)
