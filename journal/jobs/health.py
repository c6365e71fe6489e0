"""``journal health``'s part in the job database: the drill checks, and the stored results.

Both work on the running health job's database; outside a recorded job (library use, or
the job database unreachable) there is nothing to check against and nothing is stored.
"""

from __future__ import annotations

from journal.health import CheckResult
from journal.jobs import repository
from journal.jobs.drill import drill_checks
from journal.jobs.recorder import current


def drill_results() -> list[CheckResult]:
    job = current()
    return drill_checks(job.db) if job.active and job.db is not None else []


def store_results(results: list[CheckResult]) -> None:
    job = current()
    if not job.active or job.db is None:
        return
    repository.record_health(job.db, job.ref, [(r.name, r.ok, r.detail) for r in results])
    failed = [r.name for r in results if not r.ok]
    job.update(progress=f"{len(results)} checks, {len(failed)} failed"
               + (f": {', '.join(failed)}" if failed else ""))
