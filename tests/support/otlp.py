"""Builders for OTLP requests (protobuf, and OTLP/JSON as an SDK writes it), the spec's byte arithmetic,
and the tracker's per-tenant limits."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from distributor.ingest.traces import ReceivedTraces
from distributor.overrides import TenantLimits, parse_dimensions


def any_value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def attributes(attrs: Mapping[str, object] | Iterable[tuple[str, object]]) -> list[KeyValue]:
    items = attrs.items() if isinstance(attrs, Mapping) else attrs
    return [KeyValue(key=k, value=any_value(v)) for k, v in items]


def span(
    attrs: Mapping[str, object] | Iterable[tuple[str, object]] = (),
    name: str = "op",
    pad: int = 0,
    events: Iterable[Mapping[str, object]] = (),
) -> Span:
    """A span; `pad` adds that many bytes to its name, to reach a chosen encoded size."""
    result = Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name=name + "x" * pad,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_100_000_000,
        attributes=attributes(attrs),
    )
    for event_attrs in events:
        result.events.add(name="event", attributes=attributes(event_attrs))
    return result


def batch(
    resource: Mapping[str, object] | Iterable[tuple[str, object]] = (), *scopes: list[Span]
) -> ResourceSpans:
    result = ResourceSpans()
    result.resource.attributes.extend(attributes(resource))
    for spans in scopes:
        scope = result.scope_spans.add()
        scope.scope.name = "instrumentation"
        scope.spans.extend(spans)
    return result


def request(*batches: ResourceSpans) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=list(batches))


def received(req: ExportTraceServiceRequest) -> ReceivedTraces:
    return ReceivedTraces(req.SerializeToString())


def limits(dimensions: object, max_cardinality: int = 0) -> TenantLimits:
    return TenantLimits(parse_dimensions(dimensions), max_cardinality)


def framed(message: Any) -> int:
    """Encoded size of a message as a length-delimited field: tag + varint length + body."""
    size = message.ByteSize()
    varint = 1
    while size >> (7 * varint):
        varint += 1
    return 1 + varint + size


def split_expectation(rs: ResourceSpans, series_of_span: list[str]) -> dict[str, int]:
    """The spec's arithmetic for one batch: span bytes + an even share of the rest, the rounding
    remainder on the first span. `series_of_span` names each span's series, in order."""
    spans = [s for scope in rs.scope_spans for s in scope.spans]
    assert len(spans) == len(series_of_span)
    span_bytes = [framed(s) for s in spans]
    shared = rs.ByteSize() - sum(span_bytes)
    portion = round(shared / len(spans))  # Python rounds half to even, as the spec says
    expected: dict[str, int] = {}
    for index, (name, size) in enumerate(zip(series_of_span, span_bytes, strict=True)):
        extra = shared - portion * len(spans) if index == 0 else 0
        expected[name] = expected.get(name, 0) + size + portion + extra
    return expected


def span_count(req: ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for rs in req.resource_spans for scope in rs.scope_spans)


def sample_request() -> ExportTraceServiceRequest:
    """Two batches of two services, one batch with two scopes, one span overriding service.name."""
    return request(
        batch({"service.name": "auth-service"}, [span({"http.route": "/login"}), span()], [span(pad=300)]),
        batch({"service.name": "shop-backend"}, [span({"service.name": "cart-service"}), span(pad=20_000)]),
    )


def otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as an SDK writes it: ids in hex, not protobuf JSON's base64."""
    document = MessageToDict(req)

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hexify(value)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(document)
    return json.dumps(document).encode()


def sdk_spans(services: tuple[str, ...] = ("checkout", "payments"), per_service: int = 3) -> list[Any]:
    """Finished OpenTelemetry SDK spans (ReadableSpan) of these services."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    recorded = InMemorySpanExporter()
    for service in services:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(recorded))
        tracer = provider.get_tracer("test")
        for i in range(per_service):
            with tracer.start_as_current_span(f"{service}-op-{i}", attributes={"i": i}):
                pass
    return list(recorded.get_finished_spans())
