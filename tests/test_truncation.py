"""Attribute truncation: which strings are cut, where, by how much, and what is left alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from distributor.ingest.traces import ReceivedTraces
from distributor.ingest.truncation import Truncation, truncate_attributes
from tests.support.otlp import any_value, attributes, batch, received, request, span

LIMIT = 64


def sample_request() -> ExportTraceServiceRequest:
    """Two batches, two scopes in the first, every attribute scope populated with short strings."""
    first = batch(
        {"service.name": "checkout", "host.name": "ip-10-0-0-1"},
        [span({"http.method": "GET"}, events=[{"exception.type": "ValueError"}]), span({"a": 1})],
        [span({"http.route": "/items/{id}"})],
    )
    first.scope_spans[0].scope.attributes.extend(attributes({"library.language": "python"}))
    link = first.scope_spans[0].spans[0].links.add(trace_id=bytes(16), span_id=bytes(8))
    link.attributes.extend(attributes({"link.kind": "follows"}))
    second = batch({"service.name": "cart"}, [span({"http.method": "POST"})])
    return request(first, second)


def decode(protobuf: bytes) -> ExportTraceServiceRequest:
    """The official generated decoder, which refuses invalid UTF-8 in string fields."""
    result: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(protobuf)
    return result


def copy(req: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    return decode(req.SerializeToString())


def truncated(traces: ReceivedTraces, max_bytes: int = LIMIT) -> Truncation:
    result = truncate_attributes(traces, max_bytes)
    assert result is not None
    return result


# Where each scope's first attribute list lives in sample_request(): scope name -> accessor.
LOCATIONS: dict[str, Callable[[ExportTraceServiceRequest], Any]] = {
    "resource": lambda r: r.resource_spans[1].resource.attributes,
    "scope": lambda r: r.resource_spans[0].scope_spans[0].scope.attributes,
    "span": lambda r: r.resource_spans[0].scope_spans[1].spans[0].attributes,
    "event": lambda r: r.resource_spans[0].scope_spans[0].spans[0].events[0].attributes,
    "link": lambda r: r.resource_spans[0].scope_spans[0].spans[0].links[0].attributes,
}


@pytest.mark.parametrize("scope", sorted(LOCATIONS))
@pytest.mark.parametrize("part", ["key", "value"])
def test_each_scope_truncates_long_keys_and_string_values(scope: str, part: str) -> None:
    long = "k" * 40 + "v" * 60
    req = sample_request()
    kv = (
        KeyValue(key=long, value=any_value("short"))
        if part == "key"
        else KeyValue(key="k", value=any_value(long))
    )
    LOCATIONS[scope](req).append(kv)
    original = req.SerializeToString()

    result = truncated(received(req))

    expected = copy(req)
    fixed = LOCATIONS[scope](expected)[-1]
    if part == "key":
        fixed.key = long[:LIMIT]
    else:
        fixed.value.string_value = long[:LIMIT]
    assert decode(result.protobuf) == expected
    assert result.counts == {scope: 1}
    assert req.SerializeToString() == original, "the received request is not modified"


def test_key_and_value_of_one_attribute_count_separately_and_scopes_add_up() -> None:
    req = sample_request()
    for location in LOCATIONS.values():
        location(req).append(KeyValue(key="K" * 100, value=any_value("V" * 100)))
        location(req).append(KeyValue(key="k", value=any_value("v" * 65)))
    expected = copy(req)
    for location in LOCATIONS.values():
        kvs = location(expected)
        kvs[-2].key, kvs[-2].value.string_value = "K" * LIMIT, "V" * LIMIT
        kvs[-1].value.string_value = "v" * LIMIT

    result = truncated(received(req))

    assert result.counts == {scope: 3 for scope in LOCATIONS}
    assert decode(result.protobuf) == expected


@pytest.mark.parametrize("scope", sorted(LOCATIONS))
def test_exactly_at_limit_is_kept_and_one_byte_more_is_cut(scope: str) -> None:
    at_limit = sample_request()
    LOCATIONS[scope](at_limit).append(KeyValue(key="k" * LIMIT, value=any_value("v" * LIMIT)))
    assert truncate_attributes(received(at_limit), LIMIT) is None

    over = sample_request()
    LOCATIONS[scope](over).append(KeyValue(key="k" * (LIMIT + 1), value=any_value("v" * (LIMIT + 1))))
    result = truncated(received(over))
    kv = LOCATIONS[scope](decode(result.protobuf))[-1]
    assert (kv.key, kv.value.string_value) == ("k" * LIMIT, "v" * LIMIT)
    assert result.counts == {scope: 2}


@pytest.mark.parametrize("char", ["é", "€", "😀"])  # 2, 3 and 4 bytes in UTF-8
@pytest.mark.parametrize("ascii_prefix", [0, 1, 2, 3])  # shifts where the limit falls within a character
def test_multibyte_characters_straddling_the_limit_are_dropped_whole(char: str, ascii_prefix: int) -> None:
    width = len(char.encode())
    text = "a" * ascii_prefix + char * 40
    req = request(batch({}, [span({text: text})]))

    result = truncated(received(req))

    kv = decode(result.protobuf).resource_spans[0].scope_spans[0].spans[0].attributes[0]
    for cut in (kv.key, kv.value.string_value):
        assert text.startswith(cut)
        encoded = cut.encode()
        assert len(encoded) <= LIMIT
        # The longest such prefix: one more character would not fit.
        assert len(encoded) + width > LIMIT
        assert len(text[: len(cut) + 1].encode()) > LIMIT
    assert result.counts == {"span": 2}


def test_lengths_are_measured_in_utf8_bytes_not_characters() -> None:
    text = "é" * 40  # 40 characters, 80 bytes
    result = truncated(received(request(batch({"k": text}, [span()]))))
    cut = decode(result.protobuf).resource_spans[0].resource.attributes[0].value.string_value
    assert cut == "é" * (LIMIT // 2)


def test_non_string_values_are_untouched() -> None:
    long = "x" * 100
    values: list[object] = [2**62, long.encode(), [long, long], 1.5, True]
    nested = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=long, value=any_value(long))]))
    req = request(batch({"r": long.encode()}, [span({f"a{i}": v for i, v in enumerate(values)})]))
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="kvlist", value=nested)
    original = req.SerializeToString()
    assert len(req.resource_spans[0].scope_spans[0].spans[0].SerializeToString()) > LIMIT

    assert truncate_attributes(received(req), LIMIT) is None
    assert req.SerializeToString() == original

    # Beside a string that is cut, they still come through unchanged.
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="s", value=any_value(long))
    expected = copy(req)
    expected.resource_spans[0].scope_spans[0].spans[0].attributes[-1].value.string_value = long[:LIMIT]
    result = truncated(received(req))
    assert decode(result.protobuf) == expected
    assert result.counts == {"span": 1}


def test_nothing_too_long_returns_none_and_leaves_the_request_alone() -> None:
    req = sample_request()
    traces = received(req)
    original = traces.protobuf
    assert truncate_attributes(traces, LIMIT) is None
    assert traces.protobuf == original
    assert req.SerializeToString() == original


def test_large_messages_without_long_attributes_return_none() -> None:
    # Every level is far above the limit in size, made of attributes that are each short.
    many = {f"attribute.{i}": f"value-{i}" for i in range(50)}
    big = batch(many, [span(many, events=[many]) for _ in range(5)])
    big.scope_spans[0].scope.attributes.extend(attributes(many))
    link = big.scope_spans[0].spans[0].links.add()
    link.attributes.extend(attributes(many))
    req = request(big)
    assert len(big.scope_spans[0].scope.SerializeToString()) > LIMIT
    assert truncate_attributes(received(req), LIMIT) is None


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_non_positive_limit_disables_truncation(max_bytes: int) -> None:
    req = request(batch({"k": "v" * 10_000}, [span({"k" * 10_000: "v"})]))
    assert truncate_attributes(received(req), max_bytes) is None


def test_result_only_differs_in_the_truncated_strings() -> None:
    req = sample_request()
    req.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.string_value = "GET" * 30
    req.resource_spans[1].resource.attributes[0].key = "service.name." + "n" * 60
    expected = copy(req)
    expected.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.string_value = ("GET" * 30)[:LIMIT]
    expected.resource_spans[1].resource.attributes[0].key = ("service.name." + "n" * 60)[:LIMIT]

    result = truncated(received(req))

    assert result.counts == {"span": 1, "resource": 1}
    assert result.protobuf == expected.SerializeToString()
    assert decode(result.protobuf) == expected


def test_one_long_attribute_among_many_spans() -> None:
    def spans(n: int) -> list[Span]:
        return [span({"http.route": f"/items/{i}", "http.status_code": 200}, pad=i % 7) for i in range(n)]

    batches: list[ResourceSpans] = [
        batch({"service.name": f"svc-{b}"}, spans(40), spans(30)) for b in range(3)
    ]
    long = "SELECT * FROM items WHERE id IN (" + ", ".join(str(i) for i in range(2000)) + ")"
    target = batches[2].scope_spans[1].spans[17]
    target.attributes.add(key="db.statement", value=any_value(long))
    req = request(*batches)
    expected = copy(req)
    expected.resource_spans[2].scope_spans[1].spans[17].attributes[-1].value.string_value = long[:2048]

    result = truncate_attributes(received(req), 2048)

    assert result is not None
    assert result.counts == {"span": 1}
    assert decode(result.protobuf) == expected
    assert req.resource_spans[2].scope_spans[1].spans[17].attributes[-1].value.string_value == long


class Tripwire:
    """Stands in for the decoded request: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the decoded request was read ({name}) though no message is large enough")


def test_small_messages_are_skipped_from_their_encoded_sizes_alone() -> None:
    # Each batch and its scope are above the limit, but no resource, scope or span within them is.
    req = request(*(batch({"service.name": f"svc-{b}"}, [span(pad=20) for _ in range(40)]) for b in range(3)))
    assert all(rs.scope_spans[0].ByteSize() > 2048 for rs in req.resource_spans)
    traces = received(req)
    traces.request = Tripwire()
    assert truncate_attributes(traces, 2048) is None
