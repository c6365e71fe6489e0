"""``journal jobs list | show ID``: the recorded backup and restore jobs."""

from __future__ import annotations

import click

from journal.commands._common import config, echo_json
from journal.errors import ConfigError
from journal.jobs import repository
from journal.jobs.database import open_database
from journal.jobs.models import BACKUP_KINDS, RESTORE_KINDS, STATUSES
from journal.jobs.repository import JobRef


def _line(job: repository.Job) -> str:
    data = repository.to_json(job)
    took = f"{data['duration_s']:.1f}s" if "duration_s" in data else "-"
    what = (job.restore_target if isinstance(job, repository.RestoreJob)
            else f"{job.from_position or ''}..{job.to_position or ''}".strip("."))
    tail = job.error or job.progress
    return (f"{data['id']:>6}  {job.kind:<8} {job.status:<10} {job.started_at:%Y-%m-%d %H:%M:%S}"
            f"  {took:>8}  {job.started_by:<16} {what}  {tail}".rstrip())


def register(group: click.Group) -> None:
    @group.group("jobs")
    def jobs() -> None:
        """Backup, restore, health and drill jobs, newest first."""

    @jobs.command("list")
    @click.option("--kind", type=click.Choice(BACKUP_KINDS + RESTORE_KINDS))
    @click.option("--status", type=click.Choice(STATUSES))
    @click.option("--limit", default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_(ctx: click.Context, kind: str | None, status: str | None, limit: int,
              as_json: bool) -> None:
        """The recorded jobs: id, kind, status, start, duration, who, positions, error."""
        found = repository.list_jobs(open_database(config(ctx)), kind, status, limit)
        if as_json:
            echo_json([repository.to_json(j) for j in found])
            return
        for job in found:
            click.echo(_line(job))

    @jobs.command("show")
    @click.argument("job_id")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def show(ctx: click.Context, job_id: str, as_json: bool) -> None:
        """One job (b12: backup job 12, r3: restore job 3), with its health results."""
        try:
            ref = JobRef.parse(job_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        db = open_database(config(ctx))
        job = repository.get_job(db, ref)
        if job is None:
            raise ConfigError(f"no job {ref}")
        data = repository.to_json(job)
        if job.scheduled_run_id is not None and (
                run := repository.scheduled_run(db, job.scheduled_run_id)) is not None:
            data["scheduled_for"] = run.scheduled_for.isoformat()
            data["late"], data["missed"] = run.late, run.missed
        if ref.table == "b" and job.kind == "health":
            data["checks"] = [{"check": c.check, "ok": c.ok, "detail": c.detail}
                              for c in repository.health_of(db, ref)]
        if as_json:
            echo_json(data)
            return
        for key, value in data.items():
            if key == "checks":
                for c in value:
                    click.echo(f"{'check':>18}: {c['check']}: "
                               f"{'OK' if c['ok'] else 'FAILED'} ({c['detail']})")
            elif key == "tables":
                for name, counts in sorted(value.items()):
                    click.echo(f"{'table':>18}: {name} " + " ".join(
                        f"{k}={v}" for k, v in counts.items()))
            elif value not in (None, "", [], {}):
                click.echo(f"{key:>18}: {value}")
