"""The foreign-key graph of a catalog: load order, cycles, and the closure of a subset.

Parents load before children. A cycle (``document.current_version_id`` ↔
``document_version.document_id``, or a self-reference such as ``folder.parent_id``) is
broken at a nullable foreign key: those columns load as NULL and are set in a second
pass, once every row of the cycle has its target id. A cycle with no nullable edge
cannot be loaded row by row and is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from journal.catalog import Catalog, TableEntry
from journal.errors import RestoreError


@dataclass(frozen=True)
class ForeignKey:
    table: str  # schema.table of the referencing (child) table
    name: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    deferrable: bool
    nullable: bool  # every referencing column may be NULL

    def value_of(self, row: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The referenced key in ``row``, or None when any part is NULL (no reference)."""
        columns = self.columns
        if len(columns) == 1:  # nearly every key: asked once per row and foreign key
            v = row.get(columns[0])
            return None if v is None else (v,)
        value = tuple(row.get(c) for c in columns)
        return None if any(v is None for v in value) else value


@dataclass(frozen=True)
class LoadOrder:
    tables: tuple[str, ...]  # parents first
    deferred: frozenset[tuple[str, str]]  # (table, fk name) loaded NULL, set in a second pass

    def deferred_keys(self, table: str, foreign_keys: Iterable[ForeignKey]) -> list[ForeignKey]:
        return [fk for fk in foreign_keys if (table, fk.name) in self.deferred]


class TableGraph:
    """Tables and foreign keys of one CATALOG."""

    def __init__(self, catalog: Catalog) -> None:
        self.tables: dict[str, TableEntry] = dict(catalog.tables)
        self.foreign_keys: dict[str, list[ForeignKey]] = {t: [] for t in self.tables}
        for name, table in self.tables.items():
            not_null = {c.name for c in table.columns if c.not_null}
            for fk in table.foreign_keys:
                self.foreign_keys[name].append(ForeignKey(
                    name, fk.name, fk.columns, fk.ref_table, fk.ref_columns, fk.deferrable,
                    not (set(fk.columns) & not_null)))

    def parents(self, table: str) -> set[str]:
        return {fk.ref_table for fk in self.foreign_keys.get(table, ())
                if fk.ref_table in self.tables}

    def load_order(self, tables: Iterable[str] | None = None,
                   soft: Mapping[str, Iterable[str]] | None = None, *,
                   identity: bool = False) -> LoadOrder:
        """Topological order of ``tables`` (default: all), cycles broken at nullable FKs.
        With ``identity`` (rows keep their keys: the foreign keys are created after the
        rows, or deferred), any edge of a cycle may be broken.

        ``soft`` edges (table -> tables it would rather follow: a generic foreign key's
        object tables) are honoured where they close no cycle; where they would, the
        caller copes with rows arriving first (pending fix-ups)."""
        wanted = set(self.tables if tables is None else tables)
        edges = {t: {fk.ref_table: [] for fk in self.foreign_keys.get(t, ())
                     if fk.ref_table in wanted} for t in wanted}
        for t in wanted:
            for fk in self.foreign_keys.get(t, ()):
                if fk.ref_table in wanted:
                    edges[t][fk.ref_table].append(fk)
        deferred: set[tuple[str, str]] = set()
        while True:
            cycle = _find_cycle(edges)
            if cycle is None:
                break
            deferred |= self._break(cycle, edges, identity)
        parents = {t: set(p) for t, p in edges.items()}
        for child in sorted(soft or {}):
            for parent in sorted(set((soft or {})[child])):
                if child in wanted and parent in wanted and parent != child \
                        and child not in _ancestors(parents, parent):
                    parents[child].add(parent)
        order = _topological(parents)
        return LoadOrder(tuple(order), frozenset(deferred))

    def _break(self, cycle: list[str], edges: dict[str, dict[str, list[ForeignKey]]],
               identity: bool = False) -> set[tuple[str, str]]:
        """Remove one edge of ``cycle`` whose foreign keys are all nullable (with
        ``identity``, failing that, one edge whose foreign keys are all deferrable, or
        any)."""
        pairs = list(zip(cycle, cycle[1:] + cycle[:1], strict=True))
        rules = [lambda fk: fk.nullable]
        if identity:
            rules += [lambda fk: fk.deferrable, lambda fk: True]
        for rule in rules:
            for child, parent in pairs:
                fks = edges[child][parent]
                if all(rule(fk) for fk in fks):
                    del edges[child][parent]
                    return {(child, fk.name) for fk in fks}
        names = " -> ".join(cycle + cycle[:1])
        raise RestoreError(
            f"foreign keys form a cycle with no nullable column ({names}): rows cannot be "
            "loaded in any order while their keys are remapped; make one of these foreign "
            "keys nullable or restore into an empty database")

    def closure(self, tables: Iterable[str]) -> set[str]:
        """``tables`` plus every table they reference, transitively."""
        seen: set[str] = set()
        todo = list(tables)
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            todo.extend(self.parents(t) - seen)
        return seen


def _ancestors(parents: Mapping[str, set[str]], table: str) -> set[str]:
    """Every table ``table`` follows, transitively."""
    seen: set[str] = set()
    todo = [table]
    while todo:
        for p in parents.get(todo.pop(), ()):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def _find_cycle(edges: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
    """One cycle (as its list of nodes) of the child -> parent graph, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for parent in sorted(edges.get(node, {})):
            if state.get(parent) == 1:
                return stack[stack.index(parent):]
            if parent not in state:
                found = visit(parent)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _topological(parents: dict[str, set[str]]) -> list[str]:
    """Kahn's algorithm, alphabetical among ready tables so the order is reproducible."""
    remaining = {t: set(p) - {t} for t, p in parents.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(t for t, p in remaining.items() if not p)
        if not ready:  # cannot happen once cycles are broken
            raise RestoreError(f"foreign-key cycle among {sorted(remaining)}")
        for t in ready:
            order.append(t)
            del remaining[t]
        for p in remaining.values():
            p.difference_update(ready)
    return order
