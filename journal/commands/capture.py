"""``journal capture``: the always-on capture daemon, in the foreground."""

from __future__ import annotations

import logging
import signal
import threading

import click

from journal.commands._common import config as load
from journal.commands._common import echo_json


def register(group: click.Group) -> None:
    @group.command("capture")
    @click.option("--once-until-idle", type=float, metavar="SECONDS",
                  help="exit cleanly once the stream has been idle this long")
    @click.option("--json", "as_json", is_flag=True, help="print the final counters as JSON")
    @click.option("--metrics-port", type=int, metavar="PORT",
                  help="serve Prometheus metrics on 127.0.0.1:PORT/metrics")
    @click.pass_context
    def capture(ctx: click.Context, once_until_idle: float | None, as_json: bool,
                metrics_port: int | None) -> None:
        """Stream every committed change of the captured tables into the journal.

        Creates the slot and takes the initial snapshot on first start. SIGTERM or
        SIGINT: finish the current flush, confirm it to the slot, exit 0."""
        from producers.capture import CaptureMetrics, run_capture

        cfg = load(ctx)
        if logging.getLogger().level > logging.INFO:
            logging.getLogger("producers").setLevel(logging.INFO)
        stop = threading.Event()

        def _stop(signum: int, _frame: object) -> None:
            logging.getLogger("producers.capture").info(
                "%s received: finishing the current flush", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        metrics = CaptureMetrics()
        if metrics_port is not None:
            from journal.metrics import CaptureCollector, serve

            serve(CaptureCollector(metrics), metrics_port)
        run_capture(cfg, stop, once_until_idle=once_until_idle, metrics=metrics)
        if as_json:
            echo_json(metrics.to_json())
