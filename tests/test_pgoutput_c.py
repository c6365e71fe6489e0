"""The C decoder of pgoutput row changes, begins and commits (``producers/_pgoutput.pyx``)
returns exactly what the Python decoder returns, down to the types of the tuple values,
and on malformed bytes raises the same exception with the same message."""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers import pgoutput
from producers.pgoutput import UNCHANGED, ProtocolError
from tests.support.ci import unavailable
from tests.support.identical import assert_identical
from tests.support.pgoutput import tuple_data as support_tuple_data

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _c_decoder_built() -> None:
    if not pgoutput.IN_C:
        unavailable("producers._pgoutput is not built: reinstall (pip install -e .) "
                    "with a C compiler and Python's headers (gcc libc6-dev python3-dev)")


def in_c(data: Any) -> Any:
    return pgoutput._pgoutput.decode(data)  # type: ignore[union-attr]


def outcome(decode: Callable[[Any], Any], data: Any) -> tuple[str, Any]:
    try:
        return "value", decode(data)
    except Exception as exc:  # noqa: BLE001 - the outcome compared is any exception
        return type(exc).__name__, str(exc)


def assert_c_decodes_as_python(data: Any) -> None:
    assert_identical(outcome(in_c, data), outcome(pgoutput.decode_python, data), repr(data))


def tuple_data(values: list[Any]) -> bytes:
    return support_tuple_data(*values)


large_values = st.integers(10_000, 70_000).map(lambda n: bytes([n % 251]) * n)
column_values = st.one_of(st.none(), st.just(UNCHANGED), st.binary(max_size=40), large_values)
# wide rows from a few cheap values: hypothesis draws short lists of the general ones
tuples = st.one_of(st.lists(column_values, max_size=60),
                   st.lists(st.sampled_from([None, UNCHANGED, b"", b"7", b"abc"]),
                            min_size=61, max_size=800))
relids = st.integers(0, 2**32 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A valid Insert, Update (without, with key and with whole old row), Delete, Begin or
    Commit message."""
    kind = draw(st.sampled_from("IUDBC"))
    relid = struct.pack(">I", draw(relids))
    if kind == "I":
        return b"I" + relid + b"N" + tuple_data(draw(tuples))
    if kind == "U":
        old_kind = draw(st.sampled_from([b"", b"K", b"O"]))
        old = tuple_data(draw(tuples)) if old_kind else b""
        return b"U" + relid + old_kind + old + b"N" + tuple_data(draw(tuples))
    if kind == "D":
        return b"D" + relid + draw(st.sampled_from([b"K", b"O"])) + tuple_data(draw(tuples))
    if kind == "B":
        return b"B" + struct.pack(">qq", draw(int64s), draw(int64s)) + relid
    return b"C" + struct.pack(">bqqq", draw(st.integers(-128, 127)), draw(int64s),
                              draw(int64s), draw(int64s))


@SETTINGS
@given(messages())
def test_valid_messages_decode_as_in_python(data: bytes) -> None:
    got = in_c(data)
    assert_identical(got, pgoutput.decode_python(data))
    assert_identical(pgoutput.decode(memoryview(data)), got)
    assert_identical(in_c(bytearray(data)), got)


def test_update_old_kinds_and_unchanged_values_are_the_python_decoders_objects():
    for old_kind in ("K", "O"):
        data = (b"U" + struct.pack(">I", 7) + old_kind.encode() + tuple_data([b"1", None])
                + b"N" + tuple_data([b"2", UNCHANGED, b""]))
        got = in_c(data)
        assert got == pgoutput.Update(7, old_kind, (b"1", None), (b"2", UNCHANGED, b""))
        assert got.old_kind is pgoutput.decode_python(data).old_kind  # the interned letter
        assert got.new[1] is UNCHANGED


def test_widest_row_postgresql_allows():
    values = [str(i).encode() if i % 3 else None for i in range(1664)]
    assert_c_decodes_as_python(b"I" + struct.pack(">I", 1) + b"N" + tuple_data(values))


def test_far_future_commit_time_is_not_wrapped():
    data = b"B" + struct.pack(">qqI", 1, 2**63 - 1, 2)
    assert in_c(data).commit_ts == 2**63 - 1 + pgoutput.PG_EPOCH_OFFSET_US


def bind(python_decode: Callable[[Any], Any]) -> None:
    pgoutput._pgoutput.bind(  # type: ignore[union-attr]
        pgoutput.Begin, pgoutput.Commit, pgoutput.Insert, pgoutput.Update, pgoutput.Delete,
        UNCHANGED, ProtocolError, python_decode, pgoutput.PG_EPOCH_OFFSET_US)


@pytest.fixture
def c_alone() -> Any:
    """The C decoder without the Python one to hand bytes to: what it raises is its own."""
    def refuse(data: Any) -> Any:
        raise AssertionError(f"handed to the Python decoder: {data!r}")

    bind(refuse)
    yield
    bind(pgoutput.decode_python)


def value_with_length(length: int) -> bytes:
    return struct.pack(">h", 2) + b"t" + struct.pack(">i", length) + b"abc" + b"n"


RELID = struct.pack(">I", 5)


@pytest.mark.parametrize("data,message", [
    (b"I" + RELID + b"N" + value_with_length(5), "tuple value is truncated"),
    (b"I" + RELID + b"N" + struct.pack(">h", 1) + b"b" + struct.pack(">i", 1) + b"a",
     "binary tuple data received; capture asks for text"),
    (b"I" + RELID + b"N" + struct.pack(">h", 2) + b"n\xff", "unknown tuple data kind 'ÿ'"),
    (b"I" + RELID + b"N" + struct.pack(">h", 1) + b"\x85", r"unknown tuple data kind '\x85'"),
    (b"I" + RELID + b"X" + tuple_data([b"1"]), "insert without new tuple (got 'X')"),
    (b"U" + RELID + b"K" + tuple_data([b"1"]) + b"K" + tuple_data([b"1"]),
     "update without new tuple (got 'K')"),
    (b"U" + RELID + b"\x00", r"update without new tuple (got '\x00')"),
    (b"D" + RELID + b"N" + tuple_data([b"1"]), "delete without old tuple (got 'N')"),
    (b"D" + RELID + b"O" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 2**31 - 1),
     "tuple value is truncated"),
])
def test_malformed_change_raises_the_python_decoders_error(data: bytes, message: str,
                                                           c_alone: None):
    with pytest.raises(ProtocolError) as raised:
        in_c(data)
    assert str(raised.value) == message
    assert_identical(outcome(pgoutput.decode_python, data), ("ProtocolError", message))


@pytest.mark.parametrize("data", [
    b"", b"I", b"I" + RELID, b"U" + RELID, b"D" + RELID, b"B" + bytes(19), b"C" + bytes(24),
    b"I" + RELID + b"N", b"I" + RELID + b"N\x00", b"I" + RELID + b"N\x00\x01",
    b"I" + RELID + b"N\x00\x01t\x00\x00", b"U" + RELID + b"O" + tuple_data([b"1"]),
    b"I" + RELID + b"N" + struct.pack(">h", -3),
    # negative lengths and counts: refused, by the Python decoder
    b"I" + RELID + b"N" + value_with_length(-1), b"I" + RELID + b"N" + value_with_length(-40),
    b"U" + RELID + b"K" + value_with_length(-9) + b"N" + tuple_data([]),
])
def test_short_or_odd_bytes_decode_or_fail_as_in_python(data: bytes):
    assert_c_decodes_as_python(data)


@pytest.mark.parametrize("data", [
    b"I" + RELID + b"N" + tuple_data([b"1", None, UNCHANGED, b"abc"]),
    b"U" + RELID + b"O" + tuple_data([b"", b"x"]) + b"N" + tuple_data([UNCHANGED, b"yz"]),
    b"D" + RELID + b"K" + tuple_data([b"42"]),
    b"B" + struct.pack(">qqI", 1, 2, 3), b"C" + struct.pack(">bqqq", 0, 1, 2, 3),
])
def test_every_prefix_fails_as_in_python(data: bytes):
    for cut in range(len(data) + 1):
        assert_c_decodes_as_python(data[:cut])


@SETTINGS
@given(messages(), st.integers(0, 10**6))
def test_truncated_messages_fail_as_in_python(data: bytes, cut: int) -> None:
    assert_c_decodes_as_python(data[:cut % (len(data) + 1)])


@SETTINGS
@given(messages(), st.integers(0, 10**6), st.binary(min_size=1, max_size=6), st.booleans())
def test_mutated_messages_decode_or_fail_as_in_python(data: bytes, index: int, patch: bytes,
                                                       insert: bool) -> None:
    index %= len(data)
    end = index if insert else index + len(patch)
    assert_c_decodes_as_python(data[:index] + patch + data[end:])


@SETTINGS
@given(st.sampled_from(b"IUDBC"), st.binary(max_size=200))
def test_random_bytes_decode_or_fail_as_in_python(kind: int, rest: bytes) -> None:
    assert_c_decodes_as_python(bytes([kind]) + rest)


@pytest.mark.parametrize("data", [
    b"R\x00\x00@\x16public\x00pt\x00d\x00\x02\x01id\x00\x00\x00\x00\x17\xff\xff\xff\xff"
    b"\x00t\x00\x00\x00\x00\x19\xff\xff\xff\xff",
    b"Y" + struct.pack(">I", 16390) + b"public\x00doc_status\x00",
    b"T" + struct.pack(">ib", 1, 0) + struct.pack(">I", 10),
    b"M\x00" + struct.pack(">q", 1) + b"p\x00" + struct.pack(">i", 5) + b"ab",
    b"Z", b"R\x00",
])
def test_other_messages_are_the_python_decoders(data: bytes):
    assert_c_decodes_as_python(data)


def test_not_bytes_fail_as_in_python():
    for data in ("I", None, 3.5):
        assert_c_decodes_as_python(data)


def test_decode_uses_c_unless_told_not_to(monkeypatch: pytest.MonkeyPatch):
    data = b"I" + RELID + b"N" + tuple_data([b"1"])
    calls: list[bytes] = []
    monkeypatch.setattr(pgoutput, "_DECODERS",
                        {**pgoutput._DECODERS, ord("I"): lambda b: calls.append(b)})
    pgoutput.decode(data)
    assert calls == []
    monkeypatch.setattr(pgoutput, "IN_C", False)
    pgoutput.decode(data)
    assert calls == [data]


def test_decoding_keeps_no_references():
    data = (b"U" + RELID + b"O" + tuple_data([UNCHANGED, b"x", None]) + b"N"
            + tuple_data([UNCHANGED, b"y" * 100]))
    bad = b"I" + RELID + b"N" + struct.pack(">h", 2) + b"ub"
    in_c(data)
    before = sys.getrefcount(UNCHANGED)
    for _ in range(1000):
        in_c(data)
        with pytest.raises(ProtocolError):
            in_c(bad)
    assert sys.getrefcount(UNCHANGED) == before


def test_bind_refuses_a_class_whose_fields_changed():
    @dataclass(frozen=True, slots=True)
    class Insert:
        relid: int
        new: tuple[Any, ...]
        origin: str

    with pytest.raises(TypeError, match="Insert has slots"):
        pgoutput._pgoutput.bind(  # type: ignore[union-attr]
            pgoutput.Begin, pgoutput.Commit, Insert, pgoutput.Update, pgoutput.Delete,
            UNCHANGED, ProtocolError, pgoutput.decode_python, pgoutput.PG_EPOCH_OFFSET_US)
    # the refused binding changed nothing
    assert type(in_c(b"I" + RELID + b"N" + tuple_data([]))) is pgoutput.Insert
