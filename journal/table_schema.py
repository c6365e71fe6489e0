"""Table versions as the journal carries them, and their Avro form.

A ``TableSchema`` is one *version* of a source table (``journal.catalog.TableEntry``
makes it): a relation change (ALTER TABLE) makes a new one, with a new Avro schema and
fingerprint. The type OIDs that get a typed Avro form are named here, from psycopg's
registry.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from psycopg import postgres

NAMESPACE = "edms_journal"


def oid_of(name: str) -> int:
    """The OID of a builtin type, by its name in psycopg's registry ("uuid", "int4"…)."""
    return postgres.types[name].oid


# Builtin types whose values get a proper Avro type. Anything else (enums, json,
# interval, inet, ranges, multiranges, domains, composites, extension types…) travels as
# PostgreSQL's own text form, which the restore hands back to PostgreSQL unchanged:
# lossless, if less typed.
_SCALAR_TYPES: dict[str, Any] = {
    "bool": "boolean",
    "int2": "int",
    "int4": "int",
    "int8": "long",
    "float4": "float",
    "float8": "double",
    "text": "string",
    "varchar": "string",
    "bpchar": "string",
    "name": "string",
    "bytea": "bytes",
    "date": {"type": "int", "logicalType": "date"},
    "time": {"type": "long", "logicalType": "time-micros"},
    "timestamp": {"type": "long", "logicalType": "local-timestamp-micros"},
    "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
    "uuid": {"type": "string", "logicalType": "uuid"},
    "json": "string",  # kept as text (key order and spacing are part of the value)
    "jsonb": "string",
}
_SCALARS: dict[int, Any] = {oid_of(name): avro for name, avro in _SCALAR_TYPES.items()}
NUMERIC_OID = oid_of("numeric")
# array OID -> element OID, for every typed scalar but "name" (and for numeric)
ARRAY_ELEMENTS: dict[int, int] = {
    postgres.types[name].array_oid: oid_of(name)
    for name in (*_SCALAR_TYPES, "numeric") if name != "name"}
_NUMERIC_TYPMOD = re.compile(r"^numeric\((\d+),(\d+)\)$")

# Types some of whose values the typed Avro branch cannot hold: dates and timestamps of
# ±infinity, BC or after year 9999, time 24:00:00, a numeric(p,s) NaN, and arrays that are
# multi-dimensional, have other lower bounds than 1 or hold such an element. Their column
# type is the union [typed, "string"]: a value the typed branch cannot hold exactly travels
# in the string branch as PostgreSQL's own text form (its output under the session
# settings of journal.values), which the restore hands back to PostgreSQL unchanged. Any
# Avro reader decodes it; none sees a typed value that is not the source's.
_TEXT_FALLBACK_SCALARS = frozenset(
    {oid_of(n) for n in ("date", "time", "timestamp", "timestamptz")} | {NUMERIC_OID})


def typed_oids() -> frozenset[int]:
    """OIDs loaded into Python values (the rest stay PostgreSQL text)."""
    return frozenset(_SCALARS) | {NUMERIC_OID} | frozenset(ARRAY_ELEMENTS)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    pg_type: str  # format_type() text, e.g. "numeric(12,2)", "text[]", "document_status"
    type_oid: int
    not_null: bool = False

    def avro_type(self) -> Any:
        return avro_value_type(self.type_oid, self.pg_type, nullable=not self.not_null)



def has_text_fallback(oid: int) -> bool:
    """Whether values of this type may travel as PostgreSQL text (see above)."""
    return oid in _TEXT_FALLBACK_SCALARS or oid in ARRAY_ELEMENTS


def avro_value_type(oid: int, pg_type: str, nullable: bool = True) -> Any:
    """The Avro type of a column's values: its typed form, the text fallback where the
    typed form cannot hold every value, and null first where the value may be missing."""
    base = _avro_base(oid, pg_type)
    branches = ["null"] if nullable else []
    branches.append(base)
    if has_text_fallback(oid) and base != "string":  # an unconstrained numeric is text
        branches.append("string")
    return branches[0] if len(branches) == 1 else branches


def _avro_base(oid: int, pg_type: str) -> Any:
    if oid in ARRAY_ELEMENTS:
        element_type = pg_type[:-2] if pg_type.endswith("[]") else pg_type
        return {"type": "array", "items": ["null", _avro_base(ARRAY_ELEMENTS[oid], element_type)]}
    if oid == NUMERIC_OID:
        m = _NUMERIC_TYPMOD.match(pg_type)
        if m:
            precision, scale = int(m.group(1)), int(m.group(2))
            return {"type": "bytes", "logicalType": "decimal", "precision": precision,
                    "scale": scale}
        return "string"  # unconstrained numeric: arbitrary precision, NaN, infinities
    return _SCALARS.get(oid, "string")


@dataclass(frozen=True, slots=True)
class TableSchema:
    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.qualified} has no column {name!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def key_of(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.primary_key)

    def digest(self) -> str:
        """Content digest of this version; part of the Avro names so that two versions
        differing only in PostgreSQL type detail never share a fingerprint."""
        text = json.dumps(
            [self.schema, self.name, [[c.name, c.pg_type, c.type_oid, c.not_null]
                                      for c in self.columns], list(self.primary_key)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def avro_namespace(self) -> str:
        return f"{NAMESPACE}.{_avro_name(self.schema)}.{_avro_name(self.name)}.v{self.digest()}"

    def avro_row_schema(self) -> dict[str, Any]:
        fields = []
        for i, c in enumerate(self.columns):
            # Every row field is nullable, NOT NULL columns too: a delete's key-only before
            # image and an unchanged TOAST value leave columns without a value.
            fields.append({"name": _field_name(c.name, i),
                           "type": avro_value_type(c.type_oid, c.pg_type),
                           "pg_name": c.name, "pg_type": c.pg_type, "pg_type_oid": c.type_oid,
                           "pg_not_null": c.not_null})
        return {"type": "record", "name": "Row", "namespace": self.avro_namespace(),
                "fields": fields}

    def avro_key_schema(self) -> dict[str, Any]:
        fields = []
        for name in self.primary_key:
            i = self.column_names.index(name)
            c = self.columns[i]
            fields.append({"name": _field_name(c.name, i),
                           "type": avro_value_type(c.type_oid, c.pg_type, nullable=False),
                           "pg_name": c.name})
        return {"type": "record", "name": "Key", "namespace": self.avro_namespace(),
                "fields": fields}

    def avro_field_names(self) -> tuple[str, ...]:
        return tuple(_field_name(c.name, i) for i, c in enumerate(self.columns))

    @classmethod
    def from_avro_envelope(cls, envelope: dict[str, Any]) -> TableSchema:
        row = next(f for f in envelope["fields"] if f["name"] == "before")["type"][1]
        columns = []
        for f in row["fields"]:
            not_null = f.get("pg_not_null",
                             not (isinstance(f["type"], list) and f["type"][0] == "null"))
            columns.append(Column(f["pg_name"], f["pg_type"], int(f["pg_type_oid"]), not_null))
        return cls(envelope["pg_schema"], envelope["pg_table"], tuple(columns),
                   tuple(envelope["pg_primary_key"]))

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name,
                "columns": [[c.name, c.pg_type, c.type_oid, c.not_null] for c in self.columns],
                "primary_key": list(self.primary_key)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableSchema:
        return cls(data["schema"], data["name"],
                   tuple(Column(n, t, int(o), bool(nn)) for n, t, o, nn in data["columns"]),
                   tuple(data["primary_key"]))


_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _avro_name(name: str) -> str:
    if _NAME_OK.match(name):
        return name
    return "x" + hashlib.sha256(name.encode()).hexdigest()[:16]


def _field_name(name: str, index: int) -> str:
    # Avro field names are identifiers; a column called "order id" keeps its real name in
    # pg_name and gets a positional Avro name.
    return name if _NAME_OK.match(name) else f"c{index}_{_avro_name(name)}"

