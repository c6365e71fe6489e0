"""The translation of pgoutput messages into journal records: pure, no I/O of its own.

Fed the decoded messages of one replication stream in order (``producers.pgoutput``), a
``Translator`` returns the records the journal holds for each (``journal.events``), every
one with its position, and says where the stream reaches a boundary the slot may be
confirmed to. It keeps what the stream has told it so far: the relations and their table
versions, the open transaction, and the source's catalog as of the message at hand. What
it must ask the source database (the type names of a relation message the catalog no
longer describes, the tables a DDL message changed) it asks a ``SourceLookup``: the
capture daemon backs it with a connection, unit tests with a few literals.

Positions are a pure function of the messages and of the state given at the start, so a
transaction delivered twice (after a crash) gets the same positions both times.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from journal.catalog import Column, TableSchema, table_schema
from journal.errors import SourceError
from journal.events import (
    CATALOG_PREFIX,
    DDL_PREFIX,
    PARTITION_TRUNCATE_PREFIX,
    ChangeEvent,
    LogicalMessage,
    Record,
    TransactionMarker,
)
from journal.positions import Position, format_lsn
from journal.values import RowLoader
from producers import pgoutput
from producers.ddl_trigger import SchemaChangeRefused
from producers.source_catalog import JOURNAL_TABLE_PREFIX

# The lines this room logs are the capture daemon's story (a new table version, a schema
# change): they keep its logger, which operators and the CLI's level setting know.
log = logging.getLogger("producers.capture")

JOURNAL_PREFIX = "edms_journal."


class SourceLookup(Protocol):
    """What translating a stream needs to ask the source database."""

    def format_types(self, types: Sequence[tuple[int, int]]) -> list[str]:
        """``format_type(oid, typmod)`` of each pair, as the catalog spells types."""
        ...

    def catalog_change(self, catalog: dict[str, Any], content: bytes,
                       captured: Callable[[str, str], bool]
                       ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The catalog after the DDL message ``content`` and the change record of its
        CATALOG message, or None when no captured table is concerned
        (``producers.ddl_trigger.catalog_change``)."""
        ...


@dataclass(frozen=True, slots=True)
class Boundary:
    """Every message up to ``lsn`` is translated: once the records handed out so far are
    durable, the slot may be confirmed to ``lsn``, with ``relations`` (the wire signatures
    of the relations) and ``catalog`` recorded beside it."""

    lsn: int
    relations: dict[str, Any]
    catalog: dict[str, Any]
    commit_ts: int | None = None  # of the transaction ending here, when it had records


class Translation(NamedTuple):
    """The records of one message, in stream order, and the boundary it reached (if any)."""

    records: list[Record]
    boundary: Boundary | None = None


@dataclass
class _Rel:
    table: TableSchema | None  # None: not captured (ignored)
    names: tuple[str, ...] = ()
    loader: RowLoader | None = None
    partition_of: str | None = None  # a partition of this captured root


@dataclass
class _Txn:
    begin: pgoutput.Begin
    ts_ms: int
    seq: int = 0
    events: int = 0
    # partitions the transaction truncated (their trigger's message), and the tables the
    # stream says it truncated: a partition truncated alone is not in the stream
    truncated_partitions: set[str] = field(default_factory=set)
    truncated: set[str] = field(default_factory=set)


class Translator:
    """pgoutput messages of one source database in, journal records out.

    ``catalog`` and ``relations`` are the state recorded at the resume point (the catalog
    of the source's captured tables, the wire signature of each relation already seen);
    ``schemas`` and ``tables`` say what is captured, as in ``[source]``. ``clock`` gives
    the ``ts_ms`` of the transactions (when capture saw their BEGIN)."""

    def __init__(self, database: str, catalog: dict[str, Any], relations: dict[str, Any], *,
                 schemas: Sequence[str], tables: Sequence[str], ddl_announced: bool,
                 source: SourceLookup, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.schemas = schemas
        self.tables = tables
        # the source's event trigger announces every DDL
        self.ddl_announced = ddl_announced
        self.source = source
        self.clock = clock
        self.rels: dict[int, _Rel] = {}
        self.known = dict(relations)
        self.catalog = catalog
        # as of the last transaction boundary: what a confirmation there records
        self.boundary_known = self.known
        self.boundary_catalog = self.catalog
        self.txn: _Txn | None = None

    @property
    def in_transaction(self) -> bool:
        """A BEGIN was translated and its COMMIT not yet."""
        return self.txn is not None

    def translate(self, msg: pgoutput.PgOutputMessage, send_time: int = 0) -> Translation:
        """The records of ``msg`` (``send_time``: the server's send time of the XLogData
        that carried it, µs since the Unix epoch). Raises SourceError for a stream that
        breaks the protocol's order and SchemaChangeRefused for a change the stream cannot
        carry exactly."""
        out: list[Record] = []
        boundary = None
        if isinstance(msg, pgoutput.Insert | pgoutput.Update | pgoutput.Delete):
            self._change(msg, out)
        elif isinstance(msg, pgoutput.Begin):
            self.txn = _Txn(msg, int(self.clock() * 1000))
        elif isinstance(msg, pgoutput.Commit):
            boundary = self._commit(msg, out)
        elif isinstance(msg, pgoutput.Relation):
            self._relation(msg)
        elif isinstance(msg, pgoutput.Truncate):
            self._truncate(msg, out)
        elif isinstance(msg, pgoutput.Message):
            boundary = self._message(msg, send_time, out)
        # Origin and Type messages carry nothing the journal records.
        return Translation(out, boundary)

    # -- the records of a transaction ----------------------------------------------------

    def _record(self, out: list[Record],
                make: Callable[[Position, pgoutput.Begin, int], Record]) -> None:
        """Add one record of the current transaction, opening it on first use."""
        txn, position = self._next(out)
        record = make(position, txn.begin, txn.ts_ms)
        if isinstance(record, ChangeEvent):
            txn.events += 1
        out.append(record)

    def _next(self, out: list[Record]) -> tuple[_Txn, Position]:
        """The current transaction and its next record's position; its BEGIN marker goes
        into ``out`` before its first record."""
        txn = self.txn
        if txn is None:
            raise SourceError("pgoutput sent a change outside a transaction")
        begin = txn.begin
        if txn.seq == 0:
            out.append(TransactionMarker("BEGIN", self.database,
                                         Position(begin.final_lsn, 0), begin.xid,
                                         begin.commit_ts))
        txn.seq += 1
        return txn, Position(begin.final_lsn, txn.seq)

    def _change(self, msg: pgoutput.Insert | pgoutput.Update | pgoutput.Delete,
                out: list[Record]) -> None:
        rel = self.rels.get(msg.relid)
        if rel is None:
            raise SourceError(f"pgoutput sent a change of relation {msg.relid} before its "
                              "relation message")
        if rel.table is None:
            if rel.partition_of is not None:
                # its rows come under the root's relation (publish_via_partition_root)
                raise SourceError(
                    f"pgoutput sent a change of partition {rel.partition_of} under its own "
                    "name: the publication must publish via the partition root (journal init "
                    "sets publish_via_partition_root)")
            return
        table, names, loader = rel.table, rel.names, rel.loader
        # the rows are loaded before the position is taken: a row that does not load
        # leaves the transaction's numbering as it was
        kind = type(msg)
        if kind is pgoutput.Insert:
            op, before = "c", None
            after, unchanged = pgoutput.row_of(names, loader, msg.new)  # type: ignore[union-attr]
        elif kind is pgoutput.Update:
            op = "u"
            after, unchanged = pgoutput.row_of(names, loader, msg.new)  # type: ignore[union-attr]
            before = None if msg.old is None else pgoutput.row_of(names, loader, msg.old)[0]
        else:
            op, after, unchanged = "d", None, ()
            before = pgoutput.row_of(names, loader, msg.old)[0]
        txn, position = self._next(out)
        begin = txn.begin
        txn.events += 1
        out.append(ChangeEvent(op, self.database, table, position, begin.xid, begin.commit_ts,
                               before, after, unchanged, ts_ms=txn.ts_ms))

    def _truncate(self, msg: pgoutput.Truncate, out: list[Record]) -> None:
        for relid in msg.relids:
            rel = self.rels.get(relid)
            if rel is None or rel.table is None:
                continue
            table = rel.table
            if self.txn is not None:
                self.txn.truncated.add(table.qualified)
            self._record(out, lambda pos, b, ts, t=table: ChangeEvent(
                "t", self.database, t, pos, b.xid, b.commit_ts, ts_ms=ts))

    def _message(self, msg: pgoutput.Message, send_time: int,
                 out: list[Record]) -> Boundary | None:
        if not msg.prefix.startswith(JOURNAL_PREFIX):
            return None  # another application's message
        if msg.prefix == DDL_PREFIX:
            self._ddl(msg, out)
            return None
        if msg.prefix == PARTITION_TRUNCATE_PREFIX:
            if self.txn is not None:
                self.txn.truncated_partitions.add(msg.content.decode("utf-8", "replace"))
            return None
        if msg.transactional:
            self._record(out, lambda pos, b, ts: LogicalMessage(
                self.database, msg.prefix, msg.content, True, pos, b.xid, b.commit_ts))
            return None
        # Non-transactional (heartbeats) come between transactions. The message's LSN is
        # the end of its WAL record, which can be the commit LSN of the next transaction:
        # one less keeps it strictly between the two.
        out.append(LogicalMessage(self.database, msg.prefix, msg.content, False,
                                  Position(msg.lsn - 1, 0), 0, send_time))
        if self.txn is None:
            return Boundary(msg.lsn, self.boundary_known, self.boundary_catalog)
        return None

    def _commit(self, msg: pgoutput.Commit, out: list[Record]) -> Boundary:
        txn = self.txn
        self.txn = None
        if txn is None:
            raise SourceError("pgoutput sent a commit without a begin")
        self._refuse_partition_truncate(txn)
        commit_ts = None
        if txn.seq:
            begin = txn.begin
            out.append(TransactionMarker("END", self.database,
                                         Position(begin.final_lsn, txn.seq + 1), begin.xid,
                                         begin.commit_ts, txn.events))
            commit_ts = begin.commit_ts
        self.boundary_known = self.known
        self.boundary_catalog = self.catalog
        return Boundary(msg.end_lsn, self.boundary_known, self.boundary_catalog, commit_ts)

    # -- relations and schemas ---------------------------------------------------------

    def _captured(self, relation: pgoutput.Relation) -> bool:
        return self._captured_name(relation.namespace, relation.name)

    def _relation(self, msg: pgoutput.Relation) -> None:
        if not self._captured(msg):
            self.rels[msg.relid] = _Rel(None)
            return
        root = self._partition_root(msg.qualified)
        if root is not None:
            # PostgreSQL announces a partition's relation beside its root's when a row moves
            # between partitions; the rows themselves come under the root
            self.rels[msg.relid] = _Rel(None, partition_of=f"{msg.qualified} of {root}")
            return
        qualified = msg.qualified
        signature = msg.signature()
        changed = self.known.get(qualified) != signature
        if changed:
            self._check_announced(msg)
        table = self._table_for(msg)
        if changed:
            self.known = {**self.known, qualified: signature}
            log.info("relation %s: schema version %s", qualified, table.digest())
        self.rels[msg.relid] = _Rel(table, table.column_names, RowLoader(table))

    def _check_announced(self, msg: pgoutput.Relation) -> None:
        """A relation message with a new shape must follow the DDL message that described
        it (the CATALOG message is already in the stream, at the DDL's position)."""
        entry = self.catalog["tables"].get(msg.qualified)
        wire = [(c.name, c.type_oid) for c in msg.columns]
        if entry is not None and [(c.name, c.type_oid)
                                  for c in table_schema(entry).columns] == wire:
            return
        why = ("the DDL event trigger is not installed (run `journal init` as a superuser)"
               if not self.ddl_announced else "no DDL message described it")
        raise SchemaChangeRefused(
            f"table {msg.qualified} changed to columns {[c.name for c in msg.columns]} but "
            f"{why}: capture cannot place the change in the stream exactly. Take a new full "
            "snapshot (drop the slot and restart `journal capture`)")

    def _ddl(self, msg: pgoutput.Message, out: list[Record]) -> None:
        """A DDL message of the event trigger: the CATALOG message at its position."""
        result = self.source.catalog_change(self.catalog, msg.content, self._captured_name)
        if result is None:
            return  # no captured table concerned
        self.catalog, change = result
        # the message carries only what changed: a migration of fifty statements on a
        # schema of hundreds of tables would otherwise repeat the whole catalog fifty times
        changed = {"types": self.catalog.get("types", []),
                   "tables": {t: self.catalog["tables"][t] for t in change["tables"]}}
        content = json.dumps({"catalog": changed, "change": change}).encode()
        self._record(out, lambda pos, b, ts: LogicalMessage(
            self.database, CATALOG_PREFIX, content, True, pos, b.xid, b.commit_ts))
        log.info("schema change at %s: %s", format_lsn(msg.lsn),
                 {k: v for k, v in change.items() if v and k != "missing"})

    def _refuse_partition_truncate(self, txn: _Txn) -> None:
        """A captured table's partition truncated without its partitioned table: its rows
        left without a change the stream carries (PostgreSQL publishes no such TRUNCATE)."""
        for partition in sorted(txn.truncated_partitions):
            root = self._partition_root(partition)
            if root is not None and root not in txn.truncated:
                raise SchemaChangeRefused(
                    f"partition {partition} of {root} was truncated on its own (transaction "
                    f"{txn.begin.xid}): its rows left the table without a change the stream "
                    f"carries. DELETE through {root} instead; to go on, take a new full "
                    "snapshot (drop the slot and restart `journal capture`)")

    def _partition_root(self, qualified: str) -> str | None:
        """The captured partitioned table ``qualified`` is a partition of (at any depth)."""
        for root, entry in self.catalog["tables"].items():
            if any(f"{p['schema']}.{p['name']}" == qualified
                   for p in entry.get("partitions") or ()):
                return root
        return None

    def _captured_name(self, schema: str, name: str) -> bool:
        if self.tables:
            return f"{schema}.{name}" in self.tables
        return schema in self.schemas and not name.startswith(JOURNAL_TABLE_PREFIX)

    def _table_for(self, msg: pgoutput.Relation) -> TableSchema:
        """The table version of a relation message: the catalog's when it describes the
        same columns, otherwise built from the message itself."""
        wire = [(c.name, c.type_oid) for c in msg.columns]
        entry = self.catalog["tables"].get(msg.qualified)
        if entry is not None:
            table = table_schema(entry)
            if [(c.name, c.type_oid) for c in table.columns] == wire:
                return table
        # The catalog has moved on since this change was written (a later ALTER TABLE):
        # describe the columns the message has, types spelled as format_type does.
        pg_types = self.source.format_types([(c.type_oid, c.typmod) for c in msg.columns])
        by_name = {c["name"]: c for c in entry["columns"]} if entry else {}
        columns = tuple(
            Column(c.name, pg_type, c.type_oid,
                   bool(by_name.get(c.name, {}).get("not_null"))
                   and by_name[c.name]["type_oid"] == c.type_oid)
            for c, pg_type in zip(msg.columns, pg_types, strict=True))
        names = {c.name for c in msg.columns}
        if entry is not None and set(entry["primary_key"]) <= names:
            key = tuple(entry["primary_key"])
        else:
            key = tuple(c.name for c in msg.columns if c.is_key)
        return TableSchema(msg.namespace, msg.name, columns, key)
