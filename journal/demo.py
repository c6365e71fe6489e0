"""``journal demo``: the whole product on the embedded default, end to end.

Embedded PostgreSQL 18 → EDMS sample → capture into the file journal → a workload →
compaction into packages → point-in-time restore into a new database → verification,
both against the journal and against the source state recorded at that instant.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from journal import sample
from journal.compactor import Compactor, Policy
from journal.config import Config
from journal.embedded import LocalCluster, default_bindir
from journal.errors import JournalError
from journal.packages.store import open_store
from journal.transport import open_reader
from producers import slot
from producers.capture import CaptureMetrics, run_capture
from restorer.restore import RestoreOptions, restore
from restorer.verify import verify

SOURCE_DB = "edms_demo"
RESTORED_DB = "edms_demo_restored"


@dataclass
class DemoSummary:
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    ok: bool = False

    def lines(self) -> list[str]:
        out = [f"  {name:<34} {seconds:6.1f}s  {detail}" for name, seconds, detail in self.steps]
        out.append("demo " + ("OK: the restored database equals the source at the chosen instant"
                              if self.ok else "FAILED"))
        return out


def run_demo(workdir: Path, *, scale: int = 2000, transactions: int = 600,
             keep_running: bool = False, say: Callable[[str], None] = print) -> DemoSummary:
    """Run every step; ``say`` gets one line as each step finishes. The embedded server is
    stopped at the end unless ``keep_running`` (to look at the databases afterwards)."""
    summary = DemoSummary()
    workdir = workdir.absolute()

    def step(name: str, action: Callable[[], str]) -> None:
        started = time.monotonic()
        detail = action()
        summary.steps.append((name, time.monotonic() - started, detail))
        say(summary.lines()[-2])

    cluster = LocalCluster(datadir=workdir / "postgres", bindir=default_bindir())
    server: dict[str, str] = {}

    def start_server() -> str:
        server["url"] = cluster.ensure_running()
        return f"PostgreSQL {cluster.major_version} at {server['url']}"

    step("start embedded PostgreSQL", start_server)
    try:
        _run_steps(step, summary, cluster, server, workdir, scale, transactions)
    finally:
        if not keep_running:
            cluster.stop()
    return summary


def demo_config(cluster: LocalCluster, workdir: Path) -> Config:
    """The demo's settings: everything under ``workdir``, on the embedded server."""
    return Config(
        source_url=cluster.url(SOURCE_DB), slot="edms_demo", publication="edms_demo",
        journal_url=(workdir / "journal").as_uri(), packages_url=(workdir / "packages").as_uri(),
        state_dir=str(workdir / "state"), segment_max_events=2_000, heartbeat_interval_s=1.0)


def write_config(config: Config, path: Path) -> Path:
    """The settings as a journal.toml, for the commands run against the demo afterwards."""
    path.write_text(
        f"[source]\nurl = {_toml(config.source_url)}\nslot = {_toml(config.slot)}\n"
        f"publication = {_toml(config.publication)}\n"
        f"heartbeat_interval_s = {config.heartbeat_interval_s}\n"
        f"[journal]\nurl = {_toml(config.journal_url)}\n"
        f"[packages]\nurl = {_toml(config.packages_url)}\n"
        f"segment_max_events = {config.segment_max_events}\n"
        f"[state]\ndir = {_toml(config.state_dir)}\n")
    return path


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run_steps(step: Callable[[str, Callable[[], str]], None], summary: DemoSummary,
               cluster: LocalCluster, server: dict[str, str], workdir: Path, scale: int,
               transactions: int) -> None:
    config = demo_config(cluster, workdir)

    def create_sample() -> str:
        _reset(server["url"], config, workdir)
        with psycopg.connect(config.source_url) as conn:
            sample.create_schema(conn)
            rows = sample.load(conn, scale)
        return f"{sum(rows.values()):,} rows in {len(rows)} tables"

    step("create and load the EDMS sample", create_sample)

    stop = threading.Event()
    metrics = CaptureMetrics()
    failure: list[BaseException] = []

    def capture() -> None:
        try:
            run_capture(config, stop, metrics=metrics)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    worker = threading.Thread(target=capture, name="capture", daemon=True)
    marks: dict[str, Any] = {}

    def first_half() -> str:
        worker.start()
        stats = sample.workload(config.source_url, transactions // 2, seed=1)
        _wait_for_capture(config, metrics, failure)
        # the restore target: after every first-half commit, before any second-half one
        time.sleep(0.01)
        marks["at"] = datetime.now(UTC)
        time.sleep(0.01)
        marks["state"] = sample.snapshot_state(config.source_url)
        return f"{stats.transactions} transactions captured; target {marks['at'].isoformat()}"

    step("capture + workload, first half", first_half)

    def second_half() -> str:
        stats = sample.workload(config.source_url, transactions - transactions // 2, seed=2)
        _wait_for_capture(config, metrics, failure)
        stop.set()
        worker.join(30)
        return (f"{stats.transactions} more; {metrics.events:,} events in the journal, "
                f"median commit→ack {metrics.lag_percentiles()[0] * 1000:.0f} ms")

    step("capture + workload, second half", second_half)

    def compact() -> str:
        reader = open_reader(config.journal_url, SOURCE_DB)
        store = open_store(config.packages_url)
        try:
            compactor = Compactor(reader, store, Policy.from_config(config))
            compactor.run(once=True)
            compactor.snapshot_now()
        finally:
            reader.close()
        manifests = store.list()
        fulls = sum(m.kind == "full" for m in manifests)
        return f"{fulls} full snapshot(s), {len(manifests) - fulls} segment(s)"

    step("compact into packages", compact)

    def point_in_time() -> str:
        with psycopg.connect(server["url"], autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(RESTORED_DB)))
        report = restore(RestoreOptions(target_url=cluster.url(RESTORED_DB),
                                        packages_url=config.packages_url, to_time=marks["at"]))
        return (f"{report.transactions_replayed} transactions replayed onto the snapshot, "
                f"reached {report.reached_position}")

    step("restore to the midpoint", point_in_time)

    def check() -> str:
        report = verify(cluster.url(RESTORED_DB), config.packages_url, marks["at"])
        restored = sample.snapshot_state(cluster.url(RESTORED_DB))
        same = restored == marks["state"]
        summary.ok = report.ok and same
        rows = sum(len(t) for t in restored.values())
        if not summary.ok:
            raise JournalError("restored database differs:\n" + report.summary())
        return f"{rows:,} rows equal the journal and the source as it was at the target"

    step("verify", check)


def _wait_for_capture(config: Config, metrics: CaptureMetrics, failure: list[BaseException],
                      timeout: float = 60.0) -> None:
    """Until everything the source has committed so far is durable in the journal."""
    with psycopg.connect(config.source_url, autocommit=True) as conn:
        # a heartbeat after the workload gives capture an LSN to confirm beyond it
        goal = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()[0]
    deadline = time.monotonic() + timeout
    while metrics.last_acked_lsn < goal:
        if failure:
            raise failure[0]
        if time.monotonic() > deadline:
            raise JournalError("capture did not catch up within a minute")
        time.sleep(0.1)


def _reset(server_url: str, config: Config, workdir: Path) -> None:
    """Start over: the demo's own databases, slot, journal and packages only."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        slot.drop_slot(conn, config.slot)
        for db in (SOURCE_DB, RESTORED_DB):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(db)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SOURCE_DB)))
    for sub in ("journal", "packages", "state"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
