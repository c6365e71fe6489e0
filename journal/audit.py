"""The audit trail's local copy: one JSON line per job (who, what, when, outcome) in the
state dir, with the entry's place in the job database's hash chain (journal.jobs.audit_chain).

Arguments are kept with every URL redacted, so the trail never holds a password.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from journal.config import redact

FILE = "audit.jsonl"


def sanitize(args: list[str]) -> list[str]:
    return [redact(a) if "://" in a else a for a in args]


def record(state_dir: str | Path, command: str, args: list[str], started: float,
           outcome: str, detail: str = "", chained: dict[str, Any] | None = None,
           user: str | None = None) -> None:
    """Append one entry and fsync it; an audit trail that can lose entries is not one.
    ``chained``: the entry's ``seq`` and ``hash`` in the job database's audit chain."""
    entry: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
        "command": command, "args": sanitize(args), "outcome": outcome,
        "user": user or getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
    }
    if detail:
        entry["detail"] = redact(detail)
    entry.update(chained or {})
    path = Path(state_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def entries(state_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(state_dir) / FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
