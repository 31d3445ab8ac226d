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
from overrides.reload import RuntimeOverridesReloader


class DistributorMetrics:
    """One registry per service instance, so several services can run in one process (tests)."""

    def __init__(self, tracker: UsageTracker, reloader: RuntimeOverridesReloader | None = None) -> None:
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
        if reloader is not None:
            self.registry.register(_RuntimeConfigCollector(reloader))


class _RuntimeConfigCollector(Collector):
    """Tempo's runtime-config metrics, so an alert can fire on a bad overrides edit."""

    def __init__(self, reloader: RuntimeOverridesReloader) -> None:
        self._reloader = reloader

    def collect(self) -> Iterator[Metric]:
        status = self._reloader.status
        yield GaugeMetricFamily(
            "tempo_runtime_config_last_reload_successful",
            "Whether the last runtime overrides reload attempt was successful",
            value=1 if status.last_reload_successful else 0,
        )
        config_hash = GaugeMetricFamily(
            "tempo_runtime_config_hash", "Hash of the runtime overrides file in force", labels=["sha256"]
        )
        config_hash.add_metric([status.sha256_in_force], 1)
        yield config_hash
        yield GaugeMetricFamily(
            "tempo_runtime_config_last_success_timestamp_seconds",
            "When the runtime overrides in force were loaded",
            value=status.last_success_time,
        )


class _UsageTrackerCollector(Collector):
    def __init__(self, tracker: UsageTracker, reloader: RuntimeOverridesReloader | None = None) -> None:
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
