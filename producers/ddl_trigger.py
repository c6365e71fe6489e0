"""Schema changes as capture sees them: the DDL event trigger, and what its messages mean.

pgoutput sends a relation message only when rows of a changed table follow, and nothing
at all for drops, renames without data, new enum values or constraints. ``journal init``
therefore installs two event triggers (``ddl_command_end`` and ``sql_drop``) whose
function writes a transactional ``pg_logical_emit_message`` with prefix ``DDL_PREFIX``
in the DDL's own transaction: the change gets an exact position in the stream, and the
message carries the changed tables as the CATALOG's own queries (``TABLE_QUERIES``) read
them at that moment, so capture never describes a table with a catalog read "now".

Capture turns each such message into a CATALOG message (``catalog_change``); a change
that the journal cannot express exactly (existing rows whose new values are not in the
stream) is refused here, before anything is written for it.

The trigger function has no exception handler on purpose: PL/pgSQL would run its body in
a subtransaction, and logical decoding then delivers the message after the rows that
followed it in the same transaction. A failure of the function fails the DDL instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import (
    NUMERIC_OID,
    Catalog,
    Column,
    ColumnEntry,
    TableEntry,
    TableSchema,
    TypeEntry,
    oid_of,
)
from journal.errors import SourceError
from journal.events import DDL_PREFIX, PARTITION_TRUNCATE_PREFIX
from journal.schema_change import encode_value
from journal.values import SESSION_SETTINGS, RowLoader
from producers.source_catalog import TABLE_QUERIES, is_captured_kind, table_entry
from producers.source_types import ENUM_TYPES_QUERY, enum_types

SCHEMA = "edms_journal"
_END_FUNCTION = "on_ddl_command_end"
_DROP_FUNCTION = "on_sql_drop"
TRIGGERS = ("edms_journal_ddl_command_end", "edms_journal_sql_drop")
_TRUNCATE_FUNCTION = "on_partition_truncate"
TRUNCATE_TRIGGER = "edms_journal_partition_truncate"
_TRUNCATE_FUNCTION_BODY = f"""
BEGIN
    PERFORM pg_logical_emit_message(true, '{PARTITION_TRUNCATE_PREFIX}',
                                    format('%s.%s', TG_TABLE_SCHEMA, TG_TABLE_NAME));
    RETURN NULL;
END
"""
# on one partition (one %s: its regclass text), so that its TRUNCATE is seen in the stream
_TRUNCATE_TRIGGER_DDL = (
    f'CREATE OR REPLACE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON %s '
    f'FOR EACH STATEMENT EXECUTE FUNCTION "{SCHEMA}"."{_TRUNCATE_FUNCTION}"()')


class SchemaChangeRefused(SourceError):
    """A schema change whose effect on existing rows the stream does not carry."""


# -- the trigger ---------------------------------------------------------------------------

def _in_function(query: str, parameter: str) -> str:
    # psycopg's placeholders become the PL/pgSQL variable; "%%" is a literal "%"
    return query.replace("%%", "\0").replace("%s", parameter).replace("\0", "%")


def _aggregate(query: str, parameter: str) -> str:
    # our own constant query texts, never input
    return ("(SELECT coalesce(jsonb_agg(to_jsonb(q)), '[]'::jsonb) FROM ("  # noqa: S608
            + _in_function(query, parameter) + ") q)")


def _end_function_body() -> str:
    queries = ", ".join(f"'{kind}', {_aggregate(query, 'rel')}"
                        for kind, query in TABLE_QUERIES.items())
    # constant texts of this module and producers.source_catalog, never input
    return f"""
DECLARE
    rels oid[];
    rel oid;
    part oid;
    tables jsonb := '{{}}'::jsonb;
    has_rows boolean;
BEGIN
    -- a new partition gets the trigger that makes a TRUNCATE of it alone visible
    FOR part IN SELECT c.oid FROM pg_event_trigger_ddl_commands() cmd
                JOIN pg_class c ON c.oid = cmd.objid
                WHERE cmd.classid = 'pg_class'::regclass AND cmd.command_tag = 'CREATE TABLE'
                  AND c.relkind = 'r' AND c.relispartition LOOP
        EXECUTE format('{_TRUNCATE_TRIGGER_DDL}', part::regclass);
    END LOOP;
    SELECT coalesce(array_agg(DISTINCT r), '{{}}') INTO rels FROM (
        -- a partition's change is its root's (a partition is described with its root)
        SELECT CASE WHEN c.relkind IN ('r', 'p') THEN coalesce(pg_partition_root(c.oid), c.oid)
                    WHEN c.relkind IN ('i', 'I') THEN
                        (SELECT coalesce(pg_partition_root(i.indrelid), i.indrelid)
                         FROM pg_index i WHERE i.indexrelid = c.oid)
                    WHEN c.relkind = 'S' THEN
                        (SELECT d.refobjid FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                         LIMIT 1)
               END AS r
        FROM pg_event_trigger_ddl_commands() cmd
        JOIN pg_class c ON c.oid = cmd.objid
        WHERE cmd.classid = 'pg_class'::regclass
        UNION ALL
        SELECT coalesce(pg_partition_root(con.conrelid), con.conrelid)
        FROM pg_event_trigger_ddl_commands() cmd
        JOIN pg_constraint con ON con.oid = cmd.objid
        WHERE cmd.classid = 'pg_constraint'::regclass
        UNION ALL
        -- a changed type (a new enum value): every table with a column of it
        SELECT a.attrelid FROM pg_event_trigger_ddl_commands() cmd
        JOIN pg_type ty ON ty.oid = cmd.objid OR ty.typelem = cmd.objid
        JOIN pg_attribute a ON a.atttypid = ty.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE cmd.classid = 'pg_type'::regclass
    ) x
    WHERE r IS NOT NULL
      AND (SELECT relkind FROM pg_class WHERE oid = r) IN ('r', 'p');
    IF cardinality(rels) = 0 THEN
        RETURN;
    END IF;
    FOREACH rel IN ARRAY rels LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', rel::regclass) INTO has_rows;
        tables := tables || jsonb_build_object(rel::text, jsonb_build_object(
            {queries},
            'has_rows', has_rows,
            'missing', (SELECT coalesce(jsonb_object_agg(a.attname,
                                            (a.attmissingval::text::text[])[1]), '{{}}')
                        FROM pg_attribute a
                        WHERE a.attrelid = rel AND a.atthasmissing AND NOT a.attisdropped)));
    END LOOP;
    PERFORM pg_logical_emit_message(true, '{DDL_PREFIX}', jsonb_build_object(
        'tables', tables, 'types', {_aggregate(ENUM_TYPES_QUERY, 'rels')},
        'query', current_query())::text);
END
"""  # noqa: S608


_DROP_FUNCTION_BODY = f"""
DECLARE
    dropped jsonb;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('oid', objid, 'schema', schema_name,
                                        'name', object_name))
    INTO dropped
    FROM pg_event_trigger_dropped_objects()
    WHERE object_type = 'table';
    IF dropped IS NOT NULL THEN
        PERFORM pg_logical_emit_message(true, '{DDL_PREFIX}', jsonb_build_object(
            'dropped', dropped, 'query', current_query())::text);
    END IF;
END
"""  # noqa: S608


def _settings() -> sql.Composable:
    # values printed (an added column's default) in the formats journal.values loads
    return sql.SQL(" ").join(
        sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
        for name, value in SESSION_SETTINGS.items() if name != "client_encoding")


def is_superuser(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def install(conn: psycopg.Connection[Any]) -> None:
    """Create (or replace) the trigger functions and the two event triggers. Needs a
    superuser: PostgreSQL lets no one else create event triggers."""
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        for function, body in ((_END_FUNCTION, _end_function_body()),
                               (_DROP_FUNCTION, _DROP_FUNCTION_BODY)):
            conn.execute(sql.SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS event_trigger LANGUAGE plpgsql "
                "SECURITY DEFINER SET search_path = '' {} AS {}").format(
                sql.Identifier(SCHEMA, function), _settings(), sql.Literal(body)))
        conn.execute(sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql "
            "SECURITY DEFINER SET search_path = '' AS {}").format(
            sql.Identifier(SCHEMA, _TRUNCATE_FUNCTION), sql.Literal(_TRUNCATE_FUNCTION_BODY)))
        for (part,) in conn.execute(
                "SELECT c.oid::regclass::text FROM pg_class c "
                "WHERE c.relkind = 'r' AND c.relispartition").fetchall():
            conn.execute(_TRUNCATE_TRIGGER_DDL.replace("%s", part))  # a regclass's own text
        for trigger, event, function in ((TRIGGERS[0], "ddl_command_end", _END_FUNCTION),
                                         (TRIGGERS[1], "sql_drop", _DROP_FUNCTION)):
            conn.execute(sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(
                sql.Identifier(trigger)))
            conn.execute(sql.SQL("CREATE EVENT TRIGGER {} ON {} EXECUTE FUNCTION {}()").format(
                sql.Identifier(trigger), sql.SQL(event), sql.Identifier(SCHEMA, function)))


def installed(conn: psycopg.Connection[Any]) -> bool:
    """Both event triggers exist and are enabled."""
    row = conn.execute("SELECT count(*) FROM pg_event_trigger WHERE evtname = ANY(%s) "
                       "AND evtenabled <> 'D'", (list(TRIGGERS),)).fetchone()
    return bool(row and row[0] == len(TRIGGERS))


# -- what a DDL message means --------------------------------------------------------------

def catalog_change(previous: dict[str, Any], content: bytes, conn: psycopg.Connection[Any],
                   captured: Callable[[str, str], bool]
                   ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The catalog after the DDL message ``content`` and the change record of the CATALOG
    message, or None when no captured table is concerned. Raises SchemaChangeRefused for
    a change the stream cannot carry exactly. The catalogs are in their JSON form, as
    capture keeps them."""
    result = _catalog_change(Catalog.parse(previous), json.loads(content), conn, captured)
    return None if result is None else (result[0].to_json(), result[1])


def _catalog_change(previous: Catalog, message: dict[str, Any], conn: psycopg.Connection[Any],
                    captured: Callable[[str, str], bool]
                    ) -> tuple[Catalog, dict[str, Any]] | None:
    by_oid = {t.oid: name for name, t in previous.tables.items()}
    tables = dict(previous.tables)
    change: dict[str, Any] = {"tables": [], "renamed": {}, "dropped": [], "types": []}
    partition_of = {f"{p.schema}.{p.name}": root
                    for root, t in previous.tables.items() for p in t.partitions}
    for dropped in message.get("dropped") or []:
        name = by_oid.get(int(dropped["oid"])) or f"{dropped['schema']}.{dropped['name']}"
        if name in partition_of and partition_of[name] not in {
                f"{d['schema']}.{d['name']}" for d in message.get("dropped") or []}:
            raise SchemaChangeRefused(
                f"partition {name} of {partition_of[name]} was dropped: its rows left the "
                "table without a change in the stream. Delete them through the partitioned "
                "table first, or take a new full snapshot (drop the slot and restart "
                "`journal capture`)")
        if name in tables:
            del tables[name]
            change["dropped"].append(name)
    for oid_text, raw in (message.get("tables") or {}).items():
        oid = int(oid_text)
        if not is_captured_kind(raw["names"][0]):
            continue
        entry = TableEntry.parse(table_entry(conn, oid, {k: raw[k] for k in TABLE_QUERIES}),
                                 f"table with oid {oid}")
        name = entry.qualified
        old_name = by_oid.get(oid)
        if not captured(entry.schema, entry.name):
            if old_name is not None:
                raise SchemaChangeRefused(
                    f"table {old_name} was renamed or moved to {name}, which is not captured: "
                    "capture cannot follow it. Add it to [source] schemas/tables, then take "
                    "a new full snapshot (drop the slot and restart `journal capture`)")
            continue
        old = tables.get(old_name) if old_name else None
        if old is not None and old.schema != entry.schema:
            raise SchemaChangeRefused(
                f"table {old_name} was moved to schema {entry.schema}: the journal does "
                "not follow a table across schemas. Take a new full snapshot (drop the slot "
                "and restart `journal capture`)")
        refuse_inexact(name, old, entry, bool(raw.get("has_rows")), raw.get("missing") or {},
                       str(message.get("query") or ""))
        refuse_partition_change(name, old, entry, str(message.get("query") or ""))
        if old_name is not None and old_name != name:
            del tables[old_name]
            change["renamed"][old_name] = name
        tables[name] = entry
        change["tables"].append(name)
        if raw.get("missing"):
            # what existing rows hold in a column added with a (non-volatile) default
            change.setdefault("missing", {})[name] = raw["missing"]
            change.setdefault("missing_values", {})[name] = _values(entry, raw["missing"])
    if not change["tables"] and not change["dropped"]:
        return None
    # the catalog's order is the order types are created in (a domain after its base):
    # a changed enum keeps its place, a new one comes last
    types = {(t.schema, t.name): t for t in previous.types}
    for raw_type in enum_types(message.get("types") or []):
        t = TypeEntry.parse(raw_type, f"type {raw_type['schema']}.{raw_type['name']}")
        if types.get((t.schema, t.name)) != t:
            change["types"].append(t.qualified)
        types[(t.schema, t.name)] = t
    return replace(previous, tables=tables, types=tuple(types.values()),
                   absent=previous.absent - {"tables", "types"}), change


def _values(entry: TableEntry, texts: dict[str, str | None]) -> dict[str, Any]:
    """The journal's values of PostgreSQL texts of ``entry``'s columns."""
    out = {}
    for c in entry.columns:
        if c.name in texts:
            column = Column(c.name, c.pg_type, c.type_oid, c.not_null)
            loader = RowLoader(TableSchema(entry.schema, entry.name, (column,), ()))
            text = texts[c.name]
            out[c.name] = encode_value(
                None if text is None else loader.load_text(0, text.encode()))
    return out


# Type changes that keep every existing value as it is (so the restore's cast gives the
# source's values): widening integers, text and varchar of any length, numeric of the
# same scale.
_INTEGERS = {oid_of("int2"): 0, oid_of("int4"): 1, oid_of("int8"): 2}
_TEXTS = {oid_of("text"), oid_of("varchar")}
_NUMERIC_SCALE = re.compile(r"^numeric(?:\(\d+,(\d+)\))?$")


def value_preserving(old: ColumnEntry, new: ColumnEntry) -> bool:
    """True when changing a column's type from ``old`` to ``new`` leaves every value as
    it was (what a restore that casts the same way reproduces exactly)."""
    a, b = old.type_oid, new.type_oid
    if old.pg_type == new.pg_type:
        return True
    if a in _INTEGERS and b in _INTEGERS:
        return _INTEGERS[a] <= _INTEGERS[b]
    if a in _TEXTS and b in _TEXTS:
        return True
    if a == b == NUMERIC_OID:
        sa, sb = _NUMERIC_SCALE.match(old.pg_type), _NUMERIC_SCALE.match(new.pg_type)
        return bool(sa and sb and sa.group(1) == sb.group(1))
    return False


def refuse_partition_change(name: str, old: TableEntry | None, new: TableEntry,
                            query: str) -> None:
    """Raise SchemaChangeRefused when partitions of ``name`` left it (DETACH: their rows
    vanish from the table) or joined it with rows of their own (ATTACH: rows the stream
    never carried). A partition created empty (CREATE TABLE … PARTITION OF) is followed."""
    if old is None:
        return
    before = {f"{p.schema}.{p.name}" for p in old.partitions}
    after = {f"{p.schema}.{p.name}" for p in new.partitions}
    what = "take a new full snapshot (drop the slot and restart `journal capture`)"
    if before - after:
        raise SchemaChangeRefused(
            f"partition(s) {sorted(before - after)} left {name} (DETACH): their rows left the "
            f"table without a change in the stream. Delete them through {name} first, or "
            f"{what}")
    if after - before and re.search(r"\bATTACH\s+PARTITION\b", query, re.I):
        raise SchemaChangeRefused(
            f"partition(s) {sorted(after - before)} were attached to {name}: rows they already "
            f"held entered the table without a change in the stream. Create the partition "
            f"empty (CREATE TABLE … PARTITION OF) and insert through {name}, or {what}")


def refuse_inexact(name: str, old: TableEntry | None, new: TableEntry,
                   has_rows: bool, missing: dict[str, Any], query: str) -> None:
    """Raise SchemaChangeRefused when existing rows of ``name`` got values that the stream
    will not carry (a table rewrite): a column added with a volatile default or as an
    identity, a type change that converts values."""
    if old is None or not has_rows:
        return  # a new table, or no rows that a rewrite could have changed
    before = {c.attnum: c for c in old.columns}
    what = "take a new full snapshot (drop the slot and restart `journal capture`)"
    for column in new.columns:
        previous = before.get(column.attnum)
        where = f"column {column.name!r} of {name}"
        if previous is None:
            computed = column.default is not None or column.identity
            if computed and not column.generated and column.name not in missing:
                raise SchemaChangeRefused(
                    f"{where} was added with a volatile default or as an identity "
                    f"({column.default or 'identity'}): PostgreSQL rewrote the existing "
                    f"rows with values the stream never carries. Add the column without the "
                    f"default and fill it with UPDATE, or {what}")
            continue
        if previous.pg_type != column.pg_type:
            converted = re.search(r"\bTYPE\b[^;]*\bUSING\b", query, re.I)
            if converted or not value_preserving(previous, column):
                raise SchemaChangeRefused(
                    f"{where} changed type from {previous.pg_type} to {column.pg_type}: "
                    "PostgreSQL converted the existing values in place, and the stream does "
                    f"not carry the results. Convert with UPDATE into a new column, or {what}")
