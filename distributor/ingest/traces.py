"""A received, fully validated trace export request: what receivers hand to the rest of the pipeline."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.ingest.scan import ScanPlan, scan
from distributor.ingest.wire import LazyTracesRequest


class ReceivedTraces:
    """`protobuf` is the request as received (or converted from OTLP/JSON), validated by one scan that
    also measured it and, given a tenant's ScanPlan, attributed its usage. No protobuf objects exist
    unless something asks for `request`."""

    def __init__(self, protobuf: bytes, plan: ScanPlan | None = None, max_attribute_bytes: int = 0) -> None:
        (span_counts, sizes, series, long_attribute), request = scan(protobuf, plan, max_attribute_bytes)
        self.protobuf = protobuf
        self.batch_span_counts: list[int] = span_counts  # per ResourceSpans, in request order
        self.batch_sizes: list[int] = sizes  # canonical encoded size of each ResourceSpans
        self.span_count = sum(span_counts)
        self.plan = plan
        self._series = series
        self.max_attribute_bytes = max_attribute_bytes
        # Whether an attribute key or string value is longer than `max_attribute_bytes`.
        self.long_attribute: bool = long_attribute
        if request is not None:
            self.request = request  # the reference path decoded it already

    @cached_property
    def request(self) -> Any:
        """The decoded ExportTraceServiceRequest (built on first use: only truncation needs it)."""
        return ExportTraceServiceRequest.FromString(self.protobuf)

    def series_for(self, plan: ScanPlan) -> dict[tuple[str, ...], tuple[int, int]]:
        """(bytes, spans) per label-value tuple under `plan`, in arrival order; label values as read,
        before any bound on their length."""
        if self._series is not None and (plan is self.plan or plan == self.plan):
            return self._series
        (_, _, series, _), _ = scan(self.protobuf, plan, 0)
        assert series is not None
        return series

    @cached_property
    def resource_spans_encodings(self) -> list[bytes]:
        """Each ResourceSpans exactly as encoded, in request order (aligned with request.resource_spans)."""
        return list(LazyTracesRequest.FromString(self.protobuf).resource_spans)

    @property
    def attributable_bytes(self) -> int:
        """What the usage tracker attributes: the canonical size of every ResourceSpans that has spans."""
        return sum(
            size for size, spans in zip(self.batch_sizes, self.batch_span_counts, strict=True) if spans
        )
