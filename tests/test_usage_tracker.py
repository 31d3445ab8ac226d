"""The usage tracker against docs/usage-tracker.md, one named case per rule."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.ingest.traces import ReceivedTraces
from distributor.overrides import TenantLimits
from distributor.usage.config import CostAttributionConfig
from distributor.usage.tracker import UsageTracker, bound_label_value
from tests.support.clock import ManualClock
from tests.support.metrics import Labels, labels, usage
from tests.support.otlp import batch, limits, received, request, span, split_expectation


def receive(tracker: UsageTracker, tenant: str, traces: ReceivedTraces, tenant_limits: TenantLimits) -> None:
    """What the pipeline does with an accepted request: attribute it, then count it as received."""
    attribution = tracker.attribute(traces, tenant_limits)
    if attribution is not None:
        tracker.record_received(tenant, attribution)


@dataclass
class Case:
    name: str
    dimensions: object
    request: ExportTraceServiceRequest
    expected: dict[Labels, int]
    max_cardinality: int = 0
    tracker_max_cardinality: int = 10_000
    max_label_value_bytes: int = 256
    extra: dict[str, object] = field(default_factory=dict)


def _standard() -> Case:
    rs = batch({"service.name": "auth"}, [span(), span({"http.route": "/a"})], [span()])
    return Case(
        "standard: the whole batch goes to one series",
        {"service.name": ""},
        request(rs),
        {labels(service_name="auth"): rs.ByteSize()},
    )


def _split_batch() -> Case:
    rs = batch(
        {"service.name": "shop"}, [span({"service.name": "cart"}), span(), span({"service.name": "cart"})]
    )
    expected = split_expectation(rs, ["cart", "shop", "cart"])
    return Case(
        "splitbatch: span values override the resource's, bytes split exactly",
        {"service.name": ""},
        request(rs),
        {labels(service_name=k): v for k, v in expected.items()},
    )


def _missing() -> Case:
    rs = batch({"host.name": "h"}, [span(), span()])
    return Case(
        "missing: no value gives __missing__",
        {"service.name": ""},
        request(rs),
        {labels(service_name="__missing__"): rs.ByteSize()},
    )


def _max_cardinality() -> Case:
    batches = [batch({"service.name": f"svc-{i}"}, [span()]) for i in range(4)]
    sizes = [b.ByteSize() for b in batches]
    return Case(
        "maxcardinality: series beyond the limit go to __overflow__",
        {"service.name": ""},
        request(*batches),
        {
            labels(service_name="svc-0"): sizes[0],
            labels(service_name="svc-1"): sizes[1],
            labels(service_name="__overflow__"): sizes[2] + sizes[3],
        },
        tracker_max_cardinality=2,
    )


def _per_tenant_max_cardinality() -> Case:
    batches = [batch({"service.name": f"svc-{i}"}, [span()]) for i in range(3)]
    sizes = [b.ByteSize() for b in batches]
    return Case(
        "per-tenant max_cardinality overrides the tracker's",
        {"service.name": ""},
        request(*batches),
        {labels(service_name="svc-0"): sizes[0], labels(service_name="__overflow__"): sizes[1] + sizes[2]},
        max_cardinality=1,
    )


def _partially_missing() -> Case:
    rs = batch({"service.name": "api"}, [span()])
    return Case(
        "partially missing: only the absent dimension is __missing__",
        {"service.name": "", "k8s.namespace.name": "namespace"},
        request(rs),
        {labels(service_name="api", namespace="__missing__"): rs.ByteSize()},
    )


def _resource_scoped() -> Case:
    rs = batch({"team": "core"}, [span({"team": "web"}), span()])
    return Case(
        "resource-scoped: resource.X ignores span attributes",
        {"resource.team": ""},
        request(rs),
        {labels(team="core"): rs.ByteSize()},
    )


def _span_scoped() -> Case:
    rs = batch({"team": "core"}, [span({"team": "web"}), span()])
    expected = split_expectation(rs, ["web", "__missing__"])
    return Case(
        "span-scoped: span.X ignores resource attributes",
        {"span.team": ""},
        request(rs),
        {labels(team=k): v for k, v in expected.items()},
    )


def _rename() -> Case:
    rs = batch({"k8s.namespace.name": "prod"}, [span()])
    return Case(
        "rename: the mapped label replaces the attribute name",
        {"k8s.namespace.name": "namespace"},
        request(rs),
        {labels(namespace="prod"): rs.ByteSize()},
    )


def _combine() -> Case:
    only_app = batch({"app": "legacy"}, [span()])
    both = batch({"app": "legacy", "service.name": "modern"}, [span()])
    span_app = batch({"service.name": "modern"}, [span({"app": "from-span"}), span()])
    split = split_expectation(span_app, ["from-span", "modern"])
    return Case(
        "combine: first configured attribute with a value wins per level, span over resource",
        {"service.name": "service", "app": "service"},
        request(only_app, both, span_app),
        {
            labels(service="legacy"): only_app.ByteSize(),
            labels(service="modern"): both.ByteSize() + split["modern"],
            labels(service="from-span"): split["from-span"],
        },
    )


def _list_form() -> Case:
    rs = batch({"service.name": "auth", "deployment.environment": "prod"}, [span()])
    return Case(
        "list form: each entry derives its label",
        ["service.name", "deployment.environment"],
        request(rs),
        {labels(service_name="auth", deployment_environment="prod"): rs.ByteSize()},
    )


def _non_string_values() -> Case:
    ints = batch([("service.name", 42)], [span()])
    empty = batch([("service.name", "")], [span()])
    repeated = batch(
        [("service.name", ""), ("service.name", 7), ("service.name", "second"), ("service.name", "third")],
        [span()],
    )
    return Case(
        "non-string and empty values are absent; the first non-empty repeat wins",
        {"service.name": ""},
        request(ints, empty, repeated),
        {
            labels(service_name="__missing__"): ints.ByteSize() + empty.ByteSize(),
            labels(service_name="second"): repeated.ByteSize(),
        },
    )


def _event_attributes() -> Case:
    rs = batch({"service.name": "api"}, [span(events=[{"service.name": "from-event"}])])
    return Case(
        "event attributes are ignored",
        {"service.name": ""},
        request(rs),
        {labels(service_name="api"): rs.ByteSize()},
    )


def _empty_batches_and_scopes() -> Case:
    empty_batch = batch({"service.name": "idle"})
    empty_scope = batch({"service.name": "idle"}, [])
    mixed = batch({"service.name": "api"}, [], [span({"service.name": "worker"})], [])
    return Case(
        "batches and scopes without spans contribute nothing; empty scopes still count in their batch",
        {"service.name": ""},
        request(empty_batch, empty_scope, mixed),
        {labels(service_name="worker"): mixed.ByteSize()},
    )


def _large_scopes(pad: int, title: str) -> Case:
    rs = batch(
        {"service.name": "api"},
        [span({"service.name": "a"}, pad=pad), span(pad=pad)],
        [span({"service.name": "b"}, pad=pad), span(pad=3)],
    )
    expected = split_expectation(rs, ["a", "api", "b", "api"])
    return Case(
        title, {"service.name": ""}, request(rs), {labels(service_name=k): v for k, v in expected.items()}
    )


# The smallest limit allowed: a cut value keeps 32 - 17 = 15 bytes, then "~" and 16 hex digits.
LIMIT = 32


def cut(prefix: str, whole: str) -> str:
    """The spec's form of a value longer than the limit: a prefix, "~", 16 hex digits of its SHA-256."""
    return f"{prefix}~{hashlib.sha256(whole.encode()).hexdigest()[:16]}"


def _long_value(title: str, value: str, expected: str) -> Case:
    rs = batch({"service.name": value}, [span()])
    return Case(
        title,
        {"service.name": ""},
        request(rs),
        {labels(service_name=expected): rs.ByteSize()},
        max_label_value_bytes=LIMIT,
    )


def _long_values_sharing_a_prefix() -> Case:
    first, second = "shared-prefix-" * 4 + "1", "shared-prefix-" * 4 + "2"
    batches = [batch({"service.name": first}, [span()]), batch({"service.name": second}, [span()])]
    return Case(
        "sharing a prefix: two long values with the same first bytes stay two series",
        {"service.name": ""},
        request(*batches),
        {
            labels(service_name=cut("shared-prefix-s", first)): batches[0].ByteSize(),
            labels(service_name=cut("shared-prefix-s", second)): batches[1].ByteSize(),
        },
        max_label_value_bytes=LIMIT,
    )


def _long_span_values() -> Case:
    long_service, long_team = "checkout-" * 5, "ü" * 40
    rs = batch(
        {"service.name": "api", "team": long_team},
        [span({"service.name": long_service}), span(), span({"service.name": long_service})],
    )
    expected = split_expectation(rs, [long_service, "api", long_service])
    bounded_team = cut("ü" * 7, long_team)
    return Case(
        "span-level: a span's long value is cut as a resource's is, next to a cut resource value",
        {"service.name": "", "resource.team": ""},
        request(rs),
        {
            labels(service_name=cut("checkout-checko", long_service), team=bounded_team): expected[
                long_service
            ],
            labels(service_name="api", team=bounded_team): expected["api"],
        },
        max_label_value_bytes=LIMIT,
    )


def _long_repeated_span_value() -> Case:
    long_team = "platform-" * 5
    rs = batch({"team": "core"}, [span([("team", long_team), ("team", "second")]), span()])
    expected = split_expectation(rs, ["long", "core"])
    return Case(
        "span-level, repeated key (read in order): the first value wins and is cut",
        {"team": ""},
        request(rs),
        {
            labels(team=cut("platform-platfo", long_team)): expected["long"],
            labels(team="core"): expected["core"],
        },
        max_label_value_bytes=LIMIT,
    )


CASES = [
    _standard(),
    _split_batch(),
    _missing(),
    _max_cardinality(),
    _per_tenant_max_cardinality(),
    _partially_missing(),
    _resource_scoped(),
    _span_scoped(),
    _rename(),
    _combine(),
    _list_form(),
    _non_string_values(),
    _event_attributes(),
    _empty_batches_and_scopes(),
    _large_scopes(200, "ScopeSpans over 127 bytes are exact"),
    _large_scopes(17_000, "ScopeSpans over 16383 bytes are exact"),
    _long_value("at the limit: a value of 32 bytes stays as it is", "a" * 32, "a" * 32),
    _long_value("at the limit in 4-byte characters: 8 of them stay", "🚀" * 8, "🚀" * 8),
    _long_value("one byte over: 15 bytes of prefix, ~, 16 hex digits", "a" * 33, cut("a" * 15, "a" * 33)),
    _long_value(
        "a 2-byte character across the cut: left out whole",
        "a" * 14 + "é" * 10,
        cut("a" * 14, "a" * 14 + "é" * 10),
    ),
    _long_value("4-byte characters: the prefix ends on a character", "🚀" * 9, cut("🚀" * 3, "🚀" * 9)),
    _long_values_sharing_a_prefix(),
    _long_span_values(),
    _long_repeated_span_value(),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name.split(":")[0] for c in CASES])
def test_tracker_case(case: Case, scan_path: str) -> None:
    tracker = UsageTracker(
        CostAttributionConfig(
            enabled=True,
            max_cardinality=case.tracker_max_cardinality,
            max_label_value_bytes=case.max_label_value_bytes,
        )
    )
    receive(tracker, "single-tenant", received(case.request), limits(case.dimensions, case.max_cardinality))
    assert usage(tracker) == case.expected
    attributed = sum(case.expected.values())
    assert attributed == sum(
        b.ByteSize() for b in case.request.resource_spans if any(s.spans for s in b.scope_spans)
    ), "every byte of every batch with spans is attributed"


def test_random_batches_are_attributed_to_the_byte(scan_path: str) -> None:
    rng = random.Random(7)
    for _ in range(200):
        batches = []
        for _ in range(rng.randint(1, 3)):
            scopes = [
                [
                    span(
                        {"team": rng.choice(["a", "b", "c"])} if rng.random() < 0.5 else {},
                        pad=rng.choice([0, 50, 120, 300, 20_000]),
                    )
                    for _ in range(rng.randint(0, 5))
                ]
                for _ in range(rng.randint(1, 3))
            ]
            batches.append(batch({"team": "r"}, *scopes))
        req = request(*batches)
        tracker = UsageTracker(CostAttributionConfig(enabled=True))
        receive(tracker, "t", received(req), limits({"team": ""}))
        total = sum(b.ByteSize() for b in batches if any(s.spans for s in b.scope_spans))
        assert sum(usage(tracker).values()) == total


def test_overflow_series_takes_new_label_sets_after_limit_but_existing_series_keep_counting() -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True, max_cardinality=1))
    first, second = batch({"service.name": "a"}, [span()]), batch({"service.name": "b"}, [span()])
    receive(tracker, "t", received(request(first, second)), limits(["service.name"]))
    receive(tracker, "t", received(request(first)), limits(["service.name"]))
    assert usage(tracker) == {
        labels("t", service_name="a"): 2 * first.ByteSize(),
        labels("t", service_name="__overflow__"): second.ByteSize(),
    }
    [stats] = tracker.stats()
    assert (stats.active_series, stats.overflow_bytes) == (1, second.ByteSize())


def test_stale_series_are_purged_and_restart_from_zero_when_they_reappear() -> None:
    clock = ManualClock()
    tracker = UsageTracker(CostAttributionConfig(enabled=True, stale_duration=900), clock=clock)
    old, fresh = batch({"service.name": "old"}, [span()]), batch({"service.name": "fresh"}, [span()])
    receive(tracker, "t", received(request(old)), limits(["service.name"]))
    clock.advance(600)
    receive(tracker, "t", received(request(fresh)), limits(["service.name"]))
    clock.advance(301)
    assert tracker.purge_stale() == 1
    assert usage(tracker) == {labels("t", service_name="fresh"): fresh.ByteSize()}
    receive(tracker, "t", received(request(old)), limits(["service.name"]))
    assert usage(tracker)[labels("t", service_name="old")] == old.ByteSize()
    clock.advance(901)
    tracker.purge_stale()
    assert usage(tracker) == {}
    assert tracker.stats() == [], "a tenant with no series left is removed"


def test_changed_dimensions_apply_at_once_and_old_series_live_until_stale() -> None:
    clock = ManualClock()
    tracker = UsageTracker(CostAttributionConfig(enabled=True), clock=clock)
    rs = batch({"service.name": "api", "team": "core"}, [span()])
    receive(tracker, "t", received(request(rs)), limits(["service.name"]))
    clock.advance(600)
    receive(tracker, "t", received(request(rs)), limits(["team"]))
    assert usage(tracker) == {
        labels("t", service_name="api"): rs.ByteSize(),
        labels("t", team="core"): rs.ByteSize(),
    }
    clock.advance(600)
    tracker.purge_stale()
    assert usage(tracker) == {labels("t", team="core"): rs.ByteSize()}


def test_tenants_are_tracked_separately() -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    rs = batch({"service.name": "api"}, [span()])
    receive(tracker, "a", received(request(rs)), limits(["service.name"]))
    receive(tracker, "b", received(request(rs, rs)), limits(["service.name"]))
    assert usage(tracker) == {
        labels("a", service_name="api"): rs.ByteSize(),
        labels("b", service_name="api"): 2 * rs.ByteSize(),
    }


def test_tenant_without_dimensions_and_disabled_tracker_record_nothing() -> None:
    rs = batch({"service.name": "api"}, [span()])
    enabled = UsageTracker(CostAttributionConfig(enabled=True))
    receive(enabled, "t", received(request(rs)), limits(None))
    disabled = UsageTracker(CostAttributionConfig(enabled=False))
    receive(disabled, "t", received(request(rs)), limits(["service.name"]))
    assert usage(enabled) == {} and usage(disabled) == {}


def test_label_values_with_quotes_backslashes_newlines_and_utf8_round_trip_through_the_parser() -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    nasty = 'a"b\\c\nd ünïcødé 🚀'
    rs = batch({"service.name": nasty}, [span()])
    receive(tracker, "t", received(request(rs)), limits(["service.name"]))
    assert usage(tracker) == {labels("t", service_name=nasty): rs.ByteSize()}


def test_a_bounded_value_is_within_the_limit_a_prefix_of_the_value_and_short_values_are_untouched() -> None:
    rng = random.Random(11)
    alphabet = "aé€🚀"  # 1, 2, 3 and 4 bytes of UTF-8
    for _ in range(2000):
        limit = rng.randint(32, 300)
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
        bounded = bound_label_value(value, limit)
        size = len(value.encode())
        if size <= limit:
            assert bounded == value
            continue
        prefix, suffix = bounded.rsplit("~", 1)
        assert len(bounded.encode()) <= limit < len((prefix + value[len(prefix)]).encode()) + 17
        assert value.startswith(prefix) and suffix == hashlib.sha256(value.encode()).hexdigest()[:16]


def _span_level_team(spans_attributes: list[list[tuple[str, object]]]) -> dict[Labels, float]:
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    rs = batch({"team": "resource"}, [span(attrs) for attrs in spans_attributes])
    receive(tracker, "t", received(request(rs)), limits(["team"]))
    return usage(tracker)


def test_repeated_span_keys_take_the_first_non_empty_value() -> None:
    series = _span_level_team([[("team", ""), ("team", 3), ("team", "first"), ("team", "second")]])
    assert set(series) == {labels("t", team="first")}


def test_values_that_contain_or_equal_a_key_do_not_confuse_the_lookup() -> None:
    series = _span_level_team([[("owner", "team"), ("team", "team-core"), ("note", "team team")]])
    assert set(series) == {labels("t", team="team-core")}


def test_a_repeat_with_a_non_minimal_varint_length_is_still_seen_as_a_repeat() -> None:
    from distributor.ingest.wire import LazyResourceSpans, LazyScopeSpans, LazyTracesRequest

    first = span([("team", "first")]).SerializeToString()
    # A second KeyValue for "team" whose key length 4 is written as the 2-byte varint 0x84 0x00: valid
    # protobuf that no encoder emits. Its value must not win over the first one.
    second_kv = b"\x0a\x84\x00team" + b"\x12\x08\x0a\x06second"
    raw_span = first + b"\x4a" + bytes([len(second_kv)]) + second_kv
    rs = batch({"team": "resource"}, [span()])
    lazy_batch = LazyResourceSpans.FromString(rs.SerializeToString())
    lazy_scope = LazyScopeSpans.FromString(lazy_batch.scope_spans[0])
    lazy_scope.spans[0] = raw_span
    lazy_batch.scope_spans[0] = lazy_scope.SerializeToString()
    body = LazyTracesRequest(resource_spans=[lazy_batch.SerializeToString()]).SerializeToString()
    decoded = ExportTraceServiceRequest.FromString(body)
    assert [kv.value.string_value for kv in decoded.resource_spans[0].scope_spans[0].spans[0].attributes] == [
        "first",
        "second",
    ]
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    receive(tracker, "t", ReceivedTraces(body), limits(["team"]))
    assert set(usage(tracker)) == {labels("t", team="first")}
