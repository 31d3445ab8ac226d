"""What the ingest pipeline counts per tenant: received, refused and truncated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from distributor.common.tenant_series import remove_tenants


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.spans_received = Counter(
            "tempo_distributor_spans_received_total",
            "The total number of spans received per tenant",
            ["tenant"],
            registry=registry,
        )
        self.bytes_received = Counter(
            "tempo_distributor_bytes_received_total",
            "The total number of protobuf bytes accepted per tenant",
            ["tenant"],
            registry=registry,
        )
        self.ingress_bytes = Counter(
            "tempo_distributor_ingress_bytes_total",
            "The total number of request body bytes received per tenant, as sent (possibly compressed)",
            ["tenant"],
            registry=registry,
        )
        self.discarded_spans = Counter(
            "tempo_discarded_spans_total",
            "The total number of spans decoded but refused, or accepted but not delivered, by reason",
            ["tenant", "reason"],
            registry=registry,
        )
        self.refused_requests = Counter(
            "tempo_distributor_refused_requests_total",
            "Requests refused before anything of them was counted per tenant, by reason",
            ["reason"],
            registry=registry,
        )
        self.core_loaded = Gauge(
            "tempo_distributor_ingest_core_loaded",
            "1 when requests are scanned by the compiled ingest core, 0 when by the slower reference path",
            registry=registry,
        )
        self.attributes_truncated = Counter(
            "tempo_distributor_attributes_truncated_total",
            "The total number of attribute keys or values truncated per tenant and scope",
            ["tenant", "scope"],
            registry=registry,
        )

        # Each accepted request counts into three per-tenant series: their children are kept here, as
        # `labels()` costs ~3 us a call (a lock, a tuple, a dict lookup), a tenth of a 1-span request's
        # own work. Released with the series, so a tenant that comes back gets new ones.
        self._tenant_children: dict[str, tuple[Any, Any, Any]] = {}

    def received(self, tenant: str) -> tuple[Any, Any, Any]:
        """The tenant's (ingress bytes, spans received, bytes received) counters."""
        children = self._tenant_children.get(tenant)
        if children is None:
            children = self._tenant_children[tenant] = (
                self.ingress_bytes.labels(tenant),
                self.spans_received.labels(tenant),
                self.bytes_received.labels(tenant),
            )
        return children

    def release_tenants(self, tenants: Sequence[str]) -> None:
        """Drop the series of tenants gone idle."""
        for tenant in tenants:
            self._tenant_children.pop(tenant, None)
        for counter in (
            self.spans_received,
            self.bytes_received,
            self.ingress_bytes,
            self.discarded_spans,
            self.attributes_truncated,
        ):
            remove_tenants(counter, tenants)
