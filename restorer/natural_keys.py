"""Natural keys: how a row is recognised in a database whose surrogate ids differ.

Resolution per table: configuration (``[natural_keys]`` in journal.toml) → the catalog's
detected key (a unique constraint whose columns are all NOT NULL and not the surrogate
primary key, uuid and text columns preferred) → a primary key other than one integer column
(a text session key, a composite key) → none. A natural key may contain a foreign
key (a permission's content type); its value is then compared through the referenced
row's own natural key, which is why tables are matched parents first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from journal.errors import ConfigError

_INTEGER_TYPES = ("integer", "bigint", "smallint")
_PREFERRED_OIDS = {2950, 25, 1043, 1042}  # uuid, text, varchar, char


@dataclass(frozen=True)
class NaturalKey:
    table: str
    columns: tuple[str, ...]
    origin: str  # "config" | "catalog" | "primary key"


def qualify(name: str) -> str:
    """``auth_user`` -> ``public.auth_user``; qualified names are kept."""
    return name if "." in name else f"public.{name}"


def is_surrogate_key(table: Mapping[str, Any]) -> bool:
    """A single integer primary key filled by a sequence or an identity."""
    pk = table.get("primary_key") or []
    if len(pk) != 1:
        return False
    col = next((c for c in table["columns"] if c["name"] == pk[0]), None)
    if col is None or col["pg_type"] not in _INTEGER_TYPES:
        return False
    if col.get("identity") or "nextval(" in (col.get("default") or ""):
        return True
    return any(s.get("column") == pk[0] for s in table.get("sequences", []))


def _single_integer_key(table: Mapping[str, Any]) -> bool:
    pk = table.get("primary_key") or []
    types = {c["name"]: c["pg_type"] for c in table["columns"]}
    return len(pk) == 1 and types.get(pk[0]) in _INTEGER_TYPES


def detect_natural_key(table: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The best unique, all-NOT-NULL column set that is not the surrogate primary key."""
    columns = {c["name"]: c for c in table["columns"]}
    pk = tuple(table.get("primary_key") or ())
    candidates = []
    for unique in table.get("unique", []):
        cols = tuple(unique["columns"])
        if cols == pk or not all(columns.get(c, {}).get("not_null") for c in cols):
            continue
        preferred = sum(columns[c]["type_oid"] in _PREFERRED_OIDS for c in cols)
        candidates.append((-preferred, len(cols), cols))
    if candidates:
        return min(candidates)[2]
    return None


def resolve_natural_keys(catalog: Mapping[str, Any],
                         configured: Mapping[str, tuple[str, ...]] | None = None
                         ) -> dict[str, NaturalKey | None]:
    """The natural key of every table of ``catalog`` (None: the table has none)."""
    tables = catalog.get("tables", {})
    config = {qualify(k): tuple(v) for k, v in (configured or {}).items()}
    for name, cols in config.items():
        if name not in tables:
            continue  # configuration may name tables this source does not have
        known = {c["name"] for c in tables[name]["columns"]}
        missing = [c for c in cols if c not in known]
        if missing or not cols:
            raise ConfigError(f"[natural_keys] {name}: no column(s) {missing} in that table "
                              f"(it has {sorted(known)})")
    keys: dict[str, NaturalKey | None] = {}
    for name, table in tables.items():
        if name in config:
            keys[name] = NaturalKey(name, config[name], "config")
        elif table.get("natural_key"):
            keys[name] = NaturalKey(name, tuple(table["natural_key"]), "catalog")
        elif "natural_key" not in table and (cols := detect_natural_key(table)):
            keys[name] = NaturalKey(name, cols, "catalog")
        elif table.get("primary_key") and not _single_integer_key(table):
            keys[name] = NaturalKey(name, tuple(table["primary_key"]), "primary key")
        else:
            keys[name] = None
    return keys


def config_line(table: str, catalog: Mapping[str, Any]) -> str:
    """A journal.toml line that would give ``table`` a natural key, as a suggestion."""
    t = catalog.get("tables", {}).get(table, {})
    candidates = [c["name"] for c in t.get("columns", [])
                  if c.get("not_null") and c["name"] not in (t.get("primary_key") or [])]
    cols = ", ".join(f'"{c}"' for c in candidates[:2]) or '"<column>"'
    return f'[natural_keys]\n"{table}" = [{cols}]'
