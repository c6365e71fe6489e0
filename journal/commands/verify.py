"""``journal verify``: compare a database with the journal's state, through natural keys."""

from __future__ import annotations

import sys

import click

from journal.commands._common import config, echo_json, parse_time
from journal.errors import ConfigError
from journal.jobs.recorder import current
from journal.positions import parse_lsn
from journal.targets import RestoreTarget
from restorer.verify import verify


@click.command("verify")
@click.option("--target", "target_url", required=True, help="postgresql:// URL to compare")
@click.option("--at", "at", help="the journal's state at this time (default: latest)")
@click.option("--at-lsn", help="... after the transaction committed at this LSN")
@click.option("--at-xid", type=int, help="... after this transaction id")
@click.option("--at-mark", help="... at the named mark (journal mark NAME)")
@click.option("--allow-extra", is_flag=True,
              help="rows only the database has are fine (a restore into a populated one)")
@click.option("--packages-only", is_flag=True,
              help="the state at the newest package; do not read the journal's newer records")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
@click.pass_context
def verify_command(ctx: click.Context, target_url: str, at: str | None, at_lsn: str | None,
                   at_xid: int | None, at_mark: str | None, allow_extra: bool,
                   packages_only: bool, as_json: bool) -> None:
    """Compare TARGET row by row with the journal; exit 1 when they differ."""
    cfg = config(ctx)
    try:
        lsn = parse_lsn(at_lsn) if at_lsn else None
    except ValueError as exc:
        raise ConfigError(f"--at-lsn: {exc}") from None
    # the same restore targets as `journal restore`, and the same rules for them
    target = RestoreTarget.from_options(time=parse_time(at, "--at") if at else None,
                                        lsn=lsn, xid=at_xid, mark=at_mark)
    report = verify(target_url, cfg.packages_url, target,
                    natural_keys=dict(cfg.natural_keys),
                    generic=dict(cfg.generic_foreign_keys), allow_extra=allow_extra,
                    journal_url="" if packages_only else cfg.journal_location())
    current().update(to_position=report.position,
                     progress=report.summary().splitlines()[0][:500])
    if as_json:
        echo_json(report.to_json())
    else:
        click.echo(report.summary())
    sys.exit(0 if report.ok else 1)


def register(group: click.Group) -> None:
    group.add_command(verify_command)
