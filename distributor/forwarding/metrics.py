"""The forwarders' metrics: deliveries, failures, retries, drops, latency, queue lengths and queued bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from distributor.common.tenant_series import remove_tenants

# (tenant, requests waiting) for every tenant with a queue
QueueLengths = Callable[[], Iterable[tuple[str, int]]]
# payload bytes waiting or being sent, over all tenants
QueuedBytes = Callable[[], int]


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
        self._queues: list[tuple[str, int, QueueLengths, QueuedBytes]] = []
        registry.register(_QueueCollector(self._queues))

    def release_tenants(self, tenants: Sequence[str]) -> None:
        """Drop the series of tenants gone idle (the queue gauges follow the queues themselves)."""
        for counter in (
            self.sent_requests,
            self.sent_spans,
            self.sent_bytes,
            self.dropped_requests,
            self.dropped_spans,
            self.rejected_spans,
        ):
            remove_tenants(counter, tenants)

    def watch_queues(
        self, forwarder: str, capacity: int, lengths: QueueLengths, queued_bytes: QueuedBytes
    ) -> None:
        """Expose a forwarder's per-tenant queue lengths and its queued bytes (read at each scrape),
        and the queues' capacity."""
        self._queues.append((forwarder, capacity, lengths, queued_bytes))


class _QueueCollector(Collector):
    def __init__(self, queues: list[tuple[str, int, QueueLengths, QueuedBytes]]) -> None:
        self._queues = queues

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
        queued = GaugeMetricFamily(
            "tempo_distributor_forwarder_queued_bytes",
            "Payload bytes of requests waiting or being sent by a forwarder, over all tenants",
            labels=["forwarder"],
        )
        for forwarder, queue_size, lengths, queued_bytes in self._queues:
            capacity.add_metric([forwarder], queue_size)
            queued.add_metric([forwarder], queued_bytes())
            for tenant, waiting in lengths():
                length.add_metric([forwarder, tenant], waiting)
        yield length
        yield capacity
        yield queued
