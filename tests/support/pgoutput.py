"""pgoutput bytes as PostgreSQL sends them, for decoder tests."""

from __future__ import annotations

import struct
from typing import Any

from producers.pgoutput import UNCHANGED


def tuple_data(*values: Any) -> bytes:
    """TupleData of text values, NULLs (None) and unchanged TOAST (``UNCHANGED``)."""
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        else:
            assert isinstance(v, bytes)
            out += b"t" + struct.pack(">i", len(v)) + v
    return out
