"""The capture daemon: slot → pgoutput → change events → journal transport → confirm.

One loop, in this order for every batch: decode, encode, append to the transport, flush
(durable), record the confirmed LSN in the state file, and only then confirm it to the
slot. The slot is confirmed up to the end of the last transaction whose END marker is
durable (or the last durable heartbeat), never further, so a crash anywhere resumes at or
before what the journal holds, and consumers drop what they have already seen.

The records themselves come from ``producers.translate``, a pure translator of pgoutput
messages: positions are a function of the WAL and of the state recorded at the resume
point, so a transaction delivered twice (after a crash) gets the same positions both times.
This module is the daemon around it: connecting, the slot and its generations, batching,
the state file, confirmation, heartbeats and metrics.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import TableSchema
from journal.codec import SchemaRegistry, encode
from journal.config import Config
from journal.durable import write_atomically
from journal.errors import (
    ConfigError,
    JournalError,
    SourceError,
    TransportError,
    UnencodableValue,
)
from journal.events import HEARTBEAT_PREFIX, ChangeEvent, Record
from journal.positions import format_lsn, parse_lsn
from journal.transport import JournalWriter, open_writer
from producers import ddl_trigger, pgoutput, slot
from producers.initial_snapshot import take_snapshot
from producers.replication import Keepalive, ReplicationConnection, XLogData
from producers.source_catalog import format_types, read_catalog
from producers.translate import Translator

log = logging.getLogger(__name__)

FLUSH_RECORDS = 5000  # flush after this many appended records …
FLUSH_INTERVAL_S = 0.1  # … or when the oldest unflushed record is this old
FLUSH_WAIT_S = 0.005  # … or when nothing more arrived for this long
CONFIRM_INTERVAL_S = 1.0
LAG_LOG_INTERVAL_S = 10.0
SLOT_RELEASE_WAIT_S = 10.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass
class CaptureMetrics:
    """Counters for ``journal health`` and the logs."""

    events: int = 0
    transactions: int = 0
    bytes: int = 0
    last_acked_lsn: int = 0  # confirmed to the slot (durable in the journal)
    source_lsn: int = 0
    lag_bytes: int = 0
    last_commit_ack_lag_s: float = 0.0
    generation: str = ""
    restarts: int = 0
    ack_lags: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))

    def lag_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of commit→acknowledgement seconds over the recent transactions."""
        if not self.ack_lags:
            return 0.0, 0.0
        data = sorted(self.ack_lags)
        return statistics.median(data), data[min(len(data) - 1, int(len(data) * 0.99))]

    def to_json(self) -> dict[str, Any]:
        p50, p99 = self.lag_percentiles()
        return {"events": self.events, "transactions": self.transactions, "bytes": self.bytes,
                "last_acked_lsn": format_lsn(self.last_acked_lsn),
                "source_lsn": format_lsn(self.source_lsn), "lag_bytes": self.lag_bytes,
                "commit_ack_lag_p50_s": p50, "commit_ack_lag_p99_s": p99,
                "generation": self.generation, "restarts": self.restarts}


def run_capture(config: Config, stop_event: threading.Event | None = None, *,
                once_until_idle: float | None = None,
                metrics: CaptureMetrics | None = None) -> CaptureMetrics:
    """Capture until ``stop_event`` is set (or the stream has been idle ``once_until_idle``
    seconds). Misconfiguration at start raises at once, after removing the publication and
    slot this start created (the journal is opened, and so checked, before either is made);
    once streaming, lost connections to the database or the transport are retried with
    exponential backoff."""
    stop = stop_event or threading.Event()
    metrics = metrics or CaptureMetrics()
    delay = BACKOFF_START_S
    ever_streamed = False
    while True:
        session = _Session(config, stop, metrics, once_until_idle)
        try:
            session.run()
            return metrics
        except (JournalError, psycopg.Error, OSError) as exc:
            ever_streamed = ever_streamed or session.streamed
            if not ever_streamed:
                session.undo_start()
            # a retry would fail the same way (or start a new generation that does)
            if isinstance(exc, (ConfigError, UnencodableValue, ddl_trigger.SchemaChangeRefused)) \
                    or not ever_streamed:
                if isinstance(exc, JournalError):
                    raise
                raise SourceError(slot.connection_error(config.source_url, exc)) from None
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if session.streamed:
                delay = BACKOFF_START_S
            log.warning("capture interrupted: %s; retrying in %.1f s", reason, delay)
        finally:
            session.close()
        metrics.restarts += 1
        if stop.wait(delay):
            return metrics
        delay = min(delay * 2, BACKOFF_MAX_S)


class _DatabaseLookup:
    """The source database behind a Translator's questions."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def format_types(self, types: Sequence[tuple[int, int]]) -> list[str]:
        return format_types(self.conn, types)

    def catalog_change(self, catalog: dict[str, Any], content: bytes,
                       captured: Callable[[str, str], bool]
                       ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        return ddl_trigger.catalog_change(catalog, content, self.conn, captured)


class _Session:
    """One connected run: from connecting to the first lost connection (or the end)."""

    def __init__(self, config: Config, stop: threading.Event, metrics: CaptureMetrics,
                 once_until_idle: float | None) -> None:
        self.config = config
        self.stop = stop
        self.metrics = metrics
        self.once_until_idle = once_until_idle
        self.streamed = False
        self.conn: psycopg.Connection[Any] | None = None
        self.repl: ReplicationConnection | None = None
        self.writer: JournalWriter | None = None
        self.registry = SchemaRegistry()
        self.published: set[TableSchema] = set()
        self.last_published = 0
        self.database = ""
        self.catalog: dict[str, Any] = {"types": [], "tables": {}}
        self.translator: Translator | None = None
        # flushing and confirming
        self.unflushed = 0
        self.first_unflushed = 0.0
        self.appended_lsn = 0  # confirmable once everything appended is durable
        self.appended_known: dict[str, Any] = {}
        self.flushed_lsn = 0
        self.flushed_known: dict[str, Any] = {}
        self.pending_commits: list[int] = []  # commit_ts (µs) of appended transactions
        self.last_activity = time.monotonic()
        self.probe_lsn: int | None = None
        # what this start created in the source, removed again if the start fails
        self.created_publication = False
        self.created_slot = False
        self.ddl_announced = False  # the source's event trigger announces every DDL
        self.appended_catalog = self.flushed_catalog = self.catalog
        self.saved_catalog: dict[str, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        if self.repl is not None:
            self.repl.close()
        if self.writer is not None:
            try:
                self.writer.close()
            except JournalError:
                pass
        if self.conn is not None:
            self.conn.close()

    def undo_start(self) -> None:
        """Remove the slot and publication this start created (it failed before streaming):
        a failed start leaves the source as it found it."""
        cfg = self.config
        if not (self.created_slot or self.created_publication):
            return
        if self.repl is not None:
            self.repl.close()  # releases the slot it created
            self.repl = None
        try:
            with slot.connect(cfg, autocommit=True) as conn:
                if self.created_slot:
                    slot.wait_until_inactive(conn, cfg.slot, SLOT_RELEASE_WAIT_S)
                    slot.drop_slot(conn, cfg.slot)
                    log.info("removed replication slot %s again", cfg.slot)
                if self.created_publication:
                    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
                        sql.Identifier(cfg.publication)))
                    log.info("removed publication %s again", cfg.publication)
        except (JournalError, psycopg.Error) as exc:
            log.warning("could not remove what the failed start created (slot %s, "
                        "publication %s): %s", cfg.slot, cfg.publication, exc)

    def run(self) -> None:
        cfg = self.config
        self.conn = slot.connect(cfg, autocommit=True)
        slot.preflight(self.conn, cfg)
        try:
            self.repl = ReplicationConnection(cfg.source_conninfo())
        except psycopg.Error as exc:
            raise SourceError(slot.connection_error(cfg.source_url, exc)) from None
        ident = self.repl.identify_system()
        self.database = ident.database
        # the journal first: a bad URL or an unreachable Kafka fails before anything is
        # created in the source
        self.writer = open_writer(cfg.journal_location(), self.database)
        self.created_publication = self.conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s",
            (cfg.publication,)).fetchone() is None
        slot.ensure_publication(self.conn, cfg)
        self.ddl_announced = self._ensure_ddl_trigger()
        self.state_path = slot.state_path(cfg.state_dir, self.database, cfg.slot)
        slot.wait_until_inactive(self.conn, cfg.slot, SLOT_RELEASE_WAIT_S)
        info = slot.slot_info(self.conn, cfg.slot)
        slot.check_slot_is_ours(info, self.database)
        state = slot.load_state(self.state_path)
        problem = slot.resume_problem(state, info, ident.system_identifier, self.database)
        if problem is not None:
            state = self._new_generation(problem, info, ident.system_identifier)
        else:
            assert state is not None
            self.catalog = self._resume_catalog(state)
            log.info("resuming slot %s at %s (generation %s)", cfg.slot,
                     format_lsn(state.confirmed_lsn), state.generation)
        self.state = state
        self.metrics.generation = state.generation
        self.metrics.last_acked_lsn = state.confirmed_lsn
        self.translator = Translator(
            self.database, self.catalog, state.relations, schemas=cfg.schemas,
            tables=cfg.tables, ddl_announced=self.ddl_announced,
            source=_DatabaseLookup(self.conn))
        self.appended_known = self.flushed_known = self.translator.known
        self.appended_catalog = self.flushed_catalog = self.catalog
        self.appended_lsn = self.flushed_lsn = state.confirmed_lsn
        # Starting at our own confirmed LSN (not the slot's, which may lag it by one status
        # update) skips exactly the transactions already durable with their END marker.
        self.repl.start(cfg.slot, cfg.publication, state.confirmed_lsn)
        self.streamed = True
        self._stream()

    # The catalog as of the confirmed LSN, kept beside the capture state: on resume, the
    # source's catalog "now" may already be past schema changes the stream has yet to
    # deliver, and each DDL message is judged against the catalog of its own moment.

    def _catalog_path(self) -> Path:
        return self.state_path.with_name(self.state_path.stem + ".catalog.json")

    def _save_catalog(self, lsn: int, catalog: dict[str, Any]) -> None:
        write_atomically(self._catalog_path(),
                         json.dumps({"lsn": lsn, "catalog": catalog}).encode())

    def _resume_catalog(self, state: slot.SlotState) -> dict[str, Any]:
        assert self.conn is not None
        try:
            saved = json.loads(self._catalog_path().read_text())
            # saved (before the state) whenever a confirmed position brought a new one
            if saved["lsn"] <= state.confirmed_lsn:
                return saved["catalog"]
            log.warning("the saved catalog is from %s, after the confirmed %s",
                        format_lsn(saved["lsn"]), format_lsn(state.confirmed_lsn))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("no saved catalog (%s)", exc)
        log.warning("resuming with the source's catalog as it is now: a schema change "
                    "waiting in the stream is judged against a later catalog")
        return read_catalog(self.conn, self.config.schemas, self.config.tables)

    def _ensure_ddl_trigger(self) -> bool:
        assert self.conn is not None
        if ddl_trigger.installed(self.conn):
            return True
        if ddl_trigger.is_superuser(self.conn):
            ddl_trigger.install(self.conn)
            return True
        log.warning("the DDL event trigger is not installed (it needs a superuser: run "
                    "`journal init` as one): capture will stop at the first schema change")
        return False

    def _new_generation(self, problem: str, info: slot.SlotInfo | None,
                        system_identifier: str) -> slot.SlotState:
        cfg = self.config
        assert self.conn is not None and self.repl is not None and self.writer is not None
        if info is None and problem.startswith("first start"):
            log.info("first start: creating slot %s and taking the initial snapshot", cfg.slot)
        else:
            log.warning("NEW SNAPSHOT GENERATION for slot %s: %s", cfg.slot, problem)
        if info is not None:
            slot.drop_slot(self.conn, cfg.slot)
        slot.check_free_slot(self.conn)
        created = self.repl.create_slot(cfg.slot)
        self.created_slot = True
        state = slot.SlotState(system_identifier, self.database, cfg.slot, "",
                               created.consistent_point, created.consistent_point)
        slot.save_state(self.state_path, state)  # a crash before completion is then known
        started = time.monotonic()
        with slot.connect(cfg, autocommit=True) as snap_conn:
            result = take_snapshot(
                snap_conn, created.snapshot_name, created.consistent_point,
                schemas=cfg.schemas, tables=cfg.tables, slot=cfg.slot,
                system_identifier=system_identifier, database=self.database,
                emit=self._append)
        self._flush()
        self.catalog = result.catalog
        self._save_catalog(created.consistent_point, self.catalog)
        state.generation = result.generation
        state.relations = result.signatures
        state.snapshot_complete = True
        slot.save_state(self.state_path, state)
        log.info("snapshot generation %s: %d rows of %d tables at %s in %.1f s",
                 result.generation, result.rows, len(result.tables),
                 format_lsn(created.consistent_point), time.monotonic() - started)
        return state

    # -- the stream --------------------------------------------------------------------

    def _stream(self) -> None:
        assert self.repl is not None
        now = time.monotonic()
        next_confirm = now + CONFIRM_INTERVAL_S
        next_heartbeat = now + self.config.heartbeat_interval_s
        next_lag_log = now + LAG_LOG_INTERVAL_S
        while not self.stop.is_set():
            # with records waiting, a few ms for more: fewer, larger flushes under load
            timeout = FLUSH_WAIT_S if self.unflushed else 0.2
            message = self.repl.read(timeout)
            if isinstance(message, XLogData):
                self._handle(message)
            elif isinstance(message, Keepalive):
                self.metrics.source_lsn = max(self.metrics.source_lsn, message.wal_end)
                if message.reply_requested:
                    self._flush()
                    self._confirm()
            elif self.unflushed:
                self._flush()  # nothing more is waiting: end of a natural batch
            now = time.monotonic()
            if self.unflushed and (self.unflushed >= FLUSH_RECORDS
                                   or now - self.first_unflushed >= FLUSH_INTERVAL_S):
                self._flush()
            if now >= next_confirm:
                self._confirm()
                next_confirm = now + CONFIRM_INTERVAL_S
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + self.config.heartbeat_interval_s
            if now >= next_lag_log:
                self._log_lag()
                next_lag_log = now + LAG_LOG_INTERVAL_S
            if self.once_until_idle is not None and self._idle_done(now):
                break
        self._flush()
        self._confirm()
        self.repl.end_stream()
        self._log_lag()

    def _idle_done(self, now: float) -> bool:
        """Idle long enough, and a heartbeat sent after that came back durable: the
        stream has nothing older left to deliver."""
        assert self.once_until_idle is not None
        assert self.translator is not None
        if self.translator.in_transaction or self.unflushed:
            return False
        if now - self.last_activity < self.once_until_idle:
            self.probe_lsn = None
            return False
        if self.probe_lsn is None:
            self.probe_lsn = self._heartbeat()
            return False
        return self.flushed_lsn >= self.probe_lsn

    def _handle(self, data: XLogData) -> None:
        assert self.translator is not None
        translation = self.translator.translate(pgoutput.decode(data.payload), data.send_time)
        for record in translation.records:
            self._append(record)
        boundary = translation.boundary
        if boundary is None:
            return
        if boundary.commit_ts is not None:  # a transaction with records ended
            self.pending_commits.append(boundary.commit_ts)
            self.metrics.transactions += 1
            self.last_activity = time.monotonic()
        self.appended_lsn = max(self.appended_lsn, boundary.lsn)
        self.appended_known = boundary.relations
        self.appended_catalog = boundary.catalog

    # -- the transport -----------------------------------------------------------------

    def _append(self, record: Record) -> None:
        writer = self.writer
        assert writer is not None
        if isinstance(record, ChangeEvent):
            # by identity first: hashing a TableSchema per event is measurable
            if id(record.table) != self.last_published and record.table not in self.published:
                # the schema is durable before any record that needs it
                self.registry.for_table(record.table)
                writer.publish_schemas(self.registry)
                self.published.add(record.table)
            self.last_published = id(record.table)
            self.metrics.events += 1
        key, value = encode(record, self.registry)
        writer.append(record.position, key, value)
        self.metrics.bytes += len(value)
        if not self.unflushed:
            self.first_unflushed = time.monotonic()
        self.unflushed += 1
        if self.unflushed >= FLUSH_RECORDS * 4:
            self._flush()  # a long snapshot or transaction: keep memory flat

    def _flush(self) -> None:
        if self.writer is None:
            return
        if self.unflushed:
            self.writer.flush()
            self.unflushed = 0
        self.flushed_lsn = self.appended_lsn
        self.flushed_known = self.appended_known
        self.flushed_catalog = self.appended_catalog
        if self.pending_commits:
            now_us = time.time_ns() // 1000
            lags = [(now_us - ts) / 1e6 for ts in self.pending_commits]
            self.metrics.ack_lags.extend(lags)
            self.metrics.last_commit_ack_lag_s = lags[-1]
            self.pending_commits.clear()

    def _confirm(self) -> None:
        """Record, then confirm to the slot, the durable LSN (never anything beyond)."""
        if self.repl is None or not self.repl.streaming:
            return
        state = self.state
        if self.flushed_lsn > state.confirmed_lsn:
            if self.flushed_catalog is not self.saved_catalog:
                self._save_catalog(self.flushed_lsn, self.flushed_catalog)
                self.saved_catalog = self.flushed_catalog
            state.confirmed_lsn = self.flushed_lsn
            state.relations = self.flushed_known
            slot.save_state(self.state_path, state)
        self.repl.send_status(state.confirmed_lsn)
        self.metrics.last_acked_lsn = state.confirmed_lsn

    def _heartbeat(self) -> int:
        assert self.conn is not None
        content = json.dumps({"ts": time.time_ns() // 1000})
        row = self.conn.execute("SELECT pg_logical_emit_message(false, %s, %s)::text",
                                (HEARTBEAT_PREFIX, content)).fetchone()
        assert row is not None
        return parse_lsn(row[0])

    def _log_lag(self) -> None:
        m = self.metrics
        try:
            assert self.conn is not None
            row = self.conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            m.source_lsn = parse_lsn(row[0])
        except psycopg.Error:
            pass
        m.lag_bytes = max(0, m.source_lsn - m.last_acked_lsn)
        p50, p99 = m.lag_percentiles()
        log.info("capture: %d events, %d transactions, confirmed %s, %d bytes behind the "
                 "source, commit→ack p50=%.3fs p99=%.3fs", m.events, m.transactions,
                 format_lsn(m.last_acked_lsn), m.lag_bytes, p50, p99)



__all__ = ["CaptureMetrics", "TransportError", "run_capture"]
