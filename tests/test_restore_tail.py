"""Restores reach the journal's newest seconds, past the newest package.

Against the real PostgreSQL 18 (and Kafka): capture into the journal, compact, then keep
writing without compacting. The oracle is the source's own rows (``sample.snapshot_state``)
recorded at each point, never the journal's view of them.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from journal import sample
from journal.compactor import Compactor
from journal.errors import RestoreError, TransportError, ValidationError
from journal.packages.store import open_store
from journal.transport import open_reader
from journal.transport.file import FileJournal
from producers.capture import run_capture
from restorer.restore import RestoreOptions, restore
from restorer.verify import verify
from tests.support.capture import capture_config, loaded_sample

pytestmark = pytest.mark.integration


def _compact(cfg: Any) -> None:
    reader = open_reader(cfg.journal_location(), cfg.database())
    try:
        Compactor(reader, open_store(cfg.packages_url)).run(once=True)
    finally:
        reader.close()


def _now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _prepared(source_db: str, tmp_path: Path, transport: str = "file",
              kafka: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Packages up to a point, then a tail only the journal holds; the source's states."""
    loaded_sample(source_db, scale=10)
    cfg = capture_config(source_db, tmp_path, transport, kafka,
                         packages_url=f"file://{tmp_path}/packages")
    run_capture(cfg, once_until_idle=1.0)
    sample.workload(source_db, 20, seed=1)
    run_capture(cfg, once_until_idle=1.0)
    _compact(cfg)
    states = {"packaged": sample.snapshot_state(source_db)}
    sample.workload(source_db, 25, seed=2)
    time.sleep(0.05)
    states["middle_time"] = _now(source_db)
    states["middle"] = sample.snapshot_state(source_db)
    time.sleep(0.05)
    sample.workload(source_db, 25, seed=3)
    states["latest"] = sample.snapshot_state(source_db)
    run_capture(cfg, once_until_idle=1.0)
    return cfg, states


def _options(cfg: Any, target: str, **kw: Any) -> RestoreOptions:
    return RestoreOptions(target_url=target, packages_url=cfg.packages_url,
                          journal_url=cfg.journal_location(), **kw)


@pytest.mark.parametrize("transport", ["file", "kafka"])
def test_latest_restore_reads_the_journal_past_the_newest_package(
        source_db: str, target_db: str, tmp_path: Path, transport: str,
        kafka_bootstrap: str) -> None:
    cfg, states = _prepared(source_db, tmp_path, transport, kafka_bootstrap)
    assert states["latest"] != states["packaged"]  # the tail holds something
    report = restore(_options(cfg, target_db))
    assert sample.snapshot_state(target_db) == states["latest"]
    assert "journal" in report.package_ids
    assert report.journal_tail.startswith("50 transaction(s)"), report.journal_tail
    assert "journal tail: 50 transaction(s)" in report.summary()
    # verify reads the same tail; without it, the packages' older state differs
    assert verify(target_db, cfg.packages_url, journal_url=cfg.journal_location()).ok
    assert not verify(target_db, cfg.packages_url).ok


def test_packages_only_stops_at_the_newest_package(source_db: str, target_db: str,
                                                   tmp_path: Path) -> None:
    cfg, states = _prepared(source_db, tmp_path)
    report = restore(RestoreOptions(target_url=target_db, packages_url=cfg.packages_url))
    assert sample.snapshot_state(target_db) == states["packaged"]
    assert report.journal_tail == "not read (packages only)"


def test_a_time_inside_the_tail_restores_the_source_at_that_time_while_capture_runs(
        source_db: str, target_db: str, tmp_path: Path) -> None:
    cfg, states = _prepared(source_db, tmp_path)
    stop = threading.Event()
    daemon = threading.Thread(target=run_capture, args=(cfg, stop), daemon=True)
    daemon.start()
    try:
        sample.workload(source_db, 10, seed=4)  # still arriving while the restore reads
        report = restore(_options(cfg, target_db, to_time=states["middle_time"]))
    finally:
        stop.set()
        daemon.join(30)
    assert sample.snapshot_state(target_db) == states["middle"]
    assert report.journal_tail.startswith(("50 transaction(s)", "60 transaction(s)"))


def test_an_incremental_restore_continues_from_inside_the_tail(
        source_db: str, target_db: str, tmp_path: Path) -> None:
    cfg, states = _prepared(source_db, tmp_path)
    restore(_options(cfg, target_db, to_time=states["middle_time"]))
    _compact(cfg)  # the tail is packaged now; the restore state stands inside it
    sample.workload(source_db, 15, seed=5)
    latest = sample.snapshot_state(source_db)
    run_capture(cfg, once_until_idle=1.0)
    restore(_options(cfg, target_db, incremental=True))
    assert sample.snapshot_state(target_db) == latest


def test_a_corrupt_record_in_the_tail_refuses_before_anything_is_written(
        source_db: str, target_db: str, tmp_path: Path) -> None:
    cfg, _ = _prepared(source_db, tmp_path)
    journal = FileJournal.from_url(cfg.journal_location(), cfg.database())
    reader = journal.reader()
    tail = list(reader.read(reader.committed_offset("compactor")))
    victim = tail[len(tail) // 2]  # a record only the journal holds, not its torn end
    base, path = next((b, p) for b, p in reversed(journal.segments()) if b <= victim.offset)
    data = bytearray(path.read_bytes())
    data[victim.offset - base + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises((TransportError, ValidationError), match="packages-only"):
        restore(_options(cfg, target_db))
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone()[0] == 0
    # the packages alone still restore
    restore(RestoreOptions(target_url=target_db, packages_url=cfg.packages_url))


def test_a_store_the_compactor_does_not_write_is_not_continued_from_the_journal(
        source_db: str, target_db: str, tmp_path: Path) -> None:
    cfg, _ = _prepared(source_db, tmp_path)
    packages = open_store(cfg.packages_url)
    first = packages.list()[0]  # the full snapshot alone, in a store of its own
    older = open_store(f"file://{tmp_path}/older")
    copied = tmp_path / "copy.tar"
    copied.write_bytes(packages.path(first.package_id).read_bytes())
    older.put(copied)
    with pytest.raises(RestoreError, match="not the store the compactor writes"):
        restore(RestoreOptions(target_url=target_db, packages_url=f"file://{tmp_path}/older",
                               journal_url=cfg.journal_location()))


class _PublishedDuringListing:
    """A store whose first listing misses the newest package, as when the compactor
    publishes one (and commits) while a restore starts."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._listings = 0

    def list(self) -> list[Any]:
        self._listings += 1
        manifests = self._store.list()
        return manifests[:-1] if self._listings == 1 else manifests

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_package_published_while_the_restore_starts_is_continued_not_refused(
        source_db: str, target_db: str, tmp_path: Path) -> None:
    cfg, states = _prepared(source_db, tmp_path)
    sample.workload(source_db, 10, seed=6)
    run_capture(cfg, once_until_idle=1.0)
    _compact(cfg)  # a new segment, and the commit that names its end
    latest = sample.snapshot_state(source_db)
    store = _PublishedDuringListing(open_store(cfg.packages_url))
    restore(RestoreOptions(target_url=target_db, store=store,
                           journal_url=cfg.journal_location()))
    assert sample.snapshot_state(target_db) == latest
