"""Who may read usage: key pairs checked in constant time, a fixed-window rate limit per pair, and a
fixed-window limit on failed authentications per client address."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache

from distributor.attribution.config import USAGE_READ, ApiKeyConfig
from distributor.attribution.errors import AuthFailuresLimited, Forbidden, RateLimited

# Client addresses whose failed authentications are counted at once: about 290 bytes each with IPv6
# addresses (measured with tracemalloc), 3 MB in all. Past it the address tracked longest ago is
# forgotten first (after those whose window has ended).
MAX_TRACKED_ADDRESSES = 10_000


class ApiKeys:
    def __init__(self, keys: tuple[ApiKeyConfig, ...]) -> None:
        self._keys = keys

    def authenticate(self, api_key: str | None, app_key: str | None) -> ApiKeyConfig:
        """The key pair with usage_read, or Forbidden (the same whatever is wrong)."""
        found = None
        if api_key and app_key:
            for key in self._keys:  # compare every pair in constant time: no timing hints
                match = hmac.compare_digest(key.api_key.encode(), api_key.encode())
                match &= hmac.compare_digest(key.app_key.encode(), app_key.encode())
                if match and found is None:
                    found = key
        if found is None or USAGE_READ not in found.scopes:
            raise Forbidden()
        return found


@dataclass(frozen=True, slots=True)
class RateLimitWindow:
    """Where a key pair stands in its current window, in the whole seconds Datadog's X-RateLimit-*
    headers report."""

    limit: int  # requests per window; 0: unlimited
    period: int
    remaining: int
    reset: int  # until the window renews; at least 1


@dataclass(slots=True)
class _Window:
    started: float
    used: int


class ApiRateLimiter:
    """Fixed windows per key pair, as Datadog's X-RateLimit-* headers describe them."""

    def __init__(self, requests: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = requests
        self.period = period
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def take(self, key: ApiKeyConfig) -> RateLimitWindow:
        """Counts one request of `key`; RateLimited when its window has none left."""
        now = self._clock()
        identity = (key.api_key, key.app_key)
        window = self._windows.get(identity)
        if window is None or now - window.started >= self.period:
            window = self._windows[identity] = _Window(now, 0)
        allowed = self.requests == 0 or window.used < self.requests
        if allowed:
            window.used += 1
        state = RateLimitWindow(
            self.requests,
            math.ceil(self.period),
            max(0, self.requests - window.used) if self.requests else 0,
            max(1, math.ceil(window.started + self.period - now)),
        )
        if not allowed:
            raise RateLimited(state)
        return state


class AuthFailureLimiter:
    """Fixed windows of failed authentications per client address. An address that used up its window is
    refused whatever it sends, a correct key pair included: otherwise a guesser would still learn which
    guess was right. The same key pair from any other address is unaffected."""

    def __init__(
        self,
        failures: int,
        period: float,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.failures = failures
        self.period = period
        self._clock = clock
        # A window is dropped once it ends, so only addresses that failed within a period are held.
        self._windows: TTLCache[str, _Window] = TTLCache(maxsize=max_addresses, ttl=period, timer=clock)

    def __len__(self) -> int:
        return len(self._windows)

    def check(self, address: str) -> None:
        """AuthFailuresLimited while `address` has no failed attempt left in its window."""
        if not self.failures:
            return
        now = self._clock()
        window = self._current(address, now)
        if window is not None and window.used >= self.failures:
            raise AuthFailuresLimited(
                RateLimitWindow(
                    self.failures,
                    math.ceil(self.period),
                    0,
                    max(1, math.ceil(window.started + self.period - now)),
                )
            )

    def failed(self, address: str) -> None:
        """Counts one failed authentication from `address`."""
        if not self.failures:
            return
        now = self._clock()
        window = self._current(address, now)
        if window is None:
            self._windows[address] = _Window(now, 1)
        else:
            window.used += 1

    def _current(self, address: str, now: float) -> _Window | None:
        window = self._windows.get(address)
        if window is None or now - window.started >= self.period:
            return None
        return window
