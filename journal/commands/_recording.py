"""Which command line is which job, and recording it around the command (for cli.py).

Every command but the demo and ``db`` first marks abandoned the jobs whose processes died;
the commands below are jobs and get a row from start to end. The scheduler passes who
started the job and which of its runs it is through the environment.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import threading
from typing import Any

from journal.audit import sanitize
from journal.config import load_config, redact, without_password
from journal.errors import JournalError
from journal.jobs import recorder, repository
from journal.jobs.database import JobDatabase, JobDatabaseError, open_database
from journal.jobs.recorder import (
    CONFIGURATION_ENV,
    JOB_ENV,
    SCHEDULED_RUN_ENV,
    STARTED_BY_ENV,
    RunningJob,
)

log = logging.getLogger(__name__)

# (command, subcommand) -> job kind; a subcommand of None matches the command alone
JOB_KINDS = {
    ("compact", None): "compact",
    ("snapshot", "export"): "export",
    ("snapshot", "now"): "snapshot",
    ("packages", "prune"): "prune",
    ("packages", "verify"): "verify",
    ("restore", None): "restore",
    ("verify", None): "verify",
    ("health", None): "health",
    ("drill", None): "drill",
}
NO_JOB_DATABASE = frozenset({"", "demo", "db"})


def command_path(args: list[str], commands: Any) -> tuple[str, str | None]:
    command = next((a for a in args if a in commands), "")
    rest = args[args.index(command) + 1:] if command else []
    sub = next((a for a in rest if not a.startswith("-")), None)
    return command, sub


def job_kind(command: str, sub: str | None) -> str | None:
    return JOB_KINDS.get((command, sub)) or JOB_KINDS.get((command, None))


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def job_fields(kind: str, args: list[str]) -> dict[str, Any]:
    if kind == "restore":
        target = next((f"{opt.removeprefix('--')} {value}" for opt in
                       ("--to", "--to-lsn", "--to-xid", "--to-mark")
                       if (value := _option(args, opt)) is not None), "latest")
        return {"target": without_password(_option(args, "--target") or ""),
                "restore_target": target,
                "dry_run": "--dry-run" in args}
    if kind == "drill":
        return {"target": without_password(_option(args, "--scratch") or ""),
                "restore_target": "latest"}
    return {}


def open_job_database(config_path: str | None, command: str) -> JobDatabase | None:
    """The job database with dead jobs marked abandoned; None (after a warning) when it
    cannot be reached, so a job database outage does not stop backups."""
    if command in NO_JOB_DATABASE:
        return None
    try:
        db = open_database(load_config(config_path))  # a ConfigError (behind) stops it
    except JobDatabaseError as exc:
        log.warning("%s: the command runs unrecorded", exc)
        return None
    try:
        for ref in repository.reap_abandoned(db):
            log.warning("job %s was left running by a process that died: marked abandoned",
                        ref)
    except JobDatabaseError as exc:
        log.warning("%s", exc)
        return None
    return db


class Cancelled(JournalError):
    """The queued job this command was to run was cancelled before it started."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so the job ends (and rolls back) cleanly."""


def cancel_on_sigterm() -> Any:
    """A job's SIGTERM ends it ``cancelled`` (a daemon's own handler, set later, wins);
    returns the handler to put back when the job ends."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def _raise(_signum: int, _frame: object) -> None:
        raise Terminated("SIGTERM")

    return signal.signal(signal.SIGTERM, _raise)


def start_job(db: JobDatabase | None, command: str, sub: str | None,
              args: list[str]) -> RunningJob | None:
    """Record the command as a job if it is one (and the job database is there)."""
    kind = job_kind(command, sub)
    if db is None or kind is None or "--help" in args:
        return None
    started_by = os.environ.get(STARTED_BY_ENV) or f"user:{getpass.getuser()}"
    run_id = os.environ.get(SCHEDULED_RUN_ENV)
    configuration_id = os.environ.get(CONFIGURATION_ENV)
    try:
        if queued := os.environ.get(JOB_ENV):
            job = recorder.adopt(db, repository.JobRef.parse(queued), **job_fields(kind, args))
            if job is None:
                raise Cancelled(f"job {queued} was cancelled before it started")
            return job
        return recorder.start(
            db, kind, started_by, " ".join(sanitize(args)),
            scheduled_run_id=int(run_id) if run_id else None,
            configuration_id=int(configuration_id) if configuration_id else None,
            **job_fields(kind, args))
    except JobDatabaseError as exc:
        log.warning("the job could not be recorded: %s", exc)
        return None


def end_job(job: RunningJob | None, outcome: str, detail: str) -> None:
    if job is None:
        return
    if outcome == "ok":
        status, error = "succeeded", None
    elif outcome == "cancelled":
        status, error = "cancelled", detail or "cancelled"
    else:
        status = "failed"
        error = detail or f"{outcome}: {job.fields.get('progress') or 'see the output'}"
    try:
        job.end(status, redact(error) if error else None)
    except JobDatabaseError as exc:
        log.warning("the job's outcome could not be recorded: %s", exc)
