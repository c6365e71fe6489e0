"""Package benchmarks: compaction events/s, fold rows/s and peak RSS per table size,
package bytes per row and write and fold rows/s against ``pg_dump -Fc`` of the same rows
(timed in the same run), verify MB/s.

    python bench/packages.py                       # 1M and 5M rows
    python bench/packages.py --rows 100000,500000  # scaled down
    python bench/packages.py --pg postgresql://…   # the server for the pg_dump comparison
                                                   # (default: $JOURNAL_TEST_PG18_URL)

Each table size runs in its own child process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from journal.catalog import Column, TableSchema  # noqa: E402
from journal.codec import SchemaRegistry, encode  # noqa: E402
from journal.events import ChangeEvent, TransactionMarker  # noqa: E402
from journal.positions import Position  # noqa: E402

DOCUMENT = TableSchema("public", "bench_document", (
    Column("id", "bigint", 20, True),
    Column("uuid", "uuid", 2950, True),
    Column("title", "character varying(200)", 1043, True),
    Column("status", "text", 25, True),
    Column("size_bytes", "integer", 23, False),
    Column("created", "timestamp with time zone", 1184, True),
), ("id",))
T0 = 1_780_000_000_000_000
STATUSES = ("draft", "review", "approved", "archived")


def document(i: int, version: int = 0) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    return {"id": i, "uuid": uuid.UUID(int=(i * 2654435761) % (1 << 128)),
            "title": f"Contract {i:08d} revision {version} for customer {i % 9973}",
            "status": STATUSES[(i + version) % 4], "size_bytes": (i * 7919) % 10_000_000,
            "created": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i * 37)}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one table size (child process) ----------------------------------------------------------

def run_size(rows: int, workdir: Path) -> dict[str, Any]:
    from journal.fold import fold
    from journal.packages import PackageBuilder, open_package, verify_package
    from journal.sorting import SortedRowSink

    # the rows are made a chunk at a time outside the clock: pg_dump, timed beside it, reads
    # rows that already exist
    write_s = 0.0
    builder = PackageBuilder("full", workdir)
    sink = SortedRowSink(builder, DOCUMENT, workdir)
    for start in range(0, rows, 10_000):
        chunk = [document(i) for i in range(start, min(rows, start + 10_000))]
        started = time.perf_counter()
        for row in chunk:
            sink.write(row)
        write_s += time.perf_counter() - started
    started = time.perf_counter()
    sink.close()
    tmp, base_m = builder.finish(system_identifier="1", database="bench", generation="g",
                                 to_position=Position(1 << 32, 1), first_commit_ts=T0,
                                 last_commit_ts=T0)
    base_path = workdir / "base.tar"
    tmp.rename(base_path)
    write_s += time.perf_counter() - started

    # a segment updating 1% of the rows (spread over the key range) and inserting 0.1%
    registry = SchemaRegistry()
    seg_builder = PackageBuilder("segment", workdir)
    events = seg_builder.events()
    lsn, changes = (1 << 32) + 0x100, 0
    step = 100
    for start in range(0, rows, step * 1000):
        records: list[Any] = [TransactionMarker("BEGIN", "bench", Position(lsn, 0), 1, T0)]
        for i in range(start, min(rows, start + step * 1000), step):
            records.append(ChangeEvent("u", "bench", DOCUMENT, Position(lsn, len(records)), 1,
                                       T0, None, document(i, 1)))
        records.append(ChangeEvent("c", "bench", DOCUMENT, Position(lsn, len(records)), 1, T0,
                                   None, document(rows + start // step)))
        n = len(records) - 1
        records.append(TransactionMarker("END", "bench", Position(lsn, n + 1), 1, T0, n))
        for r in records:
            key, value = encode(r, registry)
            events.write(r.position, key, value)
        changes += n
        last = records[-1].position
        lsn += 0x100
    seg_builder.add_schemas({fp.hex(): s for fp, s in registry.items()})
    tmp, seg_m = seg_builder.finish(system_identifier="1", database="bench", generation="g",
                                    from_position=base_m.to_position, to_position=last,
                                    first_commit_ts=T0, last_commit_ts=T0,
                                    parent_id=base_m.package_id)
    seg_path = workdir / "segment.tar"
    tmp.rename(seg_path)

    started = time.perf_counter()
    out, folded = fold(open_package(base_path, verify=False), [open_package(seg_path)], workdir)
    fold_s = time.perf_counter() - started
    size = out.stat().st_size
    started = time.perf_counter()
    verify_package(out)
    verify_s = time.perf_counter() - started
    return {"rows": rows, "changes": changes, "write_rows_per_s": rows / write_s,
            "fold_rows_per_s": folded.rows / fold_s, "fold_s": fold_s,
            "package_bytes": size, "bytes_per_row": size / folded.rows,
            "verify_mb_per_s": size / verify_s / 1e6, "verify_s": verify_s,
            "peak_rss_mb": _rss_mb()}


# -- compaction ------------------------------------------------------------------------------

def run_compaction(transactions: int, workdir: Path) -> dict[str, Any]:
    from journal.compactor import Compactor, Policy
    from journal.packages.store import open_store
    from journal.transport import open_reader, open_writer

    url = f"file://{workdir}/journal"
    registry = SchemaRegistry()
    writer = open_writer(url, "bench")
    import json as _json

    from journal.events import SNAPSHOT_PREFIX, LogicalMessage

    content = _json.dumps({"generation": "g", "system_identifier": "1", "database": "bench",
                           "catalog": {}}).encode()
    snap = [TransactionMarker("BEGIN", "bench", Position(1 << 32, 0), 0, T0),
            LogicalMessage("bench", SNAPSHOT_PREFIX, content, True, Position(1 << 32, 1), 0, T0),
            TransactionMarker("END", "bench", Position(1 << 32, 2), 0, T0, 0)]
    encoded = [(r.position, *encode(r, registry)) for r in snap]
    lsn, events = (1 << 32) + 0x100, 0
    for t in range(transactions):
        recs: list[Any] = [TransactionMarker("BEGIN", "bench", Position(lsn, 0), t, T0 + t)]
        for k in range(5):
            i = t * 5 + k
            recs.append(ChangeEvent("c", "bench", DOCUMENT, Position(lsn, len(recs)), t, T0 + t,
                                    None, document(i)))
        recs.append(TransactionMarker("END", "bench", Position(lsn, 6), t, T0 + t, 5))
        encoded += [(r.position, *encode(r, registry)) for r in recs]
        events += len(recs)
        lsn += 0x100
    writer.publish_schemas(registry)
    for position, key, value in encoded:
        writer.append(position, key, value)
    writer.flush()
    writer.close()
    store = open_store(f"file://{workdir}/packages")
    started = time.perf_counter()
    stats = Compactor(open_reader(url, "bench"), store,
                      Policy(segment_max_events=50_000, snapshot_every_segments=0)).run(once=True)
    elapsed = time.perf_counter() - started
    return {"records": stats.records, "segments": stats.segments,
            "events_per_s": stats.records / elapsed, "changes_per_s": transactions * 5 / elapsed}


# -- pg_dump comparison ----------------------------------------------------------------------

def pg_dump_figures(server_url: str, rows: int, workdir: Path) -> tuple[int, float]:
    """(bytes, seconds) of ``pg_dump -Fc`` of the same rows, in a database of their own."""
    import psycopg
    from psycopg import sql

    from journal.embedded import default_bindir

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db_url = server_url.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_document (id bigint PRIMARY KEY, uuid uuid NOT NULL,"
                         " title varchar(200) NOT NULL, status text NOT NULL, size_bytes integer,"
                         " created timestamptz NOT NULL)")
            with conn.cursor().copy("COPY bench_document FROM STDIN") as copy:
                for i in range(rows):
                    d = document(i)
                    copy.write_row([d[c] for c in DOCUMENT.column_names])
        out = workdir / "dump.pgdump"
        started = time.perf_counter()
        subprocess.run([str(default_bindir() / "pg_dump"), "-Fc", "-t", "bench_document",
                        "-f", str(out), db_url], check=True)
        return out.stat().st_size, time.perf_counter() - started
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="table sizes, comma-separated")
    parser.add_argument("--transactions", type=int, default=20_000,
                        help="transactions (5 changes each) for the compaction figure")
    parser.add_argument("--pg", default=os.environ.get("JOURNAL_TEST_PG18_URL"),
                        help="PostgreSQL server URL for the pg_dump comparison")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workdir = Path(tempfile.mkdtemp(prefix="bench-packages-"))
        try:
            print(json.dumps(run_size(args.child, workdir)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-packages-"))
    try:
        c = run_compaction(args.transactions, workdir)
        print(f"compaction: {c['events_per_s']:,.0f} events/s "
              f"({c['changes_per_s']:,.0f} changes/s; {c['records']} records, "
              f"{c['segments']} segments)")
        sizes = [int(x) for x in args.rows.split(",") if x]
        results = []
        for rows in sizes:
            out = subprocess.run([sys.executable, __file__, "--child", str(rows)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{rows:>9} rows: fold {r['fold_rows_per_s']:,.0f} rows/s "
                  f"({r['fold_s']:.1f} s, {r['changes']} changes folded), "
                  f"write {r['write_rows_per_s']:,.0f} rows/s, "
                  f"{r['bytes_per_row']:.1f} bytes/row, verify {r['verify_mb_per_s']:.1f} MB/s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
        if args.pg and results:
            rows = sizes[0]
            dump, seconds = pg_dump_figures(args.pg, rows, workdir)
            ours = results[0]["bytes_per_row"]
            print(f"size vs pg_dump -Fc ({rows} rows): package {ours:.1f} bytes/row, "
                  f"pg_dump {dump / rows:.1f} bytes/row, ratio {ours / (dump / rows):.2f}")
            dumped = rows / seconds
            write, fold = results[0]["write_rows_per_s"], results[0]["fold_rows_per_s"]
            print(f"speed vs pg_dump -Fc ({rows} rows): pg_dump {dumped:,.0f} rows/s; package "
                  f"write {write / dumped:.2f}x, fold {fold / dumped:.2f}x (goal >= 0.5x)")
        else:
            print("pg_dump comparison skipped: no --pg server (set JOURNAL_TEST_PG18_URL)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
