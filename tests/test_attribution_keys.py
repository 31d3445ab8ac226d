"""Who may read usage, without a server: key pairs with the usage_read scope, and the per-key
fixed-window rate limit on a manual clock (what each request's window reports for the X-RateLimit-*
headers, and when a key pair is refused)."""

from __future__ import annotations

import pytest

from distributor.attribution.config import ApiKeyConfig
from distributor.attribution.errors import Forbidden, RateLimited
from distributor.attribution.keys import ApiKeys, ApiRateLimiter, RateLimitWindow
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
