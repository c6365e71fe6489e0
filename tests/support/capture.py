"""Capture as the tests run it: a configuration per test (its own slot and topic prefix,
because tests share the servers), capture in a thread or until idle, and the journal read
back, deduplicated and decoded; plus the oracles over the source that the capture tests
compare with (the source's own rows, and the transactions logical decoding reports)."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from journal import sample
from journal.config import Config
from journal.events import Record
from journal.stream_state import StreamState
from journal.transport import decoded, deduplicate, open_reader
from producers import pgoutput
from producers.capture import CaptureMetrics, run_capture
from tests.support.waiting import wait_until


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def journal_url(tmp_path: Path, transport: str, kafka: str | None = None) -> str:
    if transport == "file":
        return f"file://{tmp_path}/journal"
    assert kafka is not None
    return f"kafka://{kafka}"


def capture_config(url: str, tmp_path: Path, transport: str = "file", kafka: str | None = None,
                   **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "source_url": url, "journal_url": journal_url(tmp_path, transport, kafka),
        "state_dir": str(tmp_path / "state"), "heartbeat_interval_s": 1.0,
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}",
        # slots are per server, and tests share the servers: one name per test
        "slot": f"cap_{uuid.uuid4().hex[:12]}",
    }
    values.update(overrides)
    return replace(Config(), **values)


def write_toml(tmp_path: Path, cfg: Config) -> Path:
    path = tmp_path / "journal.toml"
    lines = ["[source]", f'url = "{cfg.source_url}"', f'slot = "{cfg.slot}"',
             f"heartbeat_interval_s = {cfg.heartbeat_interval_s}",
             "schemas = [" + ", ".join(f'"{s}"' for s in cfg.schemas) + "]",
             "tables = [" + ", ".join(f'"{t}"' for t in cfg.tables) + "]",
             "[journal]", f'url = "{cfg.journal_url}"', f'topic_prefix = "{cfg.topic_prefix}"',
             "[state]", f'dir = "{cfg.state_dir}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def capture_until_idle(cfg: Config, idle: float = 2.0) -> CaptureMetrics:
    return run_capture(cfg, once_until_idle=idle)


class Background:
    """``run_capture`` in a thread (stopped by the event, or exits when idle)."""

    def __init__(self, cfg: Config, idle: float | None = None) -> None:
        self.stop = threading.Event()
        self.metrics = CaptureMetrics()
        self.error: BaseException | None = None

        def target() -> None:
            try:
                run_capture(cfg, self.stop, once_until_idle=idle, metrics=self.metrics)
            except BaseException as exc:  # noqa: BLE001 — reported by join()
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def wait_streaming(self, timeout: float = 60) -> None:
        """Until the snapshot is done and the stream runs."""
        wait_until(lambda: self.metrics.generation or self.error is not None, timeout,
                   "capture to start streaming", interval=0.1)

    def join(self, timeout: float = 120) -> CaptureMetrics:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "capture did not finish"
        if self.error is not None:
            raise self.error
        return self.metrics


def read_records(cfg: Config, database: str) -> list[Record]:
    """Every record of the journal, at-least-once duplicates dropped, decoded."""
    reader = open_reader(cfg.journal_location(), database)
    try:
        raw = list(deduplicate(reader.read()))
        return list(decoded(raw, reader.registry()))
    finally:
        reader.close()


def raw_positions(cfg: Config, database: str) -> list[Any]:
    reader = open_reader(cfg.journal_location(), database)
    try:
        return [r.position for r in reader.read()]
    finally:
        reader.close()


def assert_reconstructs(records: list[Record], url: str) -> StreamState:
    state = StreamState().apply_all(records)
    expected = sample.snapshot_state(url)
    got = state.tables()
    for table, rows in expected.items():
        assert got.get(table, {}) == rows, f"{table} differs"
    assert state.pending is None
    return state


def loaded_sample(url: str, scale: int = 30) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.load(conn, scale)


def committed_transactions(url: str, reference_slot: str) -> set[int]:
    """Commit LSNs of every transaction with captured changes since the reference slot."""
    commits: set[int] = set()
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'edms_journal')",
            (reference_slot,)).fetchall()
        conn.execute("SELECT pg_drop_replication_slot(%s)", (reference_slot,))
    current = None
    for (data,) in rows:
        msg = pgoutput.decode(data)
        if isinstance(msg, pgoutput.Begin):
            current, changed = msg.final_lsn, False
        elif isinstance(msg, pgoutput.Insert | pgoutput.Update | pgoutput.Delete
                        | pgoutput.Truncate):
            changed = True
        elif isinstance(msg, pgoutput.Commit) and changed:
            commits.add(current)
    return commits


def cli_env(cfg: Config, packages_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment that makes the CLI run with ``cfg`` and a package store."""
    return {"JOURNAL_CONFIG": str(tmp_path / "absent.toml"), "JOURNAL_SOURCE_URL": cfg.source_url,
            "JOURNAL_SLOT": cfg.slot, "JOURNAL_JOURNAL_URL": cfg.journal_url,
            "JOURNAL_PACKAGES_URL": packages_url, "JOURNAL_STATE_DIR": cfg.state_dir}


def slots_and_publications(url: str) -> tuple[list[str], list[str]]:
    """The replication slots of the database and the publications: what capture leaves."""
    with psycopg.connect(url, autocommit=True) as conn:
        slots = [r[0] for r in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")]
        pubs = [r[0] for r in conn.execute("SELECT pubname FROM pg_publication")]
    return slots, pubs
