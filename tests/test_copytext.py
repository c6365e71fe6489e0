"""The C formatter of COPY text (``journal/codec/_copytext.pyx``) writes the bytes psycopg's
``write_row`` writes for every value type it handles, leaves the others to psycopg
(``Unhandled``, its buffer as before the row), and the rows PostgreSQL stores through
``CopyWriter`` are the same with it and without it.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg._copy_base import format_row_text
from psycopg.adapt import Transformer

import restorer.copying as copying
import tests.support.every_type as every
from journal.catalog import ColumnEntry, TableEntry
from journal.codec.copytext import row_formatter
from journal.codec.wire import Unhandled
from journal.errors import RestoreError
from journal.fold import NetChange
from restorer.copying import CopyWriter
from restorer.net_apply import write_stage_text
from tests.support.ci import unavailable
from tests.support.databases import scratch_database


@pytest.fixture(autouse=True, scope="module")
def _c_formatter_built() -> None:
    if not copying.IN_C:
        unavailable("journal.codec._copytext is not built: reinstall (pip install -e .) "
                    "with a C compiler and Python's headers (gcc libc6-dev python3-dev)")


def c_formats(values: list[Any]) -> bytes:
    formatter = row_formatter([str(i) for i in range(len(values))])
    formatter.add({str(i): v for i, v in enumerate(values)})
    return bytes(formatter.take())


def psycopg_formats(values: list[Any]) -> bytes:
    out = bytearray()
    format_row_text(values, Transformer(), out)
    return bytes(out)


# every type the formatter handles, edges included; bytes apart: psycopg escapes them
# with the connection (hex), so without one its bytes differ (checked against a server)
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2**63, 2**63 - 1),
    st.sampled_from([-2**63, 2**63 - 1, -2**63 - 1, 2**63, 0]),
    text, st.sampled_from(["\\", "\t\n\r\b\v\f", "a\\tb", "\x01\x7f", "é€𝄞"]),
    st.floats(), st.floats(width=32), st.sampled_from([math.inf, -math.inf, math.nan,
                                                      -math.nan, -0.0, 5e-324, 1e16]),
    st.decimals(allow_nan=False), st.sampled_from([Decimal("Infinity"), Decimal("-Infinity"),
                                                   Decimal("-0"), Decimal("1E+3")]),
    st.dates(), every.naive, every.aware, st.datetimes(timezones=st.just(UTC)),
    st.uuids(), st.sampled_from([UUID(int=0), UUID(int=2**128 - 1)]),
)
# psycopg quotes an array element by its text (spaces, quotes, braces, commas, backslashes,
# the word NULL, Unicode spaces): texts made of those, beside any text
quoted = st.text(st.sampled_from(list(' "{},\\\t\nNnUuLlx\u1680\u2000\u2003\u200a\u2028\u2029'
                                      '\u202f\u205f\u3000é\u200b\u205e\u1681\u3001')))
item_types = [st.booleans(), st.integers(), quoted, text, st.floats(),
              st.decimals(allow_nan=False), st.dates(), every.naive, every.aware, st.uuids()]
arrays = st.one_of(*(st.lists(st.one_of(st.none(), items), max_size=6)
                     for items in item_types))
handled = st.one_of(scalars, arrays)


@settings(every.SETTINGS)
@given(st.lists(handled, max_size=8))
def test_handled_values_are_formatted_as_psycopg_formats_them(values):
    assert c_formats(values) == psycopg_formats(values)


@settings(every.SETTINGS)
@given(st.binary(max_size=64))
def test_bytes_are_the_bytea_hex_literal_with_its_backslash_escaped(data):
    assert c_formats([data, None]) == b"\\\\x" + data.hex().encode() + b"\t\\N\n"


class _Int(int):
    pass


class _Str(str):
    pass


UNHANDLED = [
    [[1], [2]], [1, "a"], [1, True], [None, b"x"], [time(1)], ["a\x00"], [Decimal("NaN")],
    [_Str("x")], (1,), time(1, 2), timedelta(3), memoryview(b"x"), bytearray(b"x"), _Int(1),
    _Str("x"), Decimal("NaN"), Decimal("-sNaN"), "a\x00b", "\ud800", {"a": 1}, object(),
]


@pytest.mark.parametrize("special", ["\\", "\b", "\t", "\n", "\v", "\f", "\r", "\x01",
                                     "\x0e", "[", "é"])
def test_text_is_escaped_wherever_its_special_bytes_fall_in_eight_byte_words(special):
    # plain text is copied eight bytes at a time: each position of a word, and past it
    for length in range(20):
        for at in range(length):
            value = "a" * at + special + "b" * (length - at - 1)
            assert c_formats([value]) == psycopg_formats([value])


@pytest.mark.parametrize("value", UNHANDLED, ids=repr)
def test_what_psycopg_must_format_is_unhandled_and_leaves_the_buffer_as_it_was(value):
    formatter = row_formatter(["a", "b"])
    formatter.add({"a": 1, "b": "x"})
    with pytest.raises(Unhandled):
        formatter.add({"a": 2, "b": value})
    assert formatter.take() == b"1\tx\n"


def test_a_missing_column_is_a_key_error_naming_it_and_rows_of_any_mapping_are_read():
    formatter = row_formatter(["a", "b"])
    with pytest.raises(KeyError, match="'b'"):
        formatter.add({"a": 1})
    formatter.add(_Mapping({"a": 1, "b": 2}))
    assert formatter.take() == b"1\t2\n"
    assert formatter.buffered == 0


class _Mapping(dict):  # not an exact dict: read through its __getitem__
    pass


# the every-type table in SQL; types whose generated values the server would refuse or
# change (enum labels, JSON, bounded text) are text there: the values go through all the same
TEXTUAL = {114, 3802, 1043, 1042, 19, every.ENUM_OID}
TEXTUAL_ARRAYS = {199, 3807, 1015, 1014}


def column_type(column: Any) -> str:
    if column.type_oid in TEXTUAL:
        return "text"
    if column.type_oid in TEXTUAL_ARRAYS:
        return "text[]"
    return column.pg_type


COLUMNS = [c.name for c in every.COLUMNS]


def storable(row: dict[str, Any]) -> dict[str, Any]:
    # text without NUL (psycopg refuses it, either way)
    return {k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in row.items()}


def only_c_values(row: dict[str, Any]) -> dict[str, Any]:
    # no times or bytea arrays: a row the C formatter takes whole, among rows it leaves to
    # psycopg
    return {k: None if k in ("clock", "clocks", "blobs") or isinstance(v, memoryview) else v
            for k, v in row.items()}


@pytest.fixture(scope="module")
def tables(pg18_server: str):
    with scratch_database(pg18_server, "copytext") as url, psycopg.connect(url) as conn:
        for name in ("by_c", "by_psycopg"):
            conn.execute(sql.SQL("CREATE TABLE {} (n integer, {})").format(
                sql.Identifier(name), sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(column_type(c)))
                    for c in every.COLUMNS)))
        conn.commit()
        yield conn


def copy_both_ways(conn: psycopg.Connection[Any], rows: list[dict[str, Any]]
                   ) -> tuple[Any, Any]:
    """Each table's rows as PostgreSQL's text, in COPY order, after one COPY each; or the
    error and its context (the line) where the server refused the COPY."""
    outcomes = []
    for table, in_c in (("by_c", True), ("by_psycopg", False)):
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(copying, "IN_C", in_c)
            out = CopyWriter(conn, sql.Identifier(table), ["n", *COLUMNS], table)
        assert (out._formatter is not None) is in_c
        try:
            try:
                for n, row in enumerate(rows):
                    out.write({**row, "n": n})
            except BaseException as exc:
                out.close(exc)
                raise
            out.close()
        except psycopg.Error as exc:
            conn.rollback()
            context = (exc.diag.context or "").replace(f"COPY {table},", "COPY,")
            outcomes.append((type(exc), exc.diag.message_primary, context))
            continue
        assert out.rows == len(rows)
        conn.commit()
        outcomes.append(conn.execute(sql.SQL("SELECT t::text FROM {} t ORDER BY n").format(
            sql.Identifier(table))).fetchall())
    return outcomes[0], outcomes[1]


@pytest.mark.integration
@settings(every.SETTINGS, max_examples=40)
@given(rows=st.lists(every.rows.map(storable), max_size=12), c_only=st.lists(st.booleans()))
def test_every_type_copied_in_c_is_stored_as_psycopg_stores_it(tables, rows, c_only):
    rows = [only_c_values(r) if i < len(c_only) and c_only[i] else r
            for i, r in enumerate(rows)]
    by_c, by_psycopg = copy_both_ways(tables, rows)
    assert by_c == by_psycopg


@pytest.mark.integration
def test_chunks_and_rows_left_to_psycopg_keep_the_copy_order(tables):
    # about 1 MB: several chunks, with rows psycopg formats (times) among them
    rows = [{**dict.fromkeys(COLUMNS), "id": n, "code": f"{n}\t" + "x" * 300,
             "nums": [n] if n % 7 == 0 else None, "clock": time(1) if n % 11 == 0 else None,
             "blob": bytes([n % 256]) * 20, "created": datetime(2020, 1, 1, tzinfo=UTC)
             + timedelta(seconds=n), "local": datetime(2020, 1, 1) + timedelta(days=n),
             "day": date(2020, 1, 1), "amount": Decimal(n).scaleb(-2),
             "uid": UUID(int=n), "double": n / 3, "flag": n % 2 == 0}
            for n in range(3000)]
    by_c, by_psycopg = copy_both_ways(tables, rows)
    assert len(by_c) == 3000
    assert by_c == by_psycopg
    got = tables.execute("SELECT id FROM by_c ORDER BY n").fetchall()
    assert [i for (i,) in got] == list(range(3000))


@pytest.mark.integration
@pytest.mark.parametrize("in_c", [True, False])
def test_a_row_lacking_a_column_is_refused_naming_it(tables, monkeypatch, in_c):
    monkeypatch.setattr(copying, "IN_C", in_c)
    out = CopyWriter(tables, sql.Identifier("by_c"), ["n", "id"], "public.by_c")
    out.write({"n": 1, "id": 2})
    with pytest.raises(RestoreError, match="a row of public.by_c lacks column 'id'") as info:
        out.write({"n": 1})
    out.close(info.value)
    tables.rollback()


@pytest.mark.integration
@pytest.mark.parametrize("in_c", [True, False])
def test_a_value_the_server_rejects_fails_the_copy_naming_the_line(tables, monkeypatch,
                                                                  in_c):
    monkeypatch.setattr(copying, "IN_C", in_c)
    out = CopyWriter(tables, sql.Identifier("by_c"), ["n", "id"], "public.by_c")
    out.write({"n": 1, "id": 2})
    out.write({"n": 2, "id": "two"})
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="two") as info:
        out.close()
    assert "line 2" in str(info.value.diag.context)
    tables.rollback()


@pytest.mark.integration
def test_a_connection_not_in_utf8_is_left_to_psycopg(tables):
    url = tables.info.dsn
    with psycopg.connect(url, password=tables.info.password,
                         options="-c client_encoding=LATIN1") as conn:
        assert conn.info.encoding == "iso8859-1"
        out = CopyWriter(conn, sql.Identifier("by_c"), ["n", "code"], "public.by_c")
        assert out._formatter is None
        out.write({"n": -1, "code": "é"})
        out.close()
        assert conn.execute("SELECT code FROM by_c WHERE n = -1").fetchone() == ("é",)
        conn.rollback()


def test_a_stage_written_ahead_is_the_copy_text_of_its_rows(tmp_path):
    """The worker that reads a restore's changes writes each changed table's stage as COPY
    text: a put row with the values the target keeps NULL and named, a delete its key."""
    table = TableEntry("public", "doc", (ColumnEntry("id", "integer", 23),
                                         ColumnEntry("body", "text", 25),
                                         ColumnEntry("size", "integer", 23, generated="s")),
                       primary_key=("id",))
    text = write_stage_text(table, [
        NetChange((1,), {"id": 1, "body": "a\tb", "size": 3}),
        NetChange((2,), None),
        NetChange((3,), {"id": 3, "body": None, "size": 0}, ("body",)),
    ], tmp_path / "stage.copy")
    assert text is not None
    assert (tmp_path / "stage.copy").read_bytes() == (
        b"1\ta\\tb\tp\t\\N\n" b"2\t\\N\td\t\\N\n" b"3\t\\N\tp\t{body}\n")
    assert (text.puts, text.deletes, text.partial, text.kept) == (2, 1, 1, {"body"})
    # a row the C formatter leaves: the stage is written from the rows instead
    assert write_stage_text(table, [NetChange((4,), {"id": 4, "body": UNHANDLED[0]})],
                            tmp_path / "other.copy") is None
