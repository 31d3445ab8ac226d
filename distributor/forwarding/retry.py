"""How a failed export is classified and when it is tried again.

Retryable and permanent failures follow the OTLP specification and the Collector's exporters: HTTP
429/502/503/504 and gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED (and the other codes the
OTLP spec lists as retryable) are retried; anything else, such as HTTP 400 or INVALID_ARGUMENT, is
permanent. Backoff is the Collector's: exponential (x1.5) with +-50% jitter, capped at max_interval,
never shorter than what the backend asked for (Retry-After, google.rpc.RetryInfo).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from distributor.common.errors import DistributorError
from distributor.forwarding.config import RetryConfig

MULTIPLIER = 1.5
RANDOMIZATION_FACTOR = 0.5


class ExportFailure(DistributorError):
    """A backend did not take an export; whether to try again is the backend's answer, classified."""

    def __init__(self, reason: str, retryable: bool, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason  # a metric label: http_503, unavailable, connection_error, timeout...
        self.retryable = retryable
        self.message = message
        self.retry_after = retry_after  # seconds the backend asked us to wait, if it said


class Backoff:
    def __init__(self, config: RetryConfig, uniform: Callable[[], float] = random.random) -> None:
        self.config = config
        self._uniform = uniform
        # The interval stops growing once it reaches max_interval, so neither does the exponent:
        # 1.5**attempt overflows a float at attempt 1751, which retries without end (max_elapsed_time 0)
        # reach after hours of outage.
        self._last_exponent = _attempts_to_reach(config.initial_interval, config.max_interval)

    def delay(self, attempt: int, asked: float | None = None) -> float:
        """Seconds to wait after the `attempt`-th failure (0-based)."""
        exponent = min(attempt, self._last_exponent)
        interval = min(self.config.initial_interval * MULTIPLIER**exponent, self.config.max_interval)
        jittered = interval * (1 + RANDOMIZATION_FACTOR * (2 * self._uniform() - 1))
        return max(jittered, asked or 0.0)


def _attempts_to_reach(initial_interval: float, max_interval: float) -> int:
    """An attempt whose interval, growing by MULTIPLIER from `initial_interval`, is past `max_interval`
    (0 when it starts there). One more than the logarithm says, so rounding cannot leave it short."""
    if max_interval <= initial_interval:
        return 0
    return math.ceil(math.log(max_interval / initial_interval, MULTIPLIER)) + 1
