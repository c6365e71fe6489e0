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
# An inactive slot is a capture restart for this long; after it, capture is not running.
DEFAULT_MAX_SLOT_INACTIVE_S = 60.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {'OK' if self.ok else 'FAILED'} ({self.detail})"


def run_checks(config: Config, max_package_age_s: float = 86_400.0,
               max_slot_inactive_s: float = DEFAULT_MAX_SLOT_INACTIVE_S) -> list[CheckResult]:
    return list(_checks(config, max_package_age_s, max_slot_inactive_s))


def _checks(config: Config, max_package_age_s: float,
            max_slot_inactive_s: float) -> Iterator[CheckResult]:
    yield from _guarded("source", lambda: _check_source(config, max_slot_inactive_s))
    yield from _guarded("journal", lambda: _check_journal(config))
    yield from _guarded("packages", lambda: _check_packages(config, max_package_age_s))


def _guarded(name: str, check: Callable[[], list[CheckResult]]) -> Iterator[CheckResult]:
    try:
        yield from check()
    except (JournalError, psycopg.Error, OSError) as exc:
        yield CheckResult(name, False, str(exc).splitlines()[0] if str(exc) else repr(exc))


def _check_source(config: Config, max_slot_inactive_s: float) -> list[CheckResult]:
    results = []
    with psycopg.connect(**config.source_conninfo(), connect_timeout=10) as conn:
        results.append(CheckResult("source connection", True, redact(config.source_url)))
        wal_level = conn.execute("SHOW wal_level").fetchone()[0]
        results.append(CheckResult("wal_level", wal_level == "logical",
                                   f"{wal_level}; capture needs logical"))
        # inactive_since exists from PostgreSQL 17 on; through jsonb it reads as NULL before
        row = conn.execute(
            "SELECT active, pg_current_wal_lsn() - restart_lsn, wal_status, "
            "       pg_current_wal_lsn() - confirmed_flush_lsn, "
            "       extract(epoch FROM now() - (to_jsonb(s) ->> 'inactive_since')::timestamptz) "
            "FROM pg_replication_slots s WHERE slot_name = %s", (config.slot,)).fetchone()
        if row is None:
            results.append(CheckResult("replication slot", False,
                                       f"slot {config.slot!r} does not exist; run journal capture"))
        else:
            active, retained, wal_status, lag, inactive_s = row
            results.append(slot_check(config.slot, bool(active), wal_status, int(lag or 0),
                                      None if inactive_s is None else float(inactive_s),
                                      max_slot_inactive_s))
            retained = int(retained or 0)
            results.append(CheckResult("retained WAL", retained < MAX_RETAINED_WAL,
                                       f"{retained / 1024**2:.1f} MiB held by the slot"))
    return results


def slot_check(slot: str, active: bool, wal_status: str | None, lag_bytes: int,
               inactive_s: float | None, max_inactive_s: float) -> CheckResult:
    """The slot's verdict. Inactive with WAL piling up behind it means nothing is capturing:
    FAILED once that has lasted ``max_inactive_s`` (a restart takes less), or at once when
    the server does not say since when (PostgreSQL before 17)."""
    name = "replication slot"
    if wal_status == "lost":
        return CheckResult(name, False, f"{slot}, wal_status lost: the WAL it needed is gone; "
                                        "capture must start a new snapshot generation")
    if active:
        return CheckResult(name, True, f"{slot}, active, wal_status {wal_status}")
    since = "since an unknown time" if inactive_s is None else f"for {_duration(inactive_s)}"
    detail = (f"{slot}, inactive {since}, {lag_bytes} bytes of WAL retained past its "
              f"confirmed position, wal_status {wal_status}")
    if lag_bytes > 0 and (inactive_s is None or inactive_s >= max_inactive_s):
        return CheckResult(name, False, f"{detail}: journal capture is not running; start it")
    return CheckResult(name, True, detail)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


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
    from journal.packages.store import open_store

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
