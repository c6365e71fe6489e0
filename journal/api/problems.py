"""RFC 9457 problem documents: every error the API answers, with the words the CLI prints."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from journal.config import redact
from journal.errors import ConfigError, JournalError, ValidationError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 413: "Content too large",
           422: "Unprocessable content", 500: "Internal error", 503: "Unavailable"}


class Problem(Exception):
    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


def response(status: int, detail: str, instance: str = "", **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status,
            "detail": redact(detail), **extra}
    if instance:
        body["instance"] = instance
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return response(exc.status, exc.detail, request.url.path, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e.get("loc", ())),
                   "message": str(e.get("msg", "")).removeprefix("Value error, ")}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return response(422, detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return response(exc.status_code, str(exc.detail), request.url.path)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # the traceback goes to the server's log; the caller learns no internals
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return response(500, "the server failed; its log says why", request.url.path)

    @app.exception_handler(JournalError)
    async def _journal(request: Request, exc: JournalError) -> JSONResponse:
        # the CLI's exit codes, as HTTP: usage/validation is the caller's, the rest ours
        status = 422 if isinstance(exc, ConfigError | ValidationError) else 500
        return response(status, str(exc), request.url.path)
