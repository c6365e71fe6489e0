"""What a CATALOG message in the stream means: the catalog after it, and what changed.

One meaning for every consumer (compactor, fold, restore): the message names the tables
its DDL created or changed (their entries in its catalog are exact at its position), the
tables renamed and dropped, and the enum types changed; every other table keeps the entry
the consumer already had. A message without a change record (journals written before
schema changes were tracked) replaces the catalog as a whole.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from journal.catalog import Catalog
from journal.errors import ValidationError


@dataclass(frozen=True)
class CatalogChange:
    tables: tuple[str, ...] = ()  # created or changed, by their new names
    renamed: dict[str, str] = field(default_factory=dict)  # old name -> new name
    dropped: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    # per table, the value existing rows hold in a column added with a default: as
    # PostgreSQL's text (for the restore's ALTER TABLE) and as the journal's value (fold)
    missing: dict[str, dict[str, str | None]] = field(default_factory=dict)
    missing_values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def touches(self, name: str) -> bool:
        return name in self.tables or name in self.dropped or name in self.renamed


def parse(content: bytes, where: object) -> tuple[Catalog, CatalogChange | None]:
    """The message's catalog and change record (None for a whole-catalog message)."""
    try:
        data = json.loads(content)
        raw_catalog = data["catalog"]
        raw = data.get("change")
        change = None
        if raw is not None:
            values = {table: {c: decode_value(v) for c, v in columns.items()}
                      for table, columns in raw.get("missing_values", {}).items()}
            change = CatalogChange(tuple(raw.get("tables", ())), dict(raw.get("renamed", {})),
                                   tuple(raw.get("dropped", ())), tuple(raw.get("types", ())),
                                   dict(raw.get("missing", {})), values)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValidationError(f"catalog message at {where} is not "
                              f"{{\"catalog\": ..., \"change\": ...}}: {exc}") from None
    try:
        return Catalog.parse(raw_catalog), change
    except ValidationError as exc:
        raise ValidationError(f"catalog message at {where}: {exc}") from None


def apply(previous: Catalog, content: bytes, where: object) -> tuple[Catalog, CatalogChange]:
    """The catalog after the CATALOG message ``content``, and what it changed."""
    catalog, change = parse(content, where)
    if change is None:
        old, new = previous.tables, catalog.tables
        change = CatalogChange(
            tuple(sorted(n for n in new if old.get(n) != new[n])), {},
            tuple(sorted(set(old) - set(new))),
            tuple(sorted(t.qualified for t in catalog.types if t not in previous.types)))
        return catalog, change
    tables = dict(previous.tables)
    for name in change.dropped:
        tables.pop(name, None)
    for old_name in change.renamed:
        tables.pop(old_name, None)
    for name in change.tables:
        if name not in catalog.tables:
            raise ValidationError(f"catalog message at {where} changes table {name} but does "
                                  "not describe it")
        tables[name] = catalog.tables[name]
    by_name = {(t.schema, t.name): t for t in previous.types}
    for t in catalog.types:
        by_name[(t.schema, t.name)] = t
    types = tuple(by_name[k] for k in sorted(by_name))
    return replace(previous, tables=tables, types=types,
                   absent=previous.absent - {"tables", "types"}), change


# -- journal values in JSON ----------------------------------------------------------------
# A column value as the journal holds it (what a decoded row holds), for the change record;
# anything JSON has no exact form for is tagged.

def encode_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, list):
        return {"list": [encode_value(v) for v in value]}
    for kind, cls in _TAGGED:
        if isinstance(value, cls):
            if kind == "bytes":
                return {kind: base64.b64encode(value).decode()}
            return {kind: value.isoformat() if hasattr(value, "isoformat") else str(value)}
    raise ValueError(f"no JSON form for a {type(value).__name__} value")


def decode_value(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    (kind, text), = data.items()
    if kind == "list":
        return [decode_value(v) for v in text]
    if kind == "float":
        return float(text)
    if kind == "bytes":
        return base64.b64decode(text)
    parse = {"datetime": datetime.fromisoformat, "date": date.fromisoformat,
             "time": time.fromisoformat, "decimal": Decimal, "uuid": uuid.UUID}.get(kind)
    if parse is None:
        raise ValidationError(f"unknown value kind {kind!r} in a catalog message")
    return parse(text)


# datetime before date: a datetime is a date too
_TAGGED: tuple[tuple[str, type], ...] = (
    ("datetime", datetime), ("date", date), ("time", time), ("decimal", Decimal),
    ("uuid", uuid.UUID), ("bytes", bytes))
