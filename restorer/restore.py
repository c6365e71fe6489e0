"""Restore, as a story: plan → verify packages → schema → load → replay → record → report.

Everything that writes happens in one target transaction (a failure, or a dry run,
leaves the target as it was). An empty target gets the source's ids through COPY; a
populated one gets every foreign key remapped through natural keys.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import Catalog, TypeEntry
from journal.config import check_postgres_url, redact
from journal.errors import (
    JournalError,
    PackageCorrupt,
    RestoreError,
    RestoreRefused,
    ValidationError,
)
from journal.events import LogicalMessage
from journal.packages import PackageReader
from journal.positions import ORIGIN, Position
from journal.schema_change import CatalogChange
from journal.targets import RestoreTarget
from journal.transport import JournalReader
from restorer import ddl, evolve, schema, target_schema
from restorer.folded import apply_incremental, foldable, load_folded
from restorer.generic_keys import resolve_generic_foreign_keys
from restorer.graph import TableGraph
from restorer.journal_state import fold
from restorer.key_checks import foreign_keys_checked_once
from restorer.load import load_empty, load_populated
from restorer.natural_keys import (
    NaturalKey,
    disabled,
    infer_natural_key,
    inference_candidates,
    qualify,
    resolve_natural_keys,
)
from restorer.plan import TAIL_ID, Reached, RestorePlan, find_xid, make_plan
from restorer.record import (
    RestoreState,
    read_keymap,
    read_state,
    write_keymap,
    write_state,
)
from restorer.remap import ON_CONFLICT, KeyMap, RowRemapper, refuse_unsafe
from restorer.replay import CatalogTracker, end_position, replay
from restorer.report import RestoreReport, TableCounts, diagnosed, first_line
from restorer.subset import row_closure
from restorer.tail import scan_after_packages, segments, transactions_of
from restorer.target import TargetWriter

log = logging.getLogger(__name__)
REPLAY = ("net", "ordered")
TEMP_BUFFERS = "128MB"
WORK_MEM = "64MB"
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
    # per table: a list of {content_type, object_id} pairs (an empty list: none)
    generic_foreign_keys: dict[str, Any] = field(default_factory=dict)
    strict: bool = False  # refuse generic references to nothing in the restore
    progress: Progress | None = None
    store: Any = None  # a journal.packages.store.PackageStore; default: open_store(packages_url)
    # called between loading and replay (tests inject failures here)
    before_replay: Callable[[psycopg.Connection[Any]], None] | None = None
    # the journal (config's journal_location()): its transactions after the newest
    # package are restored too; empty: the packages alone (--packages-only)
    journal_url: str = ""
    # "net": each row's net change up to the target, applied set-wise (an empty target,
    # or an incremental restore of one; restorer/folded.py); "ordered": every
    # transaction applied in turn (what natural-key restores into a live target do)
    replay: str = "net"
    # a restore into existing tables locks them against other writers for its duration
    # (SHARE ROW EXCLUSIVE: reads go on); how long it waits for writers to finish
    lock_timeout_s: float = 60.0

    def restore_target(self) -> RestoreTarget:
        return RestoreTarget.from_options(time=self.to_time, lsn=self.to_lsn, xid=self.to_xid,
                                          mark=self.to_mark)


class _DryRun(Exception):
    """Rolls the rehearsal back."""


def open_packages(options: RestoreOptions) -> Any:
    if options.store is not None:
        return options.store
    from journal.packages.store import open_store

    return open_store(options.packages_url)


def restore(options: RestoreOptions) -> RestoreReport:
    """Bring the target database to the options' restore target; returns what was done."""
    started = time.monotonic()
    check_postgres_url(options.target_url)
    if options.on_conflict not in ON_CONFLICT:
        raise RestoreError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}")
    if options.replay not in REPLAY:
        raise RestoreError(f"--replay must be one of {', '.join(REPLAY)}")
    target = options.restore_target()
    store = open_packages(options)
    try:
        conn = psycopg.connect(options.target_url)
    except psycopg.OperationalError as exc:
        raise RestoreError(f"cannot connect to the target {redact(options.target_url)}: "
                           f"{first_line(exc)}") from None
    with conn, ExitStack() as closing:
        # the restore's temporary tables (stages, key map) are read and written many times
        # over; in the default 8 MB of local buffers each pass goes through the kernel.
        # Allocated as used, and settable only before a session's first temporary table;
        # a larger setting of the server's or the URL's is kept
        # Likewise the memory of a sort or a hash before it spills to disk (4 MB by
        # default): the restore sorts and joins whole tables' keys and rows; and of an
        # index build (the key map's)
        for name, size in (("temp_buffers", TEMP_BUFFERS), ("work_mem", WORK_MEM),
                           ("maintenance_work_mem", WORK_MEM)):
            conn.execute("SELECT set_config(%(n)s, %(b)s, false) WHERE pg_size_bytes("
                         "current_setting(%(n)s)) < pg_size_bytes(%(b)s)",
                         {"n": name, "b": size})
        conn.commit()
        state = read_state(conn)
        conn.rollback()
        journal, tail, tail_text, manifests = scan_after_packages(  # before any write
            options.journal_url, store, target, state.reached if state else None, closing)
        plan = _plan(store, manifests + ([tail] if tail else []), target, state, options)
        report = RestoreReport(redact(options.target_url), "noop", options.dry_run,
                               str(target), list(plan.package_ids),
                               str(plan.start) if plan.start else None,
                               str(plan.start) if plan.start else None)
        report.journal_tail = tail_text
        if plan.is_noop:
            report.seconds = time.monotonic() - started
            return report
        packaged = [i for i in plan.package_ids if i != TAIL_ID]
        # leased before verification: prune must not remove what is verified, then read
        with store.lease(packaged, "restore"):
            _verify_packages(store, plan)  # before the target is touched
            # a rehearsal writes nothing for others to wait on: it takes no lock and reads
            # one snapshot instead, so its counts hold together while the target is written
            conn.isolation_level = (psycopg.IsolationLevel.REPEATABLE_READ if options.dry_run
                                    else None)
            try:
                with conn.transaction():
                    _run(conn, store, plan, state, options, report, journal)
                    if options.dry_run:
                        raise _DryRun
            except _DryRun:
                pass
            except psycopg.errors.IntegrityError as exc:
                raise RestoreRefused(f"restore refused, the target is unchanged: "
                                     f"{diagnosed(exc)}") from exc
            except psycopg.errors.LockNotAvailable as exc:
                raise RestoreError(
                    f"restore failed, the target is unchanged: {diagnosed(exc)} (waited"
                    f" {options.lock_timeout_s:g} s for another session's uncommitted rows or"
                    " locks; let it finish, or wait longer with --lock-timeout)") from exc
            except psycopg.Error as exc:
                raise RestoreError(f"restore failed, the target is unchanged: "
                                   f"{diagnosed(exc)}") from exc
            except PackageCorrupt as exc:  # found while reading, inside the transaction
                raise ValidationError(f"package {exc.package} failed verification while "
                                      f"loading, nothing was restored: {exc} (the target is "
                                      "unchanged)") from exc
            except JournalError as exc:
                raise type(exc)(f"{exc} (the target is unchanged)") from exc
    report.seconds = time.monotonic() - started
    return report


def lock_tables(conn: psycopg.Connection[Any], catalog: Catalog, tables: list[str],
                timeout_s: float) -> None:
    """Lock the tables a restore writes against other sessions' writes, until it commits:
    what the restore matched, counted and decided stays true while it writes (a row
    another session inserts meanwhile would be a duplicate nothing reports). Waits as
    long as the transaction's lock_timeout (``timeout_s``, for the message)."""
    for name in tables:
        spec = catalog.tables[name]
        ident = sql.Identifier(spec.schema, spec.name)
        try:
            with conn.transaction():
                conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(ident))
        except psycopg.errors.LockNotAvailable:
            holders = [r[0] for r in conn.execute(
                "SELECT DISTINCT pid FROM pg_locks WHERE relation = %s::regclass AND granted"
                " AND pid <> pg_backend_pid() ORDER BY 1",
                (ident.as_string(conn),)).fetchall()]
            raise RestoreError(
                f"{name}: other sessions kept writing or locking it for {timeout_s:g} s"
                f" (backend pid {', '.join(map(str, holders)) or 'unknown'}); a restore"
                " into existing tables locks them against writes until it commits: stop the"
                " writers, or wait longer with --lock-timeout (the target is unchanged)"
            ) from None


def _plan(store: Any, manifests: list[Any], target: RestoreTarget,
          state: RestoreState | None, options: RestoreOptions) -> RestorePlan:
    xid_lsn = find_xid(store, manifests, int(target.value)) if target.kind == "xid" else None  # type: ignore[arg-type]
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
    from journal.packages import verify_chain

    packaged = [m for m in plan.manifests if m.package_id != TAIL_ID]
    for m in packaged:  # the journal's tail was decoded and checked by scan_tail
        try:
            store.verify(m.package_id, decode=False)
        except ValidationError as exc:
            raise ValidationError(f"package {m.package_id} failed verification, nothing was "
                                  f"restored: {exc}") from exc
    if plan.full is not None:  # an incremental plan's chain was checked from its start
        verify_chain(packaged)


def _run(conn: psycopg.Connection[Any], store: Any, plan: RestorePlan,
         state: RestoreState | None, options: RestoreOptions, report: RestoreReport,
         journal: JournalReader | None) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('edms_journal.restore'))")
    conn.execute("SET CONSTRAINTS ALL DEFERRED")
    # the catalog at the plan's start; the stream's schema changes move it on
    catalog = (Catalog.parse(plan.full.catalog) if plan.full is not None
               else _catalog_at_start(store, plan, journal))
    tables = sorted(catalog.tables)
    requested: set[str] = set()
    if options.tables:
        requested = {qualify(t) for t in options.tables}
        unknown = requested - set(tables)
        if unknown:
            raise RestoreError(f"--tables: no table(s) {sorted(unknown)} in the packages")
    graph = TableGraph(catalog)
    wanted = sorted(graph.closure(requested)) if options.tables else tables
    existing = schema.existing_tables(conn, wanted)
    # every wait is bounded: for a table's writers, or a rehearsal's for another session's
    # uncommitted row with a key it writes too
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
        sql.Literal(f"{max(1, int(options.lock_timeout_s * 1000))}ms")))
    if existing and not options.dry_run:
        lock_tables(conn, catalog, sorted(existing), options.lock_timeout_s)
    if state is not None:
        mode = state.mode
    else:
        mode = "empty" if not existing else "remap"
    report.mode = mode
    counts = report.tables
    for t in wanted:
        spec = catalog.tables[t]
        counts[t] = TableCounts(before=schema.row_count(conn, spec) if t in existing else 0)
    keys = resolve_natural_keys(catalog, options.natural_keys)
    generic = resolve_generic_foreign_keys(catalog, options.generic_foreign_keys)
    # in remap mode the key map and the rows seen live in the target's transaction
    keymap = KeyMap.in_target(conn, catalog) if mode == "remap" else KeyMap()
    remapper = RowRemapper(graph, keymap, generic)
    progress = options.progress
    decided: dict[str, Any] = {}

    with ExitStack() as stack:
        full = (stack.enter_context(store.open(plan.full.package_id, verify=False))
                if plan.full is not None else None)
        folded = None
        if options.tables:
            # a subset comes from the journal's state at the target, closed over its FKs
            assert full is not None
            folded = fold(catalog, full.rows, segments(store, plan, stack, journal), plan.cutoff,
                          plan.start, graph.closure(requested))
            subset = row_closure(folded, graph, requested)
            rows_of: Callable[[str], Any] | None = subset.__getitem__
        else:
            rows_of = full.rows if full is not None else None
        content_matched: frozenset[str] = frozenset()
        if mode == "remap":
            decided = _decide_keys(conn, catalog, wanted, keys, remapper, rows_of, state,
                                   options)
            content_matched = frozenset(decided["content"])
            refuse_unsafe(graph, keys, generic, catalog, set(wanted))
        objects = {t: sorted(remapper.object_tables()) for t in generic}
        order = graph.load_order(wanted, soft=objects, identity=mode != "remap")
        writer = TargetWriter(conn, catalog, remapper, keys, counts, remap=mode == "remap",
                              on_conflict=options.on_conflict, dry_run=options.dry_run,
                              content_matched=content_matched, strict=options.strict)
        why_not = (foldable(full, catalog) if full is not None and mode == "empty"
                   and options.replay == "net" and not options.tables else "")
        if why_not:
            log.info("replaying in order: the full snapshot %s cannot be folded: %s",
                     plan.full.package_id if plan.full else None, why_not)
        if options.tables:
            assert folded is not None and rows_of is not None
            _load(conn, mode, catalog, order, rows_of, writer, existing, progress)
            reached = folded.reached or plan.start
        elif why_not is None:
            assert full is not None
            net = load_folded(conn, store, full, catalog, plan, journal, plan.cutoff, plan.start,
                              counts, progress, after_rows=options.before_replay)
            report.replay = "net changes"
            report.net_rewrite = net.rewritten
            report.replay_seconds = net.change_seconds
            report.transactions_replayed = net.transactions
            report.events_replayed = net.events
            reached = net.reached
            catalog, wanted = net.catalog, net.tables
            for t in wanted:
                counts.setdefault(t, TableCounts())
            for t in set(counts) - set(wanted):
                del counts[t]
        elif (net_live := _apply_incremental(conn, store, plan, journal, catalog, order,
                                             mode, options, report, writer)) is not None:
            reached = net_live
        else:
            report.replay = "ordered"
            if rows_of is not None:
                _load(conn, mode, catalog, order, rows_of, writer, existing, progress,
                      package=full, locked=set() if options.dry_run else existing)
            if options.before_replay is not None:
                options.before_replay(conn)
            if mode == "empty":
                # identity writes read nothing back: pipeline them instead of a round
                # trip per event
                writer.pipeline = stack.enter_context(conn.pipeline())
            replay_started = time.monotonic()
            def on_change(before: Catalog, after: Catalog, change: CatalogChange) -> None:
                _on_catalog(conn, before, after, change, mode)
                writer.schema_changed(after)
                if mode == "remap":  # a table created in the stream is remapped too
                    for t, key in resolve_natural_keys(after, options.natural_keys).items():
                        keys.setdefault(t, key)
                    remapper.schema_changed(
                        TableGraph(after),
                        resolve_generic_foreign_keys(after, options.generic_foreign_keys))

            tracker = CatalogTracker(catalog, on_change)
            result = replay(segments(store, plan, stack, journal), writer, plan.cutoff,
                            plan.start or ORIGIN, order, catalog=tracker,
                            progress=(lambda n: progress("replay", n)) if progress else None)
            report.replay_seconds = time.monotonic() - replay_started
            report.transactions_replayed = result.transactions
            report.events_replayed = result.events
            reached = result.reached
            if tracker.catalog != catalog:  # the tables as the last schema change left them
                catalog = tracker.catalog
                wanted = sorted(catalog.tables)
                for t in wanted:
                    counts.setdefault(t, TableCounts())
                for t in set(counts) - set(wanted):
                    del counts[t]
        if mode == "remap":
            writer.apply_generic_fixups(final=True)
    schema.set_sequences(conn, catalog, wanted, empty=mode == "empty")
    report.reached_position = str(reached)
    report.dangling_generic_keys = dict(sorted(writer.dangling.items()))
    report.unresolved_generic_keys = sum(writer.dangling.values())
    report.generic_foreign_keys = {
        g.label: f"{g.content_type} ({g.origin})"
        for t in wanted for g in generic.get(t, ())}
    report.natural_keys = {
        t: f"{', '.join(k.columns)} ({k.origin})" for t in wanted if (k := keys.get(t))}
    report.content_matched = sorted(content_matched)
    for t in wanted:
        counts[t].after = schema.row_count(conn, catalog.tables[t])
        if report.replay == "net changes" and mode == "empty" and plan.full is not None:
            counts[t].inserted = counts[t].after  # each row was written once, as it ends
    head = plan.full or plan.segments[0]
    previous = state.package_ids if state is not None else ()
    write_state(conn, RestoreState(
        Reached(reached, head.system_identifier, head.database, head.generation),
        tuple(previous) + plan.package_ids, mode, tuple(sorted(requested)),
        {"inferred": decided.get("inferred", {}), "tracked": sorted(keymap.tracked)}
        if mode == "remap" else None))
    if mode == "remap":
        write_keymap(conn, keymap)


class _NotNet(Exception):
    """Net changes cannot be applied set-wise here: why."""


def _apply_incremental(conn: psycopg.Connection[Any], store: Any, plan: RestorePlan,
                       journal: JournalReader | None, catalog: Catalog, order: Any, mode: str,
                       options: RestoreOptions, report: RestoreReport,
                       writer: TargetWriter) -> Position | None:
    """An incremental restore into a target whose ids are the source's, by net changes
    applied set-wise, inside a savepoint; None (with the reason in the report) where the
    changes must be replayed in order instead: nothing of the attempt remains."""
    if not (mode == "empty" and plan.full is None and plan.start is not None
            and options.replay == "net"):
        return None
    started = time.monotonic()
    # rows replayed in order by the attempt are counted by the writer: undone with it
    before = {t: dataclasses.replace(c) for t, c in report.tables.items()}
    try:
        with conn.transaction():  # a savepoint
            live = apply_incremental(conn, store, plan, journal, catalog, list(order.tables),
                                     plan.cutoff, plan.start, writer)
            if isinstance(live, str):
                raise _NotNet(live)
    except _NotNet as exc:
        reason = str(exc)
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise  # the connection, not the statements
    except psycopg.Error as exc:  # e.g. unique values that rows swapped
        reason = f"the target refused them set-wise: {diagnosed(exc)}"
    else:
        report.replay = "net changes"
        report.replay_seconds = time.monotonic() - started
        report.transactions_replayed = live.transactions
        report.events_replayed = live.events
        report.ordered_rows = live.ordered_rows
        report.ordered_events = live.ordered_events
        for t, (inserted, updated, deleted) in live.counts.items():
            c = report.tables.setdefault(t, TableCounts())
            c.inserted += inserted
            c.updated += updated
            c.deleted += deleted
        return live.reached
    report.tables.clear()
    report.tables.update(before)
    log.info("net changes replayed in order: %s", reason)
    report.net_rewrite = reason
    return None


def _decide_keys(conn: psycopg.Connection[Any], catalog: Catalog, wanted: list[str],
                 keys: dict[str, NaturalKey | None], remapper: RowRemapper,
                 rows_of: Callable[[str], Any] | None, state: RestoreState | None,
                 options: RestoreOptions) -> dict[str, Any]:
    """How a remapping restore recognises rows: natural keys inferred from the source's
    rows (or, incrementally, as the first restore inferred them), the tables matched by
    content, and the tables whose every mapping the key map keeps. Updates ``keys``."""
    earlier = dict(state.keys or {}) if state is not None else {}
    inferred: dict[str, list[str]] = {}
    off = disabled(options.natural_keys)
    for t in wanted:
        if keys.get(t) is not None or t in off:
            continue
        if state is not None:
            cols = (earlier.get("inferred") or {}).get(t)
        elif rows_of is not None and inference_candidates(catalog.tables[t]):
            column = infer_natural_key(catalog.tables[t], rows_of(t))
            cols = [column] if column else None
        else:
            cols = None
        if cols:
            inferred[t] = list(cols)
            keys[t] = NaturalKey(t, tuple(cols), "inferred from data")
    content = sorted(t for t in wanted if keys.get(t) is None and t not in off)
    # the content types the restore will see, so the object tables are known up front
    remapper.learn_target_content_types(conn)
    if rows_of is not None:
        for ct_table in {g.content_type_table for gs in remapper.generic.values() for g in gs}:
            if ct_table in wanted:
                for row in rows_of(ct_table):
                    remapper.observe(ct_table, row)
    tracked = set(content) | remapper.object_tables() | set(earlier.get("tracked") or ())
    remapper.keymap.tracked.update(tracked)
    if state is not None:
        read_keymap(conn, catalog, remapper.keymap)
    return {"inferred": inferred, "content": content}


def _load(conn: psycopg.Connection[Any], mode: str, catalog: Catalog, order: Any,
          rows_of: Callable[[str], Any], writer: TargetWriter, existing: set[str],
          progress: Progress | None, package: PackageReader | None = None,
          locked: Collection[str] = ()) -> None:
    # ``package``: the full snapshot ``rows_of`` reads, which is COPYed (into the tables
    # of an empty target, into the stages of a populated one) block by block; ``locked``:
    # the tables held against other writers, whose foreign keys may be checked once
    if mode == "empty":
        load_empty(conn, catalog, order, rows_of, writer.counts, progress, package)
        return
    missing = [t for t in order.tables if t not in existing]
    if missing:  # tables the populated target lacks are created as in an empty one
        schema.create_types(conn, catalog)
        schema.create_tables(conn, catalog, missing)
        schema.add_constraints(conn, catalog, missing)
        schema.add_sequences(conn, catalog, missing)
    _check_columns(conn, catalog, [t for t in order.tables if t in existing])
    incoming = ({m.table: m.rows for m in package.manifest.members if m.table in existing}
                if package is not None else {})
    with foreign_keys_checked_once(conn, incoming, locked):
        load_populated(writer, order, rows_of, progress=progress, package=package)
    if missing:
        schema.add_foreign_keys(conn, catalog, missing)


def _check_columns(conn: psycopg.Connection[Any], catalog: Catalog,
                   tables: list[str]) -> None:
    """Every column the packages carry must exist in the populated target."""
    for t in tables:
        spec = catalog.tables[t]
        have = {r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (sql.Identifier(spec.schema, spec.name).as_string(conn),))}
        missing = [c for c in spec.column_names if c not in have]
        if missing:
            raise RestoreError(f"{t} in the target lacks column(s) {missing} that the "
                               "packages carry: migrate the target's schema first")


def _catalog_at_start(store: Any, plan: RestorePlan, journal: JournalReader | None
                      ) -> Catalog:
    """An incremental plan's catalog where the target stands: the one of the package
    before its first segment, moved on by the schema changes of that segment up to the
    plan's start."""
    parent = plan.segments[0].parent_id
    catalog = next((m.catalog for m in store.list() if m.package_id == parent), None)
    if catalog is None:
        raise RestoreError(f"package {parent}, before segment {plan.segments[0].package_id}, "
                           "is not in the store: cannot know the schema the target stands at")
    tracker = CatalogTracker(Catalog.parse(catalog))
    with ExitStack() as stack:
        for tx in transactions_of(store, plan.segments[0], journal, stack):
            if plan.start is None or end_position(tx) > plan.start:
                break
            for record in tx.records:
                if isinstance(record, LogicalMessage):
                    tracker.message(record, apply=False)
    return tracker.catalog


def _on_catalog(conn: psycopg.Connection[Any], before: Catalog, after: Catalog,
                change: CatalogChange, mode: str) -> None:
    """A schema change in the stream, applied at its position (see restorer/evolve.py)."""
    old_tables, new_tables = before.tables, after.tables
    created = [t for t in change.tables if t not in old_tables
               and t not in change.renamed.values()]
    altered = [t for t in change.tables if t not in created]
    if mode == "remap" and (altered or change.dropped or change.types):
        raise RestoreRefused(
            f"the stream changes the schema of {sorted(altered + list(change.dropped))}: a "
            "populated target is not migrated by the restore; restore into an empty "
            "database, or to a point before the change")
    statements: list[evolve.Statement] = []
    if created or change.types:  # enum types the tables need, created or rebuilt
        for spec in after.types:
            if spec.kind == "enum":  # DDL messages carry enum types only
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
        statements += evolve.partition_statements(old, new_tables[t])
    statements += [evolve.drop_statement(t, old_tables.get(t)) for t in change.dropped
                   if t in schema.existing_tables(conn, [t])]
    _run_statements(conn, statements)
    for t in altered:  # constraints and indexes, against the target's own after the columns
        entry = new_tables[t]
        live = target_schema.live_keys(conn, entry.schema, entry.name)
        _run_statements(conn, evolve.key_statements(entry, live))
    if created or altered or change.dropped:
        log.info("schema change applied (%s mode): created %s, changed %s, dropped %s",
                 mode, created, altered, list(change.dropped))


def _enum_change(conn: psycopg.Connection[Any], spec: TypeEntry,
                 catalog: Catalog) -> list[evolve.Statement]:
    labels = target_schema.enum_labels(conn, spec.schema, spec.name)
    if labels is not None and tuple(labels) == spec.labels:
        return []
    columns = target_schema.enum_columns(conn, spec.schema, spec.name)
    defaults = {(t.schema, t.name, c.name): c.default
                for t in catalog.tables.values() for c in t.columns}
    return evolve.enum_statements(labels, spec, columns, defaults)


def _run_statements(conn: psycopg.Connection[Any], statements: list[evolve.Statement]) -> None:
    for s in statements:
        ddl.run(conn, s.kind, s.text, s.schema, s.name)
