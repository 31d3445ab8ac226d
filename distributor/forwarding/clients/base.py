"""What every forwarding client is: it sends one encoded ExportTraceServiceRequest as it is, with the
tenant header, and says how the backend answered.

The payload is bytes from end to end (the receiver's own encoding unless attributes were truncated),
so forwarding costs a socket write, not a re-encode.
"""

from __future__ import annotations

from typing import Protocol

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse


class ExportClient(Protocol):
    async def start(self) -> None: ...

    async def export(self, tenant: str, payload: bytes) -> int:
        """Deliver; returns the spans the backend reported rejecting in a partial success (usually 0).
        Raises ExportFailure."""
        ...

    async def close(self) -> None: ...


def rejected_spans(response: bytes) -> int:
    try:
        return int(ExportTraceServiceResponse.FromString(response).partial_success.rejected_spans)
    except DecodeError:
        return 0  # a success whose body is not OTLP (some proxies): nothing was reported rejected
