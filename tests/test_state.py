"""StreamState, the reference consumer: what each op does to table state."""

from __future__ import annotations

import json

import pytest

from journal.catalog import Column, TableSchema
from journal.errors import ValidationError
from journal.events import (
    CATALOG_PREFIX,
    HEARTBEAT_PREFIX,
    MARK_PREFIX,
    SNAPSHOT_PREFIX,
    ChangeEvent,
    LogicalMessage,
    Record,
    TransactionMarker,
)
from journal.positions import Position
from journal.stream_state import StreamState, transactions

DOC = TableSchema("public", "document", (Column("id", "integer", 23, True),
                                         Column("title", "text", 25),
                                         Column("body", "text", 25)), ("id",))
TS = 1_700_000_000_000_000


def txn(lsn: int, *items: tuple, xid: int | None = None) -> list[Record]:
    """BEGIN, the items as changes/messages at seq 1.., END — one source transaction.

    An item is ``(op, before, after[, unchanged_toast])`` or ``("msg", prefix, content)``.
    """
    xid = xid if xid is not None else lsn
    out: list[Record] = [TransactionMarker("BEGIN", "db", Position(lsn, 0), xid, TS + lsn)]
    changes = 0
    for seq, item in enumerate(items, start=1):
        if item[0] == "msg":
            out.append(LogicalMessage("db", item[1], item[2], True, Position(lsn, seq), xid,
                                      TS + lsn))
            continue
        op, before, after, *rest = item
        out.append(ChangeEvent(op, "db", DOC, Position(lsn, seq), xid, TS + lsn, before, after,
                               tuple(rest[0]) if rest else (), snapshot=op == "r"))
        changes += 1
    out.append(TransactionMarker("END", "db", Position(lsn, len(items) + 1), xid, TS + lsn,
                                 changes))
    return out


def row(id_: int, title: str | None = "t", body: str | None = "b") -> dict:
    return {"id": id_, "title": title, "body": body}


def snapshot(lsn: int, generation: str, *rows: dict) -> list[Record]:
    content = json.dumps({"generation": generation, "catalog": {"tables": {"g": generation}}})
    return txn(lsn, ("msg", SNAPSHOT_PREFIX, content.encode()),
               *[("r", None, r) for r in rows])


def test_insert_update_delete_fold_into_rows() -> None:
    state = StreamState().apply_all([
        *txn(10, ("c", None, row(1, "a")), ("c", None, row(2, "b"))),
        *txn(20, ("u", None, row(1, "a2"))),
        *txn(30, ("d", {"id": 2, "title": None, "body": None}, None)),
    ])
    assert state.tables() == {"public.document": {(1,): row(1, "a2")}}
    assert state.position == Position(30, 2)
    assert state.commit_ts == TS + 30
    assert state.transactions_applied == 3


def test_update_fills_unchanged_toast_columns_from_previous_row() -> None:
    state = StreamState().apply_all([
        *txn(10, ("c", None, row(1, "a", "a very long body"))),
        *txn(20, ("u", None, row(1, "renamed", None), ["body"])),
    ])
    assert state.rows("public.document")[(1,)] == row(1, "renamed", "a very long body")


def test_update_that_changes_the_key_moves_the_row_and_keeps_toast() -> None:
    state = StreamState().apply_all([
        *txn(10, ("c", None, row(1, "a", "long"))),
        *txn(20, ("u", {"id": 1, "title": None, "body": None}, row(5, "a", None), ["body"])),
    ])
    assert state.rows("public.document") == {(5,): row(5, "a", "long")}


def test_unchanged_toast_without_a_previous_row_is_refused() -> None:
    with pytest.raises(ValidationError, match="no earlier row"):
        StreamState().apply_all(txn(20, ("u", None, row(1, "x", None), ["body"])))


def test_snapshot_message_starts_a_new_generation_with_exactly_its_rows() -> None:
    state = StreamState().apply_all([
        *snapshot(5, "gen-1", row(1), row(2)),
        *txn(10, ("c", None, row(3))),
        *snapshot(50, "gen-2", row(7, "seven")),
    ])
    assert state.generation == "gen-2"
    assert state.catalog == {"tables": {"g": "gen-2"}}
    assert state.tables() == {"public.document": {(7,): row(7, "seven")}}


def test_incomplete_transaction_is_discarded_when_a_higher_begin_arrives() -> None:
    cut_off = txn(10, ("c", None, row(1)), ("c", None, row(2)))[:-1]  # no END
    state = StreamState().apply_all([*cut_off, *snapshot(40, "gen-2", row(9))])
    assert state.discarded == 1
    assert state.rows("public.document") == {(9,): row(9)}


def test_transaction_is_not_applied_before_its_end_marker() -> None:
    records = txn(10, ("c", None, row(1)))
    state = StreamState().apply_all(records[:-1])
    assert state.rows("public.document") == {}
    assert state.pending is not None
    state.apply(records[-1])
    assert state.rows("public.document") == {(1,): row(1)}
    assert state.pending is None


def test_resent_tail_completes_a_transaction_cut_off_mid_way() -> None:
    # capture crashed after flushing BEGIN and the first change; after dedupe only the
    # rest of the same transaction arrives again
    records = txn(10, ("c", None, row(1)), ("c", None, row(2)))
    state = StreamState().apply_all([*records[:2], *records[2:]])
    assert set(state.rows("public.document")) == {(1,), (2,)}


def test_truncate_clears_the_table() -> None:
    state = StreamState().apply_all([
        *txn(10, ("c", None, row(1)), ("c", None, row(2))),
        *txn(20, ("t", None, None), ("c", None, row(3))),
    ])
    assert state.rows("public.document") == {(3,): row(3)}


def test_marks_catalog_and_heartbeats_are_tracked() -> None:
    catalog = {"tables": {"public.document": {
        "schema": "public", "name": "document", "primary_key": ["id"],
        "columns": [{"name": "id", "pg_type": "integer", "type_oid": 23}]}}}
    heartbeat = LogicalMessage("db", HEARTBEAT_PREFIX, b"", False, Position(40, 0), 0, TS)
    state = StreamState().apply_all([
        *txn(10, ("msg", MARK_PREFIX, b"before-upgrade")),
        *txn(20, ("msg", CATALOG_PREFIX, json.dumps({"catalog": catalog}).encode()),
             ("c", None, row(1))),
        heartbeat,
    ])
    assert state.marks == [("before-upgrade", Position(10, 1))]
    assert state.catalog == catalog
    assert state.position == Position(40, 0)


def test_end_with_a_wrong_event_count_is_refused() -> None:
    records = txn(10, ("c", None, row(1)), ("c", None, row(2)))
    del records[2]
    with pytest.raises(ValidationError, match="event_count 2 but 1"):
        StreamState().apply_all(records)


def test_records_before_the_first_begin_are_skipped() -> None:
    records = txn(10, ("c", None, row(1)), ("c", None, row(2)))
    state = StreamState().apply_all([*records[2:], *txn(20, ("c", None, row(3)))])
    assert state.rows("public.document") == {(3,): row(3)}
    assert state.skipped == 2


def test_transactions_groups_complete_transactions_only() -> None:
    records = [*txn(10, ("c", None, row(1))),
               *txn(20, ("c", None, row(2)))[:-1],
               *txn(30, ("c", None, row(3)), ("d", row(1), None)),
               *txn(40, ("c", None, row(4)))[:-1]]
    grouped = list(transactions(records))
    assert [t.commit_lsn for t in grouped] == [10, 30]
    assert [len(t.changes) for t in grouped] == [1, 2]
    assert all(t.end is not None for t in grouped)


def test_transactions_is_streaming() -> None:
    def endless():
        lsn = 1
        while True:
            yield from txn(lsn, ("c", None, row(lsn)))
            lsn += 1

    first = next(transactions(endless()))
    assert first.commit_lsn == 1
