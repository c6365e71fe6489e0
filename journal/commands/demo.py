"""``journal demo``: the README's first command."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from journal.demo import run_demo
from journal.embedded import LocalCluster, default_bindir


@click.command("demo")
@click.option("--dir", "workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("journal-demo"), show_default=True,
              help="where the embedded server, journal and packages live")
@click.option("--scale", default=2000, show_default=True, help="documents in the sample")
@click.option("--transactions", default=600, show_default=True, help="workload transactions")
@click.option("--keep-running", is_flag=True,
              help="leave the embedded server up to look at the databases afterwards")
@click.option("--stop", is_flag=True, help="only stop a server left running by --keep-running")
def demo(workdir: Path, scale: int, transactions: int, keep_running: bool, stop: bool) -> None:
    """Embedded PostgreSQL → capture → packages → point-in-time restore → verify."""
    if stop:
        LocalCluster(datadir=workdir / "postgres", bindir=default_bindir()).stop()
        return
    started = time.monotonic()
    click.echo(f"edms-journal demo in {workdir}/")
    summary = run_demo(workdir, scale=scale, transactions=transactions,
                       keep_running=keep_running, say=click.echo)
    click.echo(summary.lines()[-1] + f" ({time.monotonic() - started:.0f}s in all)")
    if keep_running:
        click.echo(f"the embedded server is still running; stop it with: "
                   f"journal demo --dir {workdir} --stop")
    if not summary.ok:
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(demo)
