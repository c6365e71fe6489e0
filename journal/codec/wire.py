"""The wire format of stream records: single-object framing, schemas, fingerprints.

Every value is ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint + the Avro binary body,
as the Avro specification's single-object encoding defines, so any Avro implementation
decodes it given the schema published under that fingerprint. A change event's schema is
its table version's envelope; markers and messages have fixed schemas shipped in the
``schemas`` package.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from journal.catalog import TableSchema
from journal.errors import ValidationError

MAGIC = b"\xc3\x01"  # the single-object encoding's marker, before the fingerprint


@cache
def packaged_schema(name: str) -> dict[str, Any]:
    """One of the fixed schemas shipped in the ``schemas`` package."""
    return json.loads(resources.files("schemas").joinpath(f"{name}.avsc").read_text())


def fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, in header (little-endian) byte order."""
    return bytes.fromhex(_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def envelope_schema(table: TableSchema) -> dict[str, Any]:
    """The schema of one table version's change events: row images, op and source."""
    row = table.avro_row_schema()
    ns = table.avro_namespace()
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": ns,
        "pg_schema": table.schema,
        "pg_table": table.name,
        "pg_primary_key": list(table.primary_key),
        "fields": [
            {"name": "before", "type": ["null", row], "default": None},
            {"name": "after", "type": ["null", f"{ns}.Row"], "default": None},
            {"name": "op", "type": "string"},
            {"name": "source", "type": packaged_schema("source")},
            {"name": "ts_ms", "type": "long"},
            {"name": "unchanged_toast", "type": {"type": "array", "items": "string"}},
        ],
    }


@cache
def packaged_fingerprint(name: str) -> bytes:
    """The fingerprint of one of the packaged schemas (``transaction``, ``message``)."""
    return fingerprint(packaged_schema(name))


def split_header(value: bytes) -> tuple[bytes, bytes]:
    """(fingerprint, body) of a single-object encoded value, or ValidationError."""
    if len(value) < 10 or value[:2] != MAGIC:
        raise ValidationError("value is not Avro single-object encoded (no C3 01 marker)")
    return value[2:10], value[10:]


class Unhandled(ValueError):
    """A value or bytes a compiled path leaves to the reference path (fastavro's generic
    writer or reader), which then encodes, decodes or refuses it."""


class KeyOrder(ValueError):
    """A walk over rows found a key not after the one before it: ``row`` is that row's
    index among the rows walked."""

    def __init__(self, row: int) -> None:
        super().__init__(f"row {row}: key not after the previous row's")
        self.row = row


def type_key(avro_type: Any) -> Any:
    """A non-union Avro type as the compiled paths index their readers and writers: the
    primitive's name, ``(type, logicalType)``, or None for a type with more to it."""
    if isinstance(avro_type, dict) and set(avro_type) <= {"type", "logicalType"}:
        return (avro_type["type"], avro_type["logicalType"]) if "logicalType" in avro_type \
            else avro_type["type"]
    return avro_type if isinstance(avro_type, str) else None


def column_shape(avro_type: Any) -> tuple[Any, bool, bool] | None:
    """A row field's type as the compiled paths take it: (the typed branch, nullable, has
    the third "string" branch of PostgreSQL's text form); None for another union."""
    if not isinstance(avro_type, list):
        return avro_type, False, False
    if len(avro_type) == 3 and avro_type[0] == "null" and avro_type[2] == "string":
        return avro_type[1], True, True
    if len(avro_type) == 2 and avro_type[0] == "null":
        return avro_type[1], True, False
    return None
