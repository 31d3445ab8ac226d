"""The distributor pipeline after a receiver: tenant limits -> usage tracking -> (forwarders)."""

from __future__ import annotations

from distributor.metrics import DistributorMetrics
from distributor.traces import ReceivedTraces
from distributor.usage.tracker import UsageTracker
from overrides import OverridesProvider

# Forwarding to a tracing backend is not built yet: accepted spans end here, and are counted as such
# so the loss is never silent.
NO_FORWARDER = "no_forwarder"


class Distributor:
    def __init__(
        self, overrides: OverridesProvider, tracker: UsageTracker, metrics: DistributorMetrics
    ) -> None:
        self.overrides = overrides
        self.tracker = tracker
        self.metrics = metrics

    def push(self, tenant: str, traces: ReceivedTraces, ingress_bytes: int) -> None:
        """Account one validated request; it cannot fail part-way, so a request counts wholly or not."""
        limits = self.overrides.for_tenant(tenant)
        self.tracker.observe(tenant, traces, limits)
        metrics = self.metrics
        metrics.ingress_bytes.labels(tenant).inc(ingress_bytes)
        if traces.span_count:
            metrics.spans_received.labels(tenant).inc(traces.span_count)
            metrics.bytes_received.labels(tenant).inc(len(traces.protobuf))
            metrics.discarded_spans.labels(tenant, NO_FORWARDER).inc(traces.span_count)
