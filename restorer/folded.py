"""A point-in-time restore into an empty database by net changes: the full snapshot
COPYed, then the net effect of every transaction up to the target applied set-wise.

A restore is one target transaction, so the order of the source's transactions between
the snapshot and the target matters only through their net effect on each row. That
effect is the compactor's fold (``journal.fold``): the changes are collected into an
external sort by table and primary key (flat memory, spilling to disk), in a worker
process while the snapshot is COPYed; each changed key's final row then replaces the
snapshot's through its primary key, a statement per table and step
(``restorer.net_apply``). Where that cannot be exact, each table is instead written
once, merged with its changes, in the shape the stream's schema changes left it in, as a
snapshot compacted at the target would hold it.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import Catalog, TableSchema
from journal.errors import RestoreError, RestoreRefused
from journal.events import ChangeEvent, Transaction
from journal.fold import (
    FoldState,
    collect_changes,
    final_tables,
    merge_changes,
    net_changes,
    net_unsupported,
    start_state,
)
from journal.packages import PackageReader
from journal.positions import Position
from journal.sorting import ExternalSorter
from journal.targets import Cutoff
from journal.transport import JournalReader
from restorer import schema
from restorer.copying import CopyWriter, copy_member
from restorer.graph import LoadOrder
from restorer.net_apply import StageText, apply_to_live, write_stage_text
from restorer.plan import TAIL_ID
from restorer.refusals import rows_holding
from restorer.replay import end_position, replay
from restorer.report import TableCounts, diagnosed
from restorer.tail import transactions_of
from restorer.target import TargetWriter

log = logging.getLogger(__name__)

Progress = Callable[[str, int], None]
WORKER_RECORDS = 20_000  # segment records from which the changes are read in a worker
GROW_ASIDE = 16  # rows added to those replayed in order before the whole range is instead


def foldable(base: PackageReader, catalog: Catalog) -> str | None:
    """Why ``base`` (whose catalog is ``catalog``) cannot be the fold's start (None: it
    can): a catalog written before every table carried its primary key, or rows of a
    table the catalog does not hold."""
    if not catalog.tables:
        return "its catalog lists no tables"
    old = sorted(t for t, spec in catalog.tables.items() if "primary_key" in spec.absent)
    if old:
        return f"its catalog does not record the primary key of {', '.join(old)}"
    unknown = sorted(set(base.tables()) - set(catalog.tables))
    if unknown:
        return f"it holds rows of {', '.join(unknown)}, which its catalog does not list"
    return None


@dataclass
class FoldedLoad:
    catalog: Catalog  # the tables as the target's position has them
    tables: list[str]
    reached: Position
    transactions: int
    events: int
    # past the snapshot's COPY and primary keys: waiting for the changes, applying them
    change_seconds: float
    rewritten: str = ""  # why the tables were rewritten rather than changed set-wise


class CopySink:
    """The fold's rows, table by table, into COPY (any order: the target's indexes are
    built after the data)."""

    ordered = False

    def __init__(self, conn: psycopg.Connection[Any], catalog: Catalog,
                 counts: dict[str, TableCounts], progress: Progress | None) -> None:
        self.conn, self.catalog, self.counts, self.progress = conn, catalog, counts, progress
        self._current: CopyWriter | None = None

    def table(self, table: TableSchema) -> CopyWriter:
        self._finish()
        self._current = CopyWriter.into(self.conn, self.catalog.tables[table.qualified])
        return self._current

    def copy_table(self, reader: PackageReader, table: str) -> None:
        """``reader``'s rows of ``table``, as COPY text written from the member's bytes
        where the member has the target's columns (``copy_member``)."""
        copy_member(self.table(reader.table_schema(table)), reader, table)

    def _finish(self, exc: BaseException | None = None) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        current.close(exc)
        if exc is None:
            self.counts.setdefault(current.name, TableCounts()).inserted += current.rows
            if self.progress is not None:
                self.progress(current.name, current.rows)

    def __enter__(self) -> CopySink:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._finish(exc)


def load_folded(conn: psycopg.Connection[Any], store: Any, base: PackageReader,
                catalog: Catalog, plan: Any, journal: JournalReader | None, cutoff: Cutoff,
                start: Position | None, counts: dict[str, TableCounts],
                progress: Progress | None = None,
                after_rows: Callable[[psycopg.Connection[Any]], None] | None = None
                ) -> FoldedLoad:
    """``base`` (whose catalog is ``catalog``) plus the transactions of the plan's
    segments after ``start`` up to ``cutoff``, into the empty target: types and tables,
    rows, constraints and indexes, foreign keys, sequences (pg_restore's order).

    The packaged segments' changes are read and sorted in a worker process while the
    snapshot's rows are COPYed; their net changes are then applied set-wise to the loaded
    tables, once their primary keys are built. Where that cannot be exact (schema
    changes on the way, tables without a primary key, a key-moving update with unchanged
    TOAST, unique values two rows swapped), the load is rolled back to its savepoint and
    each table is written once, merged with its changes, in the shape the schema changes
    left it in.
    """
    packaged = [m for m in plan.segments if m.package_id != TAIL_ID]
    tail = [m for m in plan.segments if m.package_id == TAIL_ID]
    reached = start or base.manifest.to_position
    with tempfile.TemporaryDirectory(prefix="journal-restore-") as workdir, \
            ExitStack() as stack:
        # a worker costs its start (an interpreter and its imports): worth it for many
        # records only
        collector = (stack.enter_context(_Collector(store, base.manifest.package_id, packaged,
                                                    cutoff, start, Path(workdir), catalog))
                     if sum(m.rows for m in packaged) >= WORKER_RECORDS else None)
        sorters: list[ExternalSorter] = []
        stack.callback(lambda: [s.close() for s in sorters])
        conn.execute("SAVEPOINT journal_snapshot")
        tables = sorted(catalog.tables)
        schema.create_types(conn, catalog)
        schema.create_tables(conn, catalog, tables)
        with CopySink(conn, catalog, counts, progress) as sink:
            for name in base.tables():
                sink.copy_table(base, name)
        # the changes find their rows through the primary keys: built now, the snapshot's
        # own work (a full restore builds them too), while the worker may still be reading
        constrained = bool(packaged or tail)
        if constrained:
            schema.add_constraints(conn, catalog, tables, primary=True)
        started = time.monotonic()
        state = None
        texts: dict[str, StageText] | None = None
        answer = collector.result() if collector is not None else None
        if answer is not None:
            state, reached, sorter, texts = answer
            sorters.append(sorter)
        else:
            tail = packaged + tail
        if tail and (state is None or not state.stopped):
            texts = None  # the stages the worker wrote lack the tail's changes
            sorters.append(ExternalSorter(Path(workdir)))
            box = [reached]
            state = collect_changes(
                base, _after(((m, transactions_of(store, m, journal, stack)) for m in tail),
                             start, box), cutoff, sorters[-1], state)
            reached = box[0]
        rewritten = ""
        if state is None:  # nothing after the snapshot
            conn.execute("RELEASE SAVEPOINT journal_snapshot")
            transactions = events = 0
        else:
            transactions, events = state.transactions, state.events
            if transactions:
                reached = max(reached, state.position)
            changes = _Merged(sorters)
            why = net_unsupported(state, catalog)
            if why is None:
                why = _apply_to_snapshot(conn, catalog, tables, state, changes, texts)
            if why is None:
                conn.execute("RELEASE SAVEPOINT journal_snapshot")
            else:
                rewritten = why
                constrained = False
                log.info("net changes rewrite the tables instead of being applied to them: "
                         "%s", why)
                conn.execute("ROLLBACK TO SAVEPOINT journal_snapshot")
                for c in counts.values():
                    c.inserted = 0
                catalog = state.catalog
                tables = final_tables(state)
                schema.create_types(conn, catalog)
                schema.create_tables(conn, catalog, tables)
                with CopySink(conn, catalog, counts, None) as sink:
                    merge_changes(base, state, changes, sink, Path(workdir))  # type: ignore[arg-type]
        change_seconds = time.monotonic() - started
    if after_rows is not None:
        after_rows(conn)
    schema.add_constraints(conn, catalog, tables, primary=False if constrained else None)
    schema.add_foreign_keys(conn, catalog, tables)
    schema.add_sequences(conn, catalog, tables)
    return FoldedLoad(catalog, tables, reached, transactions, events, change_seconds,
                      rewritten)


def _apply_to_snapshot(conn: psycopg.Connection[Any], catalog: Catalog, tables: list[str],
                       state: FoldState, changes: _Merged,
                       texts: dict[str, StageText] | None = None) -> str | None:
    """The net changes applied to the COPYed snapshot once its primary keys are built
    (each change finds its row through them), before its other constraints (so unique
    values that rows swapped hold only at the end, as in the source's commit); None, or
    why the tables must be rewritten instead (nothing of the attempt remains). ``texts``:
    every changed table's stage, written by the worker that read the changes."""
    try:
        conn.execute("SAVEPOINT journal_net")
        truncated = [catalog.tables[info.name] for info in state.tables.values()
                     if info.truncated_at is not None]
        # the worker's text is UTF-8, as the C formatter writes it
        staged: Iterable[tuple[Any, Any]] = (
            ((catalog.tables[name], text) for name, text in texts.items())
            if texts is not None and conn.info.encoding == "utf-8"
            else ((catalog.tables[net.name], net.changes) for net in net_changes(state, changes)))
        applied = apply_to_live(conn, staged, tables, truncated)
        if applied.aside:  # the unique indexes are built after the changes: not expected
            conn.execute("ROLLBACK TO SAVEPOINT journal_net")
            return ("rows exchanged unique values the restored tables already enforce: "
                    f"{', '.join(sorted(applied.aside))}")
        conn.execute("RELEASE SAVEPOINT journal_net")
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise  # the connection, not the statements
    except psycopg.Error as exc:  # e.g. unique values that rows swapped
        return f"the restored tables refused them set-wise: {diagnosed(exc)}"
    return None


def _after(segments: Iterable[tuple[Any, Iterable[Any]]], start: Position | None,
           reached: list[Position]) -> Iterator[Any]:
    """The transactions after ``start``, segment by segment; a segment read to its end
    (the fold asked past it) is reached to its manifest's end, which may lie past its
    last commit."""
    for manifest, transactions in segments:
        for tx in transactions:
            if start is not None and end_position(tx) <= start:
                continue  # already in the snapshot
            yield tx
        reached[0] = max(reached[0], manifest.to_position)


class _Merged:
    """The sorted changes of several sorters (the worker's, then the journal tail's)."""

    def __init__(self, sorters: list[ExternalSorter]) -> None:
        self.sorters = sorters

    def items(self) -> Iterator[tuple[Any, Any]]:
        if len(self.sorters) == 1:
            return self.sorters[0].items()
        return heapq.merge(*(s.items() for s in self.sorters), key=lambda kv: kv[0])


class _Collector:
    """The packaged segments' changes, read, decoded and sorted in a worker process (the
    per-record work of the restore runs beside the snapshot's COPY)."""

    def __init__(self, store: Any, base_id: str, manifests: list[Any], cutoff: Cutoff,
                 start: Position | None, workdir: Path, catalog: Catalog) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding sockets
        self._receive, send = ctx.Pipe(duplex=False)
        take, give = ctx.Pipe(duplex=False)
        # The work (manifests with their catalogs) goes through a pipe of its own once the
        # worker runs: handed to Process() it is written to the child before start()
        # returns, and a child that dies before reading it all would leave that write,
        # and the restore, blocked for ever.
        self._process = ctx.Process(
            target=_collect_in_worker, name="journal-restore-changes", daemon=True,
            args=(send, take))
        self._process.start()
        send.close()
        take.close()
        try:
            give.send((store, base_id, manifests, cutoff, start, workdir, catalog))
        except OSError:  # the worker ended before it read its work: result() says so
            pass
        finally:
            give.close()

    def result(self) -> tuple[FoldState, Position, ExternalSorter,
                              dict[str, StageText] | None] | None:
        """The worker's pass (with the stages of the net changes it wrote, where it could),
        or None when it ended without an answer (it could not start, or was killed): the
        caller then reads the segments itself."""
        try:
            # a worker that dies before it takes its end of the pipe leaves a copy open
            # here, so its death is watched for rather than an end of file
            while not self._receive.poll(0.2):
                if not self._process.is_alive():
                    if self._receive.poll(0):
                        break
                    raise EOFError
            outcome = self._receive.recv()
        except (EOFError, OSError):
            self._process.join(5)
            log.warning("the process reading the segments ended without an answer (exit "
                        "code %s): reading them here instead", self._process.exitcode)
            return None
        self._process.join()
        if outcome[0] == "error":
            raise outcome[1]
        _, state, reached, frozen, texts = outcome
        return state, reached, ExternalSorter.thaw(frozen), texts

    def __enter__(self) -> _Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._receive.close()


def _collect_in_worker(send: Any, take: Any) -> None:
    try:
        with ExitStack() as stack:
            store, base_id, manifests, cutoff, start, workdir, catalog = take.recv()
            take.close()
            base = stack.enter_context(store.open(base_id, verify=False))
            sorter = ExternalSorter(workdir)
            reached = [start or base.manifest.to_position]
            segments = ((m, transactions_of(store, m, None, stack)) for m in manifests)
            state = collect_changes(base, _after(segments, start, reached), cutoff, sorter)
            frozen = sorter.freeze()
            send.send(("ok", state, reached[0], frozen,
                       _stage_texts(state, catalog, sorter, workdir)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
        try:
            send.send(("error", exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            send.send(("error", RestoreError(f"reading the segments failed: "
                                             f"{type(exc).__name__}: {exc}")))
    finally:
        send.close()


def _stage_texts(state: FoldState, catalog: Catalog, sorter: ExternalSorter, workdir: Path
                 ) -> dict[str, StageText] | None:
    """Every changed table's stage as COPY text, written here so the restore only sends
    it; None where the changes cannot be applied as net changes or a row is one the C
    formatter leaves (the restore then stages them from the sorted changes)."""
    if net_unsupported(state, catalog) is not None:
        return None
    texts = {}
    for n, net in enumerate(net_changes(state, sorter)):
        try:
            text = write_stage_text(catalog.tables[net.name], net.changes,
                                    workdir / f"stage-{n}.copy")
        except OSError as exc:  # e.g. a full disk: the restore can still stage the rows
            log.warning("the net changes of %s were not written ahead: %s", net.name, exc)
            return None
        if text is None:
            return None
        texts[net.name] = text
    return texts


def _holder(conn: psycopg.Connection[Any], catalog: Catalog,
            exc: psycopg.errors.UniqueViolation) -> tuple[str, tuple[Any, ...]] | None:
    """The table and primary key of the row that holds the value ``exc`` refused (as its
    DETAIL spells it), or None where that is not one row of a restored table."""
    table = catalog.tables.get(f"{exc.diag.schema_name}.{exc.diag.table_name}")
    if table is None:
        return None
    _, _, rows = rows_holding(conn, exc, sql.Identifier(table.schema, table.name),
                              table.primary_key, 2)
    return (table.qualified, rows[0]) if len(rows) == 1 else None


@dataclass
class LiveResult:
    reached: Position
    transactions: int
    events: int
    counts: dict[str, tuple[int, int, int]]  # per table: inserted, updated, deleted
    # rows that exchanged unique values, replayed in order: how many, and their events
    ordered_rows: int = 0
    ordered_events: int = 0


def apply_incremental(conn: psycopg.Connection[Any], store: Any, plan: Any,
                      journal: JournalReader | None, catalog: Catalog, order: list[str],
                      cutoff: Cutoff, start: Position, writer: TargetWriter) -> LiveResult | str:
    """The net changes of the plan's segments after ``start`` (where an earlier restore
    left the target, ids kept) up to ``cutoff``, applied set-wise; rows that exchange the
    values of a unique index are replayed in order, event by event, with ``writer``. Or
    why they cannot be (the caller replays in order; nothing was written)."""
    box = [start]
    with tempfile.TemporaryDirectory(prefix="journal-restore-") as workdir, \
            ExitStack() as stack:
        sorter = ExternalSorter(Path(workdir))
        stack.callback(sorter.close)
        state = start_state(catalog, start, None,
                            {name: entry.table_schema() for name, entry in catalog.tables.items()})
        txs = _after(((m, transactions_of(store, m, journal, stack)) for m in plan.segments),
                     start, box)
        state = collect_changes(None, txs, cutoff, sorter, state)
        why = net_unsupported(state, catalog)
        if why is not None:
            return why
        truncated = [catalog.tables[info.name] for info in state.tables.values()
                     if info.truncated_at is not None]
        more: dict[str, set[tuple[Any, ...]]] = {}  # rows found to block the ones set aside
        counted = {t: dataclasses.replace(c) for t, c in writer.counts.items()}
        while True:
            try:
                with conn.transaction():  # a savepoint: an attempt that fails leaves nothing
                    applied = apply_to_live(
                        conn, ((catalog.tables[net.name], net.changes)
                               for net in net_changes(state, sorter)), order, truncated, more)
                    result = LiveResult(
                        max(box[0], state.position) if state.transactions else box[0],
                        state.transactions, state.events, applied.counts)
                    if applied.aside:
                        why = _replay_aside(conn, store, plan, journal, catalog, cutoff, start,
                                            applied.aside, writer, stack, result)
                        if isinstance(why, _Blocked):
                            raise why
                        if why is not None:
                            return why
                return result
            except _Blocked as blocked:
                writer.counts.clear()  # the attempt's rows replayed in order: undone
                writer.counts.update({t: dataclasses.replace(c) for t, c in counted.items()})
                known = more.setdefault(blocked.table, set())
                if blocked.key in known or sum(map(len, more.values())) >= GROW_ASIDE:
                    return blocked.why
                # that row's changes are replayed in order too, with theirs
                known.add(blocked.key)
                log.info("net changes: %s; %s %r replayed in order too", blocked.why,
                         blocked.table, blocked.key)


class _Blocked(Exception):
    """Rows set aside, replayed in order, met a unique value the row of ``key`` of
    ``table`` holds once the others are written: that row's order matters too."""

    def __init__(self, why: str, table: str, key: tuple[Any, ...]) -> None:
        super().__init__(why)
        self.why, self.table, self.key = why, table, key


def _replay_aside(conn: psycopg.Connection[Any], store: Any, plan: Any,
                  journal: JournalReader | None, catalog: Catalog, cutoff: Cutoff,
                  start: Position, aside: dict[str, list[tuple[Any, ...]]],
                  writer: TargetWriter, stack: ExitStack, result: LiveResult
                  ) -> str | _Blocked | None:
    """The events of the rows set aside, read again and applied in the source's order
    (they start from the target's rows, which the net changes left as they were); None,
    or why that cannot be exact (a set-aside row's key moves: the caller replays all),
    or (``_Blocked``) the row whose unique value one of them met on its way."""
    keys = {table: {tuple(k) for k in ks} for table, ks in aside.items()}
    seen: set[tuple[str, tuple[Any, ...]]] = set()
    pks = {table: catalog.tables[table].primary_key for table in keys}

    def key_of(row: dict[str, Any] | None, pk: tuple[str, ...]) -> tuple[Any, ...] | None:
        if row is None or any(c not in row for c in pk):
            return None
        return tuple(row[c] for c in pk)

    class _Moved(Exception):
        pass

    def only_aside(transactions: Iterable[Transaction]) -> Iterator[Transaction]:
        for tx in transactions:
            records: list[Any] = []
            for record in tx.records:
                if not isinstance(record, ChangeEvent):
                    continue  # schema changes: none, or the changes were not net
                table = record.table.qualified
                if table not in keys:
                    continue
                pk = pks[table]
                after, before = key_of(record.after, pk), key_of(record.before, pk)
                involved = {k for k in (before, after) if k is not None} & keys[table]
                if not involved:
                    continue
                if before is not None and after is not None and before != after:
                    raise _Moved(f"a row of {table} that exchanged unique values also "
                                 "changed its primary key")
                seen.update((table, k) for k in involved)
                records.append(record)
            yield dataclasses.replace(tx, records=records)

    try:
        with conn.transaction():  # the other rows' writes stay, to find the one in the way
            replayed = replay(((m, only_aside(transactions_of(store, m, journal, stack)))
                               for m in plan.segments), writer, cutoff, start,
                              LoadOrder((), frozenset()))
    except _Moved as exc:
        return str(exc)
    except (psycopg.errors.IntegrityError, RestoreRefused) as exc:
        # a value one of them held on the way is another row's now: the order of that
        # row's changes matters too
        what = diagnosed(exc) if isinstance(exc, psycopg.Error) else str(exc)
        why = ("rows that exchanged unique values, replayed in order, met a value another "
               f"row holds now: {what}")
        cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
        holder = (_holder(conn, catalog, cause)
                  if isinstance(cause, psycopg.errors.UniqueViolation) else None)
        return _Blocked(why, *holder) if holder is not None else why
    unseen = [(t, k) for t, ks in keys.items() for k in ks if (t, k) not in seen]
    if unseen:
        # every row set aside changed in the range: a key read back from the target that
        # no event's key equals would be left as it was
        table, key = unseen[0]
        return (f"{len(unseen)} row(s) of {table} set aside to be replayed in order (key "
                f"{key!r}) have no event in the range under that key")
    result.ordered_rows = sum(len(k) for k in keys.values())
    result.ordered_events = replayed.events
    return None
