"""The distributor pipeline after a receiver: tenant limits -> backpressure -> usage tracking ->
attribute truncation -> forwarders.

A request is refused as a whole or accepted as a whole. Refusals after decoding (rate limit, full
queues) are counted as discarded, spans and attributed bytes, and accepted requests are counted as
received and handed to every forwarder of the tenant. A 200 therefore means "accounted and queued for
forwarding"; what later fails to reach a backend is counted as discarded with the forwarder's reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from distributor.forwarding.forwarder import Forwarder, ForwardItem
from distributor.limits import IngestionRateLimiter
from distributor.metrics import DistributorMetrics
from distributor.traces import ReceivedTraces
from distributor.truncation import truncate_attributes
from distributor.usage.ledger import UsageLedger
from distributor.usage.tracker import Attribution, UsageTracker
from overrides import OverridesProvider, TenantLimits

# Discard reasons (tempo_discarded_spans_total, tempo_usage_tracker_bytes_discarded_total).
RATE_LIMITED = "rate_limited"  # Tempo's reason
QUEUE_FULL = "queue_full"
# A tenant with no forwarders is measured only: its spans go nowhere, and are counted so.
NO_FORWARDER = "no_forwarder"


class Refusal(Enum):
    RATE_LIMITED = "rate_limited"  # HTTP 429 + Retry-After, gRPC RESOURCE_EXHAUSTED + RetryInfo
    LARGER_THAN_BURST = "larger_than_burst"  # can never pass: HTTP 413, RESOURCE_EXHAUSTED, no RetryInfo
    QUEUE_FULL = "queue_full"  # HTTP 503, gRPC UNAVAILABLE


class PushRefused(Exception):
    def __init__(self, refusal: Refusal, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.message = message
        self.retry_after = retry_after


class Distributor:
    def __init__(
        self,
        overrides: OverridesProvider,
        tracker: UsageTracker,
        metrics: DistributorMetrics,
        rate_limiter: IngestionRateLimiter,
        forwarders: Mapping[str, Forwarder],
        ledger: UsageLedger | None = None,
    ) -> None:
        self.overrides = overrides
        self.tracker = tracker
        self.metrics = metrics
        self.rate_limiter = rate_limiter
        self.forwarders = forwarders
        self.ledger = ledger

    def push(self, tenant: str, traces: ReceivedTraces, ingress_bytes: int) -> None:
        """Account and queue one validated request, or raise PushRefused having changed nothing but
        the discard counters. Nothing here awaits, so the room checked in the queues is still there
        when the request is queued."""
        metrics = self.metrics
        metrics.ingress_bytes.labels(tenant).inc(ingress_bytes)
        if not traces.span_count:
            return  # nothing to limit, count or forward (Tempo answers these with success too)
        limits = self.overrides.for_tenant(tenant)
        size = len(traces.protobuf)
        decision = self.rate_limiter.take(tenant, size, limits.rate_limit_bytes, limits.burst_size_bytes)
        if not decision.allowed:
            self._discard(tenant, traces, limits, RATE_LIMITED)
            raise _rate_limited(tenant, size, limits, decision.never, decision.retry_after)
        forwarders = [self.forwarders[name] for name in limits.forwarders if name in self.forwarders]
        full = [forwarder.name for forwarder in forwarders if not forwarder.has_room(tenant)]
        if full:
            self.rate_limiter.give_back(tenant, size)  # refused, so it must not use up the tenant's rate
            self._discard(tenant, traces, limits, QUEUE_FULL)
            raise PushRefused(
                Refusal.QUEUE_FULL,
                f"forwarding queue full for tenant {tenant} (forwarder {', '.join(full)}): the backend is "
                "not keeping up; retry later",
                retry_after=1.0,
            )
        attribution = self.tracker.attribute(traces, limits)
        ledger = self.ledger
        if attribution is not None:
            overflowed = self.tracker.record_received(tenant, attribution)
            if ledger is not None:
                ledger.record(tenant, attribution.labels, attribution.pending, attribution.spans, overflowed)
        elif ledger is not None:  # not tracked (no dimensions): the ledger still bills the tenant
            ledger.record_total(tenant, traces.attributable_bytes, traces.span_count)
        metrics.spans_received.labels(tenant).inc(traces.span_count)
        metrics.bytes_received.labels(tenant).inc(size)
        if not forwarders:
            metrics.discarded_spans.labels(tenant, NO_FORWARDER).inc(traces.span_count)
            return
        payload = self._truncated(tenant, traces, limits.max_attribute_bytes)
        for forwarder in forwarders:
            forwarder.enqueue(ForwardItem(tenant, payload, traces.span_count, attribution))

    def _truncated(self, tenant: str, traces: ReceivedTraces, max_attribute_bytes: int) -> bytes:
        truncation = truncate_attributes(traces, max_attribute_bytes)
        if truncation is None:
            return traces.protobuf  # forwarded exactly as received
        for scope, count in truncation.counts.items():
            self.metrics.attributes_truncated.labels(tenant, scope).inc(count)
        return truncation.protobuf

    def _discard(self, tenant: str, traces: ReceivedTraces, limits: TenantLimits, reason: str) -> None:
        self.metrics.discarded_spans.labels(tenant, reason).inc(traces.span_count)
        attribution = self.tracker.attribute(traces, limits)
        if attribution is not None:
            self.tracker.record_discarded(tenant, attribution, reason)

    def forward_dropped(self, item: ForwardItem, reason: str) -> None:
        """A forwarder gave up on an accepted request: counted as discarded, attributed as it was."""
        self.metrics.discarded_spans.labels(item.tenant, reason).inc(item.span_count)
        if item.attribution is not None:
            self.tracker.record_discarded(item.tenant, item.attribution, reason)


def _rate_limited(
    tenant: str, size: int, limits: TenantLimits, never: bool, retry_after: float
) -> PushRefused:
    """Tempo's wording (local strategy, so the global limit is 0)."""
    rate, burst = limits.rate_limit_bytes, limits.burst_size_bytes
    if never:
        return PushRefused(
            Refusal.LARGER_THAN_BURST,
            f"RATE_LIMITED: batch size ({size} bytes) exceeds ingestion limit (local: {rate} bytes/s, "
            f"global: 0 bytes/s, burst: {burst} bytes) while adding {size} bytes for user {tenant}. "
            "consider reducing batch size or increasing rate limit.",
        )
    return PushRefused(
        Refusal.RATE_LIMITED,
        f"RATE_LIMITED: ingestion rate limit (local: {rate} bytes/s, global: 0 bytes/s, burst: {burst} "
        f"bytes) exceeded while adding {size} bytes for user {tenant}. consider increasing the limit or "
        "reducing ingestion rate.",
        retry_after,
    )


__all__ = ["Attribution", "Distributor", "PushRefused", "Refusal"]
