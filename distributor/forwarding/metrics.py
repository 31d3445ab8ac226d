"""The forwarders' metrics: deliveries, failures, retries, drops, latency, queue lengths and queued bytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from distributor.common.tenant_series import remove_tenants

# (tenant, requests waiting) for every tenant with a queue
QueueLengths = Callable[[], Iterable[tuple[str, int]]]
# payload bytes waiting or being sent, over all tenants
QueuedBytes = Callable[[], int]

log = logging.getLogger(__name__)

# Requests per fsync of a persistent queue: 1 when requests arrive one at a time, up to the number of
# requests in flight when they arrive together.
FSYNC_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FSYNC_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class PersistentQueueState(Protocol):
    """What the persistent queue gauges read at each scrape."""

    def bytes_on_disk(self) -> int: ...

    def pending_records(self) -> int: ...

    def oldest_appended_at(self) -> float | None: ...


class ForwarderMetrics:
    """Per forwarder: what was sent, what failed and why, retries, drops, and send latency."""

    def __init__(self, registry: CollectorRegistry, wall_clock: Callable[[], float] = time.time) -> None:
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
        self.redeliveries = counter(
            "redeliveries_total",
            "Requests of a persistent queue sent again after a restart because their send had started "
            "before it: the backend may receive them twice",
            ["forwarder"],
        )
        self.partial_deliveries = counter(
            "partial_deliveries_total",
            "Requests this synchronous or persistent forwarder took while the request was refused to the "
            "client because another forwarder of its tenant did not: the client's retry sends them again",
            ["forwarder"],
        )
        self.queue_skipped_records = counter(
            "persistent_queue_skipped_records_total",
            "Records a persistent queue skipped when opened (torn_tail, checksum, bad_state)",
            ["forwarder", "reason"],
        )
        self.queue_skipped_bytes = counter(
            "persistent_queue_skipped_bytes_total",
            "Bytes a persistent queue skipped when opened, by reason",
            ["forwarder", "reason"],
        )
        self.queue_state_write_failures = counter(
            "persistent_queue_state_write_failures_total",
            "Failed writes of a persistent queue's sending and delivered marks (records may be sent again)",
            ["forwarder"],
        )
        self.fsync_duration = Histogram(
            "tempo_distributor_forwarder_persistent_queue_fsync_duration_seconds",
            "Time (in seconds) one group commit of a persistent queue took: its write and its fsync",
            ["forwarder"],
            buckets=FSYNC_SECONDS_BUCKETS,
            registry=registry,
        )
        self.fsync_batch = Histogram(
            "tempo_distributor_forwarder_persistent_queue_fsync_batch_requests",
            "Requests made durable by one fsync of a persistent queue",
            ["forwarder"],
            buckets=FSYNC_BATCH_BUCKETS,
            registry=registry,
        )
        self._queues: list[tuple[str, int, QueueLengths, QueuedBytes]] = []
        registry.register(_QueueCollector(self._queues))
        self._persistent_queues: list[tuple[str, PersistentQueueState]] = []
        registry.register(_PersistentQueueCollector(self._persistent_queues, wall_clock))

    def queue_observer(self, forwarder: str) -> QueueObserver:
        """What a persistent queue reports (commits, skipped data), counted for `forwarder`."""
        return QueueObserver(self, forwarder)

    def watch_persistent_queue(self, forwarder: str, queue: PersistentQueueState) -> None:
        self._persistent_queues.append((forwarder, queue))

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


class QueueObserver:
    """Counts what a persistent queue reports; called from its writer thread and from the loop."""

    def __init__(self, metrics: ForwarderMetrics, forwarder: str) -> None:
        self._fsync_duration = metrics.fsync_duration.labels(forwarder)
        self._fsync_batch = metrics.fsync_batch.labels(forwarder)
        self._metrics = metrics
        self._forwarder = forwarder

    def committed(self, seconds: float, records: int, size: int) -> None:
        self._fsync_duration.observe(seconds)
        self._fsync_batch.observe(records)

    def skipped(self, reason: str, records: int, size: int) -> None:
        self._metrics.queue_skipped_records.labels(self._forwarder, reason).inc(records)
        self._metrics.queue_skipped_bytes.labels(self._forwarder, reason).inc(size)
        log.warning(
            "forwarder %s: the persistent queue skipped %d bytes (%d records) it could not trust (%s)",
            self._forwarder, size, records, reason,
        )  # fmt: skip

    def state_write_failed(self, error: OSError) -> None:
        self._metrics.queue_state_write_failures.labels(self._forwarder).inc()


class _PersistentQueueCollector(Collector):
    def __init__(
        self, queues: list[tuple[str, PersistentQueueState]], wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._queues = queues
        self._wall_clock = wall_clock

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "tempo_distributor_forwarder_persistent_queue_bytes",
            "Bytes a forwarder's persistent queue holds on disk",
            labels=["forwarder"],
        )
        requests = GaugeMetricFamily(
            "tempo_distributor_forwarder_persistent_queue_requests",
            "Requests in a forwarder's persistent queue not yet delivered (or dropped)",
            labels=["forwarder"],
        )
        oldest = GaugeMetricFamily(
            "tempo_distributor_forwarder_persistent_queue_oldest_age_seconds",
            "Age of the oldest request in a forwarder's persistent queue (0 when empty)",
            labels=["forwarder"],
        )
        now = self._wall_clock()
        for forwarder, queue in self._queues:
            size.add_metric([forwarder], queue.bytes_on_disk())
            requests.add_metric([forwarder], queue.pending_records())
            appended_at = queue.oldest_appended_at()
            oldest.add_metric([forwarder], 0.0 if appended_at is None else max(0.0, now - appended_at))
        yield size
        yield requests
        yield oldest
