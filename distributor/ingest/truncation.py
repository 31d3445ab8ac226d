"""Per-tenant attribute truncation, as Tempo's distributor does with `max_attribute_bytes`.

Keys and string values longer than the limit are shortened, in resource, scope, span, event and
link attributes; other value types, and strings nested in arrays or kvlists, are left alone (as
Tempo does). Unlike Tempo, which slices bytes and can split a UTF-8 character (protobuf decoders
downstream then refuse the whole request), a string here is cut to its longest prefix that fits in
`max_bytes` UTF-8 bytes and ends on a character boundary.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from distributor.common.utf8 import utf8_prefix
from distributor.ingest.traces import ReceivedTraces
from distributor.ingest.wire import LazyResourceSpans, LazyScopeSpans

# Where attributes may be too long: (batch,) is a resource, (batch, scope) an InstrumentationScope,
# (batch, scope, span) a span with its events and links. Indexes follow request order.
_Path = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Truncation:
    protobuf: bytes  # the re-encoded ExportTraceServiceRequest with truncated attributes
    counts: Mapping[str, int]  # scope name -> attributes truncated (keys and values counted separately)


def truncate_attributes(traces: ReceivedTraces, max_bytes: int) -> Truncation | None:
    """None when max_bytes <= 0 or nothing is longer than max_bytes (the request is forwarded untouched)."""
    if max_bytes <= 0 or len(traces.protobuf) <= max_bytes:
        return None
    paths = _candidates(traces, max_bytes)
    if not paths:
        return None
    # A large span may just have many short attributes: look before paying for a second full decode.
    original = traces.request
    if not any(
        _too_long(kv.key, max_bytes) or _too_long(kv.value.string_value, max_bytes)
        for path in paths
        for _, kvs in _attribute_lists(original, path)
        for kv in kvs
    ):
        return None
    # The received request is shared with the rest of the pipeline (usage tracking reads it), so
    # the edits go to a private copy.
    copy = type(original).FromString(traces.protobuf)
    counts: dict[str, int] = {}
    for path in paths:
        for scope, kvs in _attribute_lists(copy, path):
            truncated = 0
            for kv in kvs:
                key = _cut(kv.key, max_bytes)
                if key is not None:
                    kv.key = key
                    truncated += 1
                # string_value reads "" unless the oneof holds a string, so other types never match.
                value = _cut(kv.value.string_value, max_bytes)
                if value is not None:
                    kv.value.string_value = value
                    truncated += 1
            if truncated:
                counts[scope] = counts.get(scope, 0) + truncated
    return Truncation(protobuf=copy.SerializeToString(), counts=counts)


def _candidates(traces: ReceivedTraces, max_bytes: int) -> list[_Path]:
    """The resources, scopes and spans whose encodings are long enough to hold a too-long attribute.

    An attribute's key or value is a substring of every encoding that contains it, so a message
    encoded in at most `max_bytes` bytes cannot hold one. Only lengths of already-split encodings
    are compared; nothing is decoded into objects. Measured with timeit on a 100-span request (one
    ScopeSpans, 25.6 kB, limit 2048) with nothing to truncate: ~15 us for truncate_attributes as a
    whole, ~19 us when `resource_spans_encodings` is not cached yet, against ~37 us for a full
    ExportTraceServiceRequest.FromString of it on the same machine. Most of the 15 us is reading
    each span's encoding out of the lazy message as a new bytes object (~85 ns per span).
    """
    paths: list[_Path] = []
    for b, batch in enumerate(traces.resource_spans_encodings):
        if len(batch) <= max_bytes:
            continue
        # Each element read from a repeated bytes field is a new bytes object (a copy): read them once.
        scopes = list(LazyResourceSpans.FromString(batch).scope_spans)
        # Whatever is not a ScopeSpans body (the resource, schema_url, framing) bounds the resource's
        # size; this holds even if the resource field were split across the encoding.
        if len(batch) - sum(map(len, scopes)) > max_bytes:
            paths.append((b,))
        for s, scope in enumerate(scopes):
            if len(scope) <= max_bytes:
                continue
            sizes = list(map(len, LazyScopeSpans.FromString(scope).spans))
            if len(scope) - sum(sizes) > max_bytes:  # the same bound, for the InstrumentationScope
                paths.append((b, s))
            if sizes and max(sizes) > max_bytes:  # the usual answer is no: skip the Python loop
                paths.extend((b, s, k) for k, size in enumerate(sizes) if size > max_bytes)
    return paths


def _attribute_lists(request: Any, path: _Path) -> Iterator[tuple[str, Any]]:
    """(scope name, repeated KeyValue) for each attribute list at `path` in `request`; read-only."""
    batch = request.resource_spans[path[0]]
    if len(path) == 1:
        yield "resource", batch.resource.attributes
        return
    scope_spans = batch.scope_spans[path[1]]
    if len(path) == 2:
        yield "scope", scope_spans.scope.attributes
        return
    span = scope_spans.spans[path[2]]
    yield "span", span.attributes
    for event in span.events:
        yield "event", event.attributes
    for link in span.links:
        yield "link", link.attributes


def _too_long(text: str, max_bytes: int) -> bool:
    """Whether `text` is longer than `max_bytes` in UTF-8."""
    # n characters take n to 4n bytes: only a string in between needs encoding to know.
    n = len(text)
    return n > max_bytes or (4 * n > max_bytes and len(text.encode()) > max_bytes)


def _cut(text: str, max_bytes: int) -> str | None:
    """The longest prefix of `text` that fits in `max_bytes` UTF-8 bytes, or None if `text` fits."""
    if not _too_long(text, max_bytes):
        return None
    return utf8_prefix(text.encode(), max_bytes)
