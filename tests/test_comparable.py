"""The equality of ``journal verify``: the same stored value compares equal, any other not."""

from __future__ import annotations

import math
import struct
from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from restorer.comparable import comparable

REAL, DOUBLE, REAL_ARRAY, DOUBLE_ARRAY, INT_ARRAY, DATE = 700, 701, 1021, 1022, 1007, 1082


def as_float4(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def test_every_nan_is_the_same_value() -> None:
    assert comparable(float("nan"), DOUBLE) == comparable(-math.nan, DOUBLE)
    assert comparable([math.nan, 1.0], DOUBLE_ARRAY) == comparable([float("nan"), 1.0],
                                                                   DOUBLE_ARRAY)
    assert hash(comparable(float("nan"), DOUBLE)) == hash(comparable(math.nan, DOUBLE))


def test_minus_zero_is_not_zero() -> None:
    assert comparable(-0.0, DOUBLE) != comparable(0.0, DOUBLE)
    assert comparable([-0.0], REAL_ARRAY) != comparable([0.0], REAL_ARRAY)
    assert comparable([-0.0], REAL_ARRAY) == comparable([-0.0], REAL_ARRAY)


def test_a_real_read_back_from_its_text_equals_its_float32() -> None:
    assert comparable(1e-45, REAL) == comparable(as_float4(1e-45), REAL)
    assert comparable([3.14, None], REAL_ARRAY) == comparable([as_float4(3.14), None],
                                                              REAL_ARRAY)
    # a double column keeps every bit
    assert comparable(1e-45, DOUBLE) != comparable(as_float4(1e-45), DOUBLE)


@given(st.floats(width=32))
def test_any_float4_equals_itself_after_the_avro_float_round_trip(value: float) -> None:
    assert comparable(value, REAL) == comparable(as_float4(value), REAL)


@given(st.floats(width=32), st.floats(width=32))
def test_distinct_float4_values_stay_distinct(a: float, b: float) -> None:
    same = (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                 math.copysign(1, b))
    assert (comparable(a, REAL) == comparable(b, REAL)) == same


def test_other_values_compare_as_themselves_and_hash() -> None:
    assert comparable([1, None, 3], INT_ARRAY) == (1, None, 3)
    assert comparable([[1], [2]], INT_ARRAY) == ((1,), (2,))
    assert comparable(date(2024, 1, 1), DATE) == date(2024, 1, 1)
    assert comparable("infinity", DATE) == "infinity"
    assert comparable("infinity", DATE) != comparable("-infinity", DATE)
    assert comparable(Decimal("1.50"), 1700) == Decimal("1.50")
    assert comparable(memoryview(b"ab"), 17) == b"ab"
    assert comparable(None, DATE) is None
    hash(comparable({"a": [1.5]}, 0))
