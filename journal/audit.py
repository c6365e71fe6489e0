"""The audit trail: one JSON line per job (who, what, when, outcome) in the state dir.

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
           outcome: str, detail: str = "") -> None:
    """Append one entry and fsync it; an audit trail that can lose entries is not one."""
    entry: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
        "command": command, "args": sanitize(args), "outcome": outcome,
        "user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
    }
    if detail:
        entry["detail"] = redact(detail)
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
