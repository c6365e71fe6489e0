"""Prometheus metrics of the long-running commands (capture, compact).

The daemons keep plain counter objects; a collector reads them at scrape time, so the
hot paths never call into the metrics library.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "edms_journal"


class CaptureCollector(Collector):
    def __init__(self, metrics: Any) -> None:  # producers.capture.CaptureMetrics
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        m = self.metrics
        yield CounterMetricFamily(f"{PREFIX}_capture_events", "row changes captured",
                                  value=m.events)
        yield CounterMetricFamily(f"{PREFIX}_capture_transactions",
                                  "source transactions captured", value=m.transactions)
        yield CounterMetricFamily(f"{PREFIX}_capture_bytes", "encoded bytes appended",
                                  value=m.bytes)
        yield CounterMetricFamily(f"{PREFIX}_capture_restarts",
                                  "reconnections after a lost source or transport",
                                  value=m.restarts)
        yield GaugeMetricFamily(f"{PREFIX}_capture_acked_lsn",
                                "LSN durable in the journal and confirmed to the slot",
                                value=m.last_acked_lsn)
        yield GaugeMetricFamily(f"{PREFIX}_capture_lag_bytes",
                                "WAL between the source's current LSN and the confirmed one",
                                value=m.lag_bytes)
        p50, p99 = m.lag_percentiles()
        lag = GaugeMetricFamily(f"{PREFIX}_capture_commit_ack_seconds",
                                "commit to journal acknowledgement, recent transactions",
                                labels=["quantile"])
        lag.add_metric(["0.5"], p50)
        lag.add_metric(["0.99"], p99)
        yield lag


class CompactorCollector(Collector):
    def __init__(self, stats: Any) -> None:  # journal.compactor.Stats
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self.stats
        for name, help_text in (("records", "stream records consumed"),
                                ("transactions", "transactions packaged"),
                                ("segments", "incremental segments written"),
                                ("snapshots", "full snapshots written from a snapshot stream"),
                                ("folds", "full snapshots folded from segments")):
            yield CounterMetricFamily(f"{PREFIX}_compactor_{name}", help_text,
                                      value=getattr(s, name))


def registry_for(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def serve(collector: Collector, port: int, address: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` on ``address:port`` from a daemon thread."""
    start_http_server(port, addr=address, registry=registry_for(collector))
