"""``journal compact [--once]``: turn the journal into backup packages."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

import click

from journal.commands._common import config as load
from journal.commands._common import echo_json
from journal.compactor import Compactor, Policy
from journal.events import Record
from journal.jobs.recorder import current
from journal.packages.store import open_store
from journal.transport import open_reader

log = logging.getLogger(__name__)


def register(group: click.Group) -> None:
    @group.command("compact")
    @click.option("--once", is_flag=True, help="package what the journal holds now, then exit")
    @click.option("--snapshot", "snapshot_now", is_flag=True,
                  help="also fold a new full snapshot at the end (on demand)")
    @click.option("--json", "as_json", is_flag=True, help="print the run's figures as JSON")
    @click.option("--metrics-port", type=int, metavar="PORT",
                  help="serve Prometheus metrics on 127.0.0.1:PORT/metrics")
    @click.pass_context
    def compact(ctx: click.Context, once: bool, snapshot_now: bool, as_json: bool,
                metrics_port: int | None) -> None:
        """Package the change stream: segments, and full snapshots by policy.

        An empty package store starts with a full snapshot: the journal's snapshot
        generation, or, when the journal no longer holds one, a snapshot read from the
        source (which capture's slot then continues).

        Without --once it follows the journal until SIGTERM or Ctrl-C, finishing the
        package it is writing first.
        """
        cfg = load(ctx)
        stop = threading.Event()
        if not once:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        reader = open_reader(cfg.journal_location(), cfg.database())

        def source_snapshot(emit: Callable[[Record], None]) -> object:
            # only when an empty store finds no snapshot generation in the journal
            from producers.source_snapshot import snapshot_from_source

            return snapshot_from_source(cfg, emit)

        try:
            store = open_store(cfg.packages_url)
            compactor = Compactor(reader, store, Policy.from_config(cfg),
                                  source_snapshot=source_snapshot)
            current().watch(lambda: {"events": compactor.stats.records,
                                     "packages": list(compactor.stats.packages)})
            if metrics_port is not None:
                from journal.metrics import CompactorCollector, serve

                serve(CompactorCollector(compactor.stats), metrics_port)
            stats = compactor.run(once=once, stop=stop)
            if snapshot_now:
                compactor.snapshot_now()
            current().add_manifests((store.get(p) for p in stats.packages), stats.records)
        finally:
            reader.close()
        summary = {"records": stats.records, "transactions": stats.transactions,
                   "segments": stats.segments, "snapshots": stats.snapshots,
                   "folds": stats.folds, "packages": stats.packages}
        if as_json:
            echo_json(summary)
        else:
            click.echo(f"{stats.transactions} transactions: {stats.segments} segments, "
                       f"{stats.snapshots + stats.folds} full snapshots")
            for package_id in stats.packages:
                click.echo(f"  {package_id}")
