"""A snapshot generation read straight from the source, for a package store to start from.

``journal compact`` into an empty store needs a full snapshot; when the journal no longer
holds one (retention removed it), this takes one: a *temporary* logical slot exports a
snapshot at its consistent point, the captured tables are read in it exactly as capture's
own initial snapshot reads them, and the records go to the compactor instead of the
journal. Nothing is written to the journal or left in the source: the temporary slot
goes with its connection.

It continues the journal only if capture's slot is still there: that slot has not passed
the new consistent point (no slot can be ahead of the WAL), so every transaction committed
after it reaches the journal through capture, and every one before it is in the snapshot.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import psycopg

from journal.config import Config, redact
from journal.errors import SourceError
from journal.events import Record
from producers import slot
from producers.initial_snapshot import SnapshotResult, take_snapshot
from producers.replication import ReplicationConnection

log = logging.getLogger(__name__)


def snapshot_from_source(config: Config, emit: Callable[[Record], None]) -> SnapshotResult:
    """Read a snapshot generation of the captured tables and ``emit`` its records."""
    try:
        with slot.connect(config, autocommit=True) as conn:
            slot.preflight(conn, config)
            info = slot.slot_info(conn, config.slot)
            if info is None or info.wal_status == "lost":
                state = "does not exist" if info is None else "has lost the WAL it needed"
                raise SourceError(
                    f"capture's replication slot {config.slot} {state}, so the journal does not "
                    "continue a snapshot taken now: start journal capture, which takes a "
                    "snapshot generation of its own into the journal")
            slot.check_free_slot(conn)
            try:
                repl = ReplicationConnection(config.source_conninfo())
            except psycopg.Error as exc:
                raise SourceError(slot.connection_error(config.source_url, exc)) from None
            try:
                ident = repl.identify_system()
                created = repl.create_slot(f"edms_seed_{uuid.uuid4().hex[:16]}", temporary=True)
                log.info("reading a snapshot of the source at its consistent point %s",
                         created.consistent_point)
                with slot.connect(config, autocommit=True) as snap_conn:
                    return take_snapshot(
                        snap_conn, created.snapshot_name, created.consistent_point,
                        schemas=config.schemas, tables=config.tables, slot=config.slot,
                        system_identifier=ident.system_identifier, database=ident.database,
                        emit=emit)
            finally:
                repl.close()  # drops the temporary slot
    except psycopg.Error as exc:
        raise SourceError(f"reading the snapshot from {redact(config.source_url)} failed: "
                          f"{' '.join(str(exc).split())}") from None
