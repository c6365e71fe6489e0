"""Restore, as a story: plan → verify packages → schema → load → replay → record → report.

Everything that writes happens in one target transaction (a failure, or a dry run,
leaves the target as it was). An empty target gets the source's ids through COPY; a
populated one gets every foreign key remapped through natural keys.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from journal.config import check_postgres_url, redact
from journal.errors import JournalError, PackageCorrupt, RestoreError, ValidationError
from journal.events import LogicalMessage, Transaction
from journal.positions import Position
from journal.schema_change import CatalogChange
from restorer import ddl, evolve, schema, target_schema
from restorer.fold import fold
from restorer.graph import LoadOrder, TableGraph
from restorer.load import load_empty, load_populated
from restorer.natural_keys import qualify, resolve_natural_keys
from restorer.plan import Reached, RestorePlan, RestoreTarget, make_plan
from restorer.remap import ON_CONFLICT, KeyMap, RowRemapper, generic_foreign_keys, refuse_unsafe
from restorer.replay import CatalogTracker, end_position, replay
from restorer.report import RestoreReport, TableCounts
from restorer.state import (
    RestoreState,
    read_keymap,
    read_state,
    write_keymap,
    write_state,
)
from restorer.subset import row_closure
from restorer.target import TargetWriter

log = logging.getLogger(__name__)
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class RestoreOptions:
    target_url: str
    packages_url: str = ""
    to_time: datetime | None = None
    to_lsn: int | None = None
    to_xid: int | None = None
    to_mark: str | None = None
    incremental: bool = False
    tables: tuple[str, ...] = ()
    dry_run: bool = False
    on_conflict: str = "update"
    natural_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    generic_foreign_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    progress: Progress | None = None
    store: Any = None  # a journal.store.PackageStore; default: open_store(packages_url)
    # called between loading and replay (tests inject failures here)
    before_replay: Callable[[psycopg.Connection[Any]], None] | None = None

    def restore_target(self) -> RestoreTarget:
        given = [k for k, v in (("time", self.to_time), ("lsn", self.to_lsn),
                                ("xid", self.to_xid), ("mark", self.to_mark)) if v is not None]
        if len(given) > 1:
            raise RestoreError(f"choose one restore target, not {' and '.join(given)}")
        if self.to_time is not None:
            return RestoreTarget.at_time(self.to_time)
        if self.to_lsn is not None:
            return RestoreTarget("lsn", self.to_lsn)
        if self.to_xid is not None:
            return RestoreTarget("xid", self.to_xid)
        if self.to_mark is not None:
            return RestoreTarget("mark", self.to_mark)
        return RestoreTarget()


class _DryRun(Exception):
    """Rolls the rehearsal back."""


def open_packages(options: RestoreOptions) -> Any:
    if options.store is not None:
        return options.store
    from journal.store import open_store

    return open_store(options.packages_url)


def restore(options: RestoreOptions) -> RestoreReport:
    """Bring the target database to the options' restore target; returns what was done."""
    started = time.monotonic()
    check_postgres_url(options.target_url)
    if options.on_conflict not in ON_CONFLICT:
        raise RestoreError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}")
    target = options.restore_target()
    store = open_packages(options)
    manifests = store.list()
    try:
        conn = psycopg.connect(options.target_url)
    except psycopg.OperationalError as exc:
        raise RestoreError(f"cannot connect to the target {redact(options.target_url)}: "
                           f"{_first_line(exc)}") from None
    with conn:
        state = read_state(conn)
        conn.rollback()
        plan = _plan(store, manifests, target, state, options)
        report = RestoreReport(redact(options.target_url), "noop", options.dry_run,
                               str(target), list(plan.package_ids),
                               str(plan.start) if plan.start else None,
                               str(plan.start) if plan.start else None)
        if plan.is_noop:
            report.seconds = time.monotonic() - started
            return report
        # leased before verification: prune must not remove what is verified, then read
        with store.lease(plan.package_ids, "restore"):
            _verify_packages(store, plan)  # before the target is touched
            try:
                with conn.transaction():
                    _run(conn, store, plan, state, options, report)
                    if options.dry_run:
                        raise _DryRun
            except _DryRun:
                pass
            except psycopg.Error as exc:
                raise RestoreError(f"restore failed, the target is unchanged: "
                                   f"{_first_line(exc)}") from exc
            except PackageCorrupt as exc:  # found while reading, inside the transaction
                raise ValidationError(f"package {exc.package} failed verification while "
                                      f"loading, nothing was restored: {exc} (the target is "
                                      "unchanged)") from exc
            except JournalError as exc:
                raise type(exc)(f"{exc} (the target is unchanged)") from exc
    report.seconds = time.monotonic() - started
    return report


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _plan(store: Any, manifests: list[Any], target: RestoreTarget,
          state: RestoreState | None, options: RestoreOptions) -> RestorePlan:
    xid_lsn = _find_xid(store, manifests, int(target.value)) if target.kind == "xid" else None  # type: ignore[arg-type]
    if state is None:
        if options.incremental:
            raise RestoreError("the target has no journal_restore_state: it was never "
                               "restored; run a restore without --incremental first")
        return make_plan(manifests, target, xid_lsn=xid_lsn)
    if state.tables and options.incremental:
        raise RestoreError("the target holds a subset restore (--tables); an incremental "
                           "restore needs a full one")
    plan = make_plan(manifests, target, reached=state.reached, xid_lsn=xid_lsn)
    if options.incremental or plan.is_noop:
        return plan
    raise RestoreError(
        f"the target was already restored (to {state.reached.position}); continue with "
        "--incremental, or restore into a new database")


def _find_xid(store: Any, manifests: list[Any], xid: int) -> int | None:
    """Commit LSN of the newest transaction with ``xid`` in the segments (scans them)."""
    for m in sorted((m for m in manifests if m.kind == "segment"),
                    key=lambda m: m.to_position, reverse=True):
        with store.open(m.package_id, verify=False) as reader:
            found = [tx.commit_lsn for tx in reader.transactions() if tx.begin.xid == xid]
        if found:
            return max(found)
    return None


def _verify_packages(store: Any, plan: RestorePlan) -> None:
    """Before any write: every package's structure, manifest and the SHA-256 of every
    member, and the chain they form.

    That proves each package holds exactly the bytes its manifest describes. Its records
    are not decoded here, because the restore decodes every one of them anyway, and a
    record that does not decode (or a segment that breaks the stream contract) raises
    while loading -- inside the restore's single target transaction, which then rolls
    back and leaves the target as it was. Decoding up front as well would read and decode
    every package twice. Readers hash each member again as they read it, so a package
    that changes after this check is refused the same way. ``journal packages verify``
    still decodes everything.
    """
    from journal.packages import verify_chain, verify_package

    for m in plan.manifests:
        try:
            found = verify_package(store.path(m.package_id), decode=False)
            if found.package_id != m.package_id:
                raise PackageCorrupt(m.package_id, "manifest.json",
                                     f"package id {m.package_id}",
                                     f"package id {found.package_id}")
        except ValidationError as exc:
            raise ValidationError(f"package {m.package_id} failed verification, nothing was "
                                  f"restored: {exc}") from exc
    if plan.full is not None:  # an incremental plan's chain was checked from its start
        verify_chain(list(plan.manifests))


def _segments(store: Any, plan: RestorePlan, stack: ExitStack
              ) -> Iterator[tuple[Any, Iterator[Transaction]]]:
    for m in plan.segments:
        reader = stack.enter_context(store.open(m.package_id, verify=False))
        yield m, reader.transactions()


def _run(conn: psycopg.Connection[Any], store: Any, plan: RestorePlan,
         state: RestoreState | None, options: RestoreOptions, report: RestoreReport) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('edms_journal.restore'))")
    conn.execute("SET CONSTRAINTS ALL DEFERRED")
    # the catalog at the plan's start; the stream's schema changes move it on (in place)
    catalog = copy.deepcopy(plan.full.catalog if plan.full is not None
                            else _catalog_at_start(store, plan))
    tables = sorted(catalog["tables"])
    requested: set[str] = set()
    if options.tables:
        requested = {qualify(t) for t in options.tables}
        unknown = requested - set(tables)
        if unknown:
            raise RestoreError(f"--tables: no table(s) {sorted(unknown)} in the packages")
    graph = TableGraph(catalog)
    wanted = sorted(graph.closure(requested)) if options.tables else tables
    existing = schema.existing_tables(conn, wanted)
    if state is not None:
        mode = state.mode
    else:
        mode = "empty" if not existing else "remap"
    report.mode = mode
    counts = report.tables
    for t in wanted:
        spec = catalog["tables"][t]
        counts[t] = TableCounts(before=schema.row_count(conn, spec) if t in existing else 0)
    keys = resolve_natural_keys(catalog, options.natural_keys)
    generic = generic_foreign_keys(options.generic_foreign_keys)
    # in remap mode the key map and the rows seen live in the target's transaction
    keymap = KeyMap.in_target(conn, catalog) if mode == "remap" else KeyMap()
    if mode == "remap" and state is not None:
        read_keymap(conn, catalog, keymap)
    remapper = RowRemapper(graph, keymap, generic)
    order = _generic_last(graph.load_order(wanted), graph, generic)
    writer = TargetWriter(conn, catalog, remapper, keys, counts, remap=mode == "remap",
                          on_conflict=options.on_conflict, dry_run=options.dry_run)
    if mode == "remap":
        refuse_unsafe(graph, keys, generic, catalog, set(wanted))
    progress = options.progress

    with ExitStack() as stack:
        if options.tables:
            # a subset comes from the journal's state at the target, closed over its FKs
            full = stack.enter_context(store.open(plan.full.package_id, verify=False))
            folded = fold(catalog, full.rows, _segments(store, plan, stack), plan.cutoff,
                          plan.start, graph.closure(requested))
            rows = row_closure(folded, graph, requested)
            _track_objects(remapper, conn, mode)
            _load(conn, mode, catalog, order, rows.__getitem__, writer, existing, progress)
            reached = folded.reached or plan.start
        else:
            if plan.full is not None:
                _track_objects(remapper, conn, mode)
                full = stack.enter_context(store.open(plan.full.package_id, verify=False))
                _load(conn, mode, catalog, order, full.rows, writer, existing, progress)
            if options.before_replay is not None:
                options.before_replay(conn)
            if mode == "empty":
                # identity writes read nothing back: pipeline them instead of a round
                # trip per event
                writer.pipeline = stack.enter_context(conn.pipeline())
            replay_started = time.monotonic()
            tracker = CatalogTracker(
                copy.deepcopy(catalog),
                lambda before, after, change: _on_catalog(conn, before, after, change, mode,
                                                          writer))
            result = replay(_segments(store, plan, stack), writer, plan.cutoff,
                            plan.start or Position(0, 0), order, catalog=tracker,
                            progress=(lambda n: progress("replay", n)) if progress else None)
            report.replay_seconds = time.monotonic() - replay_started
            report.transactions_replayed = result.transactions
            report.events_replayed = result.events
            reached = result.reached
            if tracker.catalog != catalog:  # the tables as the last schema change left them
                catalog.clear()
                catalog.update(tracker.catalog)
                wanted = sorted(catalog["tables"])
                for t in wanted:
                    counts.setdefault(t, TableCounts())
                for t in set(counts) - set(wanted):
                    del counts[t]
    schema.set_sequences(conn, catalog, wanted)
    report.reached_position = str(reached)
    report.unresolved_generic_keys = remapper.unresolved_generic
    for t in wanted:
        counts[t].after = schema.row_count(conn, catalog["tables"][t])
    head = plan.full or plan.segments[0]
    previous = state.package_ids if state is not None else ()
    write_state(conn, RestoreState(
        Reached(reached, head.system_identifier, head.database, head.generation),
        tuple(previous) + plan.package_ids, mode, tuple(sorted(requested))))
    if mode == "remap":
        write_keymap(conn, keymap)


def _track_objects(remapper: RowRemapper, conn: psycopg.Connection[Any], mode: str) -> None:
    # only remapping reads them; an empty target's replay (pipelined) keeps them in memory
    remapper.track_objects(conn if mode == "remap" else None)


def _generic_last(order: LoadOrder, graph: TableGraph, generic: dict[str, Any]) -> LoadOrder:
    """Tables with a generic foreign key load after the tables their objects live in
    (any of them), unless something references them; content types come first."""
    referenced = {fk.ref_table for fks in graph.foreign_keys.values() for fk in fks}
    last = [t for t in order.tables if t in generic and t not in referenced]
    # content types first (they reference nothing), so object tables are known early
    content_types = {g.content_type_table for g in generic.values()}
    head = [t for t in order.tables if t in content_types and not graph.parents(t)]
    middle = [t for t in order.tables if t not in last and t not in head]
    return LoadOrder(tuple(head + middle + last), order.deferred)


def _load(conn: psycopg.Connection[Any], mode: str, catalog: dict[str, Any], order: Any,
          rows_of: Callable[[str], Any], writer: TargetWriter, existing: set[str],
          progress: Progress | None) -> None:
    if mode == "empty":
        load_empty(conn, catalog, order, rows_of, writer.counts, progress)
        return
    missing = [t for t in order.tables if t not in existing]
    if missing:  # tables the populated target lacks are created as in an empty one
        schema.create_types(conn, catalog)
        schema.create_tables(conn, catalog, missing)
        schema.add_constraints(conn, catalog, missing)
        schema.add_sequences(conn, catalog, missing)
    _check_columns(conn, catalog, [t for t in order.tables if t in existing])
    load_populated(writer, order, rows_of, progress=progress)
    if missing:
        schema.add_foreign_keys(conn, catalog, missing)


def _check_columns(conn: psycopg.Connection[Any], catalog: dict[str, Any],
                   tables: list[str]) -> None:
    """Every column the packages carry must exist in the populated target."""
    for t in tables:
        spec = catalog["tables"][t]
        have = {r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (sql.Identifier(spec["schema"], spec["name"]).as_string(conn),))}
        missing = [c["name"] for c in spec["columns"] if c["name"] not in have]
        if missing:
            raise RestoreError(f"{t} in the target lacks column(s) {missing} that the "
                               "packages carry: migrate the target's schema first")


def _catalog_at_start(store: Any, plan: RestorePlan) -> dict[str, Any]:
    """An incremental plan's catalog where the target stands: the one of the package
    before its first segment, moved on by the schema changes of that segment up to the
    plan's start."""
    parent = plan.segments[0].parent_id
    catalog = next((m.catalog for m in store.list() if m.package_id == parent), None)
    if catalog is None:
        raise RestoreError(f"package {parent}, before segment {plan.segments[0].package_id}, "
                           "is not in the store: cannot know the schema the target stands at")
    tracker = CatalogTracker(copy.deepcopy(catalog))
    with store.open(plan.segments[0].package_id, verify=False) as reader:
        for tx in reader.transactions():
            if plan.start is None or end_position(tx) > plan.start:
                break
            for record in tx.records:
                if isinstance(record, LogicalMessage):
                    tracker.message(record, apply=False)
    return tracker.catalog


def _on_catalog(conn: psycopg.Connection[Any], before: dict[str, Any], after: dict[str, Any],
                change: CatalogChange, mode: str, writer: TargetWriter) -> None:
    """A schema change in the stream, applied at its position (see restorer/evolve.py)."""
    old_tables, new_tables = before.get("tables", {}), after.get("tables", {})
    created = [t for t in change.tables if t not in old_tables
               and t not in change.renamed.values()]
    altered = [t for t in change.tables if t not in created]
    if mode == "remap" and (altered or change.dropped or change.types):
        raise RestoreError(
            f"the stream changes the schema of {sorted(altered + list(change.dropped))}: a "
            "populated target is not migrated by the restore; restore into an empty "
            "database, or to a point before the change")
    statements: list[evolve.Statement] = []
    if created or change.types:  # enum types the tables need, created or rebuilt
        for spec in after.get("types", []):
            statements += _enum_change(conn, spec, after)
    existing = schema.existing_tables(conn, list(new_tables))
    statements += [s for t in created if t not in existing  # a populated target may have it
                   for s in evolve.create_statements(new_tables[t], existing)]
    renamed_from = {new: old for old, new in change.renamed.items()}
    for t in altered:
        old = old_tables.get(renamed_from.get(t, t))
        if old is None:
            raise RestoreError(f"{t} changed in the stream but its previous schema is unknown")
        statements += evolve.table_statements(old, new_tables[t], change.missing.get(t, {}))
    statements += [evolve.drop_statement(t, old_tables.get(t)) for t in change.dropped
                   if t in schema.existing_tables(conn, [t])]
    _run_statements(conn, statements)
    for t in altered:  # constraints and indexes, against the target's own after the columns
        entry = new_tables[t]
        live = target_schema.live_keys(conn, entry["schema"], entry["name"])
        _run_statements(conn, evolve.key_statements(entry, live))
    writer.schema_changed(after)
    if created or altered or change.dropped:
        log.info("schema change applied (%s mode): created %s, changed %s, dropped %s",
                 mode, created, altered, list(change.dropped))


def _enum_change(conn: psycopg.Connection[Any], spec: dict[str, Any],
                 catalog: dict[str, Any]) -> list[evolve.Statement]:
    labels = target_schema.enum_labels(conn, spec["schema"], spec["name"])
    if labels == spec["labels"]:
        return []
    columns = target_schema.enum_columns(conn, spec["schema"], spec["name"])
    defaults = {(t["schema"], t["name"], c["name"]): c.get("default")
                for t in catalog.get("tables", {}).values() for c in t["columns"]}
    old = None if labels is None else {"labels": labels}
    return evolve.enum_statements(old, spec, columns, defaults)


def _run_statements(conn: psycopg.Connection[Any], statements: list[evolve.Statement]) -> None:
    for s in statements:
        ddl.run(conn, s.kind, s.text, s.schema, s.name)
