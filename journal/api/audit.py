"""Every API call that changes something is an audit entry naming the token: in the job
database's hash chain and in this host's audit file, as the CLI's commands are."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from journal import audit
from journal.api.state import AppState
from journal.config import redact
from journal.errors import JournalError
from journal.jobs import audit_chain
from journal.jobs.tokens import Caller


def record_call(state: AppState, caller: Caller, action: str, args: list[str],
                outcome: str = "ok", detail: str = "") -> None:
    started = time.time()
    args = [action, *audit.sanitize(args)]
    chained: dict[str, object] = {}
    try:
        entry = audit_chain.append(state.db, "api", args, outcome, redact(detail),
                                   started=datetime.fromtimestamp(started, UTC),
                                   user=caller.started_by)
        chained = {"seq": entry.seq, "hash": entry.hash}
    finally:
        try:
            audit.record(state.config.state_dir, "api", args, started, outcome, detail,
                         chained, caller.started_by)
        except (JournalError, OSError):
            pass  # the chain has it; the file copy is the host's second record
