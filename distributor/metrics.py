"""The process's own metrics, served at GET /metrics (usage series live at /usage_metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from distributor.usage.tracker import UsageTracker
from overrides.reload import RuntimeOverridesReloader


class ForwarderMetrics:
    """Per forwarder: what was sent, what failed and why, retries, drops, and send latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, help_text: str, labels: list[str]) -> Counter:
            return Counter(f"tempo_distributor_forwarder_{name}", help_text, labels, registry=registry)

        self.sent_requests = counter("sent_requests_total", "Requests delivered", ["forwarder", "tenant"])
        self.sent_spans = counter("sent_spans_total", "Spans delivered", ["forwarder", "tenant"])
        self.sent_bytes = counter(
            "sent_bytes_total", "Protobuf bytes delivered (before compression)", ["forwarder", "tenant"]
        )
        self.send_failures = counter(
            "send_failures_total", "Failed delivery attempts, by reason", ["forwarder", "reason"]
        )
        self.retries = counter("retries_total", "Delivery attempts scheduled again", ["forwarder", "reason"])
        self.dropped_requests = counter(
            "dropped_requests_total", "Requests given up on, by reason", ["forwarder", "tenant", "reason"]
        )
        self.dropped_spans = counter(
            "dropped_spans_total", "Spans given up on, by reason", ["forwarder", "tenant", "reason"]
        )
        self.rejected_spans = counter(
            "partially_rejected_spans_total",
            "Spans a backend reported rejecting in an OTLP partial success",
            ["forwarder", "tenant"],
        )
        self.send_duration = Histogram(
            "tempo_distributor_forwarder_send_duration_seconds",
            "Time (in seconds) one delivery attempt took",
            ["forwarder", "outcome"],
            registry=registry,
        )


class QueueView:
    """What the queue gauges read from a forwarder (kept apart to avoid an import cycle)."""

    def __init__(self, name: str, capacity: int, lengths: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self.name = name
        self.capacity = capacity
        self.lengths = lengths


class _ForwarderQueueCollector(Collector):
    def __init__(self, views: list[QueueView]) -> None:
        self._views = views

    def collect(self) -> Iterator[Metric]:
        length = GaugeMetricFamily(
            "tempo_distributor_forwarder_queue_length",
            "Requests waiting in a tenant's queue of a forwarder",
            labels=["forwarder", "tenant"],
        )
        capacity = GaugeMetricFamily(
            "tempo_distributor_forwarder_queue_capacity",
            "Requests each tenant's queue of a forwarder holds (queue_size)",
            labels=["forwarder"],
        )
        for view in self._views:
            capacity.add_metric([view.name], view.capacity)
            for tenant, waiting in view.lengths():
                length.add_metric([view.name, tenant], waiting)
        yield length
        yield capacity


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
            "The total number of spans decoded but refused, or accepted but not delivered, by reason",
            ["tenant", "reason"],
            registry=self.registry,
        )
        self.attributes_truncated = Counter(
            "tempo_distributor_attributes_truncated_total",
            "The total number of attribute keys or values truncated per tenant and scope",
            ["tenant", "scope"],
            registry=self.registry,
        )
        self.forwarders = ForwarderMetrics(self.registry)
        self._queue_views: list[QueueView] = []
        self.registry.register(_ForwarderQueueCollector(self._queue_views))
        self.request_duration = Histogram(
            "tempo_request_duration_seconds",
            "Time (in seconds) spent serving HTTP requests",
            ["method", "route", "status_code"],
            registry=self.registry,
        )
        self.registry.register(_UsageTrackerCollector(tracker))
        if reloader is not None:
            self.registry.register(_RuntimeConfigCollector(reloader))

    def watch_queues(self, view: QueueView) -> None:
        self._queue_views.append(view)


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
