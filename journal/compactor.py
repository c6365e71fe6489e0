"""The compactor: the journal transport in, backup packages out.

It reads the stream as consumer ``compactor``, drops every position already packaged,
groups records into complete transactions (``journal.stream_state.TransactionGrouper``, the
reference) and appends them to the open segment, which it closes on a transaction
boundary when it holds enough events or bytes, or is old enough. A snapshot generation
(BEGIN, SNAPSHOT message, ``r`` rows, END) becomes a full snapshot package, streamed
table by table into PK-sorted members. Every so many segments (or bytes, or hours) it
folds the chain into a new full snapshot.

Crash safety: a package is published (fsync, rename, fsync dir) before the consumer
offset is committed, and on start the last packaged position is taken from the store,
not from the offset. A crash between the two re-reads records that are then dropped as
already packaged: no duplicate, no gap. A failed write (disk full, read-only) discards
what was being built and moves no offset; the next run builds it again.

An empty store starts with a full snapshot, whatever the offset says (it may have been
committed for another store): the journal is read from its beginning for a snapshot
generation, and when it holds none any more, one is taken from the source (see
``Compactor.source_snapshot``) or the run fails saying why. Never silently nothing.

One module because the loop, the open segment and the open snapshot share the crash-safety
order above (publish, then commit, then release the journal); the fold itself is
``journal.fold`` and the sorting ``journal.sorting``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journal import schema_change
from journal.catalog import Catalog
from journal.codec import SchemaRegistry, decode, split_header
from journal.config import Config
from journal.durable import storage
from journal.errors import JournalError, StorageError, ValidationError
from journal.events import (
    CATALOG_PREFIX,
    SNAPSHOT_PREFIX,
    ChangeEvent,
    LogicalMessage,
    Record,
    Transaction,
    TransactionMarker,
)
from journal.fold import fold
from journal.packages import EventWriter, Manifest, PackageBuilder, verify_chain
from journal.packages.store import PackageStore
from journal.positions import Position
from journal.sorting import SortedRowSink
from journal.stream_state import TransactionGrouper
from journal.transport import JournalReader, RawRecord, deduplicate

log = logging.getLogger(__name__)

CONSUMER = "compactor"


@dataclass(frozen=True)
class Policy:
    """When a segment closes and when a new full snapshot is folded."""

    segment_max_events: int = 100_000
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age_s: float = 300.0
    snapshot_every_segments: int = 24
    snapshot_every_bytes: int | None = None
    snapshot_every_hours: float | None = None
    journal_retention_s: float = 7 * 24 * 3600.0  # packaged records kept in the journal

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        return cls(config.segment_max_events, config.segment_max_bytes,
                   config.segment_max_age_s, config.snapshot_every_segments,
                   journal_retention_s=config.journal_retention_s)


@dataclass
class Tip:
    """The end of what is packaged: where the next segment starts and whom it names."""

    position: Position | None = None
    system_identifier: str = ""
    database: str = ""
    generation: str = ""
    parent_id: str | None = None
    catalog: dict[str, Any] = field(default_factory=dict)
    segments_since_full: int = 0
    bytes_since_full: int = 0
    full_commit_ts: int | None = None

    @classmethod
    def from_store(cls, manifests: list[Manifest]) -> Tip:
        if not manifests:
            return cls()
        newest = manifests[-1]  # catalogue order: by to_position, segment before full
        same = [m for m in manifests if m.generation == newest.generation]
        at_tip = [m for m in same if m.to_position == newest.to_position]
        segment = next((m for m in at_tip if m.kind == "segment"), None)
        fulls = [m for m in same if m.kind == "full"]
        last_full = fulls[-1] if fulls else None
        since = [m for m in same if m.kind == "segment" and last_full is not None
                 and m.to_position > last_full.to_position]
        return cls(newest.to_position, newest.system_identifier, newest.database,
                   newest.generation, (segment or newest).package_id, newest.catalog,
                   len(since), sum(m.size for m in since),
                   last_full.last_commit_ts if last_full else None)


@dataclass
class Stats:
    records: int = 0
    transactions: int = 0
    segments: int = 0
    snapshots: int = 0
    folds: int = 0
    skipped: int = 0
    packages: list[str] = field(default_factory=list)


class _OpenSegment:
    def __init__(self, store: PackageStore) -> None:
        self.builder = PackageBuilder("segment", store.workdir())
        self.events: EventWriter = self.builder.events()
        self.fingerprints: set[bytes] = set()
        self.marks: list[tuple[str, Position, int]] = []
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.last: RawRecord | None = None
        self.changes = 0
        self.opened = time.monotonic()


class _OpenSnapshot:
    """A snapshot generation being streamed into a full package."""

    def __init__(self, store: PackageStore, begin: TransactionMarker, content: dict[str, Any],
                 spill_bytes: int) -> None:
        self.begin = begin
        self.content = content
        self.workdir = store.workdir()
        self.builder = PackageBuilder("full", self.workdir)
        self.sinks: dict[str, SortedRowSink] = {}
        self.spill_bytes = spill_bytes
        self.rows = 0

    def row(self, event: ChangeEvent) -> None:
        name = event.table.qualified
        sink = self.sinks.get(name)
        if sink is None:
            sink = self.sinks[name] = SortedRowSink(self.builder, event.table, self.workdir,
                                                    self.spill_bytes)
        if event.op != "r" or event.after is None:
            raise ValidationError(f"{event.op!r} event at {event.position} inside the snapshot "
                                  "generation (only 'r' rows belong there)")
        sink.write(event.after)
        self.rows += 1

    def finish(self, end: TransactionMarker) -> tuple[Path, Manifest]:
        if end.event_count != self.rows:
            raise ValidationError(f"snapshot generation at {self.begin.position} ends with "
                                  f"event_count {end.event_count} but {self.rows} rows arrived")
        for sink in self.sinks.values():
            sink.close()
        catalog = Catalog.parse(self.content.get("catalog") or {})
        for name, spec in sorted(catalog.tables.items()):
            if name not in self.sinks:  # an empty table is still part of the snapshot
                self.builder.table(spec.table_schema())
        return self.builder.finish(
            system_identifier=str(self.content.get("system_identifier", "")),
            database=str(self.content.get("database", end.database)),
            generation=str(self.content.get("generation", "")),
            to_position=end.position, first_commit_ts=end.commit_ts,
            last_commit_ts=end.commit_ts, parent_id=None, catalog=catalog.to_json())

    def discard(self) -> None:
        self.builder.discard()


# Takes a snapshot generation from the source, handing each record (BEGIN, the SNAPSHOT
# message, the rows, END) to the callable it is given; provided by the application layer.
SourceSnapshot = Callable[[Callable[[Record], None]], object]


class Compactor:
    def __init__(self, reader: JournalReader, store: PackageStore, policy: Policy | None = None,
                 *, spill_bytes: int = 64 * 1024 * 1024,
                 source_snapshot: SourceSnapshot | None = None) -> None:
        """``source_snapshot``: how an empty store gets its first full snapshot when the
        journal no longer holds a snapshot generation (without it, that run fails)."""
        self.reader = reader
        self.source_snapshot = source_snapshot
        self.store = store
        self.policy = policy or Policy()
        self.spill_bytes = spill_bytes
        self.stats = Stats()
        self._registry: SchemaRegistry = reader.registry()
        self._segment: _OpenSegment | None = None
        self._snapshot: _OpenSnapshot | None = None
        self._grouper = TransactionGrouper()
        self._open_raws: list[RawRecord] = []
        self._pending_begin: tuple[RawRecord, TransactionMarker] | None = None
        self._first_skipped: Position | None = None
        self.tip = Tip()

    # -- the loop -------------------------------------------------------------------------

    def run(self, *, once: bool = False, stop: threading.Event | None = None,
            idle_timeout: float = 1.0) -> Stats:
        """Package what the transport holds; with ``once`` stop at its end, otherwise
        follow it until ``stop`` is set."""
        self.store.cleanup()
        stop = stop or threading.Event()
        manifests = self.store.list()
        self.tip = Tip.from_store(manifests)
        log.info("compactor starts after %s", self.tip.position or "the beginning")
        offset = self.reader.committed_offset(CONSUMER)
        if not manifests and offset > 0:
            # The offset was committed for packages this store does not hold (compacted
            # into another store, or this one was emptied): an empty store starts with a
            # full snapshot, so read the whole journal for a snapshot generation.
            log.warning("package store is empty but the journal was compacted up to offset "
                        "%d: reading the journal from its beginning", offset)
            offset = 0
        seen = self.tip.position
        workdir = self.store.workdir()
        try:
            with storage(workdir):  # spill files and the like: name the store, not an errno
                while True:
                    records = self.reader.read(offset, follow=not once,
                                               idle_timeout=idle_timeout)
                    for raw in deduplicate(records, after=seen):
                        self._take(raw)
                        seen = raw.position
                        if raw.next_offset is not None:
                            offset = raw.next_offset
                        if stop.is_set():
                            break
                        self._close_segment_if_due()
                    if self._needs_snapshot():
                        self._snapshot_from_source()
                        # the journal again, after the snapshot's position this time
                        offset, seen = 0, self.tip.position
                        continue
                    if once or stop.is_set():
                        break
                    self._close_segment_if_due()
                self._close_segment()
        except BaseException:
            self._discard_open()  # nothing half-built stays; the offset did not move
            raise
        # a snapshot generation still arriving is read again, whole, by the next run
        self._discard_open()
        return self.stats

    def _needs_snapshot(self) -> bool:
        """Records, but no snapshot generation to put them on (nor one arriving): capture
        runs on a snapshot the journal no longer holds. (An empty journal is one that
        capture has not written yet; its first records will be its snapshot.)"""
        return not (self.tip.generation or self._snapshot is not None or not self.stats.records)

    def _snapshot_from_source(self) -> None:
        """The first full snapshot of an empty store, from the source; otherwise a loud no.

        The source's snapshot is taken at a consistent point that capture's slot has not
        passed, so every transaction committed after it is (or will be) in the journal,
        and every one before it is in the snapshot: the journal read after its position
        continues it without gap or overlap."""
        first = f", the first transaction at {self._first_skipped}" if self._first_skipped else ""
        why = (f"the package store is empty and the journal holds no snapshot generation to "
               f"start it with (its {self.stats.records} records follow a snapshot it no "
               f"longer holds{first})")
        if self.source_snapshot is None:
            raise JournalError(
                f"{why}: nothing was written. Point [packages] url at the store that holds "
                "this journal's packages, or run journal compact where the source is "
                "reachable, to take a full snapshot from it")
        log.warning("%s: taking a full snapshot from the source", why)
        self._grouper = TransactionGrouper()  # what the first reading held is read again
        self._open_raws = []
        self._pending_begin = None

        def take(record: Record) -> None:
            self._take_record(RawRecord(record.position, None, b"", -1), record)

        try:
            self.source_snapshot(take)
        except JournalError as exc:
            raise JournalError(f"{why}, and the snapshot from the source failed: {exc}; "
                               "nothing was written") from None
        if not self.tip.generation:
            raise JournalError(f"{why}, and the source sent no complete snapshot; "
                               "nothing was written")
        self.stats.skipped = 0
        self.stats.records = 0  # counted again as the journal is read again

    def _discard_open(self) -> None:
        for open_package in (self._segment, self._snapshot):
            if open_package is not None:
                open_package.builder.discard()
        self._segment = self._snapshot = None

    def _take(self, raw: RawRecord) -> None:
        self.stats.records += 1
        self._take_record(raw, self._decode(raw))

    def _take_record(self, raw: RawRecord, record: Record) -> None:
        if isinstance(record, LogicalMessage) and not record.transactional:
            return  # heartbeats change nothing that a package holds
        if self._snapshot is not None:
            self._snapshot_record(raw, record)
            return
        if isinstance(record, TransactionMarker) and record.status == "BEGIN":
            # hold the BEGIN back until the next record says whether a snapshot starts
            self._flush_pending_begin()
            self._pending_begin = (raw, record)
            return
        if self._pending_begin is not None:
            begin_raw, begin = self._pending_begin
            self._pending_begin = None
            if (isinstance(record, LogicalMessage) and record.prefix == SNAPSHOT_PREFIX
                    and record.position.commit_lsn == begin.position.commit_lsn):
                self._start_snapshot(begin, record)
                return
            self._feed(begin_raw, begin)
        self._feed(raw, record)

    def _flush_pending_begin(self) -> None:
        if self._pending_begin is not None:
            raw, begin = self._pending_begin
            self._pending_begin = None
            self._feed(raw, begin)

    def _decode(self, raw: RawRecord) -> Record:
        fp, _ = split_header(raw.value)
        if fp not in self._registry:
            self._registry = self.reader.registry()  # published after we started reading
        return decode(raw.value, self._registry)

    def _feed(self, raw: RawRecord, record: Record) -> None:
        before = self._grouper.pending
        txn = self._grouper.feed(record)
        if txn is not None:
            raws = self._open_raws + [raw]
            self._open_raws = []
            self._add_transaction(txn, raws)
        elif self._grouper.pending is not before:
            self._open_raws = [raw] if self._grouper.pending is not None else []
        elif before is not None and before.records and before.records[-1] is record:
            self._open_raws.append(raw)

    # -- segments -------------------------------------------------------------------------

    def _add_transaction(self, txn: Transaction, raws: list[RawRecord]) -> None:
        if self.tip.generation == "":
            self.stats.skipped += 1
            self._first_skipped = self._first_skipped or txn.begin.position
            log.warning("transaction at %s precedes any snapshot generation: skipped",
                        txn.begin.position)
            return
        seg = self._segment
        if seg is None:
            seg = self._segment = _OpenSegment(self.store)
        for raw in raws:
            seg.events.write(raw.position, raw.key, raw.value)
            seg.fingerprints.add(raw.value[2:10])
        for record in txn.records:
            if isinstance(record, LogicalMessage):
                if record.is_mark:
                    seg.marks.append((record.content.decode("utf-8", "replace"),
                                      record.position, record.commit_ts))
                elif record.prefix == CATALOG_PREFIX:
                    self.tip.catalog = schema_change.apply(
                        Catalog.parse(self.tip.catalog), record.content,
                        record.position)[0].to_json()
        assert txn.end is not None
        seg.first_ts = txn.begin.commit_ts if seg.first_ts is None else seg.first_ts
        seg.last_ts = txn.begin.commit_ts
        seg.last = raws[-1]
        seg.changes += txn.end.event_count
        self.stats.transactions += 1

    def _close_segment_if_due(self) -> None:
        seg, p = self._segment, self.policy
        if seg is None:
            return
        if (seg.changes >= p.segment_max_events or seg.events.bytes >= p.segment_max_bytes
                or time.monotonic() - seg.opened >= p.segment_max_age_s):
            self._close_segment()

    def _close_segment(self) -> None:
        seg = self._segment
        if seg is None:
            return
        self._segment = None
        if seg.last is None:
            seg.builder.discard()
            return
        assert self.tip.position is not None
        seg.builder.add_schemas({fp.hex(): self._registry.schema_json(fp)
                                 for fp in seg.fingerprints})
        tmp, _ = seg.builder.finish(
            system_identifier=self.tip.system_identifier, database=self.tip.database,
            generation=self.tip.generation, from_position=self.tip.position,
            to_position=seg.last.position, first_commit_ts=seg.first_ts,
            last_commit_ts=seg.last_ts, parent_id=self.tip.parent_id,
            catalog=self.tip.catalog, marks=seg.marks)
        manifest = self.store.put(tmp)
        self._published(manifest, seg.last)
        self.stats.segments += 1
        self.tip.segments_since_full += 1
        self.tip.bytes_since_full += manifest.size
        if self._snapshot_due(manifest):
            self.snapshot_now()

    def _published(self, manifest: Manifest, last: RawRecord) -> None:
        # the offset moves only once the package is durable
        self.tip.position = manifest.to_position
        self.tip.parent_id = manifest.package_id
        self.stats.packages.append(manifest.package_id)
        if last.next_offset is not None:
            self.reader.commit_offset(CONSUMER, last.next_offset, position=manifest.to_position)
            self._release(last.next_offset)
        log.info("packaged %s", manifest.package_id)

    def _release(self, offset: int) -> None:
        """Let the journal drop what is packaged and old enough; a failure to delete
        loses nothing (the records are in packages), so it is a warning, not a stop."""
        try:
            removed = self.reader.release(offset, min_age_s=self.policy.journal_retention_s)
        except StorageError as exc:
            log.warning("journal retention: %s; packaging goes on", exc)
            return
        if removed:
            log.info("journal retention: %d packaged segment(s) deleted", removed)

    # -- snapshots ------------------------------------------------------------------------

    def _start_snapshot(self, begin: TransactionMarker, message: LogicalMessage) -> None:
        self._close_segment()  # a segment never crosses into a new generation
        self._grouper = TransactionGrouper()
        self._open_raws = []
        try:
            content = json.loads(message.content)
        except ValueError as exc:
            raise ValidationError(f"snapshot message at {message.position}: {exc}") from None
        self._snapshot = _OpenSnapshot(self.store, begin, content, self.spill_bytes)

    def _snapshot_record(self, raw: RawRecord, record: Record) -> None:
        snap = self._snapshot
        assert snap is not None
        if isinstance(record, TransactionMarker) and record.status == "BEGIN":
            # the generation was cut off (capture crashed while taking it): discard it
            log.warning("snapshot generation at %s is incomplete: discarded",
                        snap.begin.position)
            snap.discard()
            self._snapshot = None
            self._take(raw)
            return
        if record.position.commit_lsn != snap.begin.position.commit_lsn:
            return
        if isinstance(record, TransactionMarker):  # END
            self._snapshot = None
            try:
                tmp, _ = snap.finish(record)
            except BaseException:
                snap.discard()
                raise
            manifest = self.store.put(tmp)
            self.tip = Tip(manifest.to_position, manifest.system_identifier, manifest.database,
                           manifest.generation, manifest.package_id, manifest.catalog,
                           full_commit_ts=manifest.last_commit_ts)
            self._published(manifest, raw)
            self.stats.snapshots += 1
        elif isinstance(record, ChangeEvent):
            snap.row(record)

    def _snapshot_due(self, newest: Manifest) -> bool:
        p, tip = self.policy, self.tip
        if p.snapshot_every_segments and tip.segments_since_full >= p.snapshot_every_segments:
            return True
        if p.snapshot_every_bytes and tip.bytes_since_full >= p.snapshot_every_bytes:
            return True
        if p.snapshot_every_hours and tip.full_commit_ts is not None \
                and newest.last_commit_ts is not None:
            age = newest.last_commit_ts - tip.full_commit_ts
            return age >= p.snapshot_every_hours * 3600 * 1_000_000
        return False

    def snapshot_now(self) -> Manifest | None:
        """Fold the segments after the newest full snapshot into a new one (if any)."""
        manifest = fold_latest(self.store, spill_bytes=self.spill_bytes)
        if manifest is not None:
            self.tip.segments_since_full = 0
            self.tip.bytes_since_full = 0
            self.tip.full_commit_ts = manifest.last_commit_ts
            self.stats.folds += 1
            self.stats.packages.append(manifest.package_id)
        return manifest


def chain_after(manifests: list[Manifest], base: Manifest) -> list[Manifest]:
    """The segments that follow ``base`` in its generation, in order."""
    segments = [m for m in manifests if m.kind == "segment" and m.generation == base.generation
                and m.to_position > base.to_position]
    segments.sort(key=lambda m: m.to_position)
    verify_chain([base, *segments])
    return segments


def fold_latest(store: PackageStore, *, spill_bytes: int = 64 * 1024 * 1024
                ) -> Manifest | None:
    """A new full snapshot at the end of the newest generation's chain, by folding."""
    manifests = store.list()
    if not manifests:
        return None
    generation = manifests[-1].generation
    fulls = [m for m in manifests if m.kind == "full" and m.generation == generation]
    if not fulls:
        return None
    base = fulls[-1]
    segments = chain_after(manifests, base)
    if not segments:
        return None
    ids = [base.package_id] + [s.package_id for s in segments]
    workdir = store.workdir()
    with store.lease(ids, "fold"), storage(workdir):  # spill files too: name the store
        readers = [store.open(i, verify=False) for i in ids]
        tmp, _ = fold(readers[0], readers[1:], workdir, parent_id=segments[-1].package_id,
                      spill_bytes=spill_bytes)
    manifest = store.put(tmp)
    log.info("folded %d segments into full snapshot %s", len(segments), manifest.package_id)
    return manifest

