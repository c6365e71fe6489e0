"""What one server process holds: configuration, job database, sessions, the capture
sampler and the job worker. Routers reach it through the ``app_state`` dependency."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from journal.config import Config
from journal.jobs.database import JobDatabase

if TYPE_CHECKING:
    from journal.api.capture import CaptureSampler
    from journal.api.security import Sessions
    from journal.api.worker import JobWorker


@dataclass
class AppState:
    config: Config
    config_path: str | None
    db: JobDatabase
    sessions: Sessions
    sampler: CaptureSampler
    worker: JobWorker
    cache: dict[str, Any] = field(default_factory=dict)


def app_state(request: Request) -> AppState:
    return request.app.state.journal
