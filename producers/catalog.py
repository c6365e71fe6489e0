"""The CATALOG of the captured tables, read from pg_catalog, and the rows of a table.

The CATALOG is plain JSON (see DESIGN and the stream contract): enough DDL to re-create
the tables in an empty database, plus the keys the restore needs (primary keys, unique
keys, foreign keys, the detected natural key). It is read with an empty ``search_path``,
as pg_dump does, so every name that PostgreSQL prints (types, defaults, constraint and
index definitions) comes out schema-qualified and means the same thing in any database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from journal.catalog import Column, TableSchema
from journal.errors import SourceError
from producers.values import RowLoader, copy_rows

# Tables the journal itself writes into a database (restore state and the like): never
# captured, even when they live in a captured schema.
JOURNAL_TABLE_PREFIX = "journal_"

_UUID_OID = 2950
_TEXT_OIDS = frozenset({25, 1043})  # text, varchar


def read_catalog(conn: psycopg.Connection[Any], schemas: Sequence[str] = ("public",),
                 tables: Sequence[str] = ()) -> dict[str, Any]:
    """The CATALOG of ``tables`` ("schema.table"), or of every ordinary table of ``schemas``."""
    with _empty_search_path(conn), conn.cursor(row_factory=dict_row) as cur:
        oids = _table_oids(cur, schemas, tables)
        types, extensions = _user_types(cur, oids)
        result: dict[str, Any] = {"types": types, "extensions": extensions, "tables": {}}
        for oid in oids:
            entry = _table(cur, oid)
            result["tables"][f"{entry['schema']}.{entry['name']}"] = entry
    return result


def table_schema(catalog_table: dict[str, Any]) -> TableSchema:
    """The journal's schema of one CATALOG table."""
    columns = tuple(Column(c["name"], c["pg_type"], int(c["type_oid"]), bool(c["not_null"]))
                    for c in catalog_table["columns"])
    return TableSchema(catalog_table["schema"], catalog_table["name"], columns,
                       tuple(catalog_table["primary_key"]))


def table_schemas(catalog: dict[str, Any]) -> dict[str, TableSchema]:
    return {name: table_schema(t) for name, t in catalog["tables"].items()}


def tables_without_primary_key(catalog: dict[str, Any]) -> list[str]:
    """Tables that capture cannot key: each needs a primary key (or REPLICA IDENTITY FULL)."""
    return sorted(name for name, t in catalog["tables"].items() if not t["primary_key"])


def detect_natural_key(table_catalog: dict[str, Any]) -> list[str] | None:
    """The natural key per DESIGN "Natural keys": a unique key, other than the primary
    key, whose columns are all NOT NULL; a single uuid column first, then keys made of
    text columns, then the fewest columns. None when the table has none."""
    columns = {c["name"]: c for c in table_catalog["columns"]}
    primary = set(table_catalog["primary_key"])
    candidates = []
    for unique in table_catalog["unique"]:
        names = unique["columns"]
        if set(names) == primary or not all(columns[n]["not_null"] for n in names):
            continue
        oids = [columns[n]["type_oid"] for n in names]
        single_uuid = len(names) == 1 and oids[0] == _UUID_OID
        all_text = all(o in _TEXT_OIDS for o in oids)
        candidates.append(((not single_uuid, not all_text, len(names), unique["name"]), names))
    return list(min(candidates)[1]) if candidates else None


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


def format_types(conn: psycopg.Connection[Any],
                 types: Sequence[tuple[int, int]]) -> list[str]:
    """``format_type(oid, typmod)`` as the CATALOG spells it (user types schema-qualified),
    for readers of pgoutput relation messages that must match the CATALOG's ``pg_type``."""
    if not types:
        return []
    with _empty_search_path(conn):
        rows = conn.execute(
            "SELECT format_type(t.oid, t.typmod) FROM unnest(%s::oid[], %s::int[]) "
            "WITH ORDINALITY AS t(oid, typmod, n) ORDER BY n",
            ([t[0] for t in types], [t[1] for t in types])).fetchall()
    return [r[0] for r in rows]


@contextmanager
def _empty_search_path(conn: psycopg.Connection[Any]) -> Iterator[None]:
    previous = conn.execute("SELECT current_setting('search_path')").fetchone()
    conn.execute("SELECT set_config('search_path', '', false)")
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('search_path', %s, false)", (previous[0],))


def _table_oids(cur: psycopg.Cursor[Any], schemas: Sequence[str],
                tables: Sequence[str]) -> list[int]:
    if tables:
        oids = []
        for qualified in tables:
            schema, dot, name = qualified.partition(".")
            if not dot:
                raise SourceError(f"table {qualified!r}: name it as schema.table")
            row = cur.execute(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'r'",
                (schema, name)).fetchone()
            if row is None:
                raise SourceError(f"table {qualified} does not exist in the source database")
            oids.append(row["oid"])
        return oids
    rows = cur.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind = 'r' AND NOT c.relispartition "
        "AND left(c.relname, %s) <> %s ORDER BY n.nspname, c.relname",
        (list(schemas), len(JOURNAL_TABLE_PREFIX), JOURNAL_TABLE_PREFIX)).fetchall()
    return [r["oid"] for r in rows]


# Every type a column uses, and what those types use in turn (array elements, domain base
# types, composite attributes, range subtypes, a multirange's range).
_USED_TYPES = """
WITH RECURSIVE used(oid) AS (
    SELECT a.atttypid FROM pg_attribute a
    WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
  UNION
    SELECT dep.oid FROM used u JOIN pg_type t ON t.oid = u.oid
    CROSS JOIN LATERAL (
        SELECT e.oid FROM pg_type e WHERE e.typarray = t.oid
        UNION ALL SELECT t.typbasetype WHERE t.typtype = 'd'
        UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid
        UNION ALL SELECT r.rngtypid FROM pg_range r WHERE r.rngmultitypid = t.oid
        UNION ALL SELECT ca.atttypid FROM pg_attribute ca
                  WHERE t.typtype = 'c' AND ca.attrelid = t.typrelid AND ca.attnum > 0
                    AND NOT ca.attisdropped) dep(oid)
)
SELECT t.oid, n.nspname AS schema, t.typname AS name, t.typtype AS kind,
       format('%%I.%%I', n.nspname, t.typname) AS qualified,
       (SELECT array_agg(e.oid) FROM pg_type e WHERE e.typarray = t.oid) AS element,
       x.extname AS extension, xn.nspname AS extension_schema, x.extversion
         AS extension_version,
       CASE WHEN t.typtype = 'c' THEN (SELECT c.relkind FROM pg_class c
                                       WHERE c.oid = t.typrelid)::text END AS relkind
FROM used u
JOIN pg_type t ON t.oid = u.oid
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = t.oid
     AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
LEFT JOIN pg_extension x ON x.oid = d.refobjid
LEFT JOIN pg_namespace xn ON xn.oid = x.extnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def _user_types(cur: psycopg.Cursor[Any], table_oids: list[int]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The user-defined types the tables need, each before the types that use it, and the
    extensions that own the others (citext, hstore…), which the restore creates instead.

    Each type entry has ``schema``, ``name``, ``kind`` (enum, domain, composite, range) and
    the ``ddl`` that creates it; enums keep their ``labels``. Arrays come with their element
    type and multiranges with their range, as PostgreSQL creates them."""
    rows = cur.execute(_USED_TYPES, (table_oids,)).fetchall()
    extensions: dict[str, dict[str, Any]] = {}
    wanted: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r["extension"] is not None:
            extensions[r["extension"]] = {"name": r["extension"],
                                          "schema": r["extension_schema"],
                                          "version": r["extension_version"]}
        elif r["element"] is None and r["kind"] in ("e", "d", "c", "r") and not (
                r["kind"] == "c" and r["relkind"] != "c"):
            wanted[r["oid"]] = r
    element_of = {r["oid"]: r["element"][0] for r in rows if r["element"] is not None}
    entries: dict[int, dict[str, Any]] = {}
    depends: dict[int, set[int]] = {}
    for oid, r in wanted.items():
        entry, uses = _type_entry(cur, oid, r)
        entries[oid] = entry
        uses = {element_of.get(u, u) for u in uses}
        depends[oid] = {u for u in uses if u in wanted and u != oid}
    ordered: list[dict[str, Any]] = []
    done: set[int] = set()

    def visit(oid: int, path: tuple[int, ...]) -> None:
        if oid in done or oid in path:
            return  # PostgreSQL has no type cycles; a path guard costs nothing
        for dep in sorted(depends[oid], key=lambda o: (entries[o]["schema"],
                                                       entries[o]["name"])):
            visit(dep, (*path, oid))
        done.add(oid)
        ordered.append(entries[oid])

    for oid in sorted(entries, key=lambda o: (entries[o]["schema"], entries[o]["name"])):
        visit(oid, ())
    return ordered, [extensions[name] for name in sorted(extensions)]


def _type_entry(cur: psycopg.Cursor[Any], oid: int, r: dict[str, Any]
                ) -> tuple[dict[str, Any], set[int]]:
    """(CATALOG entry, OIDs of the types it uses) of one user type."""
    name = sql.SQL(r["qualified"])  # quoted by PostgreSQL, as pg_dump writes it
    entry: dict[str, Any] = {"schema": r["schema"], "name": r["name"]}
    uses: set[int] = set()
    if r["kind"] == "e":
        e = cur.execute(
            "SELECT array_agg(enumlabel ORDER BY enumsortorder) AS labels, "
            "string_agg(quote_literal(enumlabel), ', ' ORDER BY enumsortorder) AS literals "
            "FROM pg_enum WHERE enumtypid = %s", (oid,)).fetchone()
        ddl = sql.SQL("CREATE TYPE {} AS ENUM ({})").format(name, sql.SQL(e["literals"] or ""))
        entry.update(kind="enum", labels=list(e["labels"] or []))
    elif r["kind"] == "d":
        d = cur.execute(
            """
            SELECT format_type(t.typbasetype, t.typtypmod) AS base, t.typbasetype AS base_oid,
                   t.typnotnull AS not_null, t.typdefault AS "default",
                   CASE WHEN t.typcollation <> b.typcollation
                        THEN format('%%I.%%I', cn.nspname, co.collname) END AS collation,
                   (SELECT array_agg(format('CONSTRAINT %%I %%s', con.conname,
                                            pg_get_constraintdef(con.oid)) ORDER BY con.conname)
                    FROM pg_constraint con WHERE con.contypid = t.oid AND con.contype = 'c')
                     AS checks
            FROM pg_type t JOIN pg_type b ON b.oid = t.typbasetype
            LEFT JOIN pg_collation co ON co.oid = t.typcollation
            LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
            WHERE t.oid = %s
            """, (oid,)).fetchone()
        parts = [sql.SQL("CREATE DOMAIN {} AS {}").format(name, sql.SQL(d["base"]))]
        if d["collation"]:
            parts.append(sql.SQL("COLLATE {}").format(sql.SQL(d["collation"])))
        if d["default"] is not None:
            parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(d["default"])))
        if d["not_null"]:
            parts.append(sql.SQL("NOT NULL"))
        # NOT VALID checks come back validated: the restored rows satisfy them or the
        # restore fails, loudly, inside its transaction
        parts += [sql.SQL(c.removesuffix(" NOT VALID")) for c in d["checks"] or []]
        ddl = sql.SQL(" ").join(parts)
        entry.update(kind="domain", base_type=d["base"])
        uses.add(d["base_oid"])
    elif r["kind"] == "c":
        attributes = cur.execute(
            """
            SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS pg_type,
                   a.atttypid AS type_oid,
                   CASE WHEN a.attcollation <> ty.typcollation
                        THEN format('%%I.%%I', cn.nspname, co.collname) END AS collation
            FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
            JOIN pg_type ty ON ty.oid = a.atttypid
            LEFT JOIN pg_collation co ON co.oid = a.attcollation
            LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
            WHERE t.oid = %s AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """, (oid,)).fetchall()
        fields = []
        for a in attributes:
            field = sql.SQL("{} {}").format(sql.Identifier(a["name"]), sql.SQL(a["pg_type"]))
            if a["collation"]:
                field = sql.SQL("{} COLLATE {}").format(field, sql.SQL(a["collation"]))
            fields.append(field)
            uses.add(a["type_oid"])
        ddl = sql.SQL("CREATE TYPE {} AS ({})").format(name, sql.SQL(", ").join(fields))
        entry.update(kind="composite",
                     attributes=[[a["name"], a["pg_type"]] for a in attributes])
    else:
        g = cur.execute(
            """
            SELECT format_type(r.rngsubtype, NULL) AS subtype, r.rngsubtype AS subtype_oid,
                   format('%%I.%%I', ocn.nspname, oc.opcname) AS opclass, oc.opcdefault,
                   CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation
                        THEN format('%%I.%%I', cn.nspname, co.collname) END AS collation,
                   nullif(r.rngcanonical, 0)::regproc::text AS canonical,
                   nullif(r.rngsubdiff, 0)::regproc::text AS subtype_diff,
                   format('%%I.%%I', mn.nspname, m.typname) AS multirange
            FROM pg_range r
            JOIN pg_type st ON st.oid = r.rngsubtype
            JOIN pg_opclass oc ON oc.oid = r.rngsubopc
            JOIN pg_namespace ocn ON ocn.oid = oc.opcnamespace
            LEFT JOIN pg_collation co ON co.oid = r.rngcollation
            LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
            LEFT JOIN pg_type m ON m.oid = r.rngmultitypid
            LEFT JOIN pg_namespace mn ON mn.oid = m.typnamespace
            WHERE r.rngtypid = %s
            """, (oid,)).fetchone()
        options = [sql.SQL("SUBTYPE = {}").format(sql.SQL(g["subtype"]))]
        if not g["opcdefault"]:
            options.append(sql.SQL("SUBTYPE_OPCLASS = {}").format(sql.SQL(g["opclass"])))
        if g["collation"]:
            options.append(sql.SQL("COLLATION = {}").format(sql.SQL(g["collation"])))
        if g["canonical"]:
            options.append(sql.SQL("CANONICAL = {}").format(sql.SQL(g["canonical"])))
        if g["subtype_diff"]:
            options.append(sql.SQL("SUBTYPE_DIFF = {}").format(sql.SQL(g["subtype_diff"])))
        if g["multirange"]:
            options.append(sql.SQL("MULTIRANGE_TYPE_NAME = {}").format(sql.SQL(g["multirange"])))
        ddl = sql.SQL("CREATE TYPE {} AS RANGE ({})").format(name, sql.SQL(", ").join(options))
        entry.update(kind="range", subtype=g["subtype"])
        uses.add(g["subtype_oid"])
    entry["ddl"] = ddl.as_string(cur.connection)
    return entry, uses


def _table(cur: psycopg.Cursor[Any], oid: int) -> dict[str, Any]:
    names = cur.execute(
        "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,)).fetchone()
    schema, name = names["schema"], names["name"]
    columns = _columns(cur, oid)
    entry: dict[str, Any] = {
        "schema": schema,
        "name": name,
        "columns": [{k: c[k] for k in ("name", "pg_type", "type_oid", "not_null", "default",
                                       "identity", "generated")} for c in columns],
        "primary_key": _primary_key(cur, oid),
        "unique": _unique_keys(cur, oid),
        "foreign_keys": _foreign_keys(cur, oid),
        "create_table": _create_table(cur, schema, name, columns),
        "constraints": _constraints(cur, oid),
        "indexes": _indexes(cur, oid),
        "sequences": _sequences(cur, oid),
    }
    entry["natural_key"] = detect_natural_key(entry)
    return entry


def _columns(cur: psycopg.Cursor[Any], oid: int) -> list[dict[str, Any]]:
    rows = cur.execute(
        """
        SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS pg_type,
               a.atttypid::int AS type_oid, a.attnotnull AS not_null,
               pg_get_expr(d.adbin, d.adrelid) AS expression,
               a.attidentity::text AS identity, a.attgenerated::text AS generated,
               CASE WHEN a.attcollation <> ty.typcollation
                    THEN format('%%I.%%I', cn.nspname, co.collname) END AS collation
        FROM pg_attribute a
        JOIN pg_type ty ON ty.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
        WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """, (oid,)).fetchall()
    for r in rows:
        # A generated column's expression is its "default" in the CATALOG too; "generated"
        # says which it is.
        r["default"] = r["expression"]
    return rows


def _is_sequence_default(column: dict[str, Any]) -> bool:
    return bool(column["identity"]) or (
        not column["generated"] and (column["expression"] or "").startswith("nextval("))


def _create_table(cur: psycopg.Cursor[Any], schema: str, name: str,
                  columns: list[dict[str, Any]]) -> str:
    parts = []
    for c in columns:
        part = sql.SQL("{} {}").format(sql.Identifier(c["name"]), sql.SQL(c["pg_type"]))
        if c["collation"]:
            part = sql.SQL("{} COLLATE {}").format(part, sql.SQL(c["collation"]))
        if c["generated"]:
            kind = "STORED" if c["generated"] == "s" else "VIRTUAL"
            part = sql.SQL("{} GENERATED ALWAYS AS ({}) " + kind).format(
                part, sql.SQL(c["expression"]))
        elif c["expression"] is not None and not _is_sequence_default(c):
            part = sql.SQL("{} DEFAULT {}").format(part, sql.SQL(c["expression"]))
        if c["not_null"]:
            part = sql.SQL("{} NOT NULL").format(part)
        parts.append(part)
    ddl = sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(schema, name), sql.SQL(", ").join(parts))
    return ddl.as_string(cur.connection)


def _primary_key(cur: psycopg.Cursor[Any], oid: int) -> list[str]:
    row = cur.execute(
        """
        SELECT array_agg(a.attname ORDER BY k.n) AS columns
        FROM pg_constraint con
        CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
        WHERE con.conrelid = %s AND con.contype = 'p'
        """, (oid,)).fetchone()
    return list(row["columns"] or [])


def _unique_keys(cur: psycopg.Cursor[Any], oid: int) -> list[dict[str, Any]]:
    # Unique constraints and plain unique indexes alike: both make a key.
    rows = cur.execute(
        """
        SELECT coalesce(con.conname, ic.relname) AS name,
               array_agg(a.attname ORDER BY k.n) AS columns
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = %s AND i.indisunique AND NOT i.indisprimary AND i.indisvalid
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND k.n <= i.indnkeyatts
        GROUP BY 1
        ORDER BY 1
        """, (oid,)).fetchall()
    return [{"name": r["name"], "columns": list(r["columns"])} for r in rows]


def _foreign_keys(cur: psycopg.Cursor[Any], oid: int) -> list[dict[str, Any]]:
    rows = cur.execute(
        """
        SELECT con.conname AS name,
               (SELECT array_agg(a.attname ORDER BY k.n)
                FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
                JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum)
                 AS columns,
               rn.nspname || '.' || rc.relname AS ref_table,
               (SELECT array_agg(a.attname ORDER BY k.n)
                FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
                JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum)
                 AS ref_columns,
               con.condeferrable AS deferrable,
               format('ALTER TABLE ONLY %%I.%%I ADD CONSTRAINT %%I %%s', n.nspname, c.relname,
                      con.conname, pg_get_constraintdef(con.oid)) AS ddl
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class rc ON rc.oid = con.confrelid
        JOIN pg_namespace rn ON rn.oid = rc.relnamespace
        WHERE con.conrelid = %s AND con.contype = 'f'
        ORDER BY con.conname
        """, (oid,)).fetchall()
    return [{"name": r["name"], "columns": list(r["columns"]), "ref_table": r["ref_table"],
             "ref_columns": list(r["ref_columns"]), "deferrable": r["deferrable"],
             "ddl": r["ddl"]} for r in rows]


def _constraints(cur: psycopg.Cursor[Any], oid: int) -> list[str]:
    # Primary key first (the restore creates it before the rest), then by name. NOT NULL
    # constraints (contype 'n', PostgreSQL 18) are already part of create_table.
    rows = cur.execute(
        """
        SELECT format('ALTER TABLE ONLY %%I.%%I ADD CONSTRAINT %%I %%s', n.nspname, c.relname,
                      con.conname, pg_get_constraintdef(con.oid)) AS ddl
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.conrelid = %s AND con.contype IN ('p', 'u', 'c', 'x')
        ORDER BY con.contype <> 'p', con.conname
        """, (oid,)).fetchall()
    return [r["ddl"] for r in rows]


def _indexes(cur: psycopg.Cursor[Any], oid: int) -> list[str]:
    rows = cur.execute(
        """
        SELECT pg_get_indexdef(i.indexrelid) AS ddl
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = %s
          AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                          WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                            AND con.contype IN ('p', 'u', 'x'))
        ORDER BY ic.relname
        """, (oid,)).fetchall()
    return [r["ddl"] for r in rows]


def _sequences(cur: psycopg.Cursor[Any], oid: int) -> list[dict[str, Any]]:
    """Sequences owned by a column (serial or identity), with the DDL that brings the
    sequence and the column's default or identity back after the load."""
    rows = cur.execute(
        """
        SELECT sn.nspname AS seq_schema, s.relname AS seq_name, a.attname AS column,
               a.attidentity::text AS identity, n.nspname AS schema, c.relname AS table,
               format_type(ps.seqtypid, NULL) AS seq_type,
               format('INCREMENT BY %%s MINVALUE %%s MAXVALUE %%s START WITH %%s '
                      'CACHE %%s%%s', ps.seqincrement,
                      ps.seqmin, ps.seqmax, ps.seqstart, ps.seqcache,
                      CASE WHEN ps.seqcycle THEN ' CYCLE' ELSE ' NO CYCLE' END) AS options
        FROM pg_depend d
        JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_namespace sn ON sn.oid = s.relnamespace
        JOIN pg_sequence ps ON ps.seqrelid = s.oid
        JOIN pg_class c ON c.oid = d.refobjid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid = %s AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
        ORDER BY a.attnum
        """, (oid,)).fetchall()
    result = []
    for r in rows:
        seq = sql.Identifier(r["seq_schema"], r["seq_name"])
        table = sql.Identifier(r["schema"], r["table"])
        column = sql.Identifier(r["column"])
        options = sql.SQL(r["options"])
        if r["identity"]:
            kind = "ALWAYS" if r["identity"] == "a" else "BY DEFAULT"
            ddl = sql.SQL(
                "ALTER TABLE ONLY {} ALTER COLUMN {} ADD GENERATED " + kind
                + " AS IDENTITY (SEQUENCE NAME {} {})").format(
                table, column, seq, options)
        else:
            ddl = sql.SQL(
                "CREATE SEQUENCE {seq} AS {seq_type} {options}; "
                "ALTER SEQUENCE {seq} OWNED BY {table}.{column}; "
                "ALTER TABLE ONLY {table} ALTER COLUMN {column} "
                "SET DEFAULT nextval({name}::regclass)"
            ).format(seq=seq, seq_type=sql.SQL(r["seq_type"]), options=options, table=table,
                     column=column, name=sql.Literal(seq.as_string(cur.connection)))
        # where the source's sequence stands (not transactional: read now, never behind
        # the rows read under the same snapshot), so a restore can end where it did
        state = cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(seq)
                            ).fetchone()
        result.append({"name": f"{r['seq_schema']}.{r['seq_name']}", "column": r["column"],
                       "ddl": ddl.as_string(cur.connection),
                       "last_value": int(state["last_value"]),
                       "is_called": bool(state["is_called"])})
    return result
