"""The dashboard's pages: log in with a token, the overview, the restore form, a job."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.engine import make_url

from journal.api.problems import Problem
from journal.api.routers.configurations import configuration_body, configurations
from journal.api.routers.jobs import start_restore
from journal.api.routers.monitoring import health_report
from journal.api.routers.packages import summary
from journal.api.schemas import RestoreRequest
from journal.api.security import SESSION_COOKIE, SESSION_SECONDS, caller_of
from journal.api.state import AppState
from journal.errors import JournalError
from journal.jobs import repository, tokens
from journal.jobs.repository import JobRef
from journal.jobs.tokens import Caller
from journal.packages.store import open_store

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)
MAX_FORM_BYTES = 16 * 1024


def _state(request: Request) -> AppState:
    return request.app.state.journal


def _page(request: Request, name: str, caller: Caller | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"caller": caller, **context})


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Problem(413, "the form is too large")
    return {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}


def _login_needed() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None, error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    state = _state(request)
    secret = (await _form(request)).get("token", "").strip()
    caller = tokens.authenticate(state.db, secret) if secret else None
    if caller is None:
        return _page(request, "login.html", None,
                     error="that token is unknown or revoked (journal tokens create)")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, state.sessions.open(caller, secret),
                        max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        _state(request).sessions.close(sid)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def timeline(manifests: list[dict[str, Any]], width: int = 1000, height: int = 60
             ) -> dict[str, Any]:
    """The chain as shapes on a time axis: snapshots tall, segments low, marks as ticks."""
    times = [t for m in manifests for t in (m["first_commit_ts"], m["last_commit_ts"]) if t]
    if not times:
        return {"width": width, "height": height, "shapes": [], "marks": [], "span": ""}
    lo, hi = min(times), max(times)
    span = max(hi - lo, 1)

    def x(ts: int) -> float:
        return round(10 + (ts - lo) / span * (width - 20), 1)

    shapes, marks = [], []
    for m in manifests:
        first, last = m["first_commit_ts"] or m["last_commit_ts"], m["last_commit_ts"]
        if not last:
            continue
        full = m["kind"] == "full"
        shapes.append({"x": x(first) if not full else x(last) - 2,
                       "w": max(x(last) - x(first), 3) if not full else 4,
                       "y": 8 if full else 28, "h": 44 if full else 16,
                       "kind": m["kind"], "title": m["id"]})
        for mark in m["marks"]:
            marks.append({"x": x(mark["commit_ts"]), "name": mark["name"]})
    fmt = "%Y-%m-%d %H:%M:%S"
    return {"width": width, "height": height, "shapes": shapes, "marks": marks,
            "span": f"{datetime.fromtimestamp(lo / 1e6, UTC):{fmt}} … "
                    f"{datetime.fromtimestamp(hi / 1e6, UTC):{fmt}} UTC"}


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> Response:
    state = _state(request)
    caller = caller_of(request, state)
    if caller is None:
        return _login_needed()
    manifests = [summary(m) for m in open_store(state.config.packages_url).list()]
    newest = max((m["last_commit_ts"] or 0 for m in manifests), default=0)
    jobs = [repository.to_json(j) for j in repository.list_jobs(state.db, limit=12)]
    drills = [repository.to_json(j) for j in repository.list_jobs(state.db, kind="drill",
                                                                  limit=5)]
    marks = sorted({mk["name"] for m in manifests for mk in m["marks"]})
    return _page(request, "overview.html", caller,
                 capture=state.sampler.status(), health=health_report(state),
                 recovery_point=_age(time.time() - newest / 1e6) if newest else None,
                 packages=manifests[-8:], package_count=len(manifests),
                 timeline=timeline(manifests), jobs=jobs, drills=drills, marks=marks,
                 schedules=[configuration_body(c) for c in configurations(state)])


def _restore_page(request: Request, caller: Caller, form: dict[str, str],
                  error: str | None = None) -> HTMLResponse:
    state = _state(request)
    marks = sorted({name for m in open_store(state.config.packages_url).list()
                    for name, _, _ in m.marks})
    return _page(request, "restore.html", caller, form=form, error=error, marks=marks)


@router.get("/restore", response_class=HTMLResponse)
def restore_form(request: Request) -> Response:
    caller = caller_of(request, _state(request))
    if caller is None:
        return _login_needed()
    return _restore_page(request, caller, {"dry_run": "on"})


@router.post("/restore")
async def restore_start(request: Request) -> Response:
    state = _state(request)
    caller = caller_of(request, state)
    if caller is None:
        return _login_needed()
    form = await _form(request)
    point = form.get("point", "latest")
    fields: dict[str, Any] = {
        "target": form.get("target", ""), "dry_run": form.get("dry_run") == "on",
        "on_conflict": form.get("on_conflict", "update"),
        "tables": [t.strip() for t in form.get("tables", "").split(",") if t.strip()],
        "confirm_database": form.get("confirm_database") or None}
    if point == "time" and form.get("to_time"):
        fields["to_time"] = form["to_time"]
    elif point == "mark" and form.get("to_mark"):
        fields["to_mark"] = form["to_mark"]
    try:
        body = RestoreRequest(**fields)
        ref = start_restore(state, caller, body)
    except PydanticValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: "
                           f"{str(e['msg']).removeprefix('Value error, ')}"
                           for e in exc.errors())
        return _restore_page(request, caller, form, detail)
    except Problem as exc:
        return _restore_page(request, caller, form, exc.detail)
    except JournalError as exc:
        return _restore_page(request, caller, form, str(exc))
    return RedirectResponse(f"/jobs/{ref}", status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> Response:
    state = _state(request)
    caller = caller_of(request, state)
    if caller is None:
        return _login_needed()
    try:
        ref = JobRef.parse(job_id)
    except ValueError:
        return HTMLResponse("no such job", status_code=404)
    job = repository.get_job(state.db, ref)
    if job is None:
        return HTMLResponse("no such job", status_code=404)
    data = repository.to_json(job)
    database = make_url(data["target"]).database if data.get("target") else None
    return _page(request, "job.html", caller, job=data, database=database,
                 final=job.status in repository.FINAL)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
