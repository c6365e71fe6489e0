"""A package's table member COPYed as text written in C from its Avro bytes
(``RowReader.copy``, ``PackageReader.copy_text``, ``restorer.copying.copy_member``): the
text is, byte for byte, what the dict path writes of the decoded rows (rows the C writer
leaves included, wherever they fall in a block); a corrupted member is refused with the
dict path's PackageCorrupt; and a restore through it stores what the source holds.
"""

from __future__ import annotations

import io
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import psycopg
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from psycopg._copy_base import format_row_text
from psycopg.adapt import Transformer

import restorer.copying as copying
import tests.support.every_type as fast
from journal import sample
from journal.catalog import ColumnEntry, TableEntry
from journal.codec import decoder as codec_decoder
from journal.codec import record_copier, record_reader, to_avro_row
from journal.codec.copytext import row_formatter
from journal.codec.wire import Unhandled
from journal.errors import PackageCorrupt
from journal.packages import PackageReader, ocf, open_package
from journal.packages.ocf import CopyChunk
from journal.packages.store import open_store
from restorer.load import copy_package_rows
from restorer.restore import RestoreOptions, restore
from tests.support.ci import unavailable
from tests.support.databases import scratch_database
from tests.support.walked import (
    KEYED,
    KEYED_FIELDS,
    TABLE,
    damaged_blocks,
    encoded,
    keyed_rows,
    package,
    titles,
    uuids,
    written,
)
from tests.support.walked import days as some_days

SETTINGS = fast.SETTINGS


@pytest.fixture(autouse=True, scope="module")
def _c_writer_built() -> None:
    if not (codec_decoder.IN_C and copying.IN_C):
        unavailable("journal.codec._fastread or _copytext is not built: reinstall "
                    "(pip install -e .) with a C compiler and Python's headers "
                    "(gcc libc6-dev python3-dev)")


# -- a block's text against the dict path's ------------------------------------------------

def _row_text(columns: list[str], datum: dict[str, Any]) -> bytes:
    """One decoded row as the dict path writes it: RowFormatter, else psycopg's text."""
    formatter = row_formatter(columns)
    try:
        formatter.add(datum)
    except Unhandled:
        out = bytearray()
        try:
            format_row_text([datum[c] for c in columns], Transformer(), out)
        except psycopg.DataError as exc:  # text with NUL: refused, on either path
            return f"<refused: {exc}>\n".encode()
        return bytes(out)
    return bytes(formatter.take())


def _read_one(schema: Any, data: bytes, at: int) -> tuple[dict[str, Any], int]:
    """One record as read_ocf reads it: the compiled reader, else fastavro."""
    read = record_reader(schema)
    assert read is not None
    try:
        return read(data, at)
    except Unhandled:
        buf = io.BytesIO(data)
        buf.seek(at)
        datum = fastavro.schemaless_reader(buf, schema, None)
        return datum, buf.tell()


def dict_path(schema: Any, data: bytes, count: int, fields: tuple[int, ...]
              ) -> tuple[bytes, int]:
    names = [f["name"] for f in schema["fields"]]
    columns = [names[i] for i in fields]
    out, at = bytearray(), 0
    for _ in range(count):
        datum, at = _read_one(schema, data, at)
        out += _row_text(columns, datum)
    return bytes(out), at


def direct_path(schema: Any, data: bytes, count: int, fields: tuple[int, ...], chunk: int
                ) -> tuple[bytes, int]:
    names = [f["name"] for f in schema["fields"]]
    columns = [names[i] for i in fields]
    copy = record_copier(schema)
    assert copy is not None
    out, at, left, left_over = bytearray(), 0, count, 0
    while left:
        chunks, rows, at = copy(data, at, left, fields, chunk)
        assert sum(n for _, n in chunks) == rows
        for text, n in chunks:
            assert text.endswith(b"\n") and text.count(b"\n") >= n
            out += text
        left -= rows
        if left:  # a row the C writer leaves: the dict path's, in its place
            datum, at = _read_one(schema, data, at)
            out += _row_text(columns, datum)
            left -= 1
            left_over += 1
    if currently_in_test_context():
        event(f"rows left to the dict path: {'none' if not left_over else 'some'}")
    return bytes(out), at


def assert_direct_text_is_the_dict_paths(schema: Any, data: bytes, count: int,
                                         fields: tuple[int, ...], chunk: int) -> None:
    assert direct_path(schema, data, count, fields, chunk) == dict_path(schema, data, count,
                                                                        fields)


def fields_of(n: int) -> st.SearchStrategy[tuple[int, ...]]:
    """Any order of any non-empty subset of ``n`` fields (generated columns: not copied)."""
    return st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True).map(tuple)


chunks = st.sampled_from([1, 40, 1 << 20])


@SETTINGS
@given(st.lists(keyed_rows, min_size=1, max_size=8), fields_of(KEYED_FIELDS), chunks)
def test_direct_text_of_keyed_rows_is_the_dict_paths(rows: list[dict], fields: tuple[int, ...],
                                                     chunk: int) -> None:
    # text forms, every uuid spelling (braces and urn: left to the dict path), NUL in text
    # (psycopg's), NaN and infinities, decimals, times and arrays (left to the dict path)
    records = written(KEYED, rows)
    assert_direct_text_is_the_dict_paths(KEYED, b"".join(records), len(records), fields,
                                         chunk)


EVERY_TYPE = fastavro.parse_schema(fast.TABLE.avro_row_schema())
# a row with no array or decimal is written whole in C: many such rows, so that rows left
# to the dict path fall between rows that are not
scalar_rows = fast.rows.map(lambda row: {
    **row, **{c.name: None for c in fast.COLUMNS if c.type_oid in fast.ARRAY_ELEMENTS
              or c.type_oid == 1700}})


@SETTINGS
@given(st.lists(fast.rows | scalar_rows, min_size=1, max_size=6),
       fields_of(len(fast.COLUMNS)), chunks)
def test_direct_text_of_every_column_type_is_the_dict_paths(
        rows: list[dict], fields: tuple[int, ...], chunk: int) -> None:
    records = written(EVERY_TYPE, [to_avro_row(fast.TABLE, row) for row in rows])
    assert_direct_text_is_the_dict_paths(EVERY_TYPE, b"".join(records), len(records), fields,
                                         chunk)


def test_rows_left_in_the_middle_of_a_block_keep_their_place() -> None:
    fields = tuple(range(KEYED_FIELDS - 3))  # no decimal, time or array: written in C
    base = {"n": 0, "maybe": None, "s": "", "ms": None, "b": b"", "flag": False,
            "day": None, "ts": None, "local": 0, "x": 0.0, "amount": Decimal("0"),
            "clock": time(0), "longs": []}
    spellings = ["00000000-0000-0000-0000-000000000001", "{00000000-0000-0000-0000-000000000002}",
                 "00000000000000000000000000000003", "a\x00b"]
    rows = [{**base, "n": i, "u": spellings[i % 3], "mu": None,
             "s": spellings[3] if i == 5 else "t"} for i in range(12)]
    records = written(KEYED, rows)
    data = b"".join(records)
    copy = record_copier(KEYED)
    assert copy is not None
    chunks, done, at = copy(data, 0, len(records), fields, 1 << 20)
    assert done == 1 and at == len(records[0])  # the braces are left to the dict path
    assert_direct_text_is_the_dict_paths(KEYED, data, len(records), fields, 1 << 20)
    assert_direct_text_is_the_dict_paths(KEYED, data, len(records), fields, 1)


def test_the_direct_writer_needs_the_c_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec_decoder, "_fastread", None)  # as built without a compiler
    assert record_copier(KEYED) is None


# -- a package's member: the same text, the same refusals ----------------------------------

def materialized(items: Any, columns: list[str]) -> bytes:
    out = bytearray()
    for item in items:
        out += item.text if isinstance(item, CopyChunk) else _row_text(columns, item)
    return bytes(out)


def outcome(path: Path, columns: list[str], direct: bool) -> str:
    reader = open_package(path, verify=False)
    try:
        items = (reader.copy_text(TABLE.qualified, columns, 64) if direct
                 else reader.rows(TABLE.qualified))
        return materialized(items, columns).decode()
    except PackageCorrupt as exc:
        return f"{type(exc).__name__}: {exc}"


@SETTINGS
@given(st.lists(st.tuples(st.integers(-3, 3), st.none() | titles, st.none() | some_days,
                          st.none() | uuids), min_size=1, max_size=12),
       st.booleans(), st.integers(1, 5),
       st.sampled_from(["none", "cut", "flip", "patch", "trailing", "merge"]),
       st.integers(0, 10_000), st.binary(min_size=1, max_size=4),
       st.permutations(["id", "title", "day", "uid"]))
def test_a_member_copied_directly_reads_and_refuses_as_its_rows(
        tmp_path_factory: pytest.TempPathFactory, rows: list[tuple], in_order: bool,
        per_block: int, how: str, index: int, patch: bytes, columns: list[str]) -> None:
    blocks = damaged_blocks(rows, in_order, per_block, how, index, patch)
    path = package(tmp_path_factory.mktemp("p"), blocks)
    direct = outcome(path, columns, True)
    assert direct == outcome(path, columns, False)
    if currently_in_test_context():
        event(f"member: {'refused' if direct.startswith('PackageCorrupt') else 'read'}")


def test_a_member_without_a_copied_column_is_refused(tmp_path: Path) -> None:
    path = package(tmp_path, [[encoded({"id": 1, "title": "t", "day": None, "uid": None})]])
    with pytest.raises(ValueError, match="no column missing"):
        list(open_package(path, verify=False).copy_text(TABLE.qualified, ["id", "missing"], 64))


def test_without_the_c_reader_a_member_comes_as_its_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [encoded({"id": i, "title": "t", "day": None, "uid": None}) for i in range(5)]
    path = package(tmp_path, [records])
    monkeypatch.setattr(ocf, "record_copier", lambda schema: None)
    items = list(open_package(path, verify=False).copy_text(TABLE.qualified, ["id"], 64))
    assert [type(i) for i in items] == [dict] * 5
    assert outcome(path, ["id", "title"], True) == outcome(path, ["id", "title"], False)


# -- into PostgreSQL -----------------------------------------------------------------------

def _flip_in_member(path: Path, at: int) -> Path:
    """The package with one byte of its table member's blocks changed."""
    raw = bytearray(path.read_bytes())
    reader = open_package(path, verify=False)
    member = reader._layout[reader.manifest.table_member(TABLE.qualified).name]
    raw[member.offset + member.size - at] ^= 0x55
    out = path.with_name(f"flipped{at}.tar")
    out.write_bytes(bytes(raw))
    return out


@pytest.mark.integration
@pytest.mark.parametrize("at", [17, 40, 300])  # a sync marker, the last block, an earlier one
def test_a_corrupted_member_is_refused_as_the_dict_path_and_nothing_is_written(
        pg18_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    records = [encoded({"id": i, "title": f"title {i}\t\\", "day": None, "uid": None})
               for i in range(200)]
    path = _flip_in_member(package(tmp_path, [records[:100], records[100:]]), at)
    table = TableEntry("public", "walked", tuple(
        ColumnEntry(c.name, c.pg_type, c.type_oid) for c in TABLE.columns))
    errors = []
    with scratch_database(pg18_server, "direct") as url:
        for direct in (True, False):
            monkeypatch.setattr(copying, "DIRECT", direct)
            with psycopg.connect(url) as conn:
                conn.execute("CREATE TABLE walked (id bigint, title text, day date, uid uuid)")
                with pytest.raises(PackageCorrupt) as raised:
                    copy_package_rows(conn, table, open_package(path, verify=False),
                                      TABLE.qualified)
                errors.append(str(raised.value))
                conn.rollback()  # the restore's one transaction
                assert conn.execute("SELECT to_regclass('public.walked')").fetchone() == (None,)
    assert errors[0] == errors[1]
    assert "walked" in errors[0] or "SHA-256" in errors[0] or "records" in errors[0]


def _tables(url: str) -> dict[str, list[str]]:
    """Every table's rows as PostgreSQL prints them (the oracle), in order."""
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; "
                     "SET extra_float_digits = 3")
        names = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname = 'public' ORDER BY 1").fetchall()]
        return {n: [r[0] for r in conn.execute(
            f"SELECT t::text FROM {n} t ORDER BY 1").fetchall()]  # noqa: S608 - catalog names
            for n in names if not n.startswith("public.journal_")}  # a restore's own record


# every kind the C writer writes, the text branch (infinity, BC), values it leaves to the
# dict path now and then (numeric, arrays, NUL-free text with escapes) and a generated column
KINDS = """
CREATE TABLE public.direct_kinds (
    id bigint PRIMARY KEY, i integer, s smallint, t text, v varchar(20), by bytea,
    b boolean, r real, d double precision, day date, ts timestamp, tz timestamptz,
    u uuid, n numeric(8,2), ia integer[],
    g bigint GENERATED ALWAYS AS (id * 2) STORED
);
INSERT INTO public.direct_kinds (id, i, s, t, v, by, b, r, d, day, ts, tz, u, n, ia)
SELECT k,
       CASE WHEN k % 5 = 0 THEN NULL ELSE k * 7919 % 100000 - 50000 END,
       (k % 30000)::smallint,
       CASE k % 6 WHEN 0 THEN NULL WHEN 1 THEN 'tab' || chr(9) || 'nl' || chr(10) || 'bs\\'
            WHEN 2 THEN 'é€𝄞 ' || k WHEN 3 THEN '' ELSE 'row ' || k END,
       CASE WHEN k % 4 = 0 THEN NULL ELSE 'v' || k END,
       CASE WHEN k % 3 = 0 THEN NULL ELSE decode(md5(k::text), 'hex') END,
       CASE WHEN k % 7 = 0 THEN NULL ELSE k % 2 = 0 END,
       CASE k % 9 WHEN 0 THEN 'NaN' WHEN 1 THEN 'Infinity' WHEN 2 THEN '-0'
            ELSE k / 7.0 END,
       CASE k % 8 WHEN 0 THEN '-Infinity' WHEN 1 THEN 'NaN' WHEN 2 THEN 1e308
            ELSE k / 3.0 END,
       CASE k % 11 WHEN 0 THEN 'infinity' WHEN 1 THEN '0044-03-15 BC' WHEN 2 THEN NULL
            ELSE date '2000-01-01' + (k % 4000) END,
       CASE k % 13 WHEN 0 THEN '-infinity' WHEN 1 THEN NULL
            ELSE timestamp '1999-12-31 23:59:59.5' + k * interval '1 second 3 microseconds' END,
       CASE k % 10 WHEN 0 THEN 'infinity' WHEN 1 THEN NULL
            ELSE timestamptz '1960-01-01 00:00:00+00' + k * interval '17 hours 1 microsecond'
       END,
       CASE WHEN k % 4 = 0 THEN NULL ELSE md5(k::text)::uuid END,
       CASE WHEN k % 97 = 0 THEN k / 100.0 END,
       CASE WHEN k % 89 = 0 THEN ARRAY[k, NULL] END
FROM generate_series(1, 9000) AS k;
"""


def _count_direct_rows(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """From now on, ``["rows"]`` counts the rows packages hand over as COPY text."""
    written_directly = {"rows": 0}
    copy_text = PackageReader.copy_text

    def counted(self: PackageReader, *args: Any) -> Any:
        for item in copy_text(self, *args):
            if isinstance(item, CopyChunk):
                written_directly["rows"] += item.rows
            yield item

    monkeypatch.setattr(PackageReader, "copy_text", counted)
    return written_directly


@pytest.mark.integration
def test_a_package_restored_directly_is_the_dict_paths_and_the_sources(
        source_db: str, pg18_server: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.restore import build_full

    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.load(conn, 150, seed=5)  # blocks of 4,096 rows and partial ones
        conn.execute(KINDS)
    store = open_store(f"file://{tmp_path}/packages")
    build_full(source_db, store)
    written_directly = _count_direct_rows(monkeypatch)
    source = _tables(source_db)
    assert len(source["public.direct_kinds"]) == 9000
    restored = {}
    for direct, replay in ((True, "net"), (True, "ordered"), (False, "net")):
        monkeypatch.setattr(copying, "DIRECT", direct)
        before = written_directly["rows"]
        with scratch_database(pg18_server, "direct") as target:
            report = restore(RestoreOptions(target_url=target, store=store, replay=replay))
            restored[direct, replay] = _tables(target)
        copied = written_directly["rows"] - before
        total = sum(c.inserted for c in report.tables.values())
        assert total == sum(len(rows) for rows in source.values())
        # nearly every row written in C; none with the flag off
        assert (copied > 0.9 * total) if direct else copied == 0
    assert restored[True, "net"] == restored[False, "net"] == restored[True, "ordered"]
    assert restored[True, "net"] == source


@pytest.mark.integration
def test_a_natural_key_restore_stages_the_package_directly_as_row_by_row(
        source_db: str, pg18_server: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A natural-key restore into a populated target (the sample on ids a smaller sample
    already uses: fresh ids, moved parents, a self-reference held aside, decimals and
    arrays the C writer leaves) stages each member as COPY text written from its bytes,
    its key column twice and the held-aside column in its place, and leaves the very
    target staging decoded rows leaves; every source document is there by its uuid."""
    from bench.restore import build_full

    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.load(conn, 150, seed=5)
        documents = conn.execute("SELECT uuid, title, md5(body), price, keywords FROM document"
                                 " ORDER BY uuid").fetchall()
    store = open_store(f"file://{tmp_path}/packages")
    build_full(source_db, store)
    written_directly = _count_direct_rows(monkeypatch)
    restored, counts = {}, {}
    for direct in (True, False):
        monkeypatch.setattr(copying, "DIRECT", direct)
        before = written_directly["rows"]
        with scratch_database(pg18_server, "direct") as target:
            with psycopg.connect(target, autocommit=True) as conn:
                sample.create_schema(conn)
                sample.load(conn, 20, seed=99)
            report = restore(RestoreOptions(target_url=target, store=store))
            assert report.mode == "remap"
            restored[direct] = _tables(target)
            counts[direct] = sorted((t, vars(c)) for t, c in report.tables.items())
            with psycopg.connect(target) as conn:
                got = conn.execute(
                    "SELECT uuid, title, md5(body), price, keywords FROM document"
                    " WHERE uuid = ANY(%s) ORDER BY uuid", ([d[0] for d in documents],)
                ).fetchall()
            assert got == documents
        copied = written_directly["rows"] - before
        total = sum(c.inserted + c.updated + c.skipped for c in report.tables.values())
        assert (copied > 0.5 * total) if direct else copied == 0, (copied, total)
    assert report.tables["public.document"].remapped > 0  # ids the target used
    assert counts[True] == counts[False]
    assert restored[True] == restored[False]
