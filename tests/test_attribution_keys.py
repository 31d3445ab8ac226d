"""Who may read usage, without a server: key pairs with the usage_read scope, the per-key
fixed-window rate limit on a manual clock (what each request's window reports for the X-RateLimit-*
headers, and when a key pair is refused), and the limit on failed authentications per client address."""

from __future__ import annotations

import pytest

from distributor.attribution.config import ApiKeyConfig
from distributor.attribution.errors import AuthFailuresLimited, Forbidden, RateLimited
from distributor.attribution.keys import ApiKeys, ApiRateLimiter, AuthFailureLimiter, RateLimitWindow
from tests.support.clock import ManualClock

ACME = ApiKeyConfig("acme-api", "acme-app", "acme")
ACME_SECOND_PAIR = ApiKeyConfig("acme-api", "acme-app-2", "acme")
WRITE_ONLY = ApiKeyConfig("writer-api", "writer-app", "acme", scopes=("usage_write",))
KEYS = ApiKeys((ACME, ACME_SECOND_PAIR, WRITE_ONLY))


def test_a_configured_pair_with_usage_read_is_admitted() -> None:
    assert KEYS.authenticate("acme-api", "acme-app-2") == ACME_SECOND_PAIR


REFUSED = {
    "no keys": (None, None),
    "no application key": ("acme-api", None),
    "empty keys": ("", ""),
    "application key of another pair": ("acme-api", "writer-app"),
    "unknown api key": ("nobody-api", "acme-app"),
    "pair without usage_read": ("writer-api", "writer-app"),
    "keys swapped": ("acme-app", "acme-api"),
}


@pytest.mark.parametrize(("api_key", "app_key"), REFUSED.values(), ids=REFUSED.keys())
def test_a_pair_that_may_not_read_usage_is_forbidden_alike(api_key: str | None, app_key: str | None) -> None:
    with pytest.raises(Forbidden) as raised:
        KEYS.authenticate(api_key, app_key)
    assert str(raised.value) == "Forbidden"


# (seconds since the previous request, key pair, the window reported, whether the request is refused)
Step = tuple[float, ApiKeyConfig, RateLimitWindow, bool]


def allowed(delay: float, key: ApiKeyConfig, remaining: int, reset: int) -> Step:
    return (delay, key, RateLimitWindow(3, 60, remaining, reset), False)


def limited(delay: float, key: ApiKeyConfig, reset: int) -> Step:
    return (delay, key, RateLimitWindow(3, 60, 0, reset), True)


# 3 requests per 60 s.
CASES: dict[str, list[Step]] = {
    "the window counts down and resets a period after its first request": [
        allowed(0, ACME, 2, 60),
        allowed(10, ACME, 1, 50),
        allowed(20, ACME, 0, 30),
    ],
    "the fourth request of a window is refused until the window renews": [
        allowed(0, ACME, 2, 60),
        allowed(0, ACME, 1, 60),
        allowed(0, ACME, 0, 60),
        limited(45, ACME, 15),
        limited(14, ACME, 1),
    ],
    "reset rounds up to whole seconds": [
        allowed(0, ACME, 2, 60),
        allowed(59.5, ACME, 1, 1),
        allowed(0.4, ACME, 0, 1),
    ],
    "a new window starts a full period after the last began": [
        allowed(0, ACME, 2, 60),
        allowed(0, ACME, 1, 60),
        allowed(0, ACME, 0, 60),
        allowed(60, ACME, 2, 60),
    ],
    "each key pair has its own window": [
        allowed(0, ACME, 2, 60),
        allowed(0, ACME, 1, 60),
        allowed(0, ACME, 0, 60),
        allowed(30, ACME_SECOND_PAIR, 2, 60),
        limited(0, ACME, 30),
    ],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_rate_limit_window(steps: list[Step]) -> None:
    clock = ManualClock()
    limiter = ApiRateLimiter(3, 60.0, clock)
    for delay, key, window, refused in steps:
        clock.advance(delay)
        if refused:
            with pytest.raises(RateLimited) as raised:
                limiter.take(key)
            assert raised.value.window == window
        else:
            assert limiter.take(key) == window


def test_no_limit_reports_zero_limit_and_remaining() -> None:
    """requests: 0 turns the limit off; Datadog's headers then read 0 and 0."""
    clock = ManualClock()
    limiter = ApiRateLimiter(0, 60.0, clock)
    for _ in range(1000):
        assert limiter.take(ACME) == RateLimitWindow(0, 60, 0, 60)


def test_a_fractional_period_is_reported_rounded_up() -> None:
    limiter = ApiRateLimiter(3, 0.5, ManualClock())
    assert limiter.take(ACME) == RateLimitWindow(3, 1, 2, 1)


# (seconds since the previous step, client address, "fail" to count a failed authentication or "check"
# to ask whether the address may try, the window reported when it may not (None: it may))
AuthStep = tuple[float, str, str, RateLimitWindow | None]
HOME, ELSEWHERE = "192.0.2.1", "198.51.100.7"


def fail(delay: float, address: str = HOME) -> AuthStep:
    return (delay, address, "fail", None)


def may_try(delay: float, address: str = HOME) -> AuthStep:
    return (delay, address, "check", None)


def refused(delay: float, reset: int, address: str = HOME) -> AuthStep:
    return (delay, address, "check", RateLimitWindow(3, 60, 0, reset))


# 3 failures per 60 s per address.
AUTH_CASES: dict[str, list[AuthStep]] = {
    "an address may fail up to the limit": [fail(0), fail(10), may_try(0), fail(0)],
    "past the limit the address is refused until its window ends": [
        fail(0),
        fail(20),
        fail(0),
        refused(0, 40),
        refused(39.5, 1),
        may_try(0.5),
    ],
    "the window starts at the first failure, not the last": [
        fail(0),
        fail(59),
        may_try(1),
        fail(0),
        fail(0),
        may_try(0),
        fail(0),
        refused(0, 60),
    ],
    "another address is never refused for this one's failures": [
        fail(0),
        fail(0),
        fail(0),
        refused(0, 60),
        may_try(0, ELSEWHERE),
        fail(0, ELSEWHERE),
        may_try(0, ELSEWHERE),
    ],
}


@pytest.mark.parametrize("steps", AUTH_CASES.values(), ids=AUTH_CASES.keys())
def test_auth_failure_window(steps: list[AuthStep]) -> None:
    clock = ManualClock()
    limiter = AuthFailureLimiter(3, 60.0, clock)
    for delay, address, action, window in steps:
        clock.advance(delay)
        if action == "fail":
            limiter.failed(address)
        elif window is None:
            limiter.check(address)
        else:
            with pytest.raises(AuthFailuresLimited) as raised:
                limiter.check(address)
            assert raised.value.window == window


def test_no_auth_failure_limit_never_refuses_nor_tracks() -> None:
    """failures: 0 turns the limit off."""
    limiter = AuthFailureLimiter(0, 60.0, ManualClock())
    for _ in range(1000):
        limiter.failed(HOME)
    limiter.check(HOME)
    assert len(limiter) == 0


def test_tracked_addresses_are_capped_and_dropped_when_their_window_ends() -> None:
    clock = ManualClock()
    limiter = AuthFailureLimiter(3, 60.0, clock, max_addresses=100)
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100
    clock.advance(60)
    assert len(limiter) == 0
