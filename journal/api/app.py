"""The API application: routers under /api/v1, problem documents, a body size limit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from journal import __version__
from journal.api import problems
from journal.api.routers import audit, configurations, jobs, monitoring, packages
from journal.api.state import AppState

PREFIX = "/api/v1"
# no request body of this API comes near it; a bigger one is refused before it is read
MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """ASGI middleware: 413 for a declared or streamed body over ``limit`` bytes."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # streamed without a length: read it here, up to the limit, then hand it on
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        response = problems.response(413, f"the request body is over {self.limit} bytes",
                                     scope.get("path", ""))
        await response(scope, receive, send)


def api_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    for module in (monitoring, packages, configurations, jobs, audit):
        router.include_router(module.router)
    return router


def create_app(state: AppState) -> FastAPI:
    app = FastAPI(title="edms-journal", version=__version__,
                  docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)
    app.state.journal = state
    problems.install(app)
    app.include_router(api_router())
    app.add_middleware(BodyLimit)
    return app
