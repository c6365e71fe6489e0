"""PostgreSQL TEXT-format column values turned into the journal's Python values.

Both the initial snapshot (``COPY ... TO STDOUT``, text format) and the pgoutput decoder
(text-format tuple data) see a column value as PostgreSQL's output text. The OIDs of
``journal.catalog.typed_oids()`` are loaded with psycopg's own loaders (one registry for
the whole product); every other value stays the exact text PostgreSQL printed, which the
restore hands back to PostgreSQL unchanged.

A value psycopg's loader cannot turn into a Python value of the column's type *exactly*
(a date of ``infinity``, BC or after 9999, ``time '24:00:00'``, a ``numeric(p,s)`` NaN, a
multi-dimensional array, an array with other lower bounds than 1, an array holding such an
element) stays the text PostgreSQL printed, as the catalog's text branch of the column
allows (see ``journal.catalog.avro_value_type``). Nothing is ever loaded approximately.

The text is expected in the session formats that ``prepare_session`` sets (ISO DateStyle,
hex bytea, UTF-8): the loaders here never look at a live connection's settings, so a
value loads the same way on the snapshot path and on the replication path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import AdaptersMap, Loader, Transformer
from psycopg.pq import Format

from journal.catalog import (
    ARRAY_ELEMENTS,
    NUMERIC_OID,
    Column,
    TableSchema,
    has_text_fallback,
    typed_oids,
)
from journal.errors import UnencodableValue

Buffer = bytes | bytearray | memoryview

TEXT_OID = 25
TEXT_ARRAY_OID = 1009
_JSON_OIDS = frozenset({114, 3802})
_JSON_ARRAY_OIDS = frozenset({199, 3807})
_NUMERIC_ARRAY_OID = 1231
_CONSTRAINED_NUMERIC = re.compile(r"^numeric\(\d+,\d+\)(\[\])?$")

# The session settings whose output the loaders expect (see the module docstring).
SESSION_SETTINGS = {
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
    "extra_float_digits": "1",  # shortest exact float text, as PostgreSQL 12+ defaults to
}


def prepare_session(conn: psycopg.Connection[Any]) -> None:
    """Set the output formats the loaders rely on, for the rest of the session."""
    calls = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
        for name, value in SESSION_SETTINGS.items())
    conn.execute(sql.SQL("SELECT {}").format(calls))


def load_oid(column: Column) -> int:
    """The OID whose text loader turns this column's text into its journal value.

    json/jsonb stay text (the catalog maps them to Avro string), and so does a numeric
    without precision and scale (arbitrary precision, NaN and infinities have no Avro
    decimal); everything outside ``typed_oids()`` is text as well.
    """
    oid = column.type_oid
    if oid not in typed_oids() or oid in _JSON_OIDS:
        return TEXT_OID
    if oid in _JSON_ARRAY_OIDS:
        return TEXT_ARRAY_OID
    if oid in (NUMERIC_OID, _NUMERIC_ARRAY_OID) and not _CONSTRAINED_NUMERIC.match(
            column.pg_type):
        return TEXT_OID if oid == NUMERIC_OID else TEXT_ARRAY_OID
    return oid


class RowLoader:
    """Loads the text values of one table version's columns; built once per table version.

    ``context`` supplies the adapters (a connection, or an ``AdaptersMap``); by default the
    global ones. The connection's own TimeZone and DateStyle are deliberately not used:
    timestamptz values come back as aware datetimes in UTC.
    """

    def __init__(self, table: TableSchema, context: Any = None) -> None:
        self.table = table
        self.load_oids = tuple(load_oid(c) for c in table.columns)
        adapters = _adapters_of(context)
        self._tx = Transformer(_Context(exact_adapters(adapters)))
        self._tx.set_loader_types(list(self.load_oids), Format.TEXT)
        # load_row's first try: psycopg's own C loaders for dates, times and timestamps,
        # which load a value exactly or raise DataError (then _tx loads the row)
        self._fast_tx = Transformer(_Context(exact_adapters(adapters, scalars=False)))
        self._fast_tx.set_loader_types(list(self.load_oids), Format.TEXT)
        self._loads: tuple[Callable[[Buffer], Any], ...] = tuple(
            self._tx.get_loader(oid, Format.TEXT).load for oid in self.load_oids)

    def load_text(self, column_index: int, data: Buffer | None) -> Any:
        """One column's value; ``None`` is SQL NULL."""
        if data is None:
            return None
        return self._loads[column_index](data)

    def load_row(self, fields: Sequence[Buffer | None]) -> tuple[Any, ...]:
        """Every column of one row, in table order (the fast path: one C call)."""
        try:
            return self._fast_tx.load_sequence(fields)
        except psycopg.DataError:
            pass  # a date or time beyond Python's: the exact loaders keep its text
        try:
            return self._tx.load_sequence(fields)
        except Exception as exc:  # noqa: BLE001 - whatever a loader raises, named below
            raise self.refusal(fields, exc) from exc

    def load_dict(self, fields: Sequence[Buffer | None]) -> dict[str, Any]:
        return dict(zip(self.table.column_names, self.load_row(fields), strict=True))

    def refusal(self, fields: Sequence[Buffer | None], exc: Exception) -> UnencodableValue:
        """The error naming the first column of ``fields`` that does not load."""
        for i, data in enumerate(fields):
            try:
                self.load_text(i, data)
            except Exception as column_exc:  # noqa: BLE001
                return UnencodableValue(self.table.qualified, self.table.columns[i].name,
                                        _text(data), str(column_exc) or type(column_exc).__name__)
        return UnencodableValue(self.table.qualified, "?", None, str(exc))


# --- exact loading ----------------------------------------------------------------------

def _text(data: Buffer | None) -> str | None:
    return None if data is None else bytes(data).decode()


class _ExactLoader(Loader):
    """psycopg's loader of one type, except that a value it cannot load exactly stays the
    text PostgreSQL printed (see the module docstring). Subclassed per OID below; the
    scalar ``load`` is as short as it can be: it runs for every date and timestamp."""

    inner: type[Loader]

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._load = self.inner(oid, context).load

    def load(self, data: Buffer) -> Any:
        try:
            return self._load(data)
        except psycopg.DataError:  # infinity, BC, year 10000+, 24:00:00…
            return bytes(data).decode()


class _ExactNumeric(_ExactLoader):
    def load(self, data: Buffer) -> Any:
        value = self._load(data)
        # NaN (and, in an unconstrained numeric, ±Infinity) has no Avro decimal
        return value if value.is_finite() else bytes(data).decode()


class _ExactArray(_ExactLoader):
    # an array whose elements load exactly or as text (dates…): one element left as text
    # makes the whole array text, as the Avro array's items have no text branch
    text_elements = False

    def load(self, data: Buffer) -> Any:
        # "[0:2]={7,8,9}" (lower bounds) and "{{1,2},{3,4}}" (dimensions): psycopg would
        # drop the bounds or nest lists the Avro array cannot hold
        if data[:1] == b"[" or data[:2] == b"{{":
            return bytes(data).decode()
        try:
            value = self._load(data)
        except psycopg.DataError:
            return bytes(data).decode()
        if self.text_elements and any(type(v) is str for v in value):
            return bytes(data).decode()
        return value


# OIDs loaded through _ExactLoader: the typed ones whose Avro type has a text branch
_EXACT_OIDS = tuple(sorted(oid for oid in typed_oids() if has_text_fallback(oid)))
# (id(base adapters), scalars) -> (base, derived): one copy per base, not per table version
_EXACT: dict[tuple[int, bool], tuple[AdaptersMap, AdaptersMap]] = {}


def exact_adapters(base: AdaptersMap, scalars: bool = True) -> AdaptersMap:
    """``base`` with the loaders of ``_EXACT_OIDS`` made exact (see ``_ExactLoader``);
    with ``scalars`` False, only those of arrays and numerics, whose inexact values
    psycopg loads without an error."""
    hit = _EXACT.get((id(base), scalars))
    if hit is None or hit[0] is not base:
        adapters = AdaptersMap(base)
        _make_exact(adapters, base, scalars)
        if len(_EXACT) >= 256:
            _EXACT.clear()
        hit = _EXACT[id(base), scalars] = (base, adapters)
    return hit[1]


def _make_exact(adapters: AdaptersMap, base: AdaptersMap, scalars: bool = True) -> None:
    for oid in _EXACT_OIDS:
        inner = base.get_loader(oid, Format.TEXT)
        if inner is None or issubclass(inner, _ExactLoader):
            continue
        element = ARRAY_ELEMENTS.get(oid)
        kind: type[_ExactLoader] = _ExactLoader
        attrs: dict[str, Any] = {"inner": inner}
        if element is not None:
            kind, attrs["text_elements"] = _ExactArray, element in _EXACT_OIDS
        elif oid == NUMERIC_OID:
            kind = _ExactNumeric
        elif not scalars:
            continue
        adapters.register_loader(oid, type(f"Exact{inner.__name__}", (kind,), attrs))


class _Context:
    """An adaptation context with the adapters of a connection but not the connection:
    without one, psycopg's loaders assume ISO dates, UTF-8 and UTC."""

    __slots__ = ("adapters",)
    connection = None

    def __init__(self, adapters: AdaptersMap) -> None:
        self.adapters = adapters


def _adapters_of(context: Any) -> AdaptersMap:
    if context is None:
        return psycopg.adapters
    if isinstance(context, AdaptersMap):
        return context
    return context.adapters


# --- COPY text format --------------------------------------------------------------------

_ESCAPE = re.compile(rb"\\([0-7]{1,3}|x[0-9A-Fa-f]{1,2}|.)", re.DOTALL)
_SIMPLE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    if code in _SIMPLE:
        return _SIMPLE[code]
    if code[:1] == b"x" and len(code) > 1:
        return bytes((int(code[1:], 16),))
    if code[:1].isdigit() and code[:1] in b"01234567":
        return bytes((int(code, 8) & 0xFF,))
    return code  # "\\" and any other escaped character stand for themselves


def parse_copy_line(line: Buffer) -> list[bytes | None]:
    """Split one line of COPY text format into raw field texts (``None`` for ``\\N``)."""
    data = bytes(line)
    if data.endswith(b"\n"):
        data = data[:-1]
    fields: list[bytes | None] = []
    for field in data.split(b"\t"):
        if field == b"\\N":
            fields.append(None)
        elif b"\\" in field:
            fields.append(_ESCAPE.sub(_unescape, field))
        else:
            fields.append(field)
    return fields


def copy_rows(conn: psycopg.Connection[Any], query: sql.Composable,
              loader: RowLoader) -> Iterator[tuple[Any, ...]]:
    """Run ``COPY (query) TO STDOUT`` and yield each row's loaded values, streaming.

    psycopg parses the text format in C and loads each field with the types set here:
    about twice as fast as ``parse_copy_line`` plus ``RowLoader.load_row`` on a 100,000-row
    table of mixed types. Memory stays flat: rows are read one CopyData message at a time.
    """
    prepare_session(conn)
    statement = sql.SQL("COPY ({}) TO STDOUT").format(query)
    with conn.cursor() as cur:
        _make_exact(cur.adapters, cur.adapters)
        with cur.copy(statement) as copy:
            copy.set_types(list(loader.load_oids))
            try:
                yield from copy.rows()
            except psycopg.DataError as exc:  # a value no loader takes: say which table
                raise UnencodableValue(loader.table.qualified, "?", None, str(exc)) from exc

def read_rows(conn: psycopg.Connection[Any], table: TableSchema) -> Iterator[dict[str, Any]]:
    """Every row of ``table`` in primary-key order, values as the journal represents them.

    Streams through ``COPY ... TO STDOUT``: memory stays flat whatever the table size.
    """
    loader = RowLoader(table, conn)
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
        sql.Identifier(table.schema, table.name))
    if table.primary_key:
        query = sql.SQL("{} ORDER BY {}").format(
            query, sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key))
    names = table.column_names
    for values in copy_rows(conn, query, loader):
        yield dict(zip(names, values, strict=True))
