"""The closure of a subset: the requested tables' rows plus every row they reference."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from restorer.graph import TableGraph
from restorer.journal_state import JournalState


def row_closure(state: JournalState, graph: TableGraph, requested: Iterable[str]
                ) -> dict[str, list[dict[str, Any]]]:
    """Every row of the ``requested`` tables and, transitively, each row one of them
    references through a foreign key (and nothing else)."""
    requested = set(requested)
    tables = graph.closure(requested)
    # per table: the referenced (columns, value) pairs that pull a row in
    needed: dict[str, set[tuple[tuple[str, ...], tuple[Any, ...]]]] = {t: set() for t in tables}
    chosen: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in tables}
    todo: list[tuple[str, dict[str, Any]]] = [
        (t, row) for t in requested for row in state.rows(t)]
    index = {t: _index(state.rows(t), graph, t) for t in tables}
    while todo:
        table, row = todo.pop()
        if id(row) in chosen[table]:
            continue
        chosen[table][id(row)] = row
        for fk in graph.foreign_keys.get(table, ()):
            value = fk.value_of(row)
            if value is None or fk.ref_table not in tables:
                continue
            key = (fk.ref_columns, value)
            if key not in needed[fk.ref_table]:
                needed[fk.ref_table].add(key)
                todo.extend((fk.ref_table, r) for r in index[fk.ref_table].get(key, ()))
    return {t: list(rows.values()) for t, rows in chosen.items()}


def _index(rows: list[dict[str, Any]], graph: TableGraph, table: str
           ) -> dict[tuple[tuple[str, ...], tuple[Any, ...]], list[dict[str, Any]]]:
    """Rows of ``table`` by every column list a foreign key references them through."""
    ref_columns = {fk.ref_columns for fks in graph.foreign_keys.values() for fk in fks
                   if fk.ref_table == table}
    out: dict[tuple[tuple[str, ...], tuple[Any, ...]], list[dict[str, Any]]] = {}
    for cols in ref_columns:
        for r in rows:
            out.setdefault((cols, tuple(r[c] for c in cols)), []).append(r)
    return out
