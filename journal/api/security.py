"""Who is calling: a bearer token (or the dashboard's session cookie) and its role."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from journal.api.problems import Problem
from journal.api.state import AppState, app_state
from journal.jobs import tokens
from journal.jobs.tokens import Caller

SESSION_COOKIE = "journal_session"
SESSION_SECONDS = 12 * 3600
# a token's verdict is remembered this long: a revoked token stops working within it
AUTH_CACHE_SECONDS = 5.0


class Sessions:
    """The dashboard's logins: a random session id in a cookie stands for the caller, so
    the token itself never travels back to the browser."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[Caller, str, float]] = {}
        self._verdicts: dict[str, tuple[Caller | None, float]] = {}

    def open(self, caller: Caller, secret: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = (caller, tokens.digest(secret),
                                   time.monotonic() + SESSION_SECONDS)
        return sid

    def close(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def session(self, sid: str) -> tuple[Caller, str] | None:
        with self._lock:
            found = self._sessions.get(sid)
            if found is None or found[2] < time.monotonic():
                self._sessions.pop(sid, None)
                return None
            return found[0], found[1]

    def remembered(self, key: str) -> tuple[bool, Caller | None]:
        """(True, the verdict) while one is remembered; (False, None) otherwise."""
        with self._lock:
            cached = self._verdicts.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return True, cached[0]
        return False, None

    def verdict(self, key: str, check: Callable[[], Caller | None]) -> Caller | None:
        known, caller = self.remembered(key)
        if known:
            return caller
        now = time.monotonic()
        caller = check()
        with self._lock:
            self._verdicts[key] = (caller, now + AUTH_CACHE_SECONDS)
        return caller


def _remembered(request: Request, state: AppState) -> tuple[bool, Caller | None]:
    """The caller without touching the job database, when the verdict is remembered."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return True, None
        return state.sessions.remembered(tokens.digest(secret.strip()))
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid:
        return True, None
    found = state.sessions.session(sid)
    return (True, None) if found is None else state.sessions.remembered(found[1])


def caller_of(request: Request, state: AppState) -> Caller | None:
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            return None
        return state.sessions.verdict(tokens.digest(secret),
                                      lambda: tokens.authenticate(state.db, secret))
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        found = state.sessions.session(sid)
        if found is None:
            return None
        caller, digest = found
        # a session ends with its token: revoked tokens log their sessions out
        return state.sessions.verdict(digest, lambda: tokens.authenticate_digest(state.db,
                                                                                 digest))
    return None


def require_role(role: str) -> Callable[..., Caller]:
    """A dependency: the caller, who must hold ``role`` or a higher one (401, 403)."""

    async def dependency(request: Request, state: Annotated[AppState, Depends(app_state)]
                         ) -> Caller:
        # on the event loop when remembered (pollers); in a thread when the job database
        # must be asked
        known, caller = _remembered(request, state)
        if not known:
            caller = await asyncio.to_thread(caller_of, request, state)
        if caller is None:
            raise Problem(401, "a valid API token is needed: Authorization: Bearer TOKEN "
                               "(journal tokens create --name NAME --role viewer)")
        if not caller.may(role):
            raise Problem(403, f"token {caller.name} has the role {caller.role}; this needs "
                               f"{role} or higher")
        return caller

    return dependency
