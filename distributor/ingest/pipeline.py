"""The distributor pipeline after a receiver: tenant limits -> backpressure -> usage tracking ->
attribute truncation -> forwarders.

A request is refused as a whole or accepted as a whole. Refusals after decoding (rate limit, full
queues, a synchronous forwarder's backend failing, a persistent queue that cannot store it) are counted
as discarded, spans and attributed bytes, and accepted requests are counted as received and handed to
every forwarder of the tenant. A 200 therefore means "accounted, and taken by every forwarder as its
`delivery` says": queued in memory, delivered, or written to disk. What later fails to reach a backend
is counted as discarded with the forwarder's reason.

A request goes first to the tenant's synchronous and persistent forwarders, together; only when all of
them took it is it accounted and queued in the in-memory ones. When one of them refuses it, the client
is refused (and retries), and those that took it are counted in partial_deliveries_total: for them the
retry is a second copy (at least once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from enum import Enum
from typing import Any, Protocol

from distributor.common.discards import DiscardReason
from distributor.common.errors import DistributorError
from distributor.common.usage import Usage
from distributor.forwarding.config import QUEUED
from distributor.forwarding.forwarder import DeliveryRefused, ForwardItem
from distributor.ingest.activity import TenantActivity
from distributor.ingest.limits import IngestionRateLimiter, RateDecision
from distributor.ingest.metrics import IngestMetrics
from distributor.ingest.scan import InvalidTraces, ScanPlan
from distributor.ingest.traces import ReceivedTraces
from distributor.ingest.truncation import truncate_attributes
from distributor.ledger.ledger import UsageLedger
from distributor.overrides import OverridesProvider, TenantLimits
from distributor.usage.tracker import Attribution, UsageTracker

# Idle tenants are released once a minute: a refused new tenant may find room after that.
TENANT_ROOM_RETRY_SECONDS = 60.0


class Refusal(Enum):
    RATE_LIMITED = "rate_limited"  # the tenant's rate; it may pass after `retry_after`
    LARGER_THAN_BURST = "larger_than_burst"  # larger than the tenant's burst: no wait lets it pass
    QUEUE_FULL = "queue_full"  # a forwarder of the tenant has no room
    TOO_MANY_ACTIVE_TENANTS = "too_many_active_tenants"  # a new tenant while max_active_tenants are
    BACKEND_UNAVAILABLE = "backend_unavailable"  # a synchronous forwarder's backend failed, retryably
    BACKEND_REJECTED = "backend_rejected"  # a synchronous forwarder's backend refused it for good


class PushRefused(DistributorError):
    """A request refused as a whole; nothing of it is accounted but the discard counters."""

    def __init__(self, reason: Refusal, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after  # seconds until the client should try again, if it may


class ForwardQueue(Protocol):
    """What the pipeline needs of a forwarder: room for a tenant's request of `size` protobuf bytes (what is
    queued is never larger: truncation only shortens it), and a queue to put it in (`delivery`
    queued) or a coroutine that takes it (synchronous, persistent; raising DeliveryRefused)."""

    @property
    def name(self) -> str: ...

    @property
    def delivery(self) -> str: ...

    def has_room(self, tenant: str, size: int) -> bool: ...

    def enqueue(self, item: ForwardItem) -> None: ...

    def take(self, item: ForwardItem) -> Coroutine[Any, Any, None]: ...

    def count_partial_delivery(self) -> None: ...


class Discards:
    """Counts refused and lost spans by reason, and attributes their bytes as the tracker would have."""

    def __init__(
        self, metrics: IngestMetrics, tracker: UsageTracker, overrides: OverridesProvider | None = None
    ) -> None:
        self.metrics = metrics
        self.tracker = tracker
        self.overrides = overrides  # to attribute a request that comes back from disk without its usage

    def record(
        self, tenant: str, span_count: int, attribution: Attribution | None, reason: DiscardReason
    ) -> None:
        self.metrics.discarded_spans.labels(tenant, reason).inc(span_count)
        if attribution is not None:
            self.tracker.record_discarded(tenant, attribution, reason)

    def forward_dropped(self, item: ForwardItem, reason: DiscardReason) -> None:
        """A forwarder gave up on an accepted request: counted as discarded, attributed as it was (a
        request a persistent queue kept across a restart is attributed again, under the tenant's
        dimensions now)."""
        attribution = item.attribution
        if attribution is None and item.record is not None and item.payload:
            attribution = self._attribute_again(item.tenant, item.payload)
        self.record(item.tenant, item.span_count, attribution, reason)

    def _attribute_again(self, tenant: str, payload: bytes) -> Attribution | None:
        if self.overrides is None:
            return None
        limits = self.overrides.for_tenant(tenant)
        try:
            traces = ReceivedTraces(payload, self.tracker.scan_plan(limits), limits.max_attribute_bytes)
        except InvalidTraces:
            return None  # it was valid when accepted; a record failing its checksum never gets here
        return self.tracker.attribute(traces, limits)


class IngestPipeline:
    def __init__(
        self,
        overrides: OverridesProvider,
        tracker: UsageTracker,
        metrics: IngestMetrics,
        discards: Discards,
        rate_limiter: IngestionRateLimiter,
        forwarders: Mapping[str, ForwardQueue],
        activity: TenantActivity,
        max_active_tenants: int,
        ledger: UsageLedger | None = None,
    ) -> None:
        self.overrides = overrides
        self.tracker = tracker
        self.metrics = metrics
        self.discards = discards
        self.rate_limiter = rate_limiter
        self.forwarders = forwarders
        self.activity = activity
        self.max_active_tenants = max_active_tenants
        self.ledger = ledger

    def scan_plan(self, tenant: str) -> tuple[ScanPlan | None, int]:
        """What scanning a request of `tenant` needs: its dimensions as the scan reads them (None when
        it is not tracked) and its attribute length limit. Read on the loop; the scan itself
        (`ReceivedTraces(protobuf, plan, max_attribute_bytes)`) may then run on any thread."""
        limits = self.overrides.for_tenant(tenant)
        return self.tracker.scan_plan(limits), limits.max_attribute_bytes

    async def push(self, tenant: str, traces: ReceivedTraces, ingress_bytes: int) -> None:
        """Account and forward one validated request, or raise PushRefused having changed nothing but the
        discard counters. For in-memory queues nothing here awaits, so the room checked in the queues is
        still there when the request is queued. (Should the tenant's dimensions have changed since the
        scan, the usage is attributed again under the new ones.)"""
        limits = self.overrides.for_tenant(tenant)
        if not traces.span_count:
            # Nothing to limit, count or forward (Tempo answers these with success too). Not even its
            # ingress bytes: a request with spans makes the tenant's series anyway (received or
            # discarded), one without would make a series of its own for any tenant id sent.
            return
        activity = self.activity
        if len(activity) >= self.max_active_tenants and tenant not in activity:
            # Refused before any per-tenant series exists: a flood of tenant ids costs one counter.
            self.metrics.refused_requests.labels(Refusal.TOO_MANY_ACTIVE_TENANTS.value).inc()
            raise PushRefused(
                Refusal.TOO_MANY_ACTIVE_TENANTS,
                f"too many active tenants: {self.max_active_tenants} tenants sent spans recently, a new "
                "tenant is accepted once one of them has been idle long enough; retry later",
                retry_after=TENANT_ROOM_RETRY_SECONDS,
            )
        activity.seen(tenant)
        metrics = self.metrics
        ingress_bytes_counter, spans_counter, bytes_counter = metrics.received(tenant)
        ingress_bytes_counter.inc(ingress_bytes)
        size = len(traces.protobuf)
        decision = self.rate_limiter.take(
            tenant, size, limits.rate_limit_bytes, limits.burst_size_bytes, limits.rate_strategy
        )
        if not decision.allowed:
            self._discard(tenant, traces, limits, DiscardReason.RATE_LIMITED)
            raise _rate_limited(tenant, size, limits, decision)
        forwarders = [self.forwarders[name] for name in limits.forwarders if name in self.forwarders]
        full = [forwarder.name for forwarder in forwarders if not forwarder.has_room(tenant, size)]
        if full:
            self.rate_limiter.give_back(tenant, size)  # refused, so it must not use up the tenant's rate
            self._discard(tenant, traces, limits, DiscardReason.QUEUE_FULL)
            raise _queue_full(tenant, full)
        attribution = self.tracker.attribute(traces, limits)
        payload, truncated = self._truncated(traces, limits.max_attribute_bytes)
        if any(forwarder.delivery != QUEUED for forwarder in forwarders):
            await self._hand_over(tenant, traces, payload, forwarders, attribution)
        ledger = self.ledger
        if attribution is not None:
            overflowed = self.tracker.record_received(tenant, attribution)
            if ledger is not None:
                ledger.record(
                    tenant, attribution.labels, attribution.usage, overflowed, attribution.identities
                )
        elif ledger is not None:  # not tracked (no dimensions): the ledger still bills the tenant
            ledger.record_total(tenant, Usage(traces.attributable_bytes, traces.span_count))
        spans_counter.inc(traces.span_count)
        bytes_counter.inc(size)
        for scope, count in truncated.items():
            self.metrics.attributes_truncated.labels(tenant, scope).inc(count)
        if not forwarders:
            self.discards.record(tenant, traces.span_count, None, DiscardReason.NO_FORWARDER)
            return
        for forwarder in forwarders:
            if forwarder.delivery == QUEUED:
                forwarder.enqueue(ForwardItem(tenant, payload, traces.span_count, attribution))

    async def _hand_over(
        self,
        tenant: str,
        traces: ReceivedTraces,
        payload: bytes,
        forwarders: list[ForwardQueue],
        attribution: Attribution | None,
    ) -> None:
        """Give the request to the tenant's synchronous and persistent forwarders, together; raises
        PushRefused (nothing accounted but the discard) when any of them did not take it, or when an
        in-memory queue of the tenant filled up meanwhile."""
        taking = [forwarder for forwarder in forwarders if forwarder.delivery != QUEUED]
        outcomes = await asyncio.gather(
            *(
                forwarder.take(ForwardItem(tenant, payload, traces.span_count, attribution))
                for forwarder in taking
            ),
            return_exceptions=True,
        )
        refusals: list[DeliveryRefused] = []
        for outcome in outcomes:
            if isinstance(outcome, DeliveryRefused):
                refusals.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # a bug: the receiver answers 500 and logs it
        size = len(traces.protobuf)
        full = [
            forwarder.name
            for forwarder in forwarders
            if forwarder.delivery == QUEUED and not forwarder.has_room(tenant, size)
        ]
        if not refusals and not full:
            return
        for forwarder, outcome in zip(taking, outcomes, strict=True):
            if outcome is None:
                forwarder.count_partial_delivery()
        self.rate_limiter.give_back(tenant, size)
        limits = self.overrides.for_tenant(tenant)
        if not refusals:
            self._discard(tenant, traces, limits, DiscardReason.QUEUE_FULL)
            raise _queue_full(tenant, full)
        # A backend's refusal for good outweighs any retryable failure: retrying cannot help it.
        refusal = next((refusal for refusal in refusals if not refusal.retryable), refusals[0])
        self._discard(tenant, traces, limits, refusal.reason)
        if not refusal.retryable:
            raise PushRefused(Refusal.BACKEND_REJECTED, str(refusal))
        retry_after = max(refusal.retry_after or 0.0 for refusal in refusals) or None
        reason = (
            Refusal.QUEUE_FULL if refusal.reason == DiscardReason.QUEUE_FULL else Refusal.BACKEND_UNAVAILABLE
        )
        raise PushRefused(reason, "; ".join(str(refusal) for refusal in refusals), retry_after)

    def _truncated(self, traces: ReceivedTraces, max_attribute_bytes: int) -> tuple[bytes, dict[str, int]]:
        """The payload to forward, and how many attributes were cut by scope (counted once accepted)."""
        if traces.max_attribute_bytes == max_attribute_bytes and not traces.long_attribute:
            return traces.protobuf, {}  # the scan saw nothing to cut: forwarded exactly as received
        truncation = truncate_attributes(traces, max_attribute_bytes)
        if truncation is None:
            return traces.protobuf, {}  # forwarded exactly as received
        return truncation.protobuf, dict(truncation.counts)

    def _discard(
        self, tenant: str, traces: ReceivedTraces, limits: TenantLimits, reason: DiscardReason
    ) -> None:
        self.discards.record(tenant, traces.span_count, self.tracker.attribute(traces, limits), reason)


def _queue_full(tenant: str, forwarders: list[str]) -> PushRefused:
    return PushRefused(
        Refusal.QUEUE_FULL,
        f"forwarding queue full for tenant {tenant} (forwarder {', '.join(forwarders)}): the backend is "
        "not keeping up; retry later",
        retry_after=1.0,
    )


def _rate_limited(tenant: str, size: int, limits: TenantLimits, decision: RateDecision) -> PushRefused:
    """Tempo's wording: `local` is this replica's rate (the tenant's share with the global strategy),
    `global` the tenant's rate across the replicas (0 with the local strategy)."""
    local, global_, burst = int(decision.local_rate), decision.global_rate, limits.burst_size_bytes
    if decision.never:
        return PushRefused(
            Refusal.LARGER_THAN_BURST,
            f"RATE_LIMITED: batch size ({size} bytes) exceeds ingestion limit (local: {local} bytes/s, "
            f"global: {global_} bytes/s, burst: {burst} bytes) while adding {size} bytes for user "
            f"{tenant}. consider reducing batch size or increasing rate limit.",
        )
    return PushRefused(
        Refusal.RATE_LIMITED,
        f"RATE_LIMITED: ingestion rate limit (local: {local} bytes/s, global: {global_} bytes/s, burst: "
        f"{burst} bytes) exceeded while adding {size} bytes for user {tenant}. consider increasing the "
        "limit or reducing ingestion rate.",
        decision.retry_after,
    )


__all__ = ["Discards", "ForwardQueue", "IngestPipeline", "PushRefused", "Refusal"]
