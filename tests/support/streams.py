"""Hand-built change streams and the packages made from them: three small tables, a
builder that writes transactions by the stream contract, full and segment packages of a
reference state, and the comparisons of package rows with replayed state."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from journal.catalog import Column, TableSchema
from journal.codec import SchemaRegistry, encode
from journal.events import (
    MARK_PREFIX,
    SNAPSHOT_PREFIX,
    ChangeEvent,
    LogicalMessage,
    Record,
    TransactionMarker,
)
from journal.fold import SortedRowSink
from journal.packages import Manifest, PackageBuilder, PackageReader
from journal.positions import Position
from journal.stream_state import StreamState

DOC = TableSchema("public", "doc", (Column("id", "integer", 23, True),
                                    Column("title", "text", 25, False),
                                    Column("body", "text", 25, False)), ("id",))
TAG = TableSchema("public", "tag", (Column("name", "text", 25, True),
                                    Column("n", "bigint", 20, False)), ("name",))
LINK = TableSchema("public", "link", (Column("a", "integer", 23, True),
                                      Column("b", "integer", 23, True),
                                      Column("note", "text", 25, False)), ("a", "b"))
TABLES = (DOC, TAG, LINK)
T0 = 1_780_000_000_000_000  # µs


def catalog_of(tables: Sequence[TableSchema]) -> dict[str, Any]:
    return {"types": [], "tables": {
        t.qualified: {"schema": t.schema, "name": t.name,
                      "columns": [{"name": c.name, "pg_type": c.pg_type,
                                   "type_oid": c.type_oid, "not_null": c.not_null,
                                   "default": None, "identity": "", "generated": ""}
                                  for c in t.columns],
                      "primary_key": list(t.primary_key), "unique": [], "foreign_keys": [],
                      "create_table": "", "constraints": [], "indexes": [], "sequences": [],
                      "natural_key": None} for t in tables}}


class StreamBuilder:
    """Hand-built change streams that follow the stream contract."""

    def __init__(self, database: str = "edms", lsn: int = 0x1_0000_0000) -> None:
        self.database = database
        self.lsn = lsn
        self.ts = T0
        self.xid = 700
        self.records: list[Record] = []

    def _txn(self, body: Iterable[Any]) -> list[Record]:
        self.lsn += 0x100
        self.ts += 1_000_000
        self.xid += 1
        lsn, ts, xid, db = self.lsn, self.ts, self.xid, self.database
        out: list[Record] = [TransactionMarker("BEGIN", db, Position(lsn, 0), xid, ts)]
        changes = 0
        for item in body:
            pos = Position(lsn, len(out))
            if isinstance(item, tuple) and item[0] == "msg":
                out.append(LogicalMessage(db, item[1], item[2], True, pos, xid, ts))
                continue
            op, table, before, after, toast, snapshot = item
            out.append(ChangeEvent(op, db, table, pos, xid, ts, before, after, tuple(toast),
                                   snapshot))
            changes += 1
        out.append(TransactionMarker("END", db, Position(lsn, len(out)), xid, ts, changes))
        self.records += out
        return out

    def snapshot(self, rows: dict[TableSchema, list[dict[str, Any]]],
                 generation: str = "gen-1") -> list[Record]:
        content = json.dumps({"generation": generation, "slot": "s", "system_identifier": "42",
                              "database": self.database, "catalog": catalog_of(TABLES)})
        body: list[Any] = [("msg", SNAPSHOT_PREFIX, content.encode())]
        for table, table_rows in rows.items():
            body += [("r", table, None, r, (), True) for r in table_rows]
        return self._txn(body)

    def change(self, changes: list[tuple[Any, ...]], mark: str | None = None) -> list[Record]:
        body: list[Any] = [(op, t, b, a, toast, False) for op, t, b, a, toast in changes]
        if mark:
            body.append(("msg", MARK_PREFIX, mark.encode()))
        return self._txn(body)


def encoded(records: Iterable[Record], registry: SchemaRegistry
            ) -> list[tuple[Position, bytes | None, bytes]]:
    return [(r.position, *encode(r, registry)) for r in records]


def write_full(workdir: Path, state: StreamState, position: Position, commit_ts: int,
               generation: str = "gen-1", shuffle: bool = False) -> Path:
    """A full package of the reference state (through the snapshot sink)."""
    builder = PackageBuilder("full", workdir)
    for table in TABLES:
        sink = SortedRowSink(builder, table, workdir, spill_bytes=4096)
        rows = list(state.rows(table.qualified).values())
        if shuffle:
            random.Random(7).shuffle(rows)
        for row in rows:
            sink.write(row)
        sink.close()
    tmp, m = builder.finish(system_identifier="42", database="edms", generation=generation,
                            to_position=position, first_commit_ts=commit_ts,
                            last_commit_ts=commit_ts, catalog=catalog_of(TABLES))
    final = workdir / f"{m.package_id}.tar"
    tmp.rename(final)
    return final


def write_segment(workdir: Path, records: Sequence[Record], after: Manifest,
                  registry: SchemaRegistry) -> Path:
    builder = PackageBuilder("segment", workdir)
    events = builder.events()
    marks = []
    for pos, key, value in encoded(records, registry):
        events.write(pos, key, value)
    for r in records:
        if isinstance(r, LogicalMessage) and r.is_mark:
            marks.append((r.content.decode(), r.position, r.commit_ts))
    builder.add_schemas({fp.hex(): s for fp, s in registry.items()})
    ts = [r.commit_ts for r in records if isinstance(r, TransactionMarker)]
    tmp, m = builder.finish(system_identifier="42", database="edms", generation=after.generation,
                            from_position=after.to_position, to_position=records[-1].position,
                            first_commit_ts=ts[0], last_commit_ts=ts[-1],
                            parent_id=after.package_id, marks=marks)
    final = workdir / f"{m.package_id}.tar"
    tmp.rename(final)
    return final


def package_rows(reader: PackageReader) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    out = {}
    for name in reader.tables():
        schema = reader.table_schema(name)
        out[name] = {schema.key_of(r): r for r in reader.rows(name)}
    return out


def state_rows(state: StreamState) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    return {name: dict(rows) for name, rows in state.tables().items()}


def same_tables(a: dict[str, dict[Any, Any]], b: dict[str, dict[Any, Any]]) -> bool:
    names = set(a) | set(b)
    return all(a.get(n, {}) == b.get(n, {}) for n in names)
