"""The pgoutput-to-records translator against hand-built messages: no server, milliseconds.

Each test feeds decoded pgoutput messages (as ``producers.pgoutput`` produces them) and
compares the records with ones written out here by hand from the event contract: positions
``(commit LSN, seq)``, BEGIN at seq 0, END after the last change with the event count.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from journal.catalog import Column, TableSchema
from journal.errors import SourceError
from journal.events import (
    CATALOG_PREFIX,
    DDL_PREFIX,
    HEARTBEAT_PREFIX,
    MARK_PREFIX,
    PARTITION_TRUNCATE_PREFIX,
    ChangeEvent,
    LogicalMessage,
    TransactionMarker,
)
from journal.positions import Position
from producers.ddl_trigger import SchemaChangeRefused
from producers.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Relation,
    RelationColumn,
    Truncate,
    Update,
)
from producers.translate import Boundary, Translator

DB = "src"
INT4, TEXT = 23, 25
COMMIT_LSN, END_LSN = 0x1_0000_0100, 0x1_0000_0180
COMMIT_TS = 1_700_000_000_000_000  # µs since the Unix epoch
XID = 777
NOW_MS = 1_700_000_000_123  # the translator's clock: ts_ms of every change


def column(name: str, type_oid: int, pg_type: str, not_null: bool = False) -> dict[str, Any]:
    return {"name": name, "pg_type": pg_type, "type_oid": type_oid, "not_null": not_null}


def entry(name: str, columns: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"schema": "public", "name": name, "columns": columns, "primary_key": ["id"],
            **extra}


DOCS_ENTRY = entry("docs", [column("id", INT4, "integer", True), column("body", TEXT, "text")])
DOCS = TableSchema("public", "docs", (Column("id", "integer", INT4, True),
                                      Column("body", "text", TEXT, False)), ("id",))
DOCS_RELATION = Relation(16_401, "public", "docs", "d", (
    RelationColumn(1, "id", INT4, -1), RelationColumn(0, "body", TEXT, -1)))


class Lookup:
    """The source database's answers, given by each test; records what was asked."""

    def __init__(self, types: dict[tuple[int, int], str] | None = None,
                 changes: list[tuple[dict[str, Any], dict[str, Any]] | None] | None = None
                 ) -> None:
        self.types = types or {}
        self.changes = list(changes or [])
        self.asked: list[Any] = []

    def format_types(self, types: Sequence[tuple[int, int]]) -> list[str]:
        self.asked.append(list(types))
        return [self.types[t] for t in types]

    def catalog_change(self, catalog: dict[str, Any], content: bytes,
                       captured: Callable[[str, str], bool]
                       ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        self.asked.append(json.loads(content))
        return self.changes.pop(0)


def translator(catalog: dict[str, Any] | None = None, *, relations: dict[str, Any] | None = None,
               lookup: Lookup | None = None, ddl_announced: bool = True) -> Translator:
    catalog = catalog if catalog is not None else {"types": [], "tables": {
        "public.docs": DOCS_ENTRY}}
    return Translator(DB, catalog, relations or {}, schemas=("public",), tables=(),
                      ddl_announced=ddl_announced, source=lookup or Lookup(),
                      clock=lambda: NOW_MS / 1000)


def feed(t: Translator, *messages: Any, send_time: int = 0) -> list[Any]:
    """Every record of ``messages``, in order."""
    return [r for m in messages for r in t.translate(m, send_time).records]


BEGIN = Begin(COMMIT_LSN, COMMIT_TS, XID)
COMMIT = Commit(0, COMMIT_LSN, END_LSN, COMMIT_TS)


def begin_marker() -> TransactionMarker:
    return TransactionMarker("BEGIN", DB, Position(COMMIT_LSN, 0), XID, COMMIT_TS)


def end_marker(seq: int, events: int) -> TransactionMarker:
    return TransactionMarker("END", DB, Position(COMMIT_LSN, seq), XID, COMMIT_TS, events)


def change(op: str, seq: int, before: dict[str, Any] | None, after: dict[str, Any] | None,
           unchanged: tuple[str, ...] = (), table: TableSchema = DOCS) -> ChangeEvent:
    return ChangeEvent(op, DB, table, Position(COMMIT_LSN, seq), XID, COMMIT_TS, before,
                       after, unchanged, ts_ms=NOW_MS)


def test_insert_update_delete_get_positions_in_commit_order_between_begin_and_end():
    t = translator()
    records = feed(
        t, DOCS_RELATION, BEGIN,
        Insert(DOCS_RELATION.relid, (b"1", b"first")),
        Update(DOCS_RELATION.relid, None, None, (b"1", b"second")),
        Delete(DOCS_RELATION.relid, "K", (b"1", None)),
        COMMIT)
    assert records == [
        begin_marker(),
        change("c", 1, None, {"id": 1, "body": "first"}),
        change("u", 2, None, {"id": 1, "body": "second"}),
        change("d", 3, {"id": 1, "body": None}, None),
        end_marker(4, 3),
    ]


def test_a_transaction_without_records_is_a_boundary_without_markers_or_commit_time():
    t = translator()
    assert t.translate(DOCS_RELATION).boundary is None
    assert t.translate(BEGIN).boundary is None
    assert t.in_transaction
    translation = t.translate(Commit(0, COMMIT_LSN, END_LSN + 8, COMMIT_TS))
    assert translation.records == []
    assert translation.boundary == Boundary(
        END_LSN + 8, {"public.docs": [["id", INT4, -1], ["body", TEXT, -1]]},
        t.catalog, None)
    assert not t.in_transaction


def test_the_commit_boundary_names_the_commit_time_of_a_transaction_with_records():
    t = translator()
    feed(t, DOCS_RELATION, BEGIN, Insert(DOCS_RELATION.relid, (b"1", b"x")))
    boundary = t.translate(COMMIT).boundary
    assert boundary is not None and (boundary.lsn, boundary.commit_ts) == (END_LSN, COMMIT_TS)


def test_update_changing_the_key_carries_the_old_key_as_before():
    t = translator()
    records = feed(t, DOCS_RELATION, BEGIN,
                   Update(DOCS_RELATION.relid, "K", (b"1", None), (b"2", b"moved")), COMMIT)
    assert records[1] == change("u", 1, {"id": 1, "body": None}, {"id": 2, "body": "moved"})


def test_unchanged_toast_column_is_listed_not_filled_in():
    t = translator()
    records = feed(t, DOCS_RELATION, BEGIN,
                   Update(DOCS_RELATION.relid, None, None, (b"5", UNCHANGED)), COMMIT)
    assert records[1] == change("u", 1, None, {"id": 5, "body": None}, ("body",))


def test_truncate_gives_one_event_per_captured_table_and_skips_the_others():
    other = Relation(16_500, "audit", "log", "d", (RelationColumn(1, "id", INT4, -1),))
    t = translator()
    records = feed(t, DOCS_RELATION, other, BEGIN,
                   Truncate((other.relid, DOCS_RELATION.relid), False, False), COMMIT)
    assert records == [begin_marker(),
                       ChangeEvent("t", DB, DOCS, Position(COMMIT_LSN, 1), XID, COMMIT_TS,
                                   ts_ms=NOW_MS),
                       end_marker(2, 1)]


def test_a_mark_is_a_transactional_record_and_not_counted_as_an_event():
    t = translator()
    records = feed(t, BEGIN, Message(True, COMMIT_LSN - 8, MARK_PREFIX, b"before-upgrade"),
                   COMMIT)
    mark = LogicalMessage(DB, MARK_PREFIX, b"before-upgrade", True, Position(COMMIT_LSN, 1),
                          XID, COMMIT_TS)
    assert records == [begin_marker(), mark, end_marker(2, 0)]
    assert mark.is_mark


def test_a_heartbeat_between_transactions_sits_just_before_its_lsn_and_is_a_boundary():
    t = translator()
    sent = 1_700_000_001_000_000
    translation = t.translate(Message(False, END_LSN + 40, HEARTBEAT_PREFIX, b"{}"), sent)
    assert translation.records == [LogicalMessage(DB, HEARTBEAT_PREFIX, b"{}", False,
                                                  Position(END_LSN + 39, 0), 0, sent)]
    assert translation.boundary == Boundary(END_LSN + 40, {}, t.catalog)


def test_another_applications_message_is_not_recorded():
    t = translator()
    assert feed(t, BEGIN, Message(True, COMMIT_LSN - 8, "other.app", b"x"), COMMIT) == []


def test_a_ddl_message_becomes_a_catalog_record_and_the_next_relation_a_new_table_version():
    added = column("title", TEXT, "text")
    new_entry = {**DOCS_ENTRY, "columns": [*DOCS_ENTRY["columns"], added]}
    new_catalog = {"types": [], "tables": {"public.docs": new_entry}}
    change_record = {"tables": ["public.docs"], "renamed": {}, "dropped": [], "types": []}
    lookup = Lookup(changes=[(new_catalog, change_record)])
    t = translator(lookup=lookup)
    wider = Relation(DOCS_RELATION.relid, "public", "docs", "d",
                     (*DOCS_RELATION.columns, RelationColumn(0, "title", TEXT, -1)))
    ddl = {"tables": {"16401": {"names": ["r"]}}}
    records = feed(t, DOCS_RELATION, BEGIN,
                   Insert(DOCS_RELATION.relid, (b"1", b"old shape")),
                   Message(True, COMMIT_LSN - 16, DDL_PREFIX, json.dumps(ddl).encode()),
                   wider, Insert(wider.relid, (b"2", b"new shape", b"t")), COMMIT)
    assert lookup.asked == [ddl]
    wide = TableSchema("public", "docs", (*DOCS.columns, Column("title", "text", TEXT, False)),
                       ("id",))
    content = json.dumps({"catalog": {"types": [], "tables": {"public.docs": new_entry}},
                          "change": change_record}).encode()
    assert records == [
        begin_marker(),
        change("c", 1, None, {"id": 1, "body": "old shape"}),
        LogicalMessage(DB, CATALOG_PREFIX, content, True, Position(COMMIT_LSN, 2), XID,
                       COMMIT_TS),
        change("c", 3, None, {"id": 2, "body": "new shape", "title": "t"}, table=wide),
        end_marker(4, 2),
    ]
    assert t.catalog is new_catalog
    assert t.known["public.docs"] == wider.signature()


def test_a_ddl_message_on_no_captured_table_records_nothing():
    t = translator(lookup=Lookup(changes=[None]))
    assert feed(t, BEGIN, Message(True, COMMIT_LSN - 8, DDL_PREFIX, b"{}"), COMMIT) == []


def test_a_relation_changing_shape_without_a_ddl_message_is_refused():
    t = translator(relations={"public.docs": DOCS_RELATION.signature()})
    narrower = Relation(DOCS_RELATION.relid, "public", "docs", "d", DOCS_RELATION.columns[:1])
    with pytest.raises(SchemaChangeRefused, match=r"table public.docs changed to columns "
                       r"\['id'\] but no DDL message described it"):
        t.translate(narrower)
    unannounced = translator(relations={"public.docs": DOCS_RELATION.signature()},
                             ddl_announced=False)
    with pytest.raises(SchemaChangeRefused, match="the DDL event trigger is not installed"):
        unannounced.translate(narrower)


def test_a_known_relation_the_catalog_has_moved_past_is_described_from_the_message():
    # resumed after the catalog gained a column the stream has yet to reach: the message's
    # own columns, type names asked of the source, NOT NULL kept where the type is the same
    later = {"types": [], "tables": {"public.docs": {
        **DOCS_ENTRY, "columns": [*DOCS_ENTRY["columns"], column("title", TEXT, "text")]}}}
    lookup = Lookup(types={(INT4, -1): "integer", (TEXT, -1): "text"})
    t = translator(later, relations={"public.docs": DOCS_RELATION.signature()}, lookup=lookup)
    records = feed(t, DOCS_RELATION, BEGIN, Insert(DOCS_RELATION.relid, (b"1", b"x")), COMMIT)
    assert lookup.asked == [[(INT4, -1), (TEXT, -1)]]
    assert records[1].table == DOCS


# a partition entry as the source's catalog reads it
DOCS_2024 = {"schema": "public", "name": "docs_2024", "parent": "public.docs",
             "ddl": "CREATE TABLE public.docs_2024 PARTITION OF public.docs FOR VALUES IN (2024)",
             "constraints": [], "indexes": [],
             "replica_identity": {"kind": "default", "index": None, "ddl": None}}


def test_a_partition_truncated_on_its_own_is_refused_at_commit():
    catalog = {"types": [], "tables": {"public.docs": {
        **DOCS_ENTRY, "partitions": [DOCS_2024]}}}
    t = translator(catalog)
    feed(t, DOCS_RELATION, BEGIN,
         Message(True, COMMIT_LSN - 8, PARTITION_TRUNCATE_PREFIX, b"public.docs_2024"))
    with pytest.raises(SchemaChangeRefused, match=(
            r"partition public.docs_2024 of public.docs was truncated on its own \(transaction "
            r"777\).*DELETE through public.docs instead")):
        t.translate(COMMIT)


def test_a_partition_truncated_with_its_root_is_in_the_stream():
    catalog = {"types": [], "tables": {"public.docs": {
        **DOCS_ENTRY, "partitions": [DOCS_2024]}}}
    t = translator(catalog)
    records = feed(t, DOCS_RELATION, BEGIN,
                   Message(True, COMMIT_LSN - 8, PARTITION_TRUNCATE_PREFIX, b"public.docs_2024"),
                   Truncate((DOCS_RELATION.relid,), False, False), COMMIT)
    assert [r.op for r in records if isinstance(r, ChangeEvent)] == ["t"]


def test_a_change_under_a_partitions_own_name_is_refused():
    catalog = {"types": [], "tables": {"public.docs": {
        **DOCS_ENTRY, "partitions": [DOCS_2024]}}}
    part = Relation(16_402, "public", "docs_2024", "d", DOCS_RELATION.columns)
    t = translator(catalog)
    with pytest.raises(SourceError, match="partition public.docs_2024 of public.docs under "
                       "its own name"):
        feed(t, part, BEGIN, Insert(part.relid, (b"1", b"x")))


@pytest.mark.parametrize("messages, error", [
    ((Insert(DOCS_RELATION.relid, (b"1", b"x")),), "before its relation message"),
    ((DOCS_RELATION, Insert(DOCS_RELATION.relid, (b"1", b"x"))), "outside a transaction"),
    ((COMMIT,), "commit without a begin"),
])
def test_a_stream_out_of_protocol_order_is_refused(messages: tuple[Any, ...], error: str):
    with pytest.raises(SourceError, match=error):
        feed(translator(), *messages)


def test_a_transaction_delivered_again_gets_the_same_records():
    messages = (DOCS_RELATION, BEGIN, Insert(DOCS_RELATION.relid, (b"1", b"x")),
                Delete(DOCS_RELATION.relid, "K", (b"1", None)), COMMIT)
    assert feed(translator(), *messages) == feed(translator(), *messages)
