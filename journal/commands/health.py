"""``journal health``: checks for people and for monitoring."""

from __future__ import annotations

import sys

import click

from journal.commands._common import config, echo_json
from journal.health import DEFAULT_MAX_SLOT_INACTIVE_S, run_checks
from journal.jobs.health import drill_results, store_results


@click.command("health")
@click.option("--max-package-age", default=86_400.0, show_default=True,
              help="seconds since the newest packaged commit before the check fails")
@click.option("--max-slot-inactive", default=DEFAULT_MAX_SLOT_INACTIVE_S, show_default=True,
              help="seconds the slot may stay inactive, with WAL behind it, before the check "
                   "fails (capture is not running)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def health(ctx: click.Context, max_package_age: float, max_slot_inactive: float,
           as_json: bool) -> None:
    """Check source, slot, journal and packages; exit 1 if any check fails."""
    results = run_checks(config(ctx), max_package_age, max_slot_inactive) + drill_results()
    store_results(results)
    if as_json:
        echo_json([{"check": r.name, "ok": r.ok, "detail": r.detail} for r in results])
    else:
        for r in results:
            click.echo(r.line())
    if not all(r.ok for r in results):
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(health)
