"""Equality down to type and bits, for the codec tests: a decoded record must be the very
value another reader returns, not one that merely compares equal."""

from __future__ import annotations

import dataclasses
import struct
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from journal.catalog import TableSchema
from journal.positions import Position


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Equal and of the same type all the way down: a NaN's bits, a Decimal's exponent,
    a datetime's tzinfo and a dict's key order count."""
    assert type(a) is type(b), (where, a, b)
    if isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), (where, a, b)
    elif isinstance(a, Decimal):
        assert a.as_tuple() == b.as_tuple(), (where, a, b)
    elif isinstance(a, UUID):
        assert (a.int, a.is_safe) == (b.int, b.is_safe), (where, a, b)
    elif isinstance(a, datetime):
        assert (a, a.tzinfo, a.fold) == (b, b.tzinfo, b.fold), (where, a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a) and not isinstance(a, TableSchema | Position):
        for f in dataclasses.fields(a):
            assert_identical(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    else:
        assert a == b, (where, a, b)
