"""What the ingest pipeline counts per tenant: received, refused and truncated."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


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
        self.attributes_truncated = Counter(
            "tempo_distributor_attributes_truncated_total",
            "The total number of attribute keys or values truncated per tenant and scope",
            ["tenant", "scope"],
            registry=registry,
        )
