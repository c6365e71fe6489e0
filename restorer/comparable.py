"""When two journal values are the same value: the equality ``journal verify`` uses.

The journal's values are Python values (or PostgreSQL's text form, see
``journal.values``), and Python's equality is not PostgreSQL's identity of a stored value:
NaN is not equal to itself, a ``real`` read back from its text (``1e-45``) is not the float32
the Avro ``float`` holds (``1.401298464324817e-45``), lists do not hash. ``comparable`` maps a
value to a hashable stand-in that is equal exactly when PostgreSQL stores the same value:
every NaN alike, ``-0`` apart from ``0`` (it is stored and printed apart), a ``real`` at the
precision the column stores, arrays element by element. Pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import Any

from journal.catalog import ARRAY_ELEMENTS, oid_of

FLOAT4_OID = oid_of("float4")
_float32 = struct.Struct("<f")


def comparable(value: Any, type_oid: int) -> Any:
    """A hashable stand-in for ``value`` (of a column of type ``type_oid``), equal to
    another's exactly when the two are the same stored value."""
    if value is None:
        return None
    kind = type(value)
    if kind is float:
        if type_oid == FLOAT4_OID:
            value = _as_float4(value)
        return ("float", value.hex())  # hex: one spelling per value, NaN included
    if kind is list:
        element = ARRAY_ELEMENTS.get(type_oid, 0)
        return tuple(comparable(v, element) for v in value)
    if kind is dict:
        return tuple(sorted((k, comparable(v, 0)) for k, v in value.items()))
    if kind is memoryview or kind is bytearray:
        return bytes(value)
    return value


def _as_float4(value: float) -> float:
    try:
        return float(_float32.unpack(_float32.pack(value))[0])
    except OverflowError:  # beyond float4's range: not a value of the column, keep it
        return value
