"""The manifest: what a package holds, described once, in ``manifest.json``.

A package is one plain tar file, ``manifest.json`` first, then Avro members. A **full**
package holds one member per table, ``tables/<schema>.<table>.avro``: every row at
``to_position``, sorted by primary key, written with the table's Avro row schema; the DDL
an empty database needs is the catalog in the manifest. A **segment** holds one member,
``events.avro``: the stream records in ``(from_position, to_position]``, whole transactions
only, each kept as the original single-object encoded bytes inside a ``StreamRecord``
(``STREAM_RECORD_SCHEMA``), so any Avro tool decodes every event with the schemas the
manifest carries.

The manifest's bytes are canonical and its package id is derived from them, so an edited
manifest no longer matches its id. Parsing validates it against
``schemas/manifest.schema.json`` and then checks that its parts agree.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

from journal import __version__
from journal.codec import fingerprint
from journal.errors import PackageCorrupt, ValidationError
from journal.positions import Position

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EVENTS = "events.avro"
KINDS = ("full", "segment")

STREAM_RECORD_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "StreamRecord",
    "namespace": "edms_journal.package",
    "doc": "One record of the change stream as the journal transport held it: its "
           "position, its key and its single-object encoded value (C3 01, CRC-64-AVRO "
           "fingerprint, Avro body); the schema of every fingerprint is in the manifest.",
    "fields": [
        {"name": "commit_lsn", "type": "long"},
        {"name": "seq", "type": "long"},
        {"name": "key", "type": ["null", "bytes"], "default": None},
        {"name": "value", "type": "bytes"},
    ],
}

_SAFE_TABLE_PART = re.compile(r"^[A-Za-z0-9_]{1,63}$")
_MEMBER_NAME = re.compile(r"^(events\.avro|tables/[A-Za-z0-9_.-]{1,150}\.avro)$")


@dataclass(frozen=True)
class MemberInfo:
    """One Avro member: its name, SHA-256 (hex), size in the archive, record count.

    ``decoded_bytes`` is the size of its blocks once decompressed (the bound a reader
    holds a member to); ``table`` and ``fingerprint`` (the table's envelope schema, a
    key of ``Manifest.schemas``) are set for the table members of a full package.
    """

    name: str
    sha256: str
    bytes: int
    rows: int
    decoded_bytes: int = 0
    table: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Manifest:
    package_id: str
    kind: str  # "full" | "segment"
    format_version: int
    system_identifier: str
    database: str
    generation: str
    from_position: Position | None  # segment: exclusive lower bound; full: None
    to_position: Position  # inclusive: the state after this position
    first_commit_ts: int | None
    last_commit_ts: int | None
    parent_id: str | None
    members: tuple[MemberInfo, ...]
    catalog: dict[str, Any]
    schemas: dict[str, str]
    marks: tuple[tuple[str, Position, int], ...] = ()
    tool_version: str = __version__
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "package_id": self.package_id,
            "kind": self.kind,
            "system_identifier": self.system_identifier,
            "database": self.database,
            "generation": self.generation,
            "from_position": None if self.from_position is None else str(self.from_position),
            "to_position": str(self.to_position),
            "first_commit_ts": self.first_commit_ts,
            "last_commit_ts": self.last_commit_ts,
            "parent_id": self.parent_id,
            "members": [{"name": m.name, "sha256": m.sha256, "bytes": m.bytes, "rows": m.rows,
                         "decoded_bytes": m.decoded_bytes, "table": m.table,
                         "fingerprint": m.fingerprint} for m in self.members],
            "catalog": self.catalog,
            "schemas": dict(self.schemas),
            "marks": [{"name": n, "position": str(p), "commit_ts": ts} for n, p, ts in self.marks],
            "tool_version": self.tool_version,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        """Parse and validate (JSON schema, then consistency); raises ValidationError."""
        label = d.get("package_id") if isinstance(d, dict) else None
        problems = _validate(d, manifest_schema())
        if problems:
            raise ValidationError(f"manifest of {label or 'package'} does not match its "
                                  f"schema: {'; '.join(problems[:5])}")
        m = cls(
            package_id=d["package_id"], kind=d["kind"], format_version=d["format_version"],
            system_identifier=d["system_identifier"], database=d["database"],
            generation=d["generation"],
            from_position=None if d["from_position"] is None
            else Position.parse(d["from_position"]),
            to_position=Position.parse(d["to_position"]),
            first_commit_ts=d["first_commit_ts"], last_commit_ts=d["last_commit_ts"],
            parent_id=d["parent_id"],
            members=tuple(MemberInfo(**x) for x in d["members"]),
            catalog=d["catalog"], schemas=dict(d["schemas"]),
            marks=tuple((x["name"], Position.parse(x["position"]), x["commit_ts"])
                        for x in d["marks"]),
            tool_version=d["tool_version"], created_at=d["created_at"])
        m.check_consistency()
        return m

    def canonical_bytes(self) -> bytes:
        """The exact bytes of ``manifest.json`` (sorted keys, fixed layout)."""
        return _canonical(self.to_json())

    def derive_id(self) -> str:
        body = self.to_json()
        body.pop("package_id")
        digest = hashlib.sha256(_canonical(body)).hexdigest()
        pos = self.to_position
        return f"{self.kind}-{pos.commit_lsn:016X}-{pos.seq:08X}-{digest[:16]}"

    def with_id(self) -> Manifest:
        return replace(self, package_id=self.derive_id())

    def member(self, name: str) -> MemberInfo:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def table_member(self, table: str) -> MemberInfo:
        for m in self.members:
            if m.table == table:
                return m
        raise ValidationError(f"package {self.package_id} holds no table {table!r} "
                              f"(it holds {', '.join(self.tables()) or 'none'})")

    def tables(self) -> list[str]:
        return [m.table for m in self.members if m.table is not None]

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.members)

    @property
    def size(self) -> int:
        return sum(m.bytes for m in self.members)

    def check_consistency(self) -> None:
        """Its parts agree: kind and positions, members and tables, schemas and their
        fingerprints, and the id derived from the content; raises ValidationError."""
        pid = self.package_id

        def bad(why: str) -> ValidationError:
            return ValidationError(f"manifest of {pid}: {why}")

        if self.kind == "full" and self.from_position is not None:
            raise bad("a full snapshot has no from_position")
        if self.kind == "segment":
            if self.from_position is None:
                raise bad("a segment needs a from_position")
            if not self.from_position < self.to_position:
                raise bad(f"from_position {self.from_position} is not below "
                          f"to_position {self.to_position}")
            if [m.name for m in self.members] != [EVENTS]:
                raise bad(f"a segment holds exactly one member {EVENTS!r}")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise bad("member names repeat")
        if self.kind == "full":
            tables = [m.table for m in self.members]
            if None in tables or len(set(tables)) != len(tables):
                raise bad("every member of a full snapshot names one table, once")
            for m in self.members:
                if m.name != member_name_for(m.table) or m.fingerprint not in self.schemas:
                    raise bad(f"member {m.name!r} does not match table {m.table!r} "
                              "or its schema is missing")
        for fp, text in self.schemas.items():
            try:
                actual = fingerprint(json.loads(text)).hex()
            except Exception as exc:  # a schema that does not even parse
                raise bad(f"schema {fp} does not parse: {exc}") from None
            if actual != fp:
                raise bad(f"schema listed under fingerprint {fp} has fingerprint {actual}")
        if self.derive_id() != pid:
            raise PackageCorrupt(pid, MANIFEST, f"content matching package id {pid}",
                                 f"content of id {self.derive_id()}")


def _canonical(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


@cache
def manifest_schema() -> dict[str, Any]:
    return json.loads(resources.files("schemas").joinpath("manifest.schema.json").read_text())


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The subset of JSON Schema the manifest schema uses; returns the problems found."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_JSON_TYPES[t](value) for t in names):
            return [f"{path}: expected {'/'.join(names)}, found {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{path}: {value[:80]!r} does not match {schema['pattern']}"]
    if isinstance(value, int) and "minimum" in schema and value < schema["minimum"]:
        return [f"{path}: {value} is below {schema['minimum']}"]
    problems: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        problems += [f"{path}: missing {k!r}" for k in schema.get("required", ())
                     if k not in value]
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                problems += _validate(v, props[k], f"{path}.{k}")
            elif extra is False:
                problems.append(f"{path}: unexpected {k!r}")
            elif isinstance(extra, dict):
                problems += _validate(v, extra, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            problems += _validate(v, schema["items"], f"{path}[{i}]")
    return problems


def member_name_for(table: str | None) -> str:
    """``tables/<schema>.<table>.avro``; names that are not plain identifiers get a hash,
    so a member name is always short and safe whatever the table is called."""
    if table is None:
        return EVENTS
    schema, _, name = table.partition(".")
    if _SAFE_TABLE_PART.match(schema) and _SAFE_TABLE_PART.match(name):
        return f"tables/{schema}.{name}.avro"
    return f"tables/t{hashlib.sha256(table.encode()).hexdigest()[:20]}.avro"


def positions_sort_key(m: Manifest) -> tuple[Position, int, str]:
    """Catalogue order: by to_position, a segment before the full folded at its end."""
    return (m.to_position, 0 if m.kind == "segment" else 1, m.package_id)


def is_member_name(name: str) -> bool:
    """A name a package may hold besides the manifest: ``events.avro`` or a table member."""
    return bool(_MEMBER_NAME.match(name))
