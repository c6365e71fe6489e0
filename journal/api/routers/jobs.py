"""/jobs: list and read jobs, start backups and restores (202 and a URL), cancel, follow."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import make_url

from journal.api import schemas
from journal.api.audit import record_call
from journal.api.problems import Problem
from journal.api.security import require_role
from journal.api.state import AppState, app_state
from journal.jobs import repository
from journal.jobs.models import BACKUP_KINDS, RESTORE_KINDS, STATUSES
from journal.jobs.repository import JobRef
from journal.jobs.tokens import Caller

router = APIRouter(prefix="/jobs", tags=["jobs"])
JobId = Annotated[str, PathParam(pattern=schemas.JOB_ID, description="b12, r3")]


def job_body(job: repository.Job) -> dict[str, object]:
    return repository.to_json(job)


def _get(state: AppState, job_id: str) -> repository.Job:
    job = repository.get_job(state.db, JobRef.parse(job_id))
    if job is None:
        raise Problem(404, f"no job {job_id}")
    return job


def accepted(request: Request, response: Response, ref: JobRef) -> schemas.JobAccepted:
    url = str(request.url_for("get_job", job_id=str(ref)))
    response.status_code = 202
    response.headers["Location"] = url
    return schemas.JobAccepted(id=str(ref), status="queued", url=url, events=url + "/events")


def start_restore(state: AppState, caller: Caller, body: schemas.RestoreRequest) -> JobRef:
    """Check what the request may do, then run ``journal restore`` for it (the API's route
    and the dashboard's form both come here, so both refuse the same callers)."""
    if not caller.may("operator"):
        raise Problem(403, f"token {caller.name} has the role {caller.role}; a dry run needs "
                           "operator or higher")
    if not body.dry_run:
        if not caller.may("admin"):
            raise Problem(403, f"token {caller.name} has the role {caller.role}; a restore "
                               "that writes needs admin (operators may start a dry run)")
        database = make_url(body.target).database or ""
        if body.confirm_database != database:
            raise Problem(422, "confirm_database: type the target's database name "
                               f"({database}) again to restore into it",
                          errors=[{"field": "confirm_database",
                                   "message": "does not repeat the target's database"}])
    known = _packaged_tables(state)
    unknown = [t for t in body.tables
               if t not in known and t.split(".")[-1] not in {k.split(".")[-1] for k in known}]
    if unknown:
        raise Problem(422, f"tables: {', '.join(unknown)} not in the packages (known: "
                           f"{', '.join(sorted(known)) or 'none'})",
                      errors=[{"field": "tables", "message": f"{t} is not in the packages"}
                              for t in unknown])
    args = body.argv()
    ref = state.worker.launch(caller, "restore", args, target=body.target,
                              restore_target=body.restore_target(), dry_run=body.dry_run)
    record_call(state, caller, "restore", args + [f"job={ref}"])
    return ref


def _packaged_tables(state: AppState) -> set[str]:
    from journal.packages.store import open_store

    return {t for m in open_store(state.config.packages_url).list() for t in m.tables()}


def start_backup(state: AppState, caller: Caller, body: schemas.BackupRequest) -> JobRef:
    if body.kind == "snapshot":
        kind, args = "snapshot", ["compact", "--once", "--snapshot"]
    elif body.kind == "export":
        # the server chooses the file: a request names no path on this host
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        out = Path(state.config.state_dir).resolve() / "exports" / f"api-{stamp}.tar"
        out.parent.mkdir(parents=True, exist_ok=True)
        kind, args = "export", ["snapshot", "export", f"--output={out}"]
    else:
        kind, args = "prune", ["packages", "prune"]
        if body.policy:
            args.append(f"--policy={body.policy}")
    ref = state.worker.launch(caller, "compact" if kind == "snapshot" else kind, args)
    record_call(state, caller, "backup", args + [f"job={ref}"])
    return ref


# pollers of the same list share one read of the job database this long
LIST_CACHE_SECONDS = 0.5


@router.get("", response_model=list[schemas.Job])
async def list_jobs(state: Annotated[AppState, Depends(app_state)],
                    _: Annotated[Caller, Depends(require_role("viewer"))],
                    kind: Annotated[str | None, Query(pattern="^(|" + "|".join(
                        BACKUP_KINDS + RESTORE_KINDS) + ")$")] = None,
                    status: Annotated[str | None, Query(
                        pattern="^(|" + "|".join(STATUSES) + ")$")] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
    """Newest first; ``kind`` and ``status`` filter (empty: any)."""
    kind, status = kind or None, status or None
    key = ("jobs", kind, status, limit)
    cached = state.cache.get(key)
    if cached is None or cached[0] < time.monotonic():
        jobs = await asyncio.to_thread(repository.list_jobs, state.db, kind, status, limit)
        body = json.dumps([job_body(j) for j in jobs], default=str).encode()
        cached = (time.monotonic() + LIST_CACHE_SECONDS, body)
        state.cache[key] = cached
    return Response(cached[1], media_type="application/json")


@router.get("/{job_id}", response_model=schemas.Job, name="get_job")
def get_job(job_id: JobId, state: Annotated[AppState, Depends(app_state)],
            _: Annotated[Caller, Depends(require_role("viewer"))]) -> dict[str, object]:
    return job_body(_get(state, job_id))


@router.post("/backup", status_code=202, response_model=schemas.JobAccepted)
def backup(body: schemas.BackupRequest, request: Request, response: Response,
           state: Annotated[AppState, Depends(app_state)],
           caller: Annotated[Caller, Depends(require_role("operator"))]) -> schemas.JobAccepted:
    """A full snapshot, an export or a prune, run as the journal command would."""
    return accepted(request, response, start_backup(state, caller, body))


@router.post("/restore", status_code=202, response_model=schemas.JobAccepted)
def restore(body: schemas.RestoreRequest, request: Request, response: Response,
            state: Annotated[AppState, Depends(app_state)],
            caller: Annotated[Caller, Depends(require_role("operator"))]
            ) -> schemas.JobAccepted:
    """A restore (admin) or a dry run (operator): ``journal restore`` in a worker."""
    return accepted(request, response, start_restore(state, caller, body))


@router.post("/{job_id}/cancel", response_model=schemas.Job)
def cancel(job_id: JobId, state: Annotated[AppState, Depends(app_state)],
           caller: Annotated[Caller, Depends(require_role("operator"))]) -> dict[str, object]:
    """SIGTERM to the job's process: it ends cancelled (a restore rolls back)."""
    job = _get(state, job_id)
    ref = JobRef.of(job)
    if job.status in repository.FINAL:
        raise Problem(409, f"job {ref} has ended ({job.status}): nothing to cancel")
    if job.status == "queued":  # not adopted yet: the child finds it cancelled
        repository.finish_job(state.db, ref, "cancelled", "cancelled before it started")
        state.worker.cancel(ref)
    elif not state.worker.cancel(ref):
        raise Problem(409, f"job {ref} runs in process {job.pid} on {job.host}, not started "
                           "by this server: stop it there (SIGTERM ends it cancelled)")
    record_call(state, caller, "cancel", [str(ref)])
    return job_body(_get(state, job_id))


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(job_id: JobId, state: Annotated[AppState, Depends(app_state)],
                 _: Annotated[Caller, Depends(require_role("viewer"))]) -> StreamingResponse:
    """Server-sent events: the job's row each time it changes, until it ends."""
    _get(state, job_id)
    ref = JobRef.parse(job_id)

    async def stream() -> AsyncIterator[str]:
        last = None
        while True:
            job = await asyncio.to_thread(repository.get_job, state.db, ref)
            if job is None:
                return
            data = json.dumps(job_body(job), default=str, sort_keys=True)
            if data != last:
                yield f"event: job\ndata: {data}\n\n"
                last = data
            if job.status in repository.FINAL:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})
