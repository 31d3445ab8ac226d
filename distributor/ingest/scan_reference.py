"""The reference scan of a trace export request: the protobuf runtime's full decode, then the usage
semantics of docs/usage-tracker.md read straight off the decoded messages.

It is the oracle the compiled core (`_core.scan`) is tested against, and the path the service takes
where the core could not be built or declines a request. It is written to be obviously right, not
fast: every span is visited as an object and measured with `ByteSize()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# What a scan returns, in both implementations: span count and canonical size of every ResourceSpans,
# usage (bytes, spans) per label-value tuple in arrival order (None when no keys were given), and
# whether any attribute key or string value is longer than the attribute limit.
ScanResult = tuple[list[int], list[int], dict[tuple[str, ...], tuple[int, int]] | None, bool]
Keys = tuple[tuple[bytes, ...], ...]


def scan_reference(
    payload: bytes,
    resource_keys: Keys | None,
    span_keys: Keys | None,
    missing: str,
    max_attribute_bytes: int,
) -> ScanResult:
    """`_core.scan`'s result for `payload`; raises the runtime's DecodeError where it refuses it."""
    request = ExportTraceServiceRequest.FromString(payload)
    return scan_decoded(request, resource_keys, span_keys, missing, max_attribute_bytes)


def scan_decoded(
    request: Any,
    resource_keys: Keys | None,
    span_keys: Keys | None,
    missing: str,
    max_attribute_bytes: int,
) -> ScanResult:
    """The scan of an already decoded ExportTraceServiceRequest."""
    span_counts: list[int] = []
    sizes: list[int] = []
    series: dict[tuple[str, ...], tuple[int, int]] | None = None
    if resource_keys is not None and span_keys is not None:
        series = {}
        resource_names = _names(resource_keys)
        span_names = _names(span_keys)
    long_attribute = False
    for batch in request.resource_spans:
        spans = [span for scope in batch.scope_spans for span in scope.spans]
        size = batch.ByteSize()
        span_counts.append(len(spans))
        sizes.append(size)
        if max_attribute_bytes > 0 and not long_attribute:
            long_attribute = _has_long_attribute(batch, max_attribute_bytes)
        if series is None or not spans:
            continue
        resource_values = _values(batch.resource.attributes, resource_names, (missing,) * len(resource_names))
        span_values = [_values(span.attributes, span_names, resource_values) for span in spans]
        span_bytes = [_framed_size(span.ByteSize()) for span in spans]
        # Resource, scopes and framing are shared: an even portion each, the first span takes the
        # rounding remainder, so the batch adds up to its size exactly.
        shared = size - sum(span_bytes)
        portion = _round_half_even(shared, len(spans))
        span_bytes = [own + portion for own in span_bytes]
        span_bytes[0] += shared - portion * len(spans)
        for values, own in zip(span_values, span_bytes, strict=True):
            total, count = series.get(values, (0, 0))
            series[values] = (total + own, count + 1)
    return span_counts, sizes, series, long_attribute


def _names(keys: Keys) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(key.decode("utf-8") for key in label_keys) for label_keys in keys)


def _values(attributes: Any, keys: tuple[tuple[str, ...], ...], defaults: tuple[str, ...]) -> tuple[str, ...]:
    """Per label, the value of its first key (in configuration order) that has one, else the default.
    A key's value is its first occurrence holding a non-empty string."""
    found: dict[str, str] = {}
    for kv in attributes:
        if kv.key not in found and kv.value.WhichOneof("value") == "string_value" and kv.value.string_value:
            found[kv.key] = kv.value.string_value
    return tuple(
        next((found[key] for key in label_keys if key in found), default)
        for label_keys, default in zip(keys, defaults, strict=True)
    )


def _has_long_attribute(batch: Any, max_bytes: int) -> bool:
    lists: list[Sequence[Any]] = [batch.resource.attributes]
    for scope in batch.scope_spans:
        lists.append(scope.scope.attributes)
        for span in scope.spans:
            lists.append(span.attributes)
            lists.extend(event.attributes for event in span.events)
            lists.extend(link.attributes for link in span.links)
    return any(
        len(kv.key.encode("utf-8")) > max_bytes or len(kv.value.string_value.encode("utf-8")) > max_bytes
        for attributes in lists
        for kv in attributes
    )


def _framed_size(size: int) -> int:
    """A Span inside ScopeSpans: its tag byte, the varint of its size, and the span."""
    return 1 + _varint_size(size) + size


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _round_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient
