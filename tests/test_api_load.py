"""A small load test: 50 clients poll /jobs and /capture for 30 seconds while capture and
compaction run (as their own daemons) under a steady workload. No error, p99 under 200 ms,
and capture's commit-to-confirmation latency, measured on the source's own slot, no worse
than in the 10 seconds before the load."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from journal import sample
from tests.support.served import Served, child_env, served

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 50
LOAD_SECONDS = 25.0
POLL_INTERVAL_S = 0.5  # each client: /jobs then /capture, every half second
BASELINE_SECONDS = 8.0


@pytest.fixture(scope="module")
def server(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(pg18_server, tmp_path_factory.mktemp("load")) as s:
        yield s


class CaptureProbe:
    """Commits a one-row update every half second and times how long until the slot's
    confirmed position passes it: capture's latency as the source sees it."""

    def __init__(self, url: str, slot: str) -> None:
        self.url, self.slot = url, slot
        self.latencies: list[tuple[float, float]] = []  # (committed at, seconds)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                with conn.transaction():
                    lsn, = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
                    conn.execute("UPDATE public.workflow SET name = name "
                                 "WHERE id = (SELECT min(id) FROM public.workflow)")
                committed = time.monotonic()
                while not self.stop.is_set():
                    passed, = conn.execute(
                        "SELECT confirmed_flush_lsn > %s::pg_lsn FROM pg_replication_slots "
                        "WHERE slot_name = %s", (lsn, self.slot)).fetchone()
                    if passed:
                        self.latencies.append((committed, time.monotonic() - committed))
                        break
                    time.sleep(0.02)
                self.stop.wait(0.5)

    def between(self, start: float, end: float) -> list[float]:
        return [s for t, s in self.latencies if start <= t < end]


def _p(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(len(data) * q))]


async def _poll(server: Served, until: float, timings: list[float], errors: list[str]
                ) -> None:
    headers = {"Authorization": f"Bearer {server.tokens['viewer']}"}
    async with httpx.AsyncClient(base_url=server.api, headers=headers, timeout=10) as c:
        await c.get("/jobs")  # connected and known before the clock starts: steady polling
        while time.monotonic() < until:
            started = time.monotonic()
            for path in ("/jobs", "/capture"):
                t0 = time.perf_counter()
                try:
                    r = await c.get(path)
                    if r.status_code != 200:
                        errors.append(f"{path}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(f"{path}: {exc!r}")
                timings.append(time.perf_counter() - t0)
            await asyncio.sleep(max(0.0, POLL_INTERVAL_S - (time.monotonic() - started)))


def test_fifty_pollers_get_fast_answers_and_leave_capture_lag_alone(server: Served) -> None:
    daemons = [subprocess.Popen([sys.executable, "-m", "journal.cli", "-c", str(server.toml),
                                 command], env=child_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
               for command in ("capture", "compact")]
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            sample.workload(server.source_url, 10, seed=int(time.time() * 1000) % 10**6,
                            rate=20)

    workload = threading.Thread(target=work, daemon=True)
    probe = CaptureProbe(server.source_url, server.cfg.slot)
    try:
        workload.start()
        probe.thread.start()
        time.sleep(3)  # capture connects and catches up
        baseline_from = time.monotonic()
        time.sleep(BASELINE_SECONDS)
        load_from = time.monotonic()
        timings: list[float] = []
        errors: list[str] = []

        async def load() -> None:
            until = time.monotonic() + LOAD_SECONDS
            await asyncio.gather(*(_poll(server, until, timings, errors)
                                   for _ in range(CLIENTS)))

        asyncio.run(load())
        load_to = time.monotonic()
    finally:
        stop.set()
        probe.stop.set()
        workload.join(timeout=60)
        probe.thread.join(timeout=10)
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        for daemon in daemons:
            daemon.wait(timeout=60)
    before, during = probe.between(baseline_from, load_from), probe.between(load_from, load_to)
    p50, p99 = _p(timings, 0.5), _p(timings, 0.99)
    print(f"\n{len(timings)} requests by {CLIENTS} clients in {LOAD_SECONDS:.0f} s "
          f"({len(timings) / LOAD_SECONDS:.0f}/s): p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms, {len(errors)} errors")
    print(f"capture commit-to-confirmed: before the load p50 "
          f"{statistics.median(before):.3f} s p99 {_p(before, 0.99):.3f} s ({len(before)} "
          f"probes); during p50 {statistics.median(during):.3f} s p99 "
          f"{_p(during, 0.99):.3f} s ({len(during)} probes)")
    assert not errors, errors[:5]
    assert len(timings) >= CLIENTS * 2 * LOAD_SECONDS / POLL_INTERVAL_S * 0.8
    assert p99 < 0.200
    assert len(before) >= 5 and len(during) >= 20
    assert _p(during, 0.99) <= 2 * _p(before, 0.99) + 0.25
    assert os.path.exists(server.log)
