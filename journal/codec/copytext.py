"""COPY text of journal rows formatted in C (``_copytext.pyx``, compiled at install when a
C compiler is present): what the restorer's COPY writer asks for, so no other package
imports the compiled module itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from journal.codec import _copytext
except ImportError:  # built without a C compiler: psycopg formats every row
    _copytext = None

BUILT = _copytext is not None


def row_formatter(columns: Sequence[str]) -> Any | None:
    """A ``RowFormatter`` of rows with ``columns`` (``add``, ``append``, ``buffered``,
    ``take``: see ``_copytext.pyx``), or None where the extension was not built."""
    return None if _copytext is None else _copytext.RowFormatter(columns)
