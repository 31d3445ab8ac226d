"""Per-tenant ingestion rate limits: a token bucket of protobuf bytes per tenant, as in Tempo's
distributor. With the tenant's `local` rate strategy each replica enforces the whole rate on what it
receives; with `global` each enforces the rate divided by the healthy replicas of the distributor ring
(so that together they let the tenant's rate through). The burst is per replica with either strategy,
as in Tempo: a client's request lands on one replica, which must be able to take it whole.

The bucket's rate and burst come from the tenant's overrides on every request, so an overrides reload
takes effect on the next request; the tokens a tenant has saved are kept (capped at the new burst).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from distributor.common.clock import Clock
from distributor.overrides.model import RATE_STRATEGY_GLOBAL, RATE_STRATEGY_LOCAL


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float = 0.0  # seconds until the request would fit, if it ever can
    never: bool = False  # the request is larger than the burst: no wait will let it through
    local_rate: float = 0.0  # bytes/s this replica allows the tenant (its share, with `global`)
    global_rate: int = 0  # the tenant's rate across the replicas with `global`; 0 with `local`, as Tempo


ALLOWED = RateDecision(True)


class _Bucket:
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst  # a new tenant may send a burst at once
        self.updated = now

    def refill(self, now: float, rate: float, burst: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(burst, self.tokens + elapsed * self.rate)
        self.rate, self.burst, self.updated = rate, burst, now


def one_replica() -> int:
    return 1


class IngestionRateLimiter:
    def __init__(self, clock: Clock, healthy_replicas: Callable[[], int] = one_replica) -> None:
        """`healthy_replicas`: how many replicas share a `global` tenant's rate (the distributor ring's
        last count; read on every request, so it must not block)."""
        self._clock = clock
        self._healthy_replicas = healthy_replicas
        self._buckets: dict[str, _Bucket] = {}

    def local_rate(self, rate_limit_bytes: int, rate_strategy: str) -> float:
        """The bytes/s this replica allows a tenant with this rate and strategy."""
        if rate_strategy != RATE_STRATEGY_GLOBAL:
            return float(rate_limit_bytes)
        return rate_limit_bytes / max(1, self._healthy_replicas())

    def take(
        self,
        tenant: str,
        size: int,
        rate_limit_bytes: int,
        burst_size_bytes: int,
        rate_strategy: str = RATE_STRATEGY_LOCAL,
    ) -> RateDecision:
        """Take `size` tokens if the tenant has them. A rate limit of 0 means no limit."""
        if rate_limit_bytes <= 0:
            return ALLOWED
        rate = self.local_rate(rate_limit_bytes, rate_strategy)
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(rate, burst_size_bytes, now)
        else:
            bucket.refill(now, rate, burst_size_bytes)
        if size <= bucket.tokens:
            bucket.tokens -= size
            return ALLOWED
        global_rate = rate_limit_bytes if rate_strategy == RATE_STRATEGY_GLOBAL else 0
        if size > burst_size_bytes:
            return RateDecision(False, never=True, local_rate=rate, global_rate=global_rate)
        return RateDecision(
            False, retry_after=(size - bucket.tokens) / rate, local_rate=rate, global_rate=global_rate
        )

    def give_back(self, tenant: str, size: int) -> None:
        """Return tokens taken for a request that was then refused for another reason."""
        bucket = self._buckets.get(tenant)
        if bucket is not None:
            bucket.tokens = min(bucket.burst, bucket.tokens + size)

    def forget_full_buckets(self) -> int:
        """Drop buckets that have refilled completely: they are the same as a new one (bounds memory
        to the tenants active recently). Returns how many were dropped."""
        now = self._clock()
        full = [
            tenant
            for tenant, bucket in self._buckets.items()
            if bucket.tokens + max(0.0, now - bucket.updated) * bucket.rate >= bucket.burst
        ]
        for tenant in full:
            del self._buckets[tenant]
        return len(full)


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds (RFC 9110); never 0, which would invite an immediate retry."""
    return str(max(1, math.ceil(seconds)))
