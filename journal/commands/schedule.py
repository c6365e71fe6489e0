"""``journal schedule``: the scheduler daemon (snapshots, exports, retention, health
checks and restore drills of the enabled backup configurations)."""

from __future__ import annotations

import logging
import signal
import threading

import click

from journal.commands._common import config
from journal.jobs.database import open_database
from journal.jobs.scheduler import CommandExecutor, Scheduler, run_forever, sync_configuration

log = logging.getLogger(__name__)


@click.command("schedule")
@click.option("--once", is_flag=True, help="run what is due now (missed runs once), then exit")
@click.option("--poll", default=60.0, show_default=True,
              help="seconds between looks at the configurations, at most")
@click.pass_context
def schedule(ctx: click.Context, once: bool, poll: float) -> None:
    """Run the schedules of journal.toml's [schedule] and of every enabled configuration
    in the job database. SIGTERM: the running job is ended (cancelled, or for compaction
    finished) and the scheduler exits 0."""
    cfg = config(ctx)
    db = open_database(cfg)
    synced = sync_configuration(db, cfg)
    if synced is not None:
        click.echo(f"configuration {synced.name}: " + ", ".join(
            f"{task} {expr!r}" for task in ("snapshot", "export", "retention", "health",
                                             "drill")
            if (expr := synced.schedule(task))), err=True)
    executor = CommandExecutor(ctx.find_root().params.get("config_path"))
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.warning("%s: stopping after the running job", signal.Signals(signum).name)
        stop.set()
        executor.terminate()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if once:
        ran = Scheduler(db, lambda claimed: executor(claimed, db)).tick(stop)
        for claimed in ran:
            click.echo(f"{claimed.configuration} {claimed.task} "
                       f"{claimed.scheduled_for:%Y-%m-%d %H:%M}Z"
                       + (f" (late, {claimed.missed} missed)" if claimed.late else ""))
        return
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("journal.jobs").setLevel(logging.INFO)
    run_forever(db, executor, stop, poll_s=poll)


def register(group: click.Group) -> None:
    group.add_command(schedule)
