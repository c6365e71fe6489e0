"""``journal sample``: create, fill and exercise the EDMS sample database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import psycopg

from journal import sample
from journal.commands._common import config, echo_json
from journal.config import redact
from journal.errors import SourceError

_url_option = click.option(
    "--url", help="PostgreSQL URL of the sample database (default: the configured source)")


@contextmanager
def _connect(ctx: click.Context, url: str | None) -> Iterator[psycopg.Connection[Any]]:
    cfg = config(ctx, source_url=url) if url else config(ctx)
    conninfo = cfg.source_conninfo()
    target = redact(conninfo["conninfo"])
    try:
        conn = psycopg.connect(**conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise SourceError(f"cannot connect to {target}: {exc}") from exc
    with conn:
        try:
            yield conn
        except psycopg.Error as exc:
            raise SourceError(f"sample database {target}: {exc}") from exc


def _has_schema(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute("SELECT to_regclass('document') IS NOT NULL").fetchone()[0]


@click.group("sample")
def sample_group() -> None:
    """The EDMS sample database: a Django-style schema, bulk data and a live workload."""


@sample_group.command("create")
@_url_option
@click.pass_context
def create(ctx: click.Context, url: str | None) -> None:
    """Create the sample's tables (in an empty database)."""
    with _connect(ctx, url) as conn:
        if _has_schema(conn):
            raise SourceError("the sample schema already exists in this database")
        sample.create_schema(conn)
    click.echo(f"created {len(sample.TABLES)} tables")


@sample_group.command("load")
@_url_option
@click.option("--scale", type=click.IntRange(min=1), default=1000, show_default=True,
              help="number of documents; users, versions, tags... follow")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def load(ctx: click.Context, url: str | None, scale: int, seed: int, as_json: bool) -> None:
    """Fill the sample with deterministic data (creates the tables first if missing)."""
    with _connect(ctx, url) as conn:
        if not _has_schema(conn):
            sample.create_schema(conn)
        elif conn.execute("SELECT EXISTS (SELECT 1 FROM document)").fetchone()[0]:
            raise SourceError("the sample already holds documents; load into empty tables")
        counts = sample.load(conn, scale, seed)
    if as_json:
        echo_json(counts)
    else:
        for table, rows in counts.items():
            click.echo(f"{table:<24} {rows:>10}")


@sample_group.command("workload")
@_url_option
@click.option("--transactions", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="at most this many transactions per second (default: as fast as possible)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def workload(ctx: click.Context, url: str | None, transactions: int, rate: float | None,
             seed: int, as_json: bool) -> None:
    """Run a realistic stream of committed multi-table transactions."""
    with _connect(ctx, url) as conn:
        stats = sample.workload(conn, transactions, seed, rate)
    if as_json:
        echo_json({"transactions": stats.transactions, "by_kind": dict(stats.by_kind),
                   "elapsed_s": round(stats.elapsed_s, 3)})
    else:
        click.echo(f"{stats.transactions} transactions in {stats.elapsed_s:.1f}s "
                   f"({stats.rate:.0f}/s)")
        for kind, count in stats.by_kind.most_common():
            click.echo(f"  {kind:<24} {count:>8}")


def register(group: click.Group) -> None:
    group.add_command(sample_group)
