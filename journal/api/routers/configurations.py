"""/configurations: the backup configurations the scheduler runs (admins edit them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from sqlalchemy import select

from journal.api import schemas
from journal.api.audit import record_call
from journal.api.problems import Problem
from journal.api.security import require_role
from journal.api.state import AppState, app_state
from journal.config import without_password
from journal.jobs.models import TASKS, BackupConfiguration, utcnow
from journal.jobs.scheduler import next_fire
from journal.jobs.tokens import Caller

router = APIRouter(prefix="/configurations", tags=["configurations"])
Name = Annotated[str, Path(pattern=schemas.CONFIGURATION_NAME)]


def configuration_body(row: BackupConfiguration, now: datetime | None = None
                       ) -> dict[str, Any]:
    now = now or utcnow()
    return {"name": row.name, "source": row.source,
            **{task: row.schedule(task) for task in TASKS},
            "retention_policy": row.retention_policy, "drill_target": row.drill_target,
            "export_dir": row.export_dir, "enabled": row.enabled,
            "next_runs": {task: next_fire(expr, now) for task in TASKS
                          if (expr := row.schedule(task)) and row.enabled}}


def configurations(state: AppState) -> list[BackupConfiguration]:
    with state.db.session() as session:
        return list(session.scalars(select(BackupConfiguration)
                                    .order_by(BackupConfiguration.name)))


@router.get("", response_model=list[schemas.Configuration])
def list_configurations(state: Annotated[AppState, Depends(app_state)],
                        _: Annotated[Caller, Depends(require_role("viewer"))]
                        ) -> list[dict[str, Any]]:
    return [configuration_body(c) for c in configurations(state)]


@router.get("/{name}", response_model=schemas.Configuration)
def get_configuration(name: Name, state: Annotated[AppState, Depends(app_state)],
                      _: Annotated[Caller, Depends(require_role("viewer"))]
                      ) -> dict[str, Any]:
    for row in configurations(state):
        if row.name == name:
            return configuration_body(row)
    raise Problem(404, f"no configuration {name}")


@router.put("/{name}", response_model=schemas.Configuration)
def put_configuration(name: Name, body: schemas.ConfigurationIn,
                      state: Annotated[AppState, Depends(app_state)],
                      caller: Annotated[Caller, Depends(require_role("admin"))]
                      ) -> dict[str, Any]:
    """Create or replace a configuration; the scheduler picks it up at its next look."""
    values: dict[str, Any] = {f"{task}_schedule": getattr(body, task) for task in TASKS}
    values.update(retention_policy=body.retention_policy, drill_target=body.drill_target,
                  export_dir=body.export_dir, enabled=body.enabled)
    with state.db.session() as session:
        row = session.scalars(select(BackupConfiguration)
                              .where(BackupConfiguration.name == name)).first()
        if row is None:
            row = BackupConfiguration(name=name, created_at=utcnow(),
                                      source=without_password(state.config.source_url),
                                      **values)
            session.add(row)
        else:
            for key, value in values.items():
                setattr(row, key, value)
    record_call(state, caller, "configuration", [name] + [
        f"{k}={v}" for k, v in sorted(values.items()) if v is not None])
    return configuration_body(row)
