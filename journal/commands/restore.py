"""``journal restore``: bring a database to a point of the journal (thin over restorer)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from journal.commands._common import config, echo_json, interactive, parse_time
from journal.errors import ConfigError
from journal.jobs.recorder import current
from journal.positions import parse_lsn
from restorer.restore import RestoreOptions, restore


def _progress(show: bool) -> Callable[[str, int], None]:
    """Progress into the job's row, and on a terminal unless the output is JSON."""

    def report(what: str, n: int) -> None:
        text = f"replayed {n} events" if what == "replay" else f"loaded {what}: {n} rows"
        current().update(progress=text)
        if show:  # replay: one line, rewritten as events go by
            click.echo(f"\r{text}" if what == "replay" else text, err=True,
                       nl=what != "replay")

    return report


@click.command("restore")
@click.option("--target", "target_url", required=True, help="postgresql:// URL of the target")
@click.option("--to", "to_time", help="stop before the first transaction committed after T")
@click.option("--to-lsn", help="last commit LSN to include (e.g. 16/B374D848)")
@click.option("--to-xid", type=int, help="last transaction id to include")
@click.option("--to-mark", help="include up to the named mark (journal mark NAME)")
@click.option("--incremental", is_flag=True, help="continue from the target's recorded state")
@click.option("--tables", help="comma-separated tables; their rows plus what they reference")
@click.option("--dry-run", is_flag=True, help="rehearse in a rolled-back transaction")
@click.option("--on-conflict", type=click.Choice(["update", "skip", "fail"]), default="update",
              show_default=True, help="a row whose natural key exists in the target")
@click.option("--strict", is_flag=True,
              help="refuse generic foreign key values that point at nothing in the restore")
@click.option("--packages-only", is_flag=True,
              help="stop at the newest package; do not read the journal's newer records")
@click.option("--replay", type=click.Choice(["net", "ordered"]), default="net",
              show_default=True,
              help="apply each row's net change up to the target, set-wise (net), or each "
                   "transaction in turn (ordered); a restore through natural keys into a "
                   "populated database always replays in order")
@click.option("--lock-timeout", type=click.FloatRange(min=0.001), default=60.0,
              show_default=True, metavar="SECONDS",
              help="how long to wait for other sessions' writes to the existing tables the "
                   "restore locks against writes until it commits")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
@click.pass_context
def restore_command(ctx: click.Context, target_url: str, to_time: str | None,
                    to_lsn: str | None, to_xid: int | None, to_mark: str | None,
                    incremental: bool, tables: str | None, dry_run: bool, on_conflict: str,
                    strict: bool, packages_only: bool, replay: str, lock_timeout: float,
                    as_json: bool) -> None:
    """Restore the packages into a database: full, incremental or point-in-time."""
    cfg = config(ctx)
    try:
        lsn = parse_lsn(to_lsn) if to_lsn else None
    except ValueError as exc:
        raise ConfigError(f"--to-lsn: {exc}") from None
    options = RestoreOptions(
        target_url=target_url, packages_url=cfg.packages_url,
        to_time=parse_time(to_time) if to_time else None, to_lsn=lsn, to_xid=to_xid,
        to_mark=to_mark, incremental=incremental,
        tables=tuple(t.strip() for t in tables.split(",") if t.strip()) if tables else (),
        dry_run=dry_run, on_conflict=on_conflict, natural_keys=dict(cfg.natural_keys),
        generic_foreign_keys=dict(cfg.generic_foreign_keys), strict=strict,
        progress=_progress(interactive() and not as_json),
        journal_url="" if packages_only else cfg.journal_location(), replay=replay,
        lock_timeout_s=lock_timeout)
    report = restore(options)
    current().restore_report(report)
    if as_json:
        echo_json(report.to_json())
    else:
        click.echo(report.summary())
    sys.exit(0)


def register(group: click.Group) -> None:
    group.add_command(restore_command)
