"""The ingest pipeline on its own: what an accepted or refused request changes, without a server.

Everything is real but the forwarders (a list and a switch for "has room"): the usage tracker, the token
buckets on a ManualClock, the metrics in their own registry, and the ledger over an in-memory store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from distributor.common.discards import DiscardReason
from distributor.forwarding.forwarder import DeliveryRefused, ForwardItem
from distributor.ingest.activity import TenantActivity
from distributor.ingest.limits import IngestionRateLimiter
from distributor.ingest.metrics import IngestMetrics
from distributor.ingest.pipeline import Discards, IngestPipeline, PushRefused, Refusal
from distributor.ingest.traces import ReceivedTraces
from distributor.ledger.ledger import LedgerEntry, UsageLedger
from distributor.overrides import (
    CostAttributionOverrides,
    OverridesProvider,
    OverridesSnapshot,
    TenantOverrides,
    parse_dimensions,
)
from distributor.overrides.model import IngestionOverrides
from distributor.usage.config import CostAttributionConfig
from distributor.usage.exposition import DISCARDED_METRIC, render_counter
from distributor.usage.tracker import UsageTracker
from tests.support.clock import ManualClock
from tests.support.ledger import standalone_ledger
from tests.support.metrics import Labels, labels, parse_discarded, usage
from tests.support.otlp import batch, request, span

TENANT = "acme"
PLAIN = "plain"  # a tenant without cost-attribution dimensions
SHOP = request(batch({"service.name": "shop"}, [span(), span()]), batch({"service.name": "cart"}, [span()]))
SHOP_SIZE = SHOP.ByteSize()
SHOP_USAGE = {
    labels(TENANT, service_name="shop"): SHOP.resource_spans[0].ByteSize(),
    labels(TENANT, service_name="cart"): SHOP.resource_spans[1].ByteSize(),
}
RATE = 1000  # bytes per second


class FakeForwarder:
    def __init__(self, name: str, delivery: str = "queued") -> None:
        self.name = name
        self.delivery = delivery
        self.room = True
        self.asked: list[tuple[str, int]] = []  # (tenant, size) of every has_room
        self.items: list[ForwardItem] = []
        self.refusal: DeliveryRefused | None = None  # synchronous or persistent: how `take` answers
        self.while_taking: Callable[[], None] = lambda: None  # runs while the take is under way
        self.partial = 0

    def has_room(self, tenant: str, size: int) -> bool:
        self.asked.append((tenant, size))
        return self.room

    def enqueue(self, item: ForwardItem) -> None:
        self.items.append(item)

    def take(self, item: ForwardItem) -> Coroutine[Any, Any, None]:
        assert self.delivery != "queued", "queued forwarders are given requests by enqueue"
        self.items.append(item)
        return self._take()

    async def _take(self) -> None:
        await asyncio.sleep(0)  # the pipeline awaits a take: others may run meanwhile
        self.while_taking()
        if self.refusal is not None:
            raise self.refusal

    def count_partial_delivery(self) -> None:
        self.partial += 1


def refusal(
    reason: DiscardReason, retryable: bool = True, retry_after: float | None = 1.0
) -> DeliveryRefused:
    return DeliveryRefused("scripted", reason, retryable, f"scripted {reason}", retry_after)


def without_awaiting(step: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that must finish without suspending: the pipeline's push to in-memory queues
    checks room and queues with nothing awaited in between."""
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise AssertionError("the push suspended")


class MemoryStore:
    """The part of a LedgerStore a flush uses."""

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []

    def write(self, entries: Sequence[LedgerEntry], flushed_at: float, batch_id: str | None = None) -> int:
        self.entries.extend(entries)
        return 1

    def maintain(self, merge_before: float, keep_from_hour: int, keep_from_month: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Pipeline:
    pipeline: IngestPipeline
    tracker: UsageTracker
    registry: CollectorRegistry
    clock: ManualClock
    forwarders: dict[str, FakeForwarder] = field(default_factory=dict)

    def push(self, traces: ExportTraceServiceRequest, tenant: str = TENANT) -> None:
        body = traces.SerializeToString()
        traces = ReceivedTraces(body, *self.pipeline.scan_plan(tenant))
        without_awaiting(self.pipeline.push(tenant, traces, ingress_bytes=len(body)))

    async def push_awaiting(self, traces: ExportTraceServiceRequest, tenant: str = TENANT) -> None:
        body = traces.SerializeToString()
        received = ReceivedTraces(body, *self.pipeline.scan_plan(tenant))
        await self.pipeline.push(tenant, received, ingress_bytes=len(body))

    async def refusal_awaiting(self, traces: ExportTraceServiceRequest, tenant: str = TENANT) -> PushRefused:
        with pytest.raises(PushRefused) as refused:
            await self.push_awaiting(traces, tenant)
        return refused.value

    def refusal(self, traces: ExportTraceServiceRequest, tenant: str = TENANT) -> PushRefused:
        with pytest.raises(PushRefused) as refused:
            self.push(traces, tenant)
        return refused.value

    def counter(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def received_spans(self, tenant: str = TENANT) -> float:
        return self.counter("tempo_distributor_spans_received_total", tenant=tenant)

    def discarded_spans(self, reason: DiscardReason, tenant: str = TENANT) -> float:
        return self.counter("tempo_discarded_spans_total", tenant=tenant, reason=reason)

    def discarded_usage(self) -> dict[Labels, float]:
        text = render_counter(self.tracker.discarded_series(), openmetrics=False, name=DISCARDED_METRIC)
        return parse_discarded(text.decode())

    def queued(self) -> list[ForwardItem]:
        return self.forwarders["primary"].items


def build(
    burst: int = 10 * SHOP_SIZE,
    forwarders: tuple[str, ...] = ("primary",),
    ledger: UsageLedger | None = None,
    max_active_tenants: int = 10_000,
    deliveries: dict[str, str] | None = None,
) -> Pipeline:
    clock = ManualClock()
    registry = CollectorRegistry()
    tracker = UsageTracker(CostAttributionConfig(enabled=True), clock)
    metrics = IngestMetrics(registry)
    ingestion = IngestionOverrides(rate_limit_bytes=RATE, burst_size_bytes=burst)
    snapshot = OverridesSnapshot(
        defaults=TenantOverrides(ingestion=ingestion, forwarders=forwarders),
        per_tenant={
            TENANT: TenantOverrides(
                CostAttributionOverrides(dimensions=parse_dimensions({"service.name": ""}))
            )
        },
    )
    fakes = {name: FakeForwarder(name, (deliveries or {}).get(name, "queued")) for name in forwarders}
    pipeline = IngestPipeline(
        OverridesProvider(snapshot),
        tracker,
        metrics,
        Discards(metrics, tracker),
        IngestionRateLimiter(clock),
        fakes,
        TenantActivity(clock, idle_after=900.0),
        max_active_tenants,
        ledger,
    )
    return Pipeline(pipeline, tracker, registry, clock, fakes)


def test_accepted_request_is_accounted_and_queued_for_every_forwarder() -> None:
    tested = build(forwarders=("primary", "archive"))
    tested.push(SHOP)
    assert tested.received_spans() == 3
    assert tested.counter("tempo_distributor_bytes_received_total", tenant=TENANT) == SHOP_SIZE
    assert tested.counter("tempo_distributor_ingress_bytes_total", tenant=TENANT) == SHOP_SIZE
    assert usage(tested.tracker) == SHOP_USAGE
    for forwarder in tested.forwarders.values():
        [item] = forwarder.items
        assert (item.tenant, item.payload, item.span_count) == (TENANT, SHOP.SerializeToString(), 3)
        assert item.attribution is not None, "kept to attribute the bytes if the item is dropped"
        assert forwarder.asked == [(TENANT, SHOP_SIZE)], "room asked for the request's protobuf bytes"
    assert tested.discarded_usage() == {}


async def test_accepted_request_is_recorded_in_the_ledger_as_the_tracker_attributed_it() -> None:
    store = MemoryStore()
    ledger = standalone_ledger(store, lambda: 7200.5)
    tested = build(ledger=ledger)
    try:
        tested.push(SHOP)
        tested.push(SHOP, tenant=PLAIN)
        assert await ledger.flush()
    finally:
        await ledger.stop(0.0)
    shop, cart = (batch.ByteSize() for batch in SHOP.resource_spans)
    assert sorted(store.entries, key=lambda entry: (entry.tenant, entry.tags)) == [
        LedgerEntry(TENANT, 7200, (("service_name", "cart"),), cart, 1),
        LedgerEntry(TENANT, 7200, (("service_name", "shop"),), shop, 2),
        LedgerEntry(PLAIN, 7200, (), shop + cart, 3),
    ]


def test_rate_limited_request_is_discarded_attributed_and_not_queued() -> None:
    tested = build(burst=SHOP_SIZE + SHOP_SIZE // 2)
    tested.push(SHOP)
    refused = tested.refusal(SHOP)
    assert refused.reason is Refusal.RATE_LIMITED
    # Half a request's tokens are left; the other half takes half of SHOP_SIZE / RATE seconds to refill.
    assert refused.retry_after == pytest.approx((SHOP_SIZE - SHOP_SIZE // 2) / RATE)
    assert str(refused).startswith("RATE_LIMITED: ingestion rate limit (local: 1000 bytes/s")
    assert tested.received_spans() == 3, "only the first request"
    assert tested.discarded_spans(DiscardReason.RATE_LIMITED) == 3
    assert tested.discarded_usage() == {
        series | {("reason", "rate_limited")}: size for series, size in SHOP_USAGE.items()
    }
    assert usage(tested.tracker) == SHOP_USAGE, "the refused request is not counted as received"
    assert len(tested.queued()) == 1


def test_request_larger_than_the_burst_is_refused_with_no_time_to_wait() -> None:
    tested = build(burst=SHOP_SIZE - 1)
    refused = tested.refusal(SHOP)
    assert refused.reason is Refusal.LARGER_THAN_BURST
    assert refused.retry_after is None
    assert "exceeds ingestion limit" in str(refused)
    assert tested.discarded_spans(DiscardReason.RATE_LIMITED) == 3
    assert tested.received_spans() == 0 and tested.queued() == []


def test_ingress_bytes_of_a_request_with_spans_are_counted_also_when_it_is_refused() -> None:
    tested = build(burst=SHOP_SIZE)
    tested.push(SHOP)
    tested.refusal(SHOP)
    assert tested.counter("tempo_distributor_ingress_bytes_total", tenant=TENANT) == 2 * SHOP_SIZE


def test_full_queue_refuses_the_request_and_gives_its_rate_tokens_back() -> None:
    tested = build(burst=SHOP_SIZE)  # room for exactly one request
    tested.forwarders["primary"].room = False
    refused = tested.refusal(SHOP)
    assert (refused.reason, refused.retry_after) == (Refusal.QUEUE_FULL, 1.0)
    assert "forwarding queue full for tenant acme (forwarder primary)" in str(refused)
    assert tested.discarded_spans(DiscardReason.QUEUE_FULL) == 3
    assert tested.discarded_usage() == {
        series | {("reason", "queue_full")}: size for series, size in SHOP_USAGE.items()
    }
    assert tested.received_spans() == 0 and usage(tested.tracker) == {}

    tested.forwarders["primary"].room = True
    tested.push(SHOP)  # no time has passed: only the tokens given back let it through
    assert tested.received_spans() == 3 and len(tested.queued()) == 1


def test_tenant_without_forwarders_is_accounted_and_counted_as_no_forwarder() -> None:
    tested = build(forwarders=())
    tested.push(SHOP)
    assert tested.received_spans() == 3
    assert usage(tested.tracker) == SHOP_USAGE
    assert tested.discarded_spans(DiscardReason.NO_FORWARDER) == 3
    assert tested.discarded_usage() == {}, "measured only: its bytes were received, not discarded"


def test_request_without_spans_makes_no_series_not_even_of_ingress_bytes() -> None:
    tested = build(burst=SHOP_SIZE)
    empty = request(batch({"service.name": "idle"}), batch({"service.name": "shop"}, []))
    tested.push(empty)
    tenant_samples = [
        sample
        for metric in tested.registry.collect()
        for sample in metric.samples
        if "tenant" in sample.labels
    ]
    assert tenant_samples == []
    assert tested.received_spans() == 0
    assert tested.counter("tempo_distributor_bytes_received_total", tenant=TENANT) == 0
    assert usage(tested.tracker) == {} and tested.queued() == []
    tested.push(SHOP)  # the whole burst is still there: the empty request took no tokens
    assert tested.received_spans() == 3


def test_a_new_tenant_past_max_active_tenants_is_refused_before_anything_is_counted_for_it() -> None:
    tested = build(max_active_tenants=2)
    tested.push(SHOP, tenant="first")
    tested.push(SHOP, tenant="second")
    refused = tested.refusal(SHOP, tenant="third")
    assert refused.reason is Refusal.TOO_MANY_ACTIVE_TENANTS
    assert "too many active tenants" in str(refused)
    assert tested.counter("tempo_distributor_refused_requests_total", reason="too_many_active_tenants") == 1
    third = [
        sample for metric in tested.registry.collect() for sample in metric.samples
        if sample.labels.get("tenant") == "third"
    ]  # fmt: skip
    assert third == []
    tested.push(SHOP, tenant="first")  # a tenant already active is never refused for it
    assert tested.received_spans("first") == 6


def test_a_new_tenant_is_accepted_once_an_active_one_is_released_as_idle() -> None:
    tested = build(max_active_tenants=1)
    tested.push(SHOP, tenant="first")
    tested.clock.advance(900.0)
    tested.pipeline.activity.release_idle()
    tested.push(SHOP, tenant="second")
    assert tested.received_spans("second") == 3


# --- synchronous and persistent forwarders ------------------------------------------------------------


async def test_a_request_is_accounted_only_once_every_taking_forwarder_took_it() -> None:
    tested = build(forwarders=("sync", "queued"), deliveries={"sync": "synchronous"})
    accounted_while_taking: list[float] = []
    tested.forwarders["sync"].while_taking = lambda: accounted_while_taking.append(tested.received_spans())
    await tested.push_awaiting(SHOP)
    assert accounted_while_taking == [0], "not accounted before the backend took it"
    assert tested.received_spans() == 3 and len(tested.forwarders["queued"].items) == 1


async def test_a_refusal_for_good_outweighs_a_retryable_one_and_is_the_clients_error() -> None:
    tested = build(forwarders=("a", "b"), deliveries={"a": "synchronous", "b": "synchronous"})
    tested.forwarders["a"].refusal = refusal(DiscardReason.FORWARD_UNAVAILABLE, retry_after=2.0)
    tested.forwarders["b"].refusal = refusal(
        DiscardReason.FORWARD_REJECTED, retryable=False, retry_after=None
    )
    refused = await tested.refusal_awaiting(SHOP)
    assert (refused.reason, refused.retry_after) == (Refusal.BACKEND_REJECTED, None)
    assert "scripted forward_rejected" in str(refused)
    assert tested.discarded_spans(DiscardReason.FORWARD_REJECTED) == 3
    assert tested.received_spans() == 0


async def test_retryable_refusals_ask_for_the_longest_wait_any_of_them_asked_for() -> None:
    tested = build(forwarders=("a", "b"), deliveries={"a": "synchronous", "b": "persistent"})
    tested.forwarders["a"].refusal = refusal(DiscardReason.FORWARD_UNAVAILABLE, retry_after=7.0)
    tested.forwarders["b"].refusal = refusal(DiscardReason.QUEUE_WRITE_FAILED, retry_after=2.0)
    refused = await tested.refusal_awaiting(SHOP)
    assert (refused.reason, refused.retry_after) == (Refusal.BACKEND_UNAVAILABLE, 7.0)


async def test_a_full_persistent_queue_is_a_queue_full_refusal() -> None:
    tested = build(deliveries={"primary": "persistent"})
    tested.forwarders["primary"].refusal = refusal(DiscardReason.QUEUE_FULL)
    refused = await tested.refusal_awaiting(SHOP)
    assert (refused.reason, refused.retry_after) == (Refusal.QUEUE_FULL, 1.0)
    assert tested.discarded_spans(DiscardReason.QUEUE_FULL) == 3


async def test_a_refused_hand_over_gives_the_rate_tokens_back() -> None:
    tested = build(burst=SHOP_SIZE, deliveries={"primary": "synchronous"})  # room for one request
    tested.forwarders["primary"].refusal = refusal(DiscardReason.FORWARD_UNAVAILABLE)
    await tested.refusal_awaiting(SHOP)
    tested.forwarders["primary"].refusal = None
    await tested.push_awaiting(SHOP)  # no time has passed: only the tokens given back let it through
    assert tested.received_spans() == 3


async def test_an_in_memory_queue_filled_during_the_hand_over_refuses_and_counts_the_taker_as_partial() -> (
    None
):
    tested = build(forwarders=("sync", "queued"), deliveries={"sync": "synchronous"})
    queued = tested.forwarders["queued"]

    def fill() -> None:
        queued.room = False

    tested.forwarders["sync"].while_taking = fill
    refused = await tested.refusal_awaiting(SHOP)
    assert refused.reason == Refusal.QUEUE_FULL
    assert tested.forwarders["sync"].partial == 1, "its copy was taken: the client's retry is a second"
    assert queued.items == [] and tested.received_spans() == 0
    assert tested.discarded_spans(DiscardReason.QUEUE_FULL) == 3
