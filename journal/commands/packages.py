"""``journal packages list | show | verify | prune``: the package catalogue."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from journal.commands._common import config as load
from journal.commands._common import echo_json
from journal.errors import ValidationError
from journal.events import micros_to_datetime
from journal.jobs.recorder import current
from journal.packages import Manifest, verify_package, verify_store
from journal.packages.store import open_store
from journal.retention import decide, parse_policy


def _when(micros: int | None) -> str:
    return micros_to_datetime(micros).isoformat(timespec="seconds") if micros else "-"


def _summary(m: Manifest) -> dict[str, Any]:
    return {"package_id": m.package_id, "kind": m.kind, "generation": m.generation,
            "from_position": str(m.from_position) if m.from_position else None,
            "to_position": str(m.to_position), "first_commit": _when(m.first_commit_ts),
            "last_commit": _when(m.last_commit_ts), "rows": m.rows, "bytes": m.size,
            "parent_id": m.parent_id, "marks": [n for n, _, _ in m.marks]}


def register(group: click.Group) -> None:
    @group.group("packages")
    def packages() -> None:
        """List, show, verify and prune backup packages."""

    @packages.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_(ctx: click.Context, as_json: bool) -> None:
        """Every package, oldest first."""
        manifests = open_store(load(ctx).packages_url).list()
        if as_json:
            echo_json([_summary(m) for m in manifests])
            return
        for m in manifests:
            span = f"{str(m.from_position or ''):>16} .. {str(m.to_position):<16}"
            click.echo(f"{m.package_id}  {m.kind:<7} {span}  {_when(m.last_commit_ts)}  "
                       f"{m.rows:>9} rows  {m.size:>11} bytes")

    @packages.command("show")
    @click.argument("package_id")
    @click.option("--json", "as_json", is_flag=True, help="the whole manifest")
    @click.pass_context
    def show(ctx: click.Context, package_id: str, as_json: bool) -> None:
        """One package's manifest (a unique id prefix is enough)."""
        m = open_store(load(ctx).packages_url).get(package_id)
        if as_json:
            echo_json(m.to_json())
            return
        for key, value in _summary(m).items():
            click.echo(f"{key:>14}: {value}")
        for member in m.members:
            click.echo(f"{'member':>14}: {member.name}  {member.rows} rows  {member.bytes} "
                       f"bytes  sha256 {member.sha256[:16]}…")

    @packages.command("verify")
    @click.argument("package", required=False)
    @click.option("--all", "all_", is_flag=True, help="every package, and the chain")
    @click.pass_context
    def verify(ctx: click.Context, package: str | None, all_: bool) -> None:
        """Verify a package (ID or FILE) or --all: structure, names, sizes, manifest,
        SHA-256 of every member, every record, chain continuity. Exits 3 on failure."""
        if bool(package) == all_:
            raise click.UsageError("give a package ID or FILE, or --all")
        if package and Path(package).is_file():
            m = verify_package(Path(package))
            click.echo(f"OK      {package}: {m.package_id}")
            return
        store = open_store(load(ctx).packages_url)
        if package:
            m = store.get(package)
            store.verify(m.package_id)
            click.echo(f"OK      {m.package_id}")
            return
        failed = 0
        good: list[Manifest] = []
        for check in verify_store(store):
            if check.ok:
                click.echo(f"OK      {check.subject}")
            else:
                failed += 1
                click.echo(f"FAILED  {check.subject}: {check.problem}")
            if check.manifest is not None:
                good.append(check.manifest)
        current().add_manifests(good)
        if failed:
            current().update(progress=f"{failed} check(s) failed")
            click.echo(f"{failed} check(s) failed", err=True)
            sys.exit(ValidationError.exit_code)

    @packages.command("prune")
    @click.option("--dry-run", is_flag=True, help="list what would be deleted, delete nothing")
    @click.option("--policy", help="e.g. 'REDUNDANCY 2' or 'RECOVERY WINDOW OF 30 DAYS' "
                  "(default: [packages] retention)")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def prune(ctx: click.Context, dry_run: bool, policy: str | None, as_json: bool) -> None:
        """Delete packages the retention policy no longer needs (never leased ones)."""
        cfg = load(ctx)
        rule = parse_policy(policy or cfg.retention)
        store = open_store(cfg.packages_url)
        decision = decide(rule, store.list(), now_us=time.time_ns() // 1000,
                          leased=store.leased())
        deleted, refused = [], []
        if not dry_run:
            for package_id in decision.obsolete:
                try:
                    store.delete(package_id)
                    deleted.append(package_id)
                except ValidationError as exc:  # leased since the decision
                    refused.append(f"{package_id}: {exc}")
        current().update(packages=deleted, progress=f"{str(rule)}: {len(decision.keep)} kept, "
                         f"{len(deleted)} deleted" + (" (dry run)" if dry_run else ""))
        if as_json:
            echo_json({"policy": str(rule), "dry_run": dry_run, **decision.to_json(),
                       "deleted": deleted, "refused": refused})
            return
        verb = "would delete" if dry_run else "deleted"
        for package_id in decision.obsolete if dry_run else deleted:
            click.echo(f"{verb}  {package_id}  ({decision.reasons[package_id]})")
        for line in refused:
            click.echo(f"kept    {line}")
        click.echo(f"{str(rule)}: {len(decision.keep)} kept, {len(decision.obsolete)} obsolete")
