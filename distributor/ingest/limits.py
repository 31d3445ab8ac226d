"""Per-tenant ingestion rate limits: a token bucket of protobuf bytes per tenant, as in Tempo's
distributor with the `local` strategy (each replica enforces the whole limit on what it receives).

The bucket's rate and burst come from the tenant's overrides on every request, so an overrides reload
takes effect on the next request; the tokens a tenant has saved are kept (capped at the new burst).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from distributor.common.clock import Clock


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float = 0.0  # seconds until the request would fit, if it ever can
    never: bool = False  # the request is larger than the burst: no wait will let it through


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


class IngestionRateLimiter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant: str, size: int, rate_limit_bytes: int, burst_size_bytes: int) -> RateDecision:
        """Take `size` tokens if the tenant has them. A rate limit of 0 means no limit."""
        if rate_limit_bytes <= 0:
            return ALLOWED
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(rate_limit_bytes, burst_size_bytes, now)
        else:
            bucket.refill(now, rate_limit_bytes, burst_size_bytes)
        if size <= bucket.tokens:
            bucket.tokens -= size
            return ALLOWED
        if size > burst_size_bytes:
            return RateDecision(False, never=True)
        return RateDecision(False, retry_after=(size - bucket.tokens) / rate_limit_bytes)

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
