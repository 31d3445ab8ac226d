"""A received, fully validated trace export request: what receivers hand to the rest of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from distributor.ingest.wire import LazyTracesRequest


@dataclass
class ReceivedTraces:
    """`request` is the validated decode; `protobuf` its encoding (as received, or from JSON)."""

    request: Any  # ExportTraceServiceRequest
    protobuf: bytes
    batch_span_counts: list[int] = field(init=False)  # per ResourceSpans, in request order
    span_count: int = field(init=False)

    def __post_init__(self) -> None:
        # Counted once here: the tracker and the metrics both need them, and each count reads upb objects.
        self.batch_span_counts = [
            sum(len(scope.spans) for scope in batch.scope_spans) for batch in self.request.resource_spans
        ]
        self.span_count = sum(self.batch_span_counts)

    @cached_property
    def resource_spans_encodings(self) -> list[bytes]:
        """Each ResourceSpans exactly as encoded, in request order (aligned with request.resource_spans)."""
        return list(LazyTracesRequest.FromString(self.protobuf).resource_spans)

    @property
    def attributable_bytes(self) -> int:
        """What the usage tracker attributes: every ResourceSpans that has spans, as encoded."""
        return sum(
            len(encoded)
            for encoded, spans in zip(self.resource_spans_encodings, self.batch_span_counts, strict=True)
            if spans
        )
