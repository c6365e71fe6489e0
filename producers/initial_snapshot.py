"""The initial snapshot (and every new snapshot generation) under the slot's exported
snapshot: exactly the rows committed before the slot's consistent point, so that the
stream that follows neither misses nor repeats a change.

The snapshot is one pseudo-transaction: BEGIN, the SNAPSHOT_PREFIX message with the
CATALOG, an ``r`` event per row of every captured table, END. Its position is one below
the consistent point: a transaction whose commit record starts exactly at the consistent
point is streamed with that commit LSN, and the two must never share a position.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import Catalog, TableSchema
from journal.events import SNAPSHOT_PREFIX, ChangeEvent, LogicalMessage, Record, TransactionMarker
from journal.positions import Position
from journal.values import prepare_session, read_rows
from producers.source_catalog import read_catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotResult:
    generation: str
    position: int  # commit_lsn of the snapshot pseudo-transaction
    catalog: dict[str, Any]
    tables: dict[str, TableSchema]
    signatures: dict[str, list[list[Any]]]  # relation wire signatures at the snapshot
    rows: int



def read_signatures(conn: psycopg.Connection[Any], tables: list[str]
                    ) -> dict[str, list[list[Any]]]:
    """``[[name, type_oid, typmod], …]`` per table, as a pgoutput relation message has it."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, "
        "       coalesce(json_agg(json_build_array(a.attname, a.atttypid::int, a.atttypmod) "
        "                         ORDER BY a.attnum) "
        "                FILTER (WHERE a.attnum > 0), '[]') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "     AND NOT a.attisdropped AND a.attgenerated = '' "
        "WHERE n.nspname || '.' || c.relname = ANY(%s) GROUP BY 1", (tables,)).fetchall()
    return {name: sig for name, sig in rows}


def take_snapshot(conn: psycopg.Connection[Any], snapshot_name: str, consistent_point: int,
                  *, schemas: tuple[str, ...], tables: tuple[str, ...], slot: str,
                  system_identifier: str, database: str,
                  emit: Callable[[Record], None]) -> SnapshotResult:
    """Read every captured table in the exported snapshot and ``emit`` the generation.

    ``conn`` is a normal autocommit connection; the transaction is opened and closed here.
    """
    generation = str(uuid.uuid4())
    commit_lsn = consistent_point - 1
    commit_ts = time.time_ns() // 1000
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        prepare_session(conn)
        catalog = read_catalog(conn, schemas, tables)
        table_map = {name: t.table_schema()
                     for name, t in Catalog.parse(catalog).tables.items()}
        signatures = read_signatures(conn, list(table_map))
        emit(TransactionMarker("BEGIN", database, Position(commit_lsn, 0), 0, commit_ts))
        content = json.dumps({"generation": generation, "slot": slot,
                              "system_identifier": system_identifier, "database": database,
                              "consistent_point": consistent_point, "catalog": catalog})
        emit(LogicalMessage(database, SNAPSHOT_PREFIX, content.encode(), True,
                            Position(commit_lsn, 1), 0, commit_ts))
        seq = 2
        ts_ms = commit_ts // 1000
        for name, table in table_map.items():
            started = time.monotonic()
            count = 0
            for row in read_rows(conn, table):
                emit(ChangeEvent("r", database, table, Position(commit_lsn, seq), 0, commit_ts,
                                 after=row, snapshot=True, ts_ms=ts_ms))
                seq += 1
                count += 1
            log.info("snapshot of %s: %d rows in %.1f s", name, count,
                     time.monotonic() - started)
        rows = seq - 2
        emit(TransactionMarker("END", database, Position(commit_lsn, seq), 0, commit_ts, rows))
    finally:
        if not conn.closed:
            try:
                conn.execute("ROLLBACK")  # read only: nothing to keep
            except psycopg.Error:
                pass
    return SnapshotResult(generation, commit_lsn, catalog, table_map, signatures, rows)
