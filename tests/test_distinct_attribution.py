"""Distinct identities read with a request's usage: sessions on the span first, then on the resource, in
the configured order of attribute names; hosts and services from the resource; the usage per label
values unchanged by counting them; a tenant without dimensions counted without a tracker series; and the
ledger's pending counts, keyed as its usage is (overflow included)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from distributor.common.distinct import identity_hash
from distributor.ledger.ledger import HOSTS, SESSIONS
from distributor.overrides import TenantLimits
from distributor.overrides.model import DEFAULT_HOST_ATTRIBUTES, DEFAULT_SESSION_ATTRIBUTES
from distributor.usage.config import CostAttributionConfig
from distributor.usage.tracker import MISSING, OVERFLOW, SERVICES, UsageTracker
from tests.support.ledger import standalone_ledger
from tests.support.otlp import batch, limits, received, request, span


def ids(*identities: str) -> set[int]:
    """Identities as a request's attribution carries them: hashed once each."""
    return {identity_hash(identity) for identity in identities}


def counting(dimensions: object, sessions: bool = True, hosts: bool = True, **more: Any) -> TenantLimits:
    return replace(
        limits(dimensions, **more),
        session_attributes=DEFAULT_SESSION_ATTRIBUTES if sessions else (),
        host_attributes=DEFAULT_HOST_ATTRIBUTES if hosts else (),
    )


def browser_request() -> Any:
    """Two resources: a browser app whose session is on the resource of one and on the spans of the
    other (one span of which says otherwise), and the hosts of both."""
    return request(
        batch(
            {"service.name": "web", "team": "shop", "session.id": "s-resource", "host.name": "h1"},
            [span(), span({"session.id": "s-span"})],
        ),
        batch(
            {"service.name": "web", "team": "shop", "host.id": "h2"},
            [
                span({"session_id": "s-faro"}),
                span({"splunk.rumSessionId": "s-splunk", "session_id": "later"}),
            ],
            [span()],
        ),
        batch({"service.name": "api", "team": "core", "host.name": "h3"}, [span()]),
    )


def test_identities_come_from_the_span_first_then_the_resource_in_the_configured_order() -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    traces = received(browser_request())
    plain = tracker.attribute(traces, limits({"team": ""}))
    counted = tracker.attribute(traces, counting({"team": ""}))
    assert plain is not None and counted is not None
    assert counted.usage == plain.usage  # counting changes no byte
    assert counted.identities == {
        SESSIONS: {("shop",): ids("s-resource", "s-span", "s-faro", "later")},
        HOSTS: {("shop",): ids("h1", "h2"), ("core",): ids("h3")},
        SERVICES: {(): ids("web", "api")},  # counted per tenant
    }
    assert MISSING not in str(counted.identities)  # spans without a session count none


def test_the_attribute_names_are_the_tenants_and_a_count_off_reads_nothing() -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    own = replace(counting({"team": ""}, hosts=False), session_attributes=("splunk.rumSessionId",))
    attribution = tracker.attribute(received(browser_request()), own)
    assert attribution is not None and attribution.identities is not None
    assert attribution.identities[SESSIONS] == {("shop",): ids("s-splunk")}
    assert HOSTS not in attribution.identities
    assert tracker.attribute(received(browser_request()), limits({"team": ""})).identities is None  # type: ignore[union-attr]


def test_a_tenant_without_dimensions_counts_identities_but_has_no_tracker_series() -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    traces = received(browser_request())
    assert tracker.attribute(traces, limits({})) is None
    attribution = tracker.attribute(traces, counting({}))
    assert attribution is not None and attribution.identities is not None
    assert list(attribution.usage) == [()]
    assert attribution.usage[()].bytes == traces.attributable_bytes
    assert attribution.identities[HOSTS] == {(): ids("h1", "h2", "h3")}
    assert tracker.record_received("acme", attribution) == {}
    assert list(tracker.series()) == []


def test_identities_are_keyed_by_label_values_as_bounded_like_the_usage() -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True, max_label_value_bytes=40))
    long = "x" * 60
    req = request(
        batch({"team": long + "a", "host.name": "h1"}, [span()]),
        batch({"team": long + "b", "host.name": "h2"}, [span()]),
    )
    attribution = tracker.attribute(received(req), counting({"team": ""}))
    assert attribution is not None and attribution.identities is not None
    assert len(attribution.usage) == 2 and all(len(values[0].encode()) <= 40 for values in attribution.usage)
    assert set(attribution.identities[HOSTS]) == set(attribution.usage)
    assert sorted(attribution.identities[HOSTS].values(), key=sorted) == sorted(
        [ids("h1"), ids("h2")], key=sorted
    )


async def test_the_ledger_counts_identities_per_series_hour_as_recorded_overflow_included() -> None:
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    registry = CollectorRegistry()
    written: list[Any] = []

    class Store:
        def write(self, entries: Any, flushed_at: float, batch_id: str | None = None) -> int:
            written.extend(entries)
            return 1

        def maintain(self, *arguments: Any) -> None:
            pass

        def close(self) -> None:
            pass

    ledger = standalone_ledger(Store(), lambda: 1_790_000_000.0, registry)  # type: ignore[arg-type]
    tenant_limits = counting({"team": ""}, max_cardinality=1)
    for _ in range(2):  # the same identities again: counted once
        attribution = tracker.attribute(received(browser_request()), tenant_limits)
        assert attribution is not None
        overflowed = tracker.record_received("acme", attribution)
        ledger.record("acme", attribution.labels, attribution.usage, overflowed, attribution.identities)
    assert await ledger.flush()
    from distributor.common.distinct import DistinctCount

    counted = {
        (entry.tags, kind): round(DistinctCount.from_bytes(blob).estimate())
        for entry in written
        for kind, blob in entry.distinct
    }
    # One series fits the limit; "core" goes to __overflow__, its host with it. Services are not billed.
    assert counted == {
        ((("team", "shop"),), SESSIONS): 4,
        ((("team", "shop"),), HOSTS): 2,
        ((("team", OVERFLOW),), HOSTS): 1,
    }
    assert registry.get_sample_value("tempo_usage_ledger_flushes_total", {"result": "success"}) == 1
    await ledger.stop(0.0)
