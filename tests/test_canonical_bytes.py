"""Usage is measured in canonical bytes: the same spans cost the same whatever encoder wrote them
(explicit zero fields, non-minimal varints and lengths, field order, OTLP/JSON), and series are admitted
in the order their first span arrives."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.ingest.traces import ReceivedTraces
from distributor.overrides import TenantLimits
from distributor.usage.config import CostAttributionConfig
from distributor.usage.tracker import UsageTracker
from tests.support.encodings import encode, varint
from tests.support.metrics import labels, usage
from tests.support.otlp import batch, limits, otlp_json, received, request, sample_request, span
from tests.support.senders import JSON
from tests.support.service import StartService, make_config

DIMENSIONS = {"service.name": "", "http.route": "route"}


def tracked_as_sent(body: bytes, tenant_limits: TenantLimits) -> dict[object, float]:
    """A tracker's series after one request of exactly these bytes."""
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    attribution = tracker.attribute(ReceivedTraces(body), tenant_limits)
    assert attribution is not None
    tracker.record_received("t", attribution)
    return dict(usage(tracker))


VARIANTS = {
    "zero fields written out": {"explicit_zeros": True, "padded": False, "reverse": False},
    "non-minimal varints and lengths": {"explicit_zeros": False, "padded": True, "reverse": False},
    "fields in reverse order": {"explicit_zeros": False, "padded": False, "reverse": True},
    "all of them": {"explicit_zeros": True, "padded": True, "reverse": True},
}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_non_canonical_encoding_costs_what_the_canonical_one_costs(
    scan_path: str, variant: dict[str, bool]
) -> None:
    original = sample_request()
    canonical = original.SerializeToString()
    other = encode(original, **variant)
    assert other != canonical and ExportTraceServiceRequest.FromString(other) == original
    expected = tracked_as_sent(canonical, limits(DIMENSIONS))
    assert tracked_as_sent(other, limits(DIMENSIONS)) == expected
    assert sum(expected.values()) == sum(b.ByteSize() for b in original.resource_spans)


def test_unknown_fields_are_billed_as_received(scan_path: str) -> None:
    original = sample_request()
    with_unknown = encode(original, explicit_zeros=False, padded=False, reverse=False, unknown_fields=True)
    decoded = ExportTraceServiceRequest.FromString(with_unknown)
    assert decoded.ByteSize() > original.ByteSize()  # the runtime keeps unknown fields, and so do we
    billed = tracked_as_sent(with_unknown, limits(DIMENSIONS))
    assert sum(billed.values()) == sum(b.ByteSize() for b in decoded.resource_spans)


def test_a_non_minimal_length_of_a_span_does_not_change_its_bytes(scan_path: str) -> None:
    """One span's length written in two bytes where one does: the canonical size is one byte less."""
    one = request(batch({"service.name": "a"}, [span()]))
    canonical = one.SerializeToString()
    scope = one.resource_spans[0].scope_spans[0]
    span_body = scope.spans[0].SerializeToString()
    scope_body = scope.scope.SerializeToString()
    scope_spans = (
        b"\x0a" + varint(len(scope_body)) + scope_body + b"\x12" + varint(len(span_body), 1) + span_body
    )
    resource = one.resource_spans[0].resource.SerializeToString()
    resource_spans = (
        b"\x0a" + varint(len(resource)) + resource + b"\x12" + varint(len(scope_spans)) + scope_spans
    )
    padded = b"\x0a" + varint(len(resource_spans)) + resource_spans
    assert len(padded) == len(canonical) + 1 and ExportTraceServiceRequest.FromString(padded) == one
    assert tracked_as_sent(padded, limits(["service.name"])) == tracked_as_sent(
        canonical, limits(["service.name"])
    )


async def test_the_same_spans_cost_the_same_as_canonical_protobuf_as_padded_protobuf_and_as_json(
    start_service: StartService,
) -> None:
    running = await start_service(make_config(dimensions=DIMENSIONS, multitenancy=True))
    original = sample_request()
    bodies = {
        "canonical": (original.SerializeToString(), None),
        "padded": (encode(original), None),
        "json": (otlp_json(original), JSON),
    }
    for tenant, (body, headers) in bodies.items():
        answer = await (
            running.post(body, tenant) if headers is None else running.post(body, tenant, headers)
        )
        assert answer.status == 200, answer.body
    series = await running.usage()
    by_tenant: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for labelset, value in series.items():
        tenant = dict(labelset)["tenant"]
        rest = frozenset((k, v) for k, v in labelset if k != "tenant")
        by_tenant.setdefault(tenant, {})[rest] = value
    assert set(by_tenant) == set(bodies)
    assert by_tenant["padded"] == by_tenant["canonical"] == by_tenant["json"]
    assert sum(by_tenant["canonical"].values()) == sum(b.ByteSize() for b in original.resource_spans)


def test_series_are_admitted_in_the_order_their_first_span_arrives(scan_path: str) -> None:
    """Limit 2: the batch's first span keeps the resource's service, the second has its own, the third
    another. In request order the resource's series comes first, so the third span's overflows."""
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    req = request(
        batch(
            {"service.name": "resource-service"},
            [span(), span({"service.name": "own-1"}), span({"service.name": "own-2"})],
        )
    )
    attribution = tracker.attribute(received(req), limits(["service.name"], max_cardinality=2))
    assert attribution is not None
    assert list(attribution.usage) == [("resource-service",), ("own-1",), ("own-2",)]
    tracker.record_received("t", attribution)
    names = {dict(key).get("service_name") for key in usage(tracker)}
    assert names == {"resource-service", "own-1", "__overflow__"}


def test_a_span_level_series_first_seen_before_the_resource_series_is_admitted_first(scan_path: str) -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    req = request(
        batch({"service.name": "resource-service"}, [span({"service.name": "own-1"}), span()]),
    )
    attribution = tracker.attribute(received(req), limits(["service.name"], max_cardinality=1))
    assert attribution is not None
    tracker.record_received("t", attribution)
    assert set(usage(tracker)) == {
        labels("t", service_name="own-1"),
        labels("t", service_name="__overflow__"),
    }
