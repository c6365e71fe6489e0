"""What identifies a row of a table without a primary key: all of its values.

Such a table is captured under ``REPLICA IDENTITY FULL``: an update or a delete carries
the whole old row, and it changes *one* row equal to it (of possibly several equal ones).
Folding, the in-memory state and verify then treat the table as a multiset of rows,
ordered and grouped by ``row_identity``: the row's values encoded into bytes so that two
rows get the same bytes exactly when they hold the same journal values. The order of
those bytes is a deterministic total order (Python's own order of the values is not:
NaN, NULLs in arrays, Decimal NaN), which is all a sorted package member needs.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from journal.catalog import TableSchema


def is_keyless(table: TableSchema) -> bool:
    """True for a table captured without a primary key (rows identified by content)."""
    return not table.primary_key


def row_identity(columns: Sequence[str], row: Mapping[str, Any]) -> bytes:
    """The bytes naming ``row`` by the values of ``columns`` (see the module docstring)."""
    return json.dumps([_tagged(row.get(c)) for c in columns], ensure_ascii=False,
                      separators=(",", ":")).encode()


def _tagged(value: Any) -> Any:
    # A type tag per value: 1 and 1.0 and "1" are three different values.
    if value is None:
        return None
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", str(value)]
    if isinstance(value, float):
        return ["f", value.hex()]  # exact; -0.0 and 0.0 differ, every NaN is one NaN
    if isinstance(value, Decimal):
        return ["n", str(value)]  # scale kept: 1.0 and 1.00 are different rows
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["x", bytes(value).hex()]
    if isinstance(value, datetime.datetime):
        return ["ts", value.isoformat()]
    if isinstance(value, datetime.date):
        return ["d", value.isoformat()]
    if isinstance(value, datetime.time):
        return ["t", value.isoformat()]
    if isinstance(value, datetime.timedelta):
        return ["iv", [value.days, value.seconds, value.microseconds]]
    if isinstance(value, uuid.UUID):
        return ["u", str(value)]
    if isinstance(value, list | tuple):
        return ["a", [_tagged(v) for v in value]]
    if isinstance(value, dict):
        return ["o", sorted([str(k), _tagged(v)] for k, v in value.items())]
    raise TypeError(f"no row identity for a value of type {type(value).__name__}")


class KeylessRows(dict[tuple[bytes, int], dict[str, Any]]):
    """The rows of a table without a primary key, as a multiset: each keyed by its
    identity (over all its columns) and an occurrence number, so equal rows stay as many
    as there are, and ``remove`` takes away exactly one of them. A dict, for the readers
    of keyed tables' rows."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[bytes, list[tuple[bytes, int]]] = {}
        self._next = 0

    def add(self, row: dict[str, Any]) -> None:
        identity = row_identity(sorted(row), row)
        self._next += 1
        key = (identity, self._next)
        self[key] = row
        self._keys.setdefault(identity, []).append(key)

    def remove(self, row: Mapping[str, Any]) -> bool:
        """Take away one row equal to ``row``; False when there is none."""
        keys = self._keys.get(row_identity(sorted(row), row))
        if not keys:
            return False
        del self[keys.pop()]
        return True

    def clear(self) -> None:
        super().clear()
        self._keys.clear()
