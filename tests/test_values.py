"""Text-format values: COPY line parsing, the load rules, and round trips through PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC
from decimal import Decimal

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from journal.catalog import Column, TableSchema, table_schema
from journal.values import RowLoader, load_oid, parse_copy_line, prepare_session, read_rows
from producers.source_catalog import read_catalog
from tests.support.databases import scratch_database


def _copy_escape(field: bytes | None) -> bytes:
    """COPY text format, as PostgreSQL writes it."""
    if field is None:
        return b"\\N"
    return (field.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
            .replace(b"\r", b"\\r"))


@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=1, max_size=8))
def test_copy_line_parsing_inverts_copy_escaping(fields: list[bytes | None]) -> None:
    line = b"\t".join(_copy_escape(f) for f in fields) + b"\n"
    assert parse_copy_line(line) == fields


def test_copy_line_parsing_decodes_every_escape_form() -> None:
    line = b"a\\bb\\fc\\vd\\101\\x42\\x4\\7\\q\tx\\\\N\t\\N"
    assert parse_copy_line(line) == [b"a\bb\fc\vdAB\x04\x07q", b"x\\N", None]


def _col(pg_type: str, oid: int) -> Column:
    return Column("c", pg_type, oid)


def test_json_unconstrained_numeric_and_unknown_types_load_as_text() -> None:
    assert load_oid(_col("jsonb", 3802)) == 25
    assert load_oid(_col("json[]", 199)) == 1009
    assert load_oid(_col("numeric", 1700)) == 25
    assert load_oid(_col("numeric[]", 1231)) == 1009
    assert load_oid(_col("numeric(12,2)", 1700)) == 1700
    assert load_oid(_col("numeric(12,2)[]", 1231)) == 1231
    assert load_oid(_col("public.document_status", 40000)) == 25
    assert load_oid(_col("interval", 1186)) == 25
    assert load_oid(_col("timestamp with time zone", 1184)) == 1184


def test_timestamptz_loads_as_utc_whatever_the_offset() -> None:
    table = TableSchema("public", "t", (_col("timestamp with time zone", 1184),), ())
    value = RowLoader(table).load_text(0, b"2024-03-01 12:30:00.000123+05:30")
    assert value.tzinfo == UTC
    assert (value.hour, value.minute, value.microsecond) == (7, 0, 123)


def test_null_is_none_for_every_column_kind() -> None:
    table = TableSchema("public", "t", (_col("integer", 23), _col("jsonb", 3802)), ())
    loader = RowLoader(table)
    assert loader.load_text(0, None) is None and loader.load_text(1, None) is None
    assert loader.load_row([None, None]) == (None, None)


# Columns of every kind the sample uses, and then some; each with awkward values.
_COLUMNS = {
    "i2": "smallint", "i4": "integer", "i8": "bigint", "f4": "real", "f8": "double precision",
    "b": "boolean", "t": "text", "vc": "varchar(20)", "ch": "char(5)", "nm": "name",
    "by": "bytea", "d": "date", "tm": "time", "ts": "timestamp", "tstz": "timestamptz",
    "u": "uuid", "n": "numeric(12,2)", "nu": "numeric", "j": "json", "jb": "jsonb",
    "e": "mood", "iv": "interval", "inet": "inet",
    "ta": "text[]", "ia": "integer[]", "tstza": "timestamptz[]", "na": "numeric(8,3)[]",
    "ba": "boolean[]", "ua": "uuid[]", "jba": "jsonb[]", "bya": "bytea[]", "ea": "mood[]",
}
_ROWS = [
    # Extremes, escapes, NULL elements, empty arrays, every byte value.
    {"i2": "-32768", "i4": "2147483647", "i8": "-9223372036854775808", "f4": "1.5",
     "f8": "-1e-300", "b": "true", "t": "tab\there\nnewline \\ backslash \"q\" 'a' ü €",
     "vc": "x", "ch": "ab", "nm": "a name", "by": "\\x" + bytes(range(256)).hex(),
     "d": "0001-01-01", "tm": "23:59:59.999999", "ts": "2024-02-29 13:14:15.123456",
     "tstz": "2024-02-29 13:14:15.000001+13", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
     "n": "-1234567890.12", "nu": "NaN", "j": '{"b": 1,  "a": [1, "x\\ty"]}',
     "jb": '{"k": "v\\n", "n": null}', "e": "happy", "iv": "1 year 2 mons -3 days 04:05:06.7",
     "inet": "192.168.0.1/24",
     "ta": '{NULL,"",a,"b c","q\\"uote","back\\\\slash","NULL"}', "ia": "{1,NULL,-3}",
     "tstza": '{"2024-01-01 00:00:00.5+00",NULL}', "na": "{-1.5,NULL,99999.999}",
     "ba": "{t,f,NULL}", "ua": "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
     "jba": '{"{\\"a\\": 1}",NULL}', "bya": '{"\\\\x00ff",NULL}', "ea": "{sad,NULL}"},
    {"i2": "0", "i4": "0", "i8": "0", "f4": "-Infinity", "f8": "Infinity", "b": "false",
     "t": "", "vc": "", "ch": "", "nm": "", "by": "\\x", "d": "2038-01-19",
     "tm": "00:00:00", "ts": "1999-12-31 23:59:59", "tstz": "1970-01-01 00:00:00+00",
     "u": "00000000-0000-0000-0000-000000000000", "n": "0.00",
     "nu": "-123456789012345678901234567890.123456789", "j": "[]", "jb": "{}", "e": "sad",
     "iv": "00:00:00", "inet": "::1", "ta": "{}", "ia": "{}", "tstza": "{}", "na": "{}",
     "ba": "{}", "ua": "{}", "jba": "{}", "bya": "{}", "ea": "{}"},
    {name: None for name in _COLUMNS},
]


def _create_value_table(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    conn.execute(sql.SQL("CREATE TABLE vals (id int PRIMARY KEY, {})").format(
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                           for n, t in _COLUMNS.items())))
    for i, row in enumerate(_ROWS):
        conn.execute(sql.SQL("INSERT INTO vals (id, {}) VALUES (%s, {})").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in _COLUMNS),
            sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS))),
            [i, *[row[n] for n in _COLUMNS]])


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and type(a) is type(b)


@pytest.mark.integration
def test_values_round_trip_every_column_type(pg_server: str) -> None:
    """Typed columns load to what psycopg itself returns; the rest to PostgreSQL's text.

    Both paths are checked: COPY (the snapshot) and single text values (pgoutput).
    """
    with scratch_database(pg_server, "val") as url, psycopg.connect(url, autocommit=True) as conn:
        _create_value_table(conn)
        table = table_schema(read_catalog(conn, tables=["public.vals"])["tables"]["public.vals"])
        # A session time zone far from UTC: psycopg answers in it, the journal never does.
        conn.execute("SET TimeZone = 'Pacific/Kiritimati'")
        names = table.column_names
        expected_rows = []
        cur = conn.execute("SELECT * FROM vals ORDER BY id")
        typed_rows = cur.fetchall()
        result = cur.pgresult
        assert result is not None
        # Arrays of text-valued types (jsonb[]) load as lists of the elements' text.
        text_arrays = conn.execute(sql.SQL("SELECT {} FROM vals ORDER BY id").format(
            sql.SQL(", ").join(sql.SQL("{}::text[]").format(sql.Identifier(c.name))
                               for c in table.columns
                               if load_oid(c) == 1009 != c.type_oid))).fetchall()
        for r, row in enumerate(typed_rows):
            # The exact text the server's output functions wrote, as pgoutput sends it.
            texts = [result.get_value(r, c) for c in range(len(names))]
            arrays = iter(text_arrays[r])
            expected = {}
            for column, value, text in zip(table.columns, row, texts, strict=True):
                if load_oid(column) == column.type_oid:
                    expected[column.name] = value
                elif load_oid(column) == 1009 != column.type_oid:
                    expected[column.name] = next(arrays)
                else:
                    expected[column.name] = None if text is None else bytes(text).decode()
            expected_rows.append((expected, texts))

        loader = RowLoader(table, conn)
        for expected, texts in expected_rows:
            for i, column in enumerate(table.columns):
                got = loader.load_text(i, texts[i])
                assert _same(got, expected[column.name]), (column.name, got)
                if column.name in ("tstz", "tstza") and got:
                    first = got if column.name == "tstz" else got[0]
                    assert first.tzinfo == UTC

        copied = list(read_rows(conn, table))
        assert len(copied) == len(expected_rows)
        for got, (expected, _) in zip(copied, expected_rows, strict=True):
            for name in names:
                assert _same(got[name], expected[name]), (name, got[name])
        assert copied[0]["by"] == bytes(range(256))
        assert copied[0]["ta"] == [None, "", "a", "b c", 'q"uote', "back\\slash", "NULL"]
        assert copied[0]["n"] == Decimal("-1234567890.12")
        assert copied[0]["tstz"].tzinfo == UTC and copied[0]["tstz"].microsecond == 1
        assert copied[0]["jb"] == '{"k": "v\\n", "n": null}'
        assert copied[1]["ia"] == [] and copied[2]["ia"] is None


@pytest.mark.integration
def test_prepare_session_leaves_utc_iso_output(source_db: str) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Europe/Berlin'; SET DateStyle = 'SQL, DMY'")
        prepare_session(conn)
        assert conn.info.parameter_status("TimeZone") == "UTC"
        assert conn.info.parameter_status("DateStyle") == "ISO, MDY"
        assert conn.execute("SHOW bytea_output").fetchone()[0] == "hex"


# --- values the typed branch cannot hold stay PostgreSQL's text -----------------------------

EXACT_COLUMNS = (("d", "date", 1082), ("ts", "timestamp without time zone", 1114),
                 ("tz", "timestamp with time zone", 1184), ("t", "time without time zone", 1083),
                 ("n", "numeric(10,2)", 1700), ("ia", "integer[]", 1007),
                 ("da", "date[]", 1182), ("ta", "text[]", 1009),
                 ("na", "numeric(5,1)[]", 1231), ("f", "real", 700))
EXACT_TABLE = TableSchema("public", "t", tuple(Column(n, p, o) for n, p, o in EXACT_COLUMNS),
                          ("d",))


def test_values_beyond_python_types_load_as_their_exact_text() -> None:
    texts = [b"infinity", b"-infinity", b"0044-03-15 00:00:00+00 BC", b"24:00:00", b"NaN",
             b"[0:2]={7,8,9}", b"{infinity,2020-01-01}", b"{{a,b},{c,d}}", b"{1.5,NaN}",
             b"NaN"]
    loader = RowLoader(EXACT_TABLE)
    row = loader.load_row(texts)
    assert row[:9] == tuple(t.decode() for t in texts[:9])
    assert math.isnan(row[9])  # a float holds NaN: typed
    # the row loader's C-speed first try and the column loaders agree
    assert row[:9] == tuple(loader.load_text(i, t) for i, t in enumerate(texts[:9]))


@given(st.lists(st.sampled_from([b"infinity", b"2020-01-01", b"0044-03-15 BC", None,
                                 b"20000-01-01", b"9999-12-31"]), min_size=2, max_size=2),
       st.sampled_from([b"{1,2}", b"[0:1]={1,2}", b"{{1},{2}}", None]))
def test_a_row_loads_as_its_columns_do(days: list[bytes | None], ints: bytes | None) -> None:
    table = TableSchema("public", "t", (Column("a", "date", 1082), Column("b", "date", 1082),
                                        Column("c", "integer[]", 1007)), ())
    loader = RowLoader(table)
    fields = [*days, ints]
    assert loader.load_row(fields) == tuple(loader.load_text(i, f)
                                            for i, f in enumerate(fields))


def test_ordinary_values_still_load_typed() -> None:
    from datetime import date, datetime, time

    row = RowLoader(EXACT_TABLE).load_row(
        [b"2020-01-01", b"9999-12-31 23:59:59.999999", b"0001-01-01 00:00:00+00",
         b"23:59:59.999999", b"-12.50", b"{1,NULL}", b"{2020-01-01,NULL}", b"{a,NULL}",
         b"{1.5}", b"-0"])
    assert row[:4] == (date(2020, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999),
                       datetime(1, 1, 1, tzinfo=UTC), time(23, 59, 59, 999999))
    assert row[4:9] == (Decimal("-12.50"), [1, None], [date(2020, 1, 1), None], ["a", None],
                        [Decimal("1.5")])
    assert math.copysign(1, row[9]) == -1


@given(st.lists(st.integers(-5, 5), min_size=1, max_size=3), st.integers(-3, 3))
def test_an_array_with_other_bounds_or_dimensions_is_text(items: list[int], lower: int
                                                          ) -> None:
    body = "{" + ",".join(map(str, items)) + "}"
    column = TableSchema("public", "t", (Column("ia", "integer[]", 1007),), ())
    loader = RowLoader(column)
    bounded = f"[{lower}:{lower + len(items) - 1}]={body}"
    assert loader.load_text(0, bounded.encode()) == bounded
    nested = "{" + body + "," + body + "}"
    assert loader.load_text(0, nested.encode()) == nested
    assert loader.load_text(0, body.encode()) == items
