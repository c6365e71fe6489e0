"""Packages for the restore tests, built from a real source database.

``Recorder`` plays the part of capture and compaction so the restore can be tested on
its own: it snapshots the source into a full package and turns each step of a workload
(run in the source, committed) into one source transaction of change events — the diff
of the source's state before and after, ordered so that immediate foreign keys hold —
written as segment packages into a real package store.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

import psycopg

from journal.catalog import Catalog, table_schemas
from journal.codec import SchemaRegistry, encode
from journal.events import (
    MARK_PREFIX,
    ChangeEvent,
    LogicalMessage,
    Transaction,
    TransactionMarker,
    datetime_to_micros,
)
from journal.packages import PackageBuilder, sort_key
from journal.packages.store import open_store
from journal.positions import Position
from producers.source_catalog import read_catalog
from restorer.graph import TableGraph

State = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


def read_state(url: str) -> State:
    from journal.sample import snapshot_state

    return snapshot_state(url)


class Recorder:
    """Source database -> packages in a store, one recorded transaction per step."""

    def __init__(self, source_url: str, store_dir: str) -> None:
        self.url = source_url
        self.store = open_store(f"file://{store_dir}")
        with psycopg.connect(source_url) as conn:
            self.catalog = read_catalog(conn)
            self.system_identifier = str(conn.execute(
                "SELECT system_identifier FROM pg_control_system()").fetchone()[0])
            self.database = conn.info.dbname
            self.position = Position(self._lsn(conn), 0)
        self.schemas = table_schemas(self.catalog)
        self.order = TableGraph(Catalog.parse(self.catalog)).load_order().tables
        self.generation = str(uuid.uuid4())
        self.state = read_state(source_url)
        self.pending: list[Transaction] = []
        self.last_commit_ts: int | None = None
        self.parent: str | None = None
        self.points: list[dict[str, Any]] = []  # what the source was after each step

    @staticmethod
    def _lsn(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
        return int(row[0])

    def full(self) -> Any:
        """A full package of the source as it is now (nothing may be pending)."""
        assert not self.pending, "write the pending segment first"
        builder = PackageBuilder("full", self.store.workdir())
        for name in sorted(self.catalog["tables"]):
            writer = builder.table(self.schemas[name])
            for key in sorted(self.state[name], key=sort_key):
                writer.write(self.state[name][key])
        tmp, _ = builder.finish(system_identifier=self.system_identifier,
                                database=self.database, generation=self.generation,
                                to_position=self.position, last_commit_ts=self.last_commit_ts,
                                parent_id=self.parent, catalog=self.catalog)
        manifest = self.store.put(tmp)
        self.parent = manifest.package_id
        return manifest

    def step(self, work: Any, mark: str | None = None) -> dict[str, Any]:
        """Run ``work(conn)`` (on an autocommit connection) and record all its changes as
        one source transaction, under the xid of a closing transaction of its own."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            work(conn)
            with conn.transaction():
                xid = int(conn.execute("SELECT txid_current()").fetchone()[0])
                if mark is not None:
                    conn.execute("SELECT pg_logical_emit_message(true, %s, %s)",
                                 (MARK_PREFIX, mark))
            commit_ts = datetime_to_micros(conn.execute("SELECT clock_timestamp()")
                                           .fetchone()[0])
            lsn = max(self._lsn(conn), self.position.commit_lsn + 1)
        after = read_state(self.url)
        tx = self._transaction(self.state, after, lsn, xid, commit_ts, mark)
        self.state = after
        self.position = tx.end.position
        self.last_commit_ts = commit_ts
        self.pending.append(tx)
        point = {"lsn": lsn, "xid": xid, "commit_ts": commit_ts, "mark": mark,
                 "state": copy.deepcopy(after)}
        self.points.append(point)
        time.sleep(0.002)  # distinct commit times
        return point

    def _transaction(self, before: State, after: State, lsn: int, xid: int, ts: int,
                     mark: str | None) -> Transaction:
        begin = TransactionMarker("BEGIN", self.database, Position(lsn, 0), xid, ts)
        tx = Transaction(begin)

        def add(op: str, table: str, old: Any, new: Any) -> None:
            tx.records.append(ChangeEvent(op, self.database, self.schemas[table],
                                          Position(lsn, len(tx.records) + 1), xid, ts,
                                          before=old, after=new))

        for t in reversed(self.order):  # deletes children first
            for k in sorted(before[t].keys() - after[t].keys(), key=sort_key):
                add("d", t, before[t][k], None)
        for t in self.order:  # inserts parents first
            for k in sorted(after[t].keys() - before[t].keys(), key=sort_key):
                add("c", t, None, after[t][k])
        for t in self.order:
            for k in sorted(after[t].keys() & before[t].keys(), key=sort_key):
                if after[t][k] != before[t][k]:
                    add("u", t, before[t][k], after[t][k])
        if mark is not None:
            tx.records.append(LogicalMessage(self.database, MARK_PREFIX, mark.encode(), True,
                                             Position(lsn, len(tx.records) + 1), xid, ts))
        n = sum(isinstance(r, ChangeEvent) for r in tx.records)
        tx.end = TransactionMarker("END", self.database, Position(lsn, len(tx.records) + 1),
                                   xid, ts, n)
        return tx

    def segment(self) -> Any:
        """A segment package of the transactions recorded since the last package."""
        assert self.pending
        builder = PackageBuilder("segment", self.store.workdir())
        registry = SchemaRegistry()
        events = builder.events()
        marks = []
        start = self.pending[0].begin.position
        for tx in self.pending:
            for record in (tx.begin, *tx.records, tx.end):
                key, value = encode(record, registry)
                events.write(record.position, key, value)
                if isinstance(record, LogicalMessage) and record.is_mark:
                    marks.append((record.content.decode(), record.position, record.commit_ts))
        builder.add_schemas({fp.hex(): text for fp, text in registry.items()})
        previous = self.store.get(self.parent)
        tmp, _ = builder.finish(
            system_identifier=self.system_identifier, database=self.database,
            generation=self.generation, from_position=previous.to_position,
            to_position=self.position, first_commit_ts=self.pending[0].begin.commit_ts,
            last_commit_ts=self.pending[-1].begin.commit_ts, parent_id=self.parent,
            catalog=self.catalog, marks=marks)
        assert start > previous.to_position
        manifest = self.store.put(tmp)
        self.parent = manifest.package_id
        self.pending = []
        return manifest


def recorded_full(source_url: str, store_dir: str, fill: Any) -> Recorder:
    """A Recorder holding a full package of the source once ``fill(conn)`` (autocommit)
    has made it."""
    with psycopg.connect(source_url, autocommit=True) as conn:
        fill(conn)
    rec = Recorder(source_url, store_dir)
    rec.full()
    return rec
