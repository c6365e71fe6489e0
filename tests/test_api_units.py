"""What the API decides without a server: roles, request validation and the command lines
it runs, the body limit, the dashboard's chain timeline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from journal.api.app import BodyLimit
from journal.api.schemas import ConfigurationIn, RestoreRequest
from journal.dashboard.routes import timeline
from journal.jobs.tokens import Caller

TARGET = "postgresql://journal@db.example/restored"


def test_a_higher_role_may_what_a_lower_one_may_and_not_the_reverse() -> None:
    assert Caller("a", "admin").may("operator") and Caller("a", "admin").may("viewer")
    assert Caller("o", "operator").may("operator") and not Caller("o", "operator").may("admin")
    assert not Caller("v", "viewer").may("operator")


def test_a_restore_request_becomes_options_with_their_values_attached() -> None:
    req = RestoreRequest(target=TARGET, to_mark="pre-upgrade", tables=["document", "public.tag"],
                         dry_run=True)
    # --name=value: a value can never be read as an option of its own
    assert req.argv() == ["restore", f"--target={TARGET}", "--on-conflict=update",
                          "--to-mark=pre-upgrade", "--tables=document,public.tag", "--dry-run"]
    assert req.restore_target() == "to-mark pre-upgrade"
    only = RestoreRequest(target=TARGET, dry_run=False, packages_only=True)
    assert only.argv() == ["restore", f"--target={TARGET}", "--on-conflict=update",
                           "--packages-only"]
    ordered = RestoreRequest(target=TARGET, dry_run=False, replay="ordered")
    assert ordered.argv()[-1] == "--replay=ordered"
    with pytest.raises(ValidationError, match="replay"):
        RestoreRequest(target=TARGET, replay="sideways")


def test_a_restore_request_refuses_what_the_cli_would_misread() -> None:
    with pytest.raises(ValidationError, match="is not a table name"):
        RestoreRequest(target=TARGET, tables=["a,b"])
    with pytest.raises(ValidationError, match="password"):
        RestoreRequest(target="postgresql://u:secret@h/db")
    with pytest.raises(ValidationError, match="password"):
        RestoreRequest(target="postgresql://u@h/db?password=secret")
    with pytest.raises(ValidationError, match="one restore target"):
        RestoreRequest(target=TARGET, to_xid=5, to_mark="m")


def test_a_configuration_needs_cron_expressions_and_a_retention_phrase() -> None:
    assert ConfigurationIn(snapshot="0 2 * * *").retention_policy == "REDUNDANCY 2"
    with pytest.raises(ValidationError, match="snapshot"):
        ConfigurationIn(snapshot="0 25 * * *")
    with pytest.raises(ValidationError, match="retention_policy"):
        ConfigurationIn(retention_policy="REDUNDANCY none")


def _call(middleware: BodyLimit, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
          ) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware({"type": "http", "path": "/x", "headers": headers}, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def test_the_body_limit_refuses_a_declared_or_streamed_body_over_it() -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    limited = BodyLimit(echo, limit=10)
    assert _call(limited, [(b"content-length", b"11")], [b"x" * 11])[0] == 413
    assert _call(limited, [], [b"x" * 6, b"x" * 6])[0] == 413
    assert _call(limited, [], [b"abc", b"def"]) == (200, b"abcdef")


def test_the_timeline_places_snapshots_segments_and_marks_in_time_order() -> None:
    packages = [
        {"id": "f1", "kind": "full", "first_commit_ts": 0, "last_commit_ts": 100, "marks": []},
        {"id": "s1", "kind": "segment", "first_commit_ts": 100, "last_commit_ts": 200,
         "marks": [{"name": "before-upgrade", "commit_ts": 150}]},
    ]
    t = timeline(packages, width=220)
    full, segment = t["shapes"]
    assert full["kind"] == "full" and segment["x"] < t["marks"][0]["x"] < segment["x"] + \
        segment["w"]
    assert timeline([])["shapes"] == []
