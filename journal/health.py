"""Health checks in the manner of ``barman check``: one line per check, OK or FAILED."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg

from journal.config import Config, redact
from journal.errors import JournalError

# More WAL than this held back by the slot means capture is stuck or far behind.
MAX_RETAINED_WAL = 1024**3


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {'OK' if self.ok else 'FAILED'} ({self.detail})"


def run_checks(config: Config, max_package_age_s: float = 86_400.0) -> list[CheckResult]:
    return list(_checks(config, max_package_age_s))


def _checks(config: Config, max_package_age_s: float) -> Iterator[CheckResult]:
    yield from _guarded("source", lambda: _check_source(config))
    yield from _guarded("journal", lambda: _check_journal(config))
    yield from _guarded("packages", lambda: _check_packages(config, max_package_age_s))


def _guarded(name: str, check: Callable[[], list[CheckResult]]) -> Iterator[CheckResult]:
    try:
        yield from check()
    except (JournalError, psycopg.Error, OSError) as exc:
        yield CheckResult(name, False, str(exc).splitlines()[0] if str(exc) else repr(exc))


def _check_source(config: Config) -> list[CheckResult]:
    results = []
    with psycopg.connect(**config.source_conninfo(), connect_timeout=10) as conn:
        results.append(CheckResult("source connection", True, redact(config.source_url)))
        wal_level = conn.execute("SHOW wal_level").fetchone()[0]
        results.append(CheckResult("wal_level", wal_level == "logical",
                                   f"{wal_level}; capture needs logical"))
        row = conn.execute(
            "SELECT active, pg_current_wal_lsn() - restart_lsn, wal_status "
            "FROM pg_replication_slots WHERE slot_name = %s", (config.slot,)).fetchone()
        if row is None:
            results.append(CheckResult("replication slot", False,
                                       f"slot {config.slot!r} does not exist; run journal capture"))
        else:
            active, retained, wal_status = row
            results.append(CheckResult("replication slot", wal_status != "lost",
                                       f"{config.slot}, {'active' if active else 'inactive'}, "
                                       f"wal_status {wal_status}"))
            retained = int(retained or 0)
            results.append(CheckResult("retained WAL", retained < MAX_RETAINED_WAL,
                                       f"{retained / 1024**2:.1f} MiB held by the slot"))
    return results


def _check_journal(config: Config) -> list[CheckResult]:
    from journal.transport import open_reader

    reader = open_reader(config.journal_location(), config.database())
    try:
        schemas = len(reader.registry().items())
    finally:
        reader.close()
    return [CheckResult("journal", True, f"{redact(config.journal_url)}, {schemas} schemas")]


def _check_packages(config: Config, max_age_s: float) -> list[CheckResult]:
    from journal.packages import verify_chain
    from journal.store import open_store

    manifests = open_store(config.packages_url).list()
    fulls = [m for m in manifests if m.kind == "full"]
    results = [CheckResult("full snapshot", bool(fulls),
                           f"{len(fulls)} full, {len(manifests) - len(fulls)} segments")]
    if manifests:
        verify_chain(manifests)
        results.append(CheckResult("package chain", True, "continuous"))
        newest = max(m.last_commit_ts or 0 for m in manifests) / 1e6
        age = time.time() - newest
        results.append(CheckResult("newest package", age <= max_age_s,
                                   f"last commit packaged {age / 60:.0f} min ago"))
    return results
