"""Capture throughput, latency and memory, against the local services (not a test).

    python bench/capture.py [--rows 1000000] [--steady-seconds 20] [--profile]

1. Backlog: ``--rows`` row changes (multi-row inserts, then multi-row updates, 1,000 rows
   a transaction) are committed while capture is stopped; then ``journal capture`` (a
   separate process) drains them into Kafka. Events/s = row changes / time from the slot
   becoming active until the slot is confirmed past the last commit (confirmation is
   every second, so the figure is slightly pessimistic).
2. ``pg_recvlogical`` (pgoutput, to /dev/null) reads the same changes from a second slot.
3. Steady state: single-row transactions at 2,000/s from four connections for
   ``--steady-seconds`` (paced by a server-side procedure), with capture running;
   p50/p99 of commit→Kafka-acknowledgement.
4. The capture processes' peak RSS and the backlog drain's CPU time per event (``wait4``
   rusage): on a machine shared with other work, CPU per event varies less than events/s.
``--profile`` also runs the backlog drain in-process under cProfile and prints the top
entries by cumulative and by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from journal.config import Config  # noqa: E402
from journal.positions import parse_lsn  # noqa: E402
from tests import services  # noqa: E402
from tests.support.databases import scratch_database  # noqa: E402

BATCH = 1000
TABLE_DDL = """
CREATE TABLE bench_item (
    id bigint PRIMARY KEY,
    grp integer NOT NULL,
    qty numeric(12,2) NOT NULL,
    label text NOT NULL,
    updated timestamptz NOT NULL DEFAULT now()
)"""


def _lsn(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    return parse_lsn(row[0]) if row and row[0] else 0


def _write_toml(path: Path, cfg: Config) -> None:
    path.write_text(
        f'[source]\nurl = "{cfg.source_url}"\nslot = "{cfg.slot}"\n'
        f'tables = ["public.bench_item"]\nheartbeat_interval_s = {cfg.heartbeat_interval_s}\n'
        f'[journal]\nurl = "{cfg.journal_url}"\ntopic_prefix = "{cfg.topic_prefix}"\n'
        f'[state]\ndir = "{cfg.state_dir}"\n')


def _start_capture(toml: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "JOURNAL_CONFIG": str(toml)}
    return subprocess.Popen([sys.executable, "-m", "journal", "capture", "--json", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], int, float]:
    """(final counters, peak RSS in KiB, CPU seconds) of a capture process."""
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"capture exited {proc.returncode}")
    return json.loads(out or "{}"), usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def _backlog(url: str, rows: int, first_id: int = 1) -> tuple[int, int]:
    """Commit ``rows`` row changes on ids from ``first_id``; (changes, end LSN)."""
    inserts = rows // 2
    with psycopg.connect(url, autocommit=True) as conn:
        last = first_id + inserts - 1
        for start in range(first_id, last + 1, BATCH):
            conn.execute("INSERT INTO bench_item (id, grp, qty, label) "
                         "SELECT g, g %% 100, (g %% 100000) * 1.5, 'item ' || g "
                         "FROM generate_series(%s::bigint, %s::bigint) g",
                         (start, min(start + BATCH - 1, last)))
        last = first_id + rows - inserts - 1
        for start in range(first_id, last + 1, BATCH):
            conn.execute("UPDATE bench_item SET qty = qty + 1, updated = now() "
                         "WHERE id BETWEEN %s AND %s", (start, min(start + BATCH - 1, last)))
        return rows, _lsn(conn, "SELECT pg_current_wal_lsn()::text")


def _wait_confirmed(url: str, slot: str, end_lsn: int, timeout: float = 3600) -> float:
    """Seconds from the slot becoming active until it is confirmed at or past end_lsn."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                           (slot,)).fetchone()[0] is None:
            if time.monotonic() > deadline:
                raise SystemExit("capture never started")
            time.sleep(0.01)
        started = time.monotonic()
        while _lsn(conn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                   "WHERE slot_name = %s", slot) < end_lsn:
            if time.monotonic() > deadline:
                raise SystemExit("capture did not catch up")
            time.sleep(0.02)
        return time.monotonic() - started


def _pg_recvlogical(url: str, slot: str, end_lsn: int) -> float:
    from journal.embedded import default_bindir
    from journal.positions import format_lsn

    cmd = [str(default_bindir() / "pg_recvlogical"), "-d", url, "--slot", slot, "--start",
           "--endpos", format_lsn(end_lsn), "-o", "proto_version=1",
           "-o", "publication_names=edms_journal", "-f", "/dev/null", "--no-loop"]
    started = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.monotonic() - started


STEADY_PROCEDURE = """
CREATE OR REPLACE PROCEDURE bench_steady(first_id bigint, n integer, rate double precision)
LANGUAGE plpgsql AS $$
DECLARE
    started double precision := extract(epoch FROM clock_timestamp());
    delay double precision;
BEGIN
    FOR i IN 0 .. n - 1 LOOP
        delay := started + i / rate - extract(epoch FROM clock_timestamp());
        IF delay > 0 THEN
            PERFORM pg_sleep(delay);
        END IF;
        INSERT INTO bench_item (id, grp, qty, label) VALUES (first_id + i, 1, 2.5, 'steady');
        COMMIT;  -- one source transaction per row
    END LOOP;
END $$"""


def _steady(url: str, seconds: float, rate: float, workers: int) -> int:
    """Single-row transactions at ``rate`` per second in total, paced on the server: a
    procedure per connection commits each row, so the generator costs no client CPU (a
    Python client loop could not reach the rate on a small machine)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(STEADY_PROCEDURE)
    per_worker = int(rate * seconds / workers)
    counts = [0] * workers

    def run(i: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CALL bench_steady(%s, %s, %s)",
                         (10_000_000 * (i + 1), per_worker, rate / workers))
            counts[i] = per_worker

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.monotonic() - started


def _profile(cfg: Config) -> str:
    from producers.capture import run_capture

    profiler = cProfile.Profile()
    profiler.enable()
    run_capture(cfg, once_until_idle=1.0)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--steady-rate", type=float, default=2000.0)
    parser.add_argument("--steady-workers", type=int, default=4,
                        help="connections sharing the steady rate")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--transport", choices=("kafka", "file"), default="kafka",
                        help="file: the embedded file journal instead of Kafka")
    args = parser.parse_args()
    server, kafka = services.pg18_url(), services.kafka_bootstrap()
    work = Path(f"/tmp/edms-bench-{uuid.uuid4().hex[:8]}")
    work.mkdir()
    with scratch_database(server, "bench") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(TABLE_DDL)
        slot = f"bench_{uuid.uuid4().hex[:8]}"
        cfg = replace(Config(), source_url=url, slot=slot, tables=("public.bench_item",),
                      journal_url=(f"kafka://{kafka}" if args.transport == "kafka"
                                   else f"file://{work}/journal"),
                      topic_prefix=f"bench{uuid.uuid4().hex[:8]}",
                      state_dir=str(work / "state"), heartbeat_interval_s=5.0)
        toml = work / "journal.toml"
        _write_toml(toml, cfg)
        first = _start_capture(toml, "--once-until-idle", "1")  # publication, slot, snapshot
        _finish(first)
        ref = f"{slot}_recv"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (ref,))

        t0 = time.monotonic()
        changes, end_lsn = _backlog(url, args.rows)
        print(f"workload: {changes:,} row changes committed in {time.monotonic() - t0:.1f} s")

        proc = _start_capture(toml, "--once-until-idle", "1")
        capture_s = _wait_confirmed(url, slot, end_lsn)
        counters, rss_backlog, cpu_backlog = _finish(proc)
        recv_s = _pg_recvlogical(url, ref, end_lsn)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (ref,))
        capture_rate, recv_rate = changes / capture_s, changes / recv_s
        print(f"capture → {args.transport} (acknowledged): {capture_rate:,.0f} events/s "
              f"({changes:,} in {capture_s:.1f} s; counted {counters.get('events')})")
        # CPU per event is the steadier figure on a machine shared with other work
        print(f"capture CPU: {cpu_backlog * 1e6 / changes:.0f} µs per event (whole process, "
              "start-up included)")
        print(f"pg_recvlogical → /dev/null:     {recv_rate:,.0f} events/s "
              f"({changes:,} in {recv_s:.1f} s)")
        print(f"ratio capture / pg_recvlogical: {capture_rate / recv_rate:.2f} "
              "(goal >= 0.5x, and at least 80,000 events/s)")

        if args.profile:
            rows = min(args.rows, 200_000)
            _backlog(url, rows, first_id=100_000_000)
            print(f"profile of draining {rows:,} changes in-process:")
            print(_profile(cfg))
        proc = _start_capture(toml)
        time.sleep(2)
        sent, took = _steady(url, args.steady_seconds, args.steady_rate, args.steady_workers)
        time.sleep(2)
        proc.send_signal(15)
        counters, rss_steady, _ = _finish(proc)
        print(f"steady: {sent / took:,.0f} transactions/s for "
              f"{took:.0f} s; commit→ack p50 "
              f"{counters['commit_ack_lag_p50_s'] * 1000:.1f} ms, p99 "
              f"{counters['commit_ack_lag_p99_s'] * 1000:.1f} ms")
        print(f"capture peak RSS: backlog {rss_backlog / 1024:.0f} MiB, "
              f"steady {rss_steady / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
