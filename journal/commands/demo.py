"""``journal demo``: the README's first command."""

from __future__ import annotations

import subprocess
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
@click.option("--serve", "serve_after", is_flag=True,
              help="afterwards, keep capturing and serve the dashboard until Ctrl-C")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="the dashboard's port with --serve (0: any free port)")
def demo(workdir: Path, scale: int, transactions: int, keep_running: bool, stop: bool,
         serve_after: bool, port: int) -> None:
    """Embedded PostgreSQL → capture → packages → point-in-time restore → verify."""
    if stop:
        LocalCluster(datadir=workdir / "postgres", bindir=default_bindir()).stop()
        return
    started = time.monotonic()
    click.echo(f"edms-journal demo in {workdir}/")
    summary = run_demo(workdir, scale=scale, transactions=transactions,
                       keep_running=keep_running or serve_after, say=click.echo)
    click.echo(summary.lines()[-1] + f" ({time.monotonic() - started:.0f}s in all)")
    if not summary.ok:
        if serve_after:
            LocalCluster(datadir=workdir / "postgres", bindir=default_bindir()).stop()
        sys.exit(1)
    if serve_after:
        _serve(workdir.absolute(), port)
    elif keep_running:
        click.echo(f"the embedded server is still running; stop it with: "
                   f"journal demo --dir {workdir} --stop")


def _serve(workdir: Path, port: int) -> None:
    """The demo's dashboard, with capture still running, until Ctrl-C or SIGTERM; then
    everything the demo started stops."""
    from journal.demo import demo_config, write_config
    from journal.embedded import free_port
    from journal.jobs import tokens
    from journal.jobs.database import open_database
    from journal.server import Listen, serve

    cluster = LocalCluster(datadir=workdir / "postgres", bindir=default_bindir())
    config = demo_config(cluster, workdir)
    toml = write_config(config, workdir / "journal.toml")
    db = open_database(config)
    token = tokens.create(db, f"demo-viewer-{int(time.time())}", "viewer", "journal demo")
    db.dispose()
    port = port or free_port()
    capture = subprocess.Popen([sys.executable, "-m", "journal.cli", "-c", str(toml),
                                "capture"], stdin=subprocess.DEVNULL)
    try:
        click.echo(f"dashboard: http://127.0.0.1:{port}/ (Ctrl-C stops it, capture and the "
                   "embedded server); commands: journal -c " + str(toml) + " ...")
        click.echo("log in with this viewer token (shown once):")
        click.echo(token)
        serve(config, str(toml), Listen("127.0.0.1", port))
    finally:
        capture.terminate()
        capture.wait(timeout=60)
        cluster.stop()


def register(group: click.Group) -> None:
    group.add_command(demo)
