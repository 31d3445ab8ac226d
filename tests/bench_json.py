"""OTLP/JSON converter throughput: the direct encoder against the converter it replaced (json.loads, a
validating walk, json_format.ParseDict) and against ExportTraceServiceRequest.FromString of the same
spans as protobuf, on requests of 50 spans and of 5 spans (a browser's size). Converter only: no HTTP,
no accounting. Run: .venv/bin/python -m tests.bench_json
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.receivers.otlp_json import otlp_json_to_protobuf
from tests.bench import make_payloads
from tests.test_otlp_json import reference_otlp_json_to_protobuf

ROUNDS = 5
SPANS_PER_ROUND = 10_000  # per converter and round: a round takes a few tens of milliseconds at least

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
    return node


def otlp_json_body(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the SDK exporters write it: hex ids, integer enums, 64-bit integers as strings,
    no whitespace."""
    document = _hex_ids(MessageToDict(request, use_integers_for_enums=True))
    return json.dumps(document, separators=(",", ":")).encode()


def requests_of(spans_per_request: int) -> list[ExportTraceServiceRequest]:
    """Requests of `spans_per_request` spans with one resource and scope each, cut from the spans of
    `make bench` (realistic attributes, six per span)."""
    requests = []
    for payload in make_payloads(span_team=False):
        for batch in ExportTraceServiceRequest.FromString(payload).resource_spans:
            spans = batch.scope_spans[0].spans
            for start in range(0, len(spans) - spans_per_request + 1, spans_per_request):
                request = ExportTraceServiceRequest()
                cut = request.resource_spans.add()
                cut.resource.CopyFrom(batch.resource)
                scope = cut.scope_spans.add()
                scope.scope.CopyFrom(batch.scope_spans[0].scope)
                scope.spans.extend(spans[start : start + spans_per_request])
                requests.append(request)
    return requests


def _spans_per_second(convert: Callable[[bytes], object], bodies: list[bytes], spans: int) -> float:
    """Best of ROUNDS rounds, each converting enough requests for about SPANS_PER_ROUND spans. Timed in
    CPU seconds of this process, so that other load on the machine does not skew the ratios."""
    repeat = max(1, SPANS_PER_ROUND // (spans * len(bodies)))
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(repeat):
            for body in bodies:
                convert(body)
        best = min(best, time.process_time() - started)
    return spans * len(bodies) * repeat / best


def measure_converters(spans_per_request: int) -> dict[str, float]:
    """Spans per second of each converter on the same requests, from one run, and the ratios."""
    requests = requests_of(spans_per_request)[:200]
    json_bodies = [otlp_json_body(request) for request in requests]
    protobuf_bodies = [request.SerializeToString() for request in requests]
    for body, expected in zip(json_bodies, protobuf_bodies, strict=True):
        assert otlp_json_to_protobuf(body) == expected == reference_otlp_json_to_protobuf(body)
    new = _spans_per_second(otlp_json_to_protobuf, json_bodies, spans_per_request)
    old = _spans_per_second(reference_otlp_json_to_protobuf, json_bodies, spans_per_request)
    from_string = _spans_per_second(ExportTraceServiceRequest.FromString, protobuf_bodies, spans_per_request)
    return {
        "spans_per_request": spans_per_request,
        "json_bytes_per_span": sum(map(len, json_bodies)) / len(json_bodies) / spans_per_request,
        "new_spans_per_second": new,
        "old_spans_per_second": old,
        "from_string_spans_per_second": from_string,
        "new_per_request_us": 1e6 * spans_per_request / new,
        "old_per_request_us": 1e6 * spans_per_request / old,
        "new_over_old": new / old,
        "new_over_from_string": new / from_string,
        "old_over_from_string": old / from_string,
    }


def print_converters(results: dict[str, float]) -> None:
    n = int(results["spans_per_request"])
    print(
        f"OTLP/JSON -> protobuf, {n}-span requests ({results['json_bytes_per_span']:.0f} JSON bytes a span)"
    )
    print(
        f"  new converter  {results['new_spans_per_second']:>11,.0f} spans/s"
        f"  ({results['new_per_request_us']:,.0f} us a request)"
    )
    print(
        f"  old converter  {results['old_spans_per_second']:>11,.0f} spans/s"
        f"  ({results['old_per_request_us']:,.0f} us a request)"
    )
    print(
        f"  FromString     {results['from_string_spans_per_second']:>11,.0f} spans/s (same spans as protobuf)"
    )
    print(
        f"  new/old {results['new_over_old']:.2f}x   new/FromString {results['new_over_from_string']:.3f}"
        f"   old/FromString {results['old_over_from_string']:.3f}"
    )


def main() -> None:
    for spans_per_request in (50, 5):
        print_converters(measure_converters(spans_per_request))


if __name__ == "__main__":
    main()
