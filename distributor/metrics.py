"""The process's own metrics, served at GET /metrics (usage series live at /usage_metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from distributor.usage.tracker import UsageTracker


class DistributorMetrics:
    """One registry per service instance, so several services can run in one process (tests)."""

    def __init__(self, tracker: UsageTracker) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.spans_received = Counter(
            "tempo_distributor_spans_received_total",
            "The total number of spans received per tenant",
            ["tenant"],
            registry=self.registry,
        )
        self.bytes_received = Counter(
            "tempo_distributor_bytes_received_total",
            "The total number of protobuf bytes accepted per tenant",
            ["tenant"],
            registry=self.registry,
        )
        self.ingress_bytes = Counter(
            "tempo_distributor_ingress_bytes_total",
            "The total number of request body bytes received per tenant, as sent (possibly compressed)",
            ["tenant"],
            registry=self.registry,
        )
        self.discarded_spans = Counter(
            "tempo_discarded_spans_total",
            "The total number of spans accepted by a receiver but not passed on, by reason",
            ["tenant", "reason"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "tempo_request_duration_seconds",
            "Time (in seconds) spent serving HTTP requests",
            ["method", "route", "status_code"],
            registry=self.registry,
        )
        self.registry.register(_UsageTrackerCollector(tracker))


class _UsageTrackerCollector(Collector):
    def __init__(self, tracker: UsageTracker) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "tempo_usage_tracker_active_series",
            "Usage series currently exposed at /usage_metrics per tenant (the overflow series excluded)",
            labels=["tenant"],
        )
        overflow = CounterMetricFamily(
            "tempo_usage_tracker_overflow_bytes",
            "Bytes attributed to the __overflow__ series because the tenant reached max_cardinality",
            labels=["tenant"],
        )
        for stats in self._tracker.stats():
            active.add_metric([stats.tenant], stats.active_series)
            overflow.add_metric([stats.tenant], stats.overflow_bytes)
        yield active
        yield overflow
