"""The reference scan of a trace export request: the protobuf runtime's full decode, then the usage
semantics of docs/usage-tracker.md read straight off the decoded messages.

It is the oracle the compiled core (`_core.scan`) is tested against, and the path the service takes
where the core could not be built or declines a request. It is written to be obviously right first.
Two shortcuts keep it usable as a fallback, neither changing a result: a ScopeSpans whose encoding does
not contain a span-level key's bytes has no span that could carry it (its spans keep the resource's
values unread), and a batch whose spans all share one series adds its size without measuring each span.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.ingest.wire import LazyResourceSpans, LazyScopeSpans, LazyTracesRequest

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
    return scan_decoded(payload, request, resource_keys, span_keys, missing, max_attribute_bytes)


def scan_decoded(
    payload: bytes,
    request: Any,
    resource_keys: Keys | None,
    span_keys: Keys | None,
    missing: str,
    max_attribute_bytes: int,
) -> ScanResult:
    """The scan of `payload`, already decoded as `request`."""
    span_counts: list[int] = []
    sizes: list[int] = []
    series: dict[tuple[str, ...], tuple[int, int]] | None = None
    if resource_keys is not None and span_keys is not None:
        series = {}
        resource_names = _names(resource_keys)
        span_names = _names(span_keys)
        needles = {key for label_keys in span_keys for key in label_keys}
    # The batches' raw encodings serve the two shortcuts only: not read when neither applies.
    needs_encodings = bool(series is not None and needles) or max_attribute_bytes > 0
    encodings = LazyTracesRequest.FromString(payload).resource_spans if needs_encodings else []
    long_attribute = False
    for index, batch in enumerate(request.resource_spans):
        span_count = sum(len(scope.spans) for scope in batch.scope_spans)
        size = batch.ByteSize()
        span_counts.append(span_count)
        sizes.append(size)
        if max_attribute_bytes > 0 and not long_attribute:
            long_attribute = _has_long_attribute(batch, encodings[index], max_attribute_bytes)
        if series is None or not span_count:
            continue
        resource_values = _values(batch.resource.attributes, resource_names, (missing,) * len(resource_names))
        scope_encodings = LazyResourceSpans.FromString(encodings[index]).scope_spans if needles else ()
        span_values: list[tuple[str, ...]] = []
        for scope, encoding in itertools.zip_longest(batch.scope_spans, scope_encodings):
            if encoding is not None and any(needle in encoding for needle in needles):
                span_values.extend(
                    _values(span.attributes, span_names, resource_values) for span in scope.spans
                )
            else:
                span_values.extend([resource_values] * len(scope.spans))
        if all(values == resource_values for values in span_values):
            total, count = series.get(resource_values, (0, 0))
            series[resource_values] = (total + size, count + span_count)
            continue
        spans = [span for scope in batch.scope_spans for span in scope.spans]
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


def _has_long_attribute(batch: Any, encoding: bytes, max_bytes: int) -> bool:
    """Whether a key or string value of the batch's resource, scope, span, event or link attributes is
    longer than `max_bytes`. A message whose encoding has at most `max_bytes` bytes cannot hold one (a
    string's bytes are part of every encoding that contains it), so only longer ones are read."""
    if len(encoding) <= max_bytes:
        return False
    lists: list[Sequence[Any]] = [batch.resource.attributes]
    for scope, scope_encoding in zip(
        batch.scope_spans, LazyResourceSpans.FromString(encoding).scope_spans, strict=True
    ):
        if len(scope_encoding) <= max_bytes:
            continue
        lists.append(scope.scope.attributes)
        for span, span_encoding in zip(
            scope.spans, LazyScopeSpans.FromString(scope_encoding).spans, strict=True
        ):
            if len(span_encoding) > max_bytes:
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
