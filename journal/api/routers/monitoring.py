"""/health, /capture, /metrics: what a person or a monitor looks at."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector

from journal.api import schemas
from journal.api.security import require_role
from journal.api.state import AppState, app_state
from journal.jobs import repository
from journal.jobs.models import STATUSES
from journal.jobs.repository import JobRef
from journal.jobs.tokens import Caller
from journal.metrics import PREFIX

router = APIRouter(tags=["monitoring"])
# the checks connect to the source and read every manifest: pollers share one run this long
HEALTH_CACHE_SECONDS = 5.0
_health_lock = threading.Lock()


def health_report(state: AppState) -> dict[str, Any]:
    """The checks of ``journal health`` (source, slot, journal, packages, the last drill)."""
    from journal.health import run_checks
    from journal.jobs.drill import drill_checks

    with _health_lock:
        cached = state.cache.get("health")
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        results = run_checks(state.config) + drill_checks(state.db)
        drill = repository.last_drill(state.db)
        report = {
            "ok": all(r.ok for r in results),
            "checks": [{"check": r.name, "ok": r.ok, "detail": r.detail} for r in results],
            "last_drill": None if drill is None else {
                "id": str(JobRef.of(drill)), "status": drill.status,
                "started_at": drill.started_at, "seconds": drill.seconds,
                "verified": drill.verified, "error": drill.error},
        }
        state.cache["health"] = (time.monotonic() + HEALTH_CACHE_SECONDS, report)
        return report


@router.get("/health", response_model=schemas.Health)
def health(state: Annotated[AppState, Depends(app_state)],
           _: Annotated[Caller, Depends(require_role("viewer"))]) -> dict[str, Any]:
    """Every check with OK or FAILED and why; ``ok`` is false when one failed."""
    return health_report(state)


@router.get("/capture", response_model=schemas.Capture)
async def capture(state: Annotated[AppState, Depends(app_state)],
                  _: Annotated[Caller, Depends(require_role("viewer"))]) -> Response:
    """The slot: confirmed position, lag in bytes and seconds, retained WAL, the newest
    event's commit time, and the last hour's lag."""
    # the sampler's figures change once a second: every poller gets the same bytes
    status = state.sampler.status()
    cached = state.cache.get("capture")
    if cached is None or cached[0] is not status:
        body = schemas.Capture(**status.to_json(), history=state.sampler.history())
        cached = (status, body.model_dump_json().encode())
        state.cache["capture"] = cached
    return Response(cached[1], media_type="application/json")


class _ServerCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Any:
        status = self.state.sampler.status()
        yield GaugeMetricFamily(f"{PREFIX}_capture_lag_bytes",
                                "WAL between the source's current LSN and the confirmed one",
                                value=status.lag_bytes)
        yield GaugeMetricFamily(f"{PREFIX}_capture_lag_seconds",
                                "age of the oldest WAL the slot has not confirmed",
                                value=status.lag_seconds)
        yield GaugeMetricFamily(f"{PREFIX}_capture_retained_wal_bytes",
                                "WAL the slot holds back", value=status.retained_wal_bytes)
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "recent jobs by status (last 500)",
                                 labels=["status"])
        recent = repository.list_jobs(self.state.db, limit=500)
        for name in STATUSES:
            jobs.add_metric([name], sum(1 for j in recent if j.status == name))
        yield jobs


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: Annotated[AppState, Depends(app_state)],
            _: Annotated[Caller, Depends(require_role("viewer"))]) -> PlainTextResponse:
    """Prometheus text format."""
    registry = CollectorRegistry()
    registry.register(_ServerCollector(state))
    return PlainTextResponse(generate_latest(registry).decode(),
                             media_type="text/plain; version=0.0.4")
