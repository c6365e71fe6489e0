"""The user types the captured tables use, read from pg_catalog: enums, domains,
composites and ranges (with what they are built on, in dependency order), and the
extensions that own types.

The CATALOG carries them so the restore can create them before the tables; the DDL event
trigger reads the enums with the same query.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

ENUM_TYPES_QUERY = """
        SELECT n.nspname AS schema, t.typname AS name,
               array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels,
               format('CREATE TYPE %%I.%%I AS ENUM (%%s)', n.nspname, t.typname,
                      string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder))
                 AS ddl
        FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.oid IN (
            SELECT coalesce(nullif(ty.typelem, 0), ty.oid)
            FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
            WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped)
        GROUP BY n.nspname, t.typname
        ORDER BY n.nspname, t.typname
        """


def enum_types(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CATALOG type entries from the rows of ``ENUM_TYPES_QUERY``."""
    return [{"schema": r["schema"], "name": r["name"], "kind": "enum",
             "labels": list(r["labels"]), "ddl": r["ddl"]} for r in rows]


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


def user_types(cur: psycopg.Cursor[Any], table_oids: list[int]
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


# A relation's replica identity (alias c, its namespace n, its identity index ri): its kind,
# the index, and the DDL that gives a re-created relation the same (None for the default).
