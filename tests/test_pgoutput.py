"""pgoutput decoding against byte strings built by hand from the protocol's message formats."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal.catalog import Column, TableSchema
from journal.values import RowLoader
from producers import pgoutput
from producers.pgoutput import UNCHANGED, ProtocolError
from tests.support.pgoutput import tuple_data

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def test_begin_gives_commit_lsn_unix_micros_and_xid():
    ts = 123_456_789
    msg = pgoutput.decode(b"B" + struct.pack(">qqI", 0x1_0000_00A0, ts, 4_000_000_000))
    assert msg == pgoutput.Begin(0x1_0000_00A0, ts + pgoutput.PG_EPOCH_OFFSET_US, 4_000_000_000)
    assert datetime.fromtimestamp(msg.commit_ts / 1e6, UTC) > PG_EPOCH


def test_commit_gives_commit_and_end_lsn():
    msg = pgoutput.decode(b"C" + struct.pack(">bqqq", 0, 100, 164, 5))
    assert msg == pgoutput.Commit(0, 100, 164, 5 + pgoutput.PG_EPOCH_OFFSET_US)


def test_origin():
    msg = pgoutput.decode(b"O" + struct.pack(">q", 77) + cstr("pg_16384"))
    assert msg == pgoutput.Origin(77, "pg_16384")


def test_relation_lists_columns_with_key_flag_oid_and_typmod():
    body = (b"R" + struct.pack(">I", 16406) + cstr("public") + cstr("document") + b"d"
            + struct.pack(">h", 3)
            + b"\x01" + cstr("id") + struct.pack(">Ii", 23, -1)
            + b"\x00" + cstr("price") + struct.pack(">Ii", 1700, (12 << 16 | 2) + 4)
            + b"\x00" + cstr("état") + struct.pack(">Ii", 25, -1))
    msg = pgoutput.decode(body)
    assert isinstance(msg, pgoutput.Relation)
    assert (msg.relid, msg.qualified, msg.replica_identity) == (16406, "public.document", "d")
    assert [c.name for c in msg.columns] == ["id", "price", "état"]
    assert [c.is_key for c in msg.columns] == [True, False, False]
    assert msg.columns[1].typmod == (12 << 16 | 2) + 4
    assert msg.signature() == [["id", 23, -1], ["price", 1700, 786438], ["état", 25, -1]]


def test_relation_in_pg_catalog_has_empty_namespace():
    body = (b"R" + struct.pack(">I", 1) + cstr("") + cstr("t") + b"f" + struct.pack(">h", 0))
    assert pgoutput.decode(body).qualified == "pg_catalog.t"


def test_type_message():
    msg = pgoutput.decode(b"Y" + struct.pack(">I", 16390) + cstr("public") + cstr("doc_status"))
    assert msg == pgoutput.Type(16390, "public", "doc_status")


def test_insert_with_text_null_and_empty_values():
    body = b"I" + struct.pack(">I", 7) + b"N" + tuple_data(b"42", None, b"")
    assert pgoutput.decode(body) == pgoutput.Insert(7, (b"42", None, b""))


def test_update_reports_unchanged_toast_never_a_placeholder():
    body = b"U" + struct.pack(">I", 7) + b"N" + tuple_data(b"1", UNCHANGED, b"new")
    msg = pgoutput.decode(body)
    assert msg == pgoutput.Update(7, None, None, (b"1", UNCHANGED, b"new"))
    assert msg.new[1] is UNCHANGED


@pytest.mark.parametrize("kind", ["K", "O"])
def test_update_with_old_tuple(kind: str):
    body = (b"U" + struct.pack(">I", 7) + kind.encode() + tuple_data(b"1", None)
            + b"N" + tuple_data(b"2", b"x"))
    assert pgoutput.decode(body) == pgoutput.Update(7, kind, (b"1", None), (b"2", b"x"))


@pytest.mark.parametrize("kind", ["K", "O"])
def test_delete_with_key_or_old_row(kind: str):
    body = b"D" + struct.pack(">I", 9) + kind.encode() + tuple_data(b"5", None)
    assert pgoutput.decode(body) == pgoutput.Delete(9, kind, (b"5", None))


def test_truncate_of_several_relations_with_options():
    body = b"T" + struct.pack(">ib", 3, 3) + struct.pack(">III", 10, 11, 4_000_000_000)
    assert pgoutput.decode(body) == pgoutput.Truncate((10, 11, 4_000_000_000), True, True)
    plain = b"T" + struct.pack(">ib", 1, 0) + struct.pack(">I", 10)
    assert pgoutput.decode(plain) == pgoutput.Truncate((10,), False, False)


@pytest.mark.parametrize("flags,transactional", [(0, False), (1, True)])
def test_logical_message(flags: int, transactional: bool):
    content = b"\x00binary\xffcontent"
    body = (b"M" + bytes([flags]) + struct.pack(">q", 0x9AE1DB0) + cstr("edms_journal.mark")
            + struct.pack(">i", len(content)) + content)
    assert pgoutput.decode(body) == pgoutput.Message(transactional, 0x9AE1DB0,
                                                     "edms_journal.mark", content)


@pytest.mark.parametrize("body", [
    b"", b"Z", b"B\x00\x01", b"I" + struct.pack(">I", 1) + b"X",
    b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 10) + b"a",
    b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"b" + struct.pack(">i", 1) + b"a",
    b"D" + struct.pack(">I", 1) + b"N" + tuple_data(b"1"),
    b"M\x00" + struct.pack(">q", 1) + cstr("p") + struct.pack(">i", 5) + b"ab",
])
def test_malformed_messages_raise_protocol_error(body: bytes):
    with pytest.raises(ProtocolError):
        pgoutput.decode(body)


def test_captured_xlogdata_payloads_decode():
    # payloads as PostgreSQL 18 sent them for: INSERT INTO pt VALUES (1, 'a') in one txn
    begin = bytes.fromhex("420000000009ae1d4800030 42af0ea7d1c00000302".replace(" ", ""))
    relation = (b"R\x00\x00@\x16public\x00pt\x00d\x00\x02\x01id\x00\x00\x00\x00\x17\xff\xff"
                b"\xff\xff\x00t\x00\x00\x00\x00\x19\xff\xff\xff\xff")
    insert = b"I\x00\x00@\x16N\x00\x02t\x00\x00\x00\x011t\x00\x00\x00\x01a"
    commit = (b"C\x00\x00\x00\x00\x00\t\xae\x1dH\x00\x00\x00\x00\t\xae\x1dx\x00\x03\x04*"
              b"\xf0\xea}\x1c")
    b, r, i, c = (pgoutput.decode(x) for x in (begin, relation, insert, commit))
    assert isinstance(b, pgoutput.Begin) and b.xid == 770
    assert b.final_lsn == c.commit_lsn == 0x9AE1D48 and c.end_lsn == 0x9AE1D78
    assert b.commit_ts == c.commit_ts
    assert r.relid == i.relid == 0x4016 and r.signature() == [["id", 23, -1], ["t", 25, -1]]
    assert i.new == (b"1", b"a")


TABLE = TableSchema("public", "doc", (
    Column("id", "integer", 23, True), Column("price", "numeric(12,2)", 1700),
    Column("body", "text", 25, True), Column("tags", "text[]", 1009),
    Column("created", "timestamp with time zone", 1184)), ("id",))


def test_row_of_loads_values_and_lists_unchanged_columns():
    loader = RowLoader(TABLE)
    row, unchanged = pgoutput.row_of(
        TABLE.column_names, loader,
        (b"3", b"12.50", UNCHANGED, b'{a,"b c",NULL}', b"2024-05-01 10:00:00.5+00"))
    assert unchanged == ("body",)
    assert row == {"id": 3, "price": Decimal("12.50"), "body": None,
                   "tags": ["a", "b c", None],
                   "created": datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)}


def test_row_of_rejects_tuple_of_other_width():
    with pytest.raises(ProtocolError):
        pgoutput.row_of(TABLE.column_names, RowLoader(TABLE), (b"1",))


@given(st.lists(st.one_of(st.none(), st.just(UNCHANGED), st.binary(max_size=40)), max_size=20),
       st.integers(min_value=0, max_value=2**32 - 1))
def test_tuple_data_round_trips_any_values(values: list, relid: int):
    body = b"I" + struct.pack(">I", relid) + b"N" + tuple_data(*values)
    assert pgoutput.decode(body) == pgoutput.Insert(relid, tuple(values))


@pytest.mark.parametrize(("tuple_bytes", "message"), [
    (struct.pack(">h", 1) + b"t" + struct.pack(">i", -1) + b"abc",
     "tuple value with a negative length (-1)"),
    (struct.pack(">h", -3), "tuple data with a negative column count (-3)"),
])
@pytest.mark.parametrize("in_c", [True, False])
def test_negative_lengths_and_counts_are_refused_by_name(
        tuple_bytes: bytes, message: str, in_c: bool, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pgoutput, "IN_C", in_c and pgoutput.IN_C)
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pgoutput.decode(b"I" + struct.pack(">I", 16384) + b"N" + tuple_bytes)
