"""The source's CATALOG, typed: the captured tables (columns with their PostgreSQL types,
keys, foreign keys, natural keys, the DDL that re-creates them), the user types they use
and the extensions that own the others.

The CATALOG travels as JSON (SNAPSHOT and CATALOG messages, every package's manifest):
``Catalog.parse`` reads it once, where it enters, refusing a malformed one with the place
it is wrong; ``to_json`` gives back exactly the JSON it came from (the same keys in the
same order; a key an older journal did not write stays absent), so messages, manifests
and fingerprints written from a parsed catalog are byte-identical to the original. A
table's journal form is ``TableEntry.table_schema()`` (journal/table_schema.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from journal.errors import ValidationError

# The table-version names, importable from here as before the two were split.
from journal.table_schema import (  # noqa: F401
    ARRAY_ELEMENTS,
    NAMESPACE,
    NUMERIC_OID,
    Column,
    TableSchema,
    avro_value_type,
    has_text_fallback,
    oid_of,
    typed_oids,
)

_REQUIRED: Any = object()


class _Fields:
    """One JSON object of a catalog being read, naming its place in every error."""

    def __init__(self, data: Any, where: str, keys: Sequence[str]) -> None:
        if not isinstance(data, Mapping):
            raise ValidationError(f"catalog {where}: expected a JSON object, "
                                  f"not {type(data).__name__}")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise ValidationError(f"catalog {where}: unknown field(s) {unknown}")
        self.data, self.where = data, where
        self.absent: set[str] = set()

    def get(self, key: str, check: Callable[[Any, str], Any], default: Any = _REQUIRED) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise ValidationError(f"catalog {self.where}: missing field {key!r}")
            self.absent.add(key)
            return default
        return check(self.data[key], f"{self.where}: field {key!r}")


def _fail(where: str, what: str, value: Any) -> ValidationError:
    return ValidationError(f"catalog {where} must be {what}, not {value!r}"[:300])


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "a string", value)
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(where, "an integer", value)
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "true or false", value)
    return value


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(where, "a list of strings", value)
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(value))


def _opt_strs(value: Any, where: str) -> tuple[str, ...] | None:
    return None if value is None else _strs(value, where)


def _list(parse: Callable[[Any, str], Any]) -> Callable[[Any, str], tuple[Any, ...]]:
    def check(value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _fail(where, "a list", value)
        return tuple(parse(v, f"{where}[{i}]") for i, v in enumerate(value))
    return check


def _emit(pairs: Sequence[tuple[str, Any]], absent: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in pairs if k not in absent}


@dataclass(frozen=True, slots=True)
class ColumnEntry:
    """A column as the CATALOG describes it."""

    name: str
    pg_type: str  # format_type() text, user types schema-qualified
    type_oid: int
    not_null: bool = False
    default: str | None = None  # the default expression; a generated column's expression
    identity: str = ""  # pg_attribute.attidentity: "a" always, "d" by default, "" none
    generated: str = ""  # pg_attribute.attgenerated: "s" stored, "v" virtual, "" none
    attnum: int | None = None  # which column across renames (journals since oids)
    absent: frozenset[str] = field(default=frozenset(), repr=False)

    _KEYS = ("name", "pg_type", "type_oid", "not_null", "default", "identity", "generated",
             "attnum")

    @classmethod
    def parse(cls, data: Any, where: str) -> ColumnEntry:
        f = _Fields(data, where, cls._KEYS)
        name = f.get("name", _str)
        f.where = f"{where} ({name})"
        return cls(name, f.get("pg_type", _str), f.get("type_oid", _int),
                   f.get("not_null", _bool, False), f.get("default", _opt_str, None),
                   f.get("identity", _str, ""), f.get("generated", _str, ""),
                   f.get("attnum", _int, None), frozenset(f.absent))

    def to_json(self) -> dict[str, Any]:
        return _emit([("name", self.name), ("pg_type", self.pg_type),
                      ("type_oid", self.type_oid), ("not_null", self.not_null),
                      ("default", self.default), ("identity", self.identity),
                      ("generated", self.generated), ("attnum", self.attnum)], self.absent)

    @property
    def uses_sequence(self) -> bool:
        """Filled by an identity or a ``nextval(…)`` default."""
        return fills_from_sequence(self.identity, self.default, self.generated)


@dataclass(frozen=True, slots=True)
class UniqueKey:
    name: str
    columns: tuple[str, ...]

    @classmethod
    def parse(cls, data: Any, where: str) -> UniqueKey:
        f = _Fields(data, where, ("name", "columns"))
        return cls(f.get("name", _str), f.get("columns", _strs))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "columns": list(self.columns)}


@dataclass(frozen=True, slots=True)
class ForeignKeyEntry:
    name: str
    columns: tuple[str, ...]
    ref_table: str  # schema.table
    ref_columns: tuple[str, ...]
    deferrable: bool = False
    ddl: str | None = None  # ALTER TABLE … ADD CONSTRAINT …
    absent: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def parse(cls, data: Any, where: str) -> ForeignKeyEntry:
        f = _Fields(data, where, ("name", "columns", "ref_table", "ref_columns", "deferrable",
                                  "ddl"))
        return cls(f.get("name", _str), f.get("columns", _strs), f.get("ref_table", _str),
                   f.get("ref_columns", _strs), f.get("deferrable", _bool, False),
                   f.get("ddl", _opt_str, None), frozenset(f.absent))

    def to_json(self) -> dict[str, Any]:
        return _emit([("name", self.name), ("columns", list(self.columns)),
                      ("ref_table", self.ref_table), ("ref_columns", list(self.ref_columns)),
                      ("deferrable", self.deferrable), ("ddl", self.ddl)], self.absent)


@dataclass(frozen=True, slots=True)
class SequenceEntry:
    """A sequence owned by a column (serial or identity), the DDL that brings it back, and
    where the source's stood when read (absent when the sequence was gone by then)."""

    name: str  # schema.sequence
    column: str
    ddl: str
    last_value: int | None = None
    is_called: bool | None = None
    absent: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def parse(cls, data: Any, where: str) -> SequenceEntry:
        f = _Fields(data, where, ("name", "column", "ddl", "last_value", "is_called"))
        return cls(f.get("name", _str), f.get("column", _str), f.get("ddl", _str),
                   f.get("last_value", _int, None), f.get("is_called", _bool, None),
                   frozenset(f.absent))

    def to_json(self) -> dict[str, Any]:
        return _emit([("name", self.name), ("column", self.column), ("ddl", self.ddl),
                      ("last_value", self.last_value), ("is_called", self.is_called)],
                     self.absent)


@dataclass(frozen=True, slots=True)
class ReplicaIdentity:
    kind: str  # default, full, nothing, index
    index: str | None = None
    ddl: str | None = None  # None for the default (the primary key)

    @classmethod
    def parse(cls, data: Any, where: str) -> ReplicaIdentity:
        f = _Fields(data, where, ("kind", "index", "ddl"))
        return cls(f.get("kind", _str), f.get("index", _opt_str), f.get("ddl", _opt_str))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "index": self.index, "ddl": self.ddl}


@dataclass(frozen=True, slots=True)
class PartitionEntry:
    """A partition under a partitioned table, parents before their own partitions."""

    schema: str
    name: str
    parent: str  # schema.table, quoted as PostgreSQL quotes it
    ddl: str  # CREATE TABLE … PARTITION OF … FOR VALUES …
    constraints: tuple[str, ...]
    indexes: tuple[str, ...]
    replica_identity: ReplicaIdentity

    @classmethod
    def parse(cls, data: Any, where: str) -> PartitionEntry:
        f = _Fields(data, where, ("schema", "name", "parent", "ddl", "constraints", "indexes",
                                  "replica_identity"))
        return cls(f.get("schema", _str), f.get("name", _str), f.get("parent", _str),
                   f.get("ddl", _str), f.get("constraints", _strs), f.get("indexes", _strs),
                   f.get("replica_identity", ReplicaIdentity.parse))

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "parent": self.parent,
                "ddl": self.ddl, "constraints": list(self.constraints),
                "indexes": list(self.indexes),
                "replica_identity": self.replica_identity.to_json()}


def _attributes(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    pairs = _list(_strs)(value, where)
    if any(len(p) != 2 for p in pairs):
        raise _fail(where, "a list of [name, type] pairs", value)
    return pairs


@dataclass(frozen=True, slots=True)
class TypeEntry:
    """A user-defined type the tables use: enum (``labels``), domain (``base_type``),
    composite (``attributes``) or range (``subtype``), with the DDL that creates it."""

    schema: str
    name: str
    kind: str
    ddl: str
    labels: tuple[str, ...] | None = None
    base_type: str | None = None
    attributes: tuple[tuple[str, str], ...] | None = None
    subtype: str | None = None
    absent: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def parse(cls, data: Any, where: str) -> TypeEntry:
        f = _Fields(data, where, ("schema", "name", "kind", "labels", "base_type",
                                  "attributes", "subtype", "ddl"))
        return cls(f.get("schema", _str), f.get("name", _str), f.get("kind", _str),
                   f.get("ddl", _str), f.get("labels", _strs, None),
                   f.get("base_type", _str, None), f.get("attributes", _attributes, None),
                   f.get("subtype", _str, None), frozenset(f.absent))

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def to_json(self) -> dict[str, Any]:
        return _emit([("schema", self.schema), ("name", self.name), ("kind", self.kind),
                      ("labels", None if self.labels is None else list(self.labels)),
                      ("base_type", self.base_type),
                      ("attributes", None if self.attributes is None
                       else [list(a) for a in self.attributes]),
                      ("subtype", self.subtype), ("ddl", self.ddl)], self.absent)


@dataclass(frozen=True, slots=True)
class ExtensionEntry:
    """An extension that owns types the tables use (citext, hstore…)."""

    name: str
    schema: str
    version: str

    @classmethod
    def parse(cls, data: Any, where: str) -> ExtensionEntry:
        f = _Fields(data, where, ("name", "schema", "version"))
        return cls(f.get("name", _str), f.get("schema", _str), f.get("version", _str))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "schema": self.schema, "version": self.version}


_TABLE_KEYS = ("oid", "schema", "name", "columns", "primary_key", "unique", "foreign_keys",
               "create_table", "constraints", "indexes", "sequences", "replica_identity",
               "partition_key", "partitions", "natural_key")


@dataclass(frozen=True, slots=True)
class TableEntry:
    """One captured table: its columns, its keys, and the DDL that re-creates it.

    ``natural_key`` is the key read_catalog detected (None: the table has none); a
    catalog written before detection has no such field (``natural_key_detected``)."""

    schema: str
    name: str
    columns: tuple[ColumnEntry, ...]
    primary_key: tuple[str, ...] = ()
    unique: tuple[UniqueKey, ...] = ()
    foreign_keys: tuple[ForeignKeyEntry, ...] = ()
    create_table: str | None = None
    constraints: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()
    sequences: tuple[SequenceEntry, ...] = ()
    replica_identity: ReplicaIdentity | None = None
    partition_key: str | None = None
    partitions: tuple[PartitionEntry, ...] = ()
    natural_key: tuple[str, ...] | None = None
    oid: int | None = None  # which relation across renames (journals since oids)
    absent: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def parse(cls, data: Any, where: str = "table") -> TableEntry:
        f = _Fields(data, where, _TABLE_KEYS)
        schema, name = f.get("schema", _str), f.get("name", _str)
        f.where = where = f"table {schema}.{name}"
        entry = cls(
            schema, name, f.get("columns", _list(ColumnEntry.parse)),
            f.get("primary_key", _strs, ()), f.get("unique", _list(UniqueKey.parse), ()),
            f.get("foreign_keys", _list(ForeignKeyEntry.parse), ()),
            f.get("create_table", _str, None), f.get("constraints", _strs, ()),
            f.get("indexes", _strs, ()), f.get("sequences", _list(SequenceEntry.parse), ()),
            f.get("replica_identity", ReplicaIdentity.parse, None),
            f.get("partition_key", _str, None),
            f.get("partitions", _list(PartitionEntry.parse), ()),
            f.get("natural_key", _opt_strs, None), f.get("oid", _int, None),
            frozenset(f.absent))
        entry._check_columns(where)
        return entry

    def _check_columns(self, where: str) -> None:
        known = set(self.column_names)
        if len(known) != len(self.columns):
            raise ValidationError(f"catalog {where}: a column is described twice")
        named = [("primary key", self.primary_key), ("natural key", self.natural_key or ())]
        named += [(f"unique key {u.name!r}", u.columns) for u in self.unique]
        named += [(f"foreign key {k.name!r}", k.columns) for k in self.foreign_keys]
        for what, columns in named:
            missing = [c for c in columns if c not in known]
            if missing:
                raise ValidationError(f"catalog {where}: its {what} names column(s) {missing} "
                                      "the table does not have")

    def to_json(self) -> dict[str, Any]:
        return _emit([
            ("oid", self.oid), ("schema", self.schema), ("name", self.name),
            ("columns", [c.to_json() for c in self.columns]),
            ("primary_key", list(self.primary_key)),
            ("unique", [u.to_json() for u in self.unique]),
            ("foreign_keys", [k.to_json() for k in self.foreign_keys]),
            ("create_table", self.create_table), ("constraints", list(self.constraints)),
            ("indexes", list(self.indexes)),
            ("sequences", [s.to_json() for s in self.sequences]),
            ("replica_identity", None if self.replica_identity is None
             else self.replica_identity.to_json()),
            ("partition_key", self.partition_key),
            ("partitions", [p.to_json() for p in self.partitions]),
            ("natural_key", None if self.natural_key is None else list(self.natural_key)),
        ], self.absent)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def natural_key_detected(self) -> bool:
        return "natural_key" not in self.absent

    def column(self, name: str) -> ColumnEntry | None:
        return next((c for c in self.columns if c.name == name), None)

    def table_schema(self) -> TableSchema:
        """The table version the journal carries: its columns minus generated ones, which
        pgoutput does not send (and the restore computes again)."""
        return TableSchema(self.schema, self.name,
                           tuple(Column(c.name, c.pg_type, c.type_oid, c.not_null)
                                 for c in self.columns if not c.generated),
                           self.primary_key)


@dataclass(frozen=True, slots=True)
class Catalog:
    """The source's CATALOG: the captured tables by "schema.table", the user types they
    use (each before its users) and the extensions that own the others."""

    tables: Mapping[str, TableEntry] = field(default_factory=dict)
    types: tuple[TypeEntry, ...] = ()
    extensions: tuple[ExtensionEntry, ...] = ()
    absent: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def parse(cls, data: Any) -> Catalog:
        """The catalog of its JSON form; ValidationError naming the table and field where
        it is malformed."""
        f = _Fields(data, "", ("types", "extensions", "tables"))
        f.where = "catalog"

        def tables(value: Any, where: str) -> dict[str, TableEntry]:
            if not isinstance(value, Mapping):
                raise _fail(where, "an object of tables by name", value)
            result = {}
            for key, entry in value.items():
                table = TableEntry.parse(entry, f"table {key}")
                if key != table.qualified:
                    raise ValidationError(f"catalog table {key}: its entry describes "
                                          f"{table.qualified}")
                result[key] = table
            return result

        return cls(f.get("tables", tables, {}), f.get("types", _list(TypeEntry.parse), ()),
                   f.get("extensions", _list(ExtensionEntry.parse), ()), frozenset(f.absent))

    def to_json(self) -> dict[str, Any]:
        return _emit([("types", [t.to_json() for t in self.types]),
                      ("extensions", [e.to_json() for e in self.extensions]),
                      ("tables", {n: t.to_json() for n, t in self.tables.items()})],
                     self.absent)


def table_schema(entry: TableEntry | Mapping[str, Any]) -> TableSchema:
    """``TableEntry.table_schema`` of a CATALOG table entry, typed or still in its JSON
    form (readers that have not moved to the typed catalog yet)."""
    if not isinstance(entry, TableEntry):
        entry = TableEntry.parse(entry)
    return entry.table_schema()


def table_schemas(catalog: Catalog | Mapping[str, Any]) -> dict[str, TableSchema]:
    """``table_schema`` of every table of a CATALOG."""
    if not isinstance(catalog, Catalog):
        catalog = Catalog.parse(catalog)
    return {name: t.table_schema() for name, t in catalog.tables.items()}




def natural_key_of(columns: Mapping[str, tuple[bool, int]], primary_key: Sequence[str],
                   unique_keys: Sequence[tuple[str, Sequence[str]]]) -> tuple[str, ...] | None:
    """The natural key DESIGN "Natural keys" names: a unique key, other than the primary
    key, whose columns are all NOT NULL; a single uuid column first, then keys made of
    text columns, then the fewest columns (then the constraint's name). ``columns`` maps a
    column's name to (NOT NULL, type OID); ``unique_keys`` are (constraint name, columns).
    The one rule: capture writes its result into the CATALOG, and a restore of a CATALOG
    written before it did applies it the same way."""
    uuid_oid, text_oids = oid_of("uuid"), frozenset((oid_of("text"), oid_of("varchar")))
    candidates = []
    for name, names in unique_keys:
        if set(names) == set(primary_key) or not all(columns[n][0] for n in names):
            continue
        oids = [columns[n][1] for n in names]
        single_uuid = len(names) == 1 and oids[0] == uuid_oid
        all_text = all(o in text_oids for o in oids)
        candidates.append(((not single_uuid, not all_text, len(names), name), tuple(names)))
    return min(candidates)[1] if candidates else None


def fills_from_sequence(identity: str, default: str | None, generated: str) -> bool:
    """Whether a column is filled from a sequence: an identity column, or a (not
    generated) column whose default is ``nextval(…)`` -- a serial."""
    return bool(identity) or (not generated and (default or "").startswith("nextval("))
