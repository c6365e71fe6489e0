"""Generic foreign keys: a content-type column plus an object-id column.

Django's convention (``django.contrib.contenttypes``): a foreign key to the content-type
table in ``content_type_id`` or ``<prefix>_content_type_id``, beside ``object_id`` (or
``object_pk``) with the same prefix. A table may hold any number of them (an activity
stream has an actor, a target and an action object). Pairs are found by that convention
with no configuration, and ``[generic_foreign_keys]`` overrides (or, with an empty list,
disables) the detection per table. Pure decisions over the catalog; no I/O.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from journal.catalog import Catalog, ForeignKeyEntry, TableEntry, oid_of
from journal.errors import ConfigError
from restorer.natural_keys import qualify

DEFAULT_CONTENT_TYPE_TABLE = "public.django_content_type"
DEFAULT_TABLE_FORMAT = "{app_label}_{model}"
_CONTENT_TYPE_COLUMN = re.compile(r"^(?P<prefix>(?:.+_)?)content_type(?:_id)?$")
_OBJECT_ID_COLUMN = re.compile(r"^(?P<prefix>(?:.+_)?)object_(?:id|pk)$")
_UUID_OID = oid_of("uuid")
_TEXT_OIDS = (oid_of("text"), oid_of("varchar"))
_SPEC_KEYS = {"content_type", "object_id", "content_type_table", "table_format", "schema",
              "models"}


@dataclass(frozen=True)
class GenericForeignKey:
    """One (content type, object id) pair of ``table``, resolved to ``<app_label>_<model>``."""

    table: str
    content_type: str
    object_id: str
    content_type_table: str = DEFAULT_CONTENT_TYPE_TABLE
    table_format: str = DEFAULT_TABLE_FORMAT
    schema: str = "public"
    models: Mapping[str, str] = field(default_factory=dict)  # "app_label.model" -> table
    origin: str = "config"  # "config" | "detected"

    @property
    def label(self) -> str:
        return f"{self.table}.{self.object_id}"

    def target_table(self, app_label: str, model: str,
                     known: Collection[str] = ()) -> str:
        """The table of a content type: configured ``models`` entry, else ``table_format``
        (Django's default ``<app_label>_<model>``), else the one known table whose name
        without underscores is the model's (a custom ``db_table`` such as document_type)."""
        if (name := self.models.get(f"{app_label}.{model}")) is not None:
            return qualify(name)
        table = f"{self.schema}.{self.table_format.format(app_label=app_label, model=model)}"
        if table in known or not known:
            return table
        guesses = [t for t in known if t.split(".", 1)[0] == self.schema
                   and t.split(".", 1)[1].replace("_", "") in (model, app_label + model)]
        return guesses[0] if len(guesses) == 1 else table


GenericKeys = Mapping[str, tuple[GenericForeignKey, ...]]


def parse_generic_foreign_keys(configured: Mapping[str, Any]) -> dict[str, tuple[
        GenericForeignKey, ...]]:
    """``[generic_foreign_keys]``: per table a list of ``{content_type = "...", object_id =
    "..."}`` (one such table alone is accepted too; an empty list means none), each with
    optional ``content_type_table``, ``table_format``, ``schema`` and ``models``."""
    out: dict[str, tuple[GenericForeignKey, ...]] = {}
    for table, specs in configured.items():
        entries = [specs] if isinstance(specs, Mapping) else list(specs)
        pairs = []
        for spec in entries:
            if not isinstance(spec, Mapping) or "content_type" not in spec \
                    or "object_id" not in spec:
                raise ConfigError(f"[generic_foreign_keys] {table}: each entry needs "
                                  "content_type and object_id")
            unknown = set(spec) - _SPEC_KEYS
            if unknown:
                raise ConfigError(f"[generic_foreign_keys] {table}: unknown key(s) "
                                  f"{sorted(unknown)} (known: {sorted(_SPEC_KEYS)})")
            pairs.append(GenericForeignKey(
                qualify(table), spec["content_type"], spec["object_id"],
                qualify(spec.get("content_type_table", DEFAULT_CONTENT_TYPE_TABLE)),
                spec.get("table_format", DEFAULT_TABLE_FORMAT), spec.get("schema", "public"),
                dict(spec.get("models", {}))))
        objects = [g.object_id for g in pairs]
        if len(set(objects)) != len(objects):
            raise ConfigError(f"[generic_foreign_keys] {table}: an object_id column is "
                              "declared twice")
        out[qualify(table)] = tuple(pairs)
    return out


def content_type_tables(catalog: Catalog) -> set[str]:
    """Tables shaped like Django's content types: ``app_label`` and ``model`` columns and a
    single-column primary key."""
    return {name for name, spec in catalog.tables.items()
            if {"app_label", "model"} <= set(spec.column_names) and len(spec.primary_key) == 1}


def _content_type_keys(catalog: Catalog, spec: TableEntry) -> list[ForeignKeyEntry]:
    """The single-column foreign keys of ``spec`` into a content-type table."""
    ct_tables = content_type_tables(catalog)
    return [fk for fk in spec.foreign_keys if fk.ref_table in ct_tables and len(fk.columns) == 1]


def detect_generic_foreign_keys(catalog: Catalog, table: str
                                ) -> tuple[tuple[GenericForeignKey, ...], list[str]]:
    """The pairs of ``table`` that follow Django's convention, and the object-id-like
    columns left without a pair (which a remapping restore cannot map by itself)."""
    spec = catalog.tables[table]
    fk_columns = {c for fk in spec.foreign_keys for c in fk.columns}
    ct_columns: dict[str, tuple[str, str]] = {}  # prefix -> (column, content type table)
    content_type_keys = _content_type_keys(catalog, spec)
    for fk in content_type_keys:
        m = _CONTENT_TYPE_COLUMN.match(fk.columns[0])
        if m:
            ct_columns[m.group("prefix")] = (fk.columns[0], fk.ref_table)
    pairs, unpaired = [], []
    for name in spec.column_names:
        m = _OBJECT_ID_COLUMN.match(name)
        if not m or name in fk_columns:
            continue
        found = ct_columns.get(m.group("prefix"))
        if found is None:
            if content_type_keys:
                unpaired.append(name)
            continue
        pairs.append(GenericForeignKey(table, found[0], name, found[1],
                                       schema=table.split(".", 1)[0], origin="detected"))
    return tuple(pairs), unpaired


def resolve_generic_foreign_keys(catalog: Catalog,
                                 configured: Mapping[str, Any] | None = None
                                 ) -> dict[str, tuple[GenericForeignKey, ...]]:
    """Every table's generic foreign keys: configured ones, else the detected ones."""
    config = parse_generic_foreign_keys(configured or {})
    tables = catalog.tables
    for name, pairs in config.items():
        if name not in tables:
            continue  # configuration may name tables this source does not have
        known = set(tables[name].column_names)
        for g in pairs:
            missing = [c for c in (g.content_type, g.object_id) if c not in known]
            if missing:
                raise ConfigError(f"[generic_foreign_keys] {name}: no column(s) {missing} in "
                                  f"that table (it has {sorted(known)})")
    out: dict[str, tuple[GenericForeignKey, ...]] = {}
    for name in tables:
        pairs = config[name] if name in config else detect_generic_foreign_keys(catalog,
                                                                                name)[0]
        if pairs:
            out[name] = pairs
    return out


def unpaired_object_columns(catalog: Catalog, generic: GenericKeys,
                            tables: Collection[str]) -> list[str]:
    """Problems a remapping restore must refuse: object-id columns beside a content-type
    foreign key that neither the convention nor the configuration pairs. Each problem
    says which columns, and gives a configuration entry only when the pairing is certain
    (one content-type column, one object column), so that what it offers works pasted."""
    problems = []
    for name in sorted(tables):
        if name not in catalog.tables:
            continue
        unpaired = detect_generic_foreign_keys(catalog, name)[1]
        declared = {g.object_id for g in generic.get(name, ())}
        left = [c for c in unpaired if c not in declared]
        if not left:
            continue
        ct_cols = [fk.columns[0]
                   for fk in _content_type_keys(catalog, catalog.tables[name])]
        free_ct = [c for c in ct_cols if c not in {g.content_type for g in generic.get(
            name, ())}]
        text = (f"{name}: column(s) {left} look like generic foreign key object ids but "
                f"pair with none of its content-type columns {ct_cols}")
        if len(left) == 1 and len(free_ct) == 1:
            entries = [*(_entry(g.content_type, g.object_id) for g in generic.get(name, ())),
                       _entry(free_ct[0], left[0])]
            text += ("; declare them (all of the table's pairs):\n[generic_foreign_keys]\n"
                     f'"{name}" = [{", ".join(entries)}]')
        else:
            text += ("; declare each of the table's pairs (its content_type and object_id "
                     "columns) as a list under [generic_foreign_keys]")
        problems.append(text)
    return problems


def _entry(content_type: str, object_id: str) -> str:
    return f'{{ content_type = "{content_type}", object_id = "{object_id}" }}'


def object_key(value: Any, table: TableEntry) -> Any:
    """An object id as stored in a generic foreign key (often text), in the type of the
    referenced table's single-column primary key."""
    col = table.column(table.primary_key[0])
    assert col is not None  # a parsed catalog's primary key names its columns
    if isinstance(value, str) and col.pg_type in ("integer", "bigint", "smallint"):
        try:
            return int(value)
        except ValueError:
            return value
    if isinstance(value, str) and col.type_oid == _UUID_OID:
        try:
            return uuid.UUID(value)
        except ValueError:
            return value
    if isinstance(value, int) and col.type_oid in _TEXT_OIDS:
        return str(value)
    return value
