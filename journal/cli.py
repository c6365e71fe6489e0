"""The ``journal`` command: a thin click layer over the library.

Each command lives in its own module under ``journal/commands``; this file only builds
the group and maps the error hierarchy to exit codes (2 usage, 3 validation, 4 runtime).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime

import click

from journal import __version__, audit
from journal.commands import _recording
from journal.config import load_config, redact
from journal.errors import JournalError
from journal.jobs import audit_chain
from journal.jobs.database import JobDatabase
from journal.jobs.recorder import STARTED_BY_ENV

COMMAND_MODULES = (
    "init", "capture", "mark", "sample", "compact", "snapshot", "packages", "restore",
    "verify", "health", "demo", "drill", "schedule", "jobs", "audit", "db", "tokens", "serve",
)


# Jobs that change or read backups go into the audit trail; the rest are diagnostics.
AUDITED = frozenset({"init", "capture", "mark", "compact", "snapshot", "packages", "restore",
                     "verify", "drill", "schedule", "db", "tokens", "serve"})


class _Group(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["journal.args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        started = time.time()
        args = ctx.meta.get("journal.args", [])
        command, sub = _recording.command_path(args, self.commands)
        outcome, detail = "ok", ""
        db = job = sigterm = None
        try:
            if "--help" not in args:
                db = _recording.open_job_database(ctx.params.get("config_path"), command)
                job = _recording.start_job(db, command, sub, args)
            if job is not None:
                sigterm = _recording.cancel_on_sigterm()
            return super().invoke(ctx)
        except JournalError as exc:
            outcome, detail = f"exit {exc.exit_code}", str(exc)
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except SystemExit as exc:
            outcome = "ok" if exc.code in (0, None) else f"exit {exc.code}"
            raise
        except KeyboardInterrupt as exc:
            outcome, detail = "cancelled", f"cancelled by {exc or 'SIGINT'}"
            raise
        except BaseException as exc:
            outcome, detail = "crashed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
            _recording.end_job(job, outcome, detail)
            if command in AUDITED and "--help" not in args:
                _audit(ctx, db, command, args, started, outcome, detail)
            if db is not None:
                db.dispose()


def _audit(ctx: click.Context, db: JobDatabase | None, command: str, args: list[str],
           started: float, outcome: str, detail: str) -> None:
    """The hash chain in the job database, and the JSON-lines file kept beside it: the
    file is this host's own copy, written even when the job database is down."""
    chained: dict[str, object] = {}
    # a command the API started is the API caller's: the entry names the token
    started_by = os.environ.get(STARTED_BY_ENV, "")
    user = started_by if started_by.startswith("api:") else None
    if db is not None:
        try:
            entry = audit_chain.append(
                db, command, audit.sanitize(args), outcome, redact(detail),
                started=datetime.fromtimestamp(started, UTC), seconds=time.time() - started,
                user=user)
            chained = {"seq": entry.seq, "hash": entry.hash}
        except JournalError as exc:
            click.echo(f"warning: the audit chain could not be written: {exc}", err=True)
    try:
        state_dir = load_config(ctx.params.get("config_path")).state_dir
        audit.record(state_dir, command, args, started, outcome, detail, chained, user)
    except (JournalError, OSError) as exc:
        click.echo(f"warning: the audit trail could not be written: {exc}", err=True)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="journal")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="configuration file (default: journal.toml, or $JOURNAL_CONFIG)")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Continuous capture, backup packages and restore for an EDMS PostgreSQL database."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


for _name in COMMAND_MODULES:
    if importlib.util.find_spec(f"journal.commands.{_name}") is not None:
        importlib.import_module(f"journal.commands.{_name}").register(main)


if __name__ == "__main__":
    main()
