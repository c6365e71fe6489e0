"""What a remapping restore says when it refuses a row: the row's source key, what the
target holds, PostgreSQL's own words for a violated constraint, and a way out."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import Catalog
from restorer.natural_keys import config_line
from restorer.net_apply import aliased


def key_text(columns: Sequence[str], key: Sequence[Any]) -> str:
    return ", ".join(f"{c}={v!r}" for c, v in zip(columns, key, strict=False)) or "(no key)"


def refused_match(table: str, what: str, pk: Sequence[str], source_key: Sequence[Any]) -> str:
    """--on-conflict fail, and the target holds the row: ``what`` says how it matched."""
    return (f"{table}: a row with {what} already exists in the target (source row "
            f"{key_text(pk, source_key)}; --on-conflict fail); choose --on-conflict update "
            "or --on-conflict skip to use the target's row")


def no_fresh_id(table: str, pk: Sequence[str], source_key: Sequence[Any],
                catalog: Catalog) -> str:
    return (f"{table}: the target already has a row with primary key "
            f"{key_text(pk, source_key)}, the key is not generated (so no fresh id can be "
            "given) and no natural key matched it" + suggestion(table, catalog))


def suggestion(table: str, catalog: Catalog, columns: Sequence[str] = ()) -> str:
    """A journal.toml entry that makes the row match instead of collide, when there is one
    that works: the violated key's own columns, or an identifier-like column."""
    spec = catalog.tables.get(table)
    known = set(spec.column_names) if spec is not None else set()
    if columns and set(columns) <= known:
        cols = ", ".join(f'"{c}"' for c in columns)
        return (f"; to match such rows by these columns instead, add to journal.toml:\n"
                f'[natural_keys]\n"{table}" = [{cols}]')
    line = config_line(table, catalog)
    return f"; to match such rows by a natural key, add to journal.toml:\n{line}" if line else ""


_DETAIL_KEY = re.compile(r"^Key \((?P<cols>.+?)\)=\((?P<values>.*)\)")


def detail_key(exc: psycopg.Error) -> tuple[list[str], list[str]]:
    """The columns and values (as text) a violation's DETAIL names; empty if none."""
    m = _DETAIL_KEY.match((exc.diag.message_detail or "").strip())
    if not m:
        return [], []
    return ([c.strip().strip('"') for c in m.group("cols").split(",")],
            [v.strip() for v in m.group("values").split(",")])


def rows_holding(conn: psycopg.Connection[Any], exc: psycopg.Error, relation: sql.Composable,
                 select: Sequence[str], limit: int
                 ) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
    """The columns and values ``exc``'s DETAIL names, and the ``select`` columns of up to
    ``limit`` rows of ``relation`` holding them (compared as text, in a savepoint): no
    rows where the DETAIL names none, or spells a value otherwise than the column's text."""
    columns, values = detail_key(exc)
    if not columns or len(columns) != len(values):
        return columns, values, []
    try:
        with conn.transaction():
            rows = conn.execute(sql.SQL("SELECT {} FROM {} t WHERE {} LIMIT {}").format(
                aliased("t", select), relation, sql.SQL(" AND ").join(
                    sql.SQL("t.{}::text = %s").format(sql.Identifier(c)) for c in columns),
                sql.Literal(limit)), values).fetchall()
    except psycopg.Error:  # a column the relation lacks, a value spelled otherwise
        return columns, values, []
    return columns, values, [tuple(r) for r in rows]


def violation_message(table: str, exc: psycopg.Error, pk: Sequence[str],
                      rows: Sequence[Mapping[str, Any]], mapped: Sequence[Mapping[str, Any]],
                      catalog: Catalog) -> str:
    """``table``: what PostgreSQL refused (constraint and DETAIL), the source row that
    caused it (the one of ``rows`` whose ``mapped`` form holds the DETAIL's values), and
    what avoids it."""
    diag = exc.diag
    primary = (diag.message_primary or str(exc)).strip()
    detail = (diag.message_detail or "").strip()
    text = f"{table}: {primary}"
    if diag.constraint_name:
        text += f" (constraint {diag.constraint_name})"
    if detail:
        text += f"; DETAIL: {detail}"
    columns, values = detail_key(exc)
    if columns and len(values) == len(columns):
        for source, out in zip(rows, mapped, strict=False):
            if all(str(out.get(c)) == v for c, v in zip(columns, values, strict=True)):
                text += f"; source row {key_text(pk, [source.get(c) for c in pk])}"
                break
    if isinstance(exc, psycopg.errors.UniqueViolation):
        text += suggestion(table, catalog, columns)
        text += " (then --on-conflict update or skip decides what happens to the match)"
    return text
