"""The C walk over a block's rows (``RowReader.check``) judges bytes exactly as the row by
row reader does and finds keys out of order exactly where ``sort_key`` does; verifying a
package with it accepts and refuses exactly what verifying row by row does, with the same
PackageCorrupt message.
"""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import UUID

import fastavro
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import tests.support.every_type as fast
from journal.codec import decoder as codec_decoder
from journal.codec import record_reader, record_walker, to_avro_row
from journal.codec.wire import KeyOrder, Unhandled
from journal.errors import PackageCorrupt
from journal.packages import ocf, verify_package
from journal.packages.reader import sort_key
from tests.support.ci import unavailable
from tests.support.walked import (
    KEYED,
    KEYED_FIELDS,
    arranged,
    damaged_blocks,
    days,
    encoded,
    keyed_rows,
    package,
    titles,
    uuids,
    written,
)

SETTINGS = fast.SETTINGS


@pytest.fixture(autouse=True, scope="module")
def _c_reader_built() -> None:
    if not codec_decoder.IN_C:
        unavailable("journal.codec._fastread is not built: reinstall (pip install -e .) "
                    "with a C compiler and Python's headers (gcc libc6-dev python3-dev)")


# -- the walk against the row by row reader ------------------------------------------------

def row_by_row(schema: Any, data: bytes, count: int, key_columns: tuple[int, ...],
               previous: Any) -> tuple[Any, ...]:
    """The verdict of reading ``count`` rows one by one with the C reader, keys ordered by
    sort_key: what verification did before the walk."""
    read = record_reader(schema)
    assert read is not None
    names = [f["name"] for f in schema["fields"]]
    at = 0
    for row in range(count):
        try:
            datum, at = read(data, at)
        except Unhandled:
            return ("unhandled",)
        if key_columns:
            try:
                key = sort_key(tuple(datum[names[i]] for i in key_columns))
                if previous is not None and not previous < key:
                    return ("out of order", row)
            except (TypeError, InvalidOperation) as exc:  # Decimal('NaN') < ...
                return ("raised", type(exc))
            previous = key
    return ("accepted", at, previous if key_columns else None)


def walked(schema: Any, data: bytes, count: int, key_columns: tuple[int, ...],
           previous: Any) -> tuple[Any, ...]:
    walk = record_walker(schema)
    assert walk is not None
    try:
        end, last = walk(data, 0, count, key_columns, previous, sort_key)
    except Unhandled:
        return ("unhandled",)
    except KeyOrder as exc:
        return ("out of order", exc.row)
    except (TypeError, InvalidOperation) as exc:
        return ("raised", type(exc))
    return ("accepted", end, last)


def assert_walk_judges_as_rows(schema: Any, data: bytes, count: int,
                               key_columns: tuple[int, ...], previous: Any = None) -> None:
    want = row_by_row(schema, data, count, key_columns, previous)
    got = walked(schema, data, count, key_columns, previous)
    # by repr: the same key, NaN, -0.0 and types alike (no 1 == True, no 0.0 == -0.0)
    assert repr(got) == repr(want)
    if currently_in_test_context():  # each verdict's share: --hypothesis-show-statistics
        event(f"walk: {got[0]}")


key_shapes = st.lists(st.integers(0, KEYED_FIELDS - 1), max_size=3, unique=True).map(tuple)


@SETTINGS
@given(st.lists(keyed_rows, min_size=1, max_size=8), key_shapes, st.booleans(),
       st.booleans())
def test_the_walk_judges_rows_and_key_order_as_the_row_by_row_reader(
        rows: list[dict], key_columns: tuple[int, ...], in_order: bool,
        after_first: bool) -> None:
    records = arranged(KEYED, written(KEYED, rows), key_columns, in_order)
    previous = None
    if after_first and len(records) > 1 and key_columns:
        # the block's first row compared with the last key of the block before it
        first = row_by_row(KEYED, records[0], 1, key_columns, None)
        previous = first[2] if first[0] == "accepted" else None
        records = records[1:]
    assert_walk_judges_as_rows(KEYED, b"".join(records), len(records), key_columns, previous)


EVERY_TYPE = fastavro.parse_schema(fast.TABLE.avro_row_schema())
every_key_shape = st.lists(st.integers(0, len(fast.COLUMNS) - 1), max_size=3,
                           unique=True).map(tuple)


@SETTINGS
@given(st.lists(fast.rows, min_size=1, max_size=4), every_key_shape, st.booleans())
def test_the_walk_judges_rows_of_every_column_type_as_the_row_by_row_reader(
        rows: list[dict], key_columns: tuple[int, ...], in_order: bool) -> None:
    records = written(EVERY_TYPE, [to_avro_row(fast.TABLE, row) for row in rows])
    records = arranged(EVERY_TYPE, records, key_columns, in_order)
    assert_walk_judges_as_rows(EVERY_TYPE, b"".join(records), len(records), key_columns)


BASE = {"n": 0, "maybe": None, "s": "", "ms": None, "b": b"", "flag": False, "day": None,
        "ts": None, "local": 0, "u": UUID(int=0), "mu": None, "x": 0.0,
        "amount": Decimal("0.00"), "clock": time(0), "longs": []}


def test_keys_out_of_order_are_found_at_the_row_sort_key_finds() -> None:
    data = b"".join(written(KEYED, [BASE | {"n": n} for n in [0, 1, 2, 2, 3]]))
    walk = record_walker(KEYED)
    assert walk is not None
    with pytest.raises(KeyOrder) as found:
        walk(data, 0, 5, (0,), None, sort_key)
    assert found.value.row == 3  # the repeated key: not after the one before it
    assert_walk_judges_as_rows(KEYED, data, 5, (0,))
    assert walk(data, 0, 3, (0,), None, sort_key)[1] == sort_key((2,))
    with pytest.raises(KeyOrder) as found:  # the first row, against the block before
        walk(data, 0, 3, (0,), sort_key((0,)), sort_key)
    assert found.value.row == 0


def test_text_forms_sort_after_typed_values_and_nulls_last() -> None:
    records = written(KEYED, [BASE | {"day": day} for day in (
        date(9999, 12, 31), "-infinity", "infinity", None)])
    day = (6,)
    assert walked(KEYED, b"".join(records), 4, day, None)[0] == "accepted"
    for i in range(3):
        swapped = records[:i] + [records[i + 1], records[i]] + records[i + 2:]
        assert walked(KEYED, b"".join(swapped), 4, day, None) == ("out of order", i + 1)


def test_uuid_keys_in_any_spelling_order_by_their_numbers() -> None:
    spellings = [str(UUID(int=1)).upper(), "{" + str(UUID(int=2)) + "}", UUID(int=3).hex,
                 UUID(int=4).urn, str(UUID(int=5))]
    records = written(KEYED, [BASE | {"u": u} for u in spellings])
    assert walked(KEYED, b"".join(records), 5, (9,), None)[0] == "accepted"
    for i in range(4):
        swapped = records[:i] + [records[i + 1], records[i]] + records[i + 2:]
        assert_walk_judges_as_rows(KEYED, b"".join(swapped), 5, (9,))


# -- corrupted bytes: the same verdict as the row by row reader ----------------------------

@SETTINGS
@given(st.lists(keyed_rows, min_size=1, max_size=4), key_shapes, st.booleans(),
       st.integers(0, 10_000), st.sampled_from(["cut", "flip", "patch", "insert"]),
       st.binary(min_size=1, max_size=6), st.integers(0, 7))
def test_corrupted_blocks_are_judged_as_the_row_by_row_reader_judges_them(
        rows: list[dict], key_columns: tuple[int, ...], in_order: bool, index: int,
        how: str, patch: bytes, bit: int) -> None:
    data = b"".join(arranged(KEYED, written(KEYED, rows), key_columns, in_order))
    index %= len(data)
    if how == "cut":
        data = bytes(bytearray(data[:index]))  # nothing of the rest to read by mistake
    elif how == "flip":
        data = data[:index] + bytes([data[index] ^ 1 << bit]) + data[index + 1:]
    elif how == "patch":
        data = data[:index] + patch + data[index + len(patch):]
    else:
        data = data[:index] + patch + data[index:]
    assert_walk_judges_as_rows(KEYED, data, len(rows), key_columns)


def one_string(value: bytes) -> bytes:
    return bytes([len(value) << 1]) + value


HOSTILE_BLOCKS = [
    one_string(b"\xff"),  # bad UTF-8
    one_string(b"abc\xc3\x28defgh"),  # after an ASCII run
    one_string(b"abcdefgh\xed\xa0\x80"),  # an encoded surrogate after eight ASCII bytes
    one_string(b"\xc3"),  # a sequence cut by the length
    b"\x7e" + b"a" * 10,  # a length past the end
    b"\x01",  # a negative length
    b"\xff" * 10 + b"\x01",  # a length of more than ten bytes
    b"",
]


@pytest.mark.parametrize("data", HOSTILE_BLOCKS)
def test_hostile_strings_are_unhandled_as_the_reader_leaves_them(data: bytes) -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "S", "fields": [
        {"name": "s", "type": "string"}]})
    assert row_by_row(schema, data, 1, (0,), None) == ("unhandled",)
    assert walked(schema, data, 1, (0,), None) == ("unhandled",)


def test_non_ascii_text_is_valid_where_the_decoder_says_so() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "S", "fields": [
        {"name": "s", "type": "string"}]})
    data = b"".join(written(schema, [{"s": s} for s in ["a" * 9, "a" * 8 + "é", "é" * 9]]))
    assert_walk_judges_as_rows(schema, data, 3, (0,))
    assert walked(schema, data, 3, (0,), None)[0] == "accepted"


def test_a_walk_needs_the_c_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec_decoder, "_fastread", None)  # as built without a compiler
    assert record_walker(KEYED) is None


# -- verifying a package: the same outcome with the walk as row by row ---------------------

def verdict(path: Path) -> str:
    try:
        verify_package(path)
    except PackageCorrupt as exc:
        return f"{type(exc).__name__}: {exc}"
    return "verified"


def assert_verified_as_row_by_row(path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    with_walk = verdict(path)
    with monkeypatch.context() as m:
        m.setattr(ocf, "record_walker", lambda schema: None)  # verification row by row
        row_by_row_verdict = verdict(path)
    assert with_walk == row_by_row_verdict
    if currently_in_test_context():
        event(f"verify: {with_walk.partition('expected ')[2][:30] or with_walk}")
    return with_walk


@SETTINGS
@given(st.lists(st.tuples(st.integers(-3, 3), st.none() | titles, st.none() | days,
                          st.none() | uuids), min_size=1, max_size=12),
       st.booleans(), st.integers(1, 5),
       st.sampled_from(["none", "cut", "flip", "patch", "trailing", "merge"]),
       st.integers(0, 10_000), st.binary(min_size=1, max_size=4))
def test_verify_refuses_a_corrupted_member_as_it_did_row_by_row(
        tmp_path_factory: pytest.TempPathFactory, rows: list[tuple], in_order: bool,
        per_block: int, how: str, index: int, patch: bytes) -> None:
    blocks = damaged_blocks(rows, in_order, per_block, how, index, patch)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert_verified_as_row_by_row(package(tmp_path_factory.mktemp("p"), blocks),
                                      monkeypatch)


def test_keys_out_of_order_and_trailing_bytes_keep_their_messages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [encoded({"id": i, "title": "t", "day": None, "uid": None}) for i in range(10)]
    in_order = assert_verified_as_row_by_row(package(tmp_path / "a", [records[:4],
                                                                      records[4:]]),
                                             monkeypatch)
    assert in_order == "verified"
    swapped = records[:6] + [records[7], records[6]] + records[8:]
    out_of_order = assert_verified_as_row_by_row(package(tmp_path / "b", [swapped[:4],
                                                                          swapped[4:]]),
                                                 monkeypatch)
    assert "rows in primary-key order" in out_of_order
    assert "key ((1, 0, 6),) after ((1, 0, 7),)" in out_of_order
    across = assert_verified_as_row_by_row(  # the first row of a block, after the one before
        package(tmp_path / "c", [records[5:], records[:5]]), monkeypatch)
    assert "key ((1, 0, 0),) after ((1, 0, 9),)" in across
    trailing = assert_verified_as_row_by_row(
        package(tmp_path / "d", [records[:3], [records[3] + b"\x00"], records[4:]]),
        monkeypatch)
    assert "1 trailing bytes" in trailing
    bad_text = encoded({"id": 4, "title": "é", "day": None, "uid": None}).replace(
        "é".encode(), b"\xff\xfe")
    refused = assert_verified_as_row_by_row(
        package(tmp_path / "e", [records[:4] + [bad_text] + records[5:]]), monkeypatch)
    assert "records that decode" in refused


def test_verify_without_the_c_reader_is_unchanged(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    records = [encoded({"id": i, "title": "t", "day": None, "uid": None}) for i in range(6)]
    good = package(tmp_path / "a", [records[:3], records[3:]])
    bad = package(tmp_path / "b", [records[:3], records[4:3:-1] + records[3:4] + records[5:]])
    with_walk = verdict(good), verdict(bad)
    monkeypatch.setattr(codec_decoder, "_fastread", None)  # as built without a compiler
    assert (verdict(good), verdict(bad)) == with_walk
    assert with_walk[0] == "verified" and "primary-key order" in with_walk[1]


def test_a_sound_member_is_walked_without_reading_a_row(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    walked_rows: list[int] = []
    real = ocf.record_walker

    def counting(schema: Any) -> Any:
        walk = real(schema)
        assert walk is not None

        def counted(*args: Any) -> Any:
            result = walk(*args)
            walked_rows.append(args[2])
            return result
        return counted

    def no_rows(schema: Any) -> Any:
        def read(buf: bytes, pos: int) -> Any:
            raise AssertionError("a row read one by one")
        return read

    monkeypatch.setattr(ocf, "record_walker", counting)
    monkeypatch.setattr(ocf, "record_reader", no_rows)
    records = [encoded({"id": i, "title": "é" * i, "day": date(2024, 1, 1 + i),
                        "uid": UUID(int=i)}) for i in range(10)]
    assert verdict(package(tmp_path, [records[:4], records[4:]])) == "verified"
    assert walked_rows == [4, 6]
