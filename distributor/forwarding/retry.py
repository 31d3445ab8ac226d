"""How a failed export is classified and when it is tried again.

Retryable and permanent failures follow the OTLP specification and the Collector's exporters: HTTP
429/502/503/504 and gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED (and the other codes the
OTLP spec lists as retryable) are retried; anything else, such as HTTP 400 or INVALID_ARGUMENT, is
permanent. Backoff is the Collector's: exponential (x1.5) with +-50% jitter, capped at max_interval,
never shorter than what the backend asked for (Retry-After, google.rpc.RetryInfo).
"""

from __future__ import annotations

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

    def delay(self, attempt: int, asked: float | None = None) -> float:
        """Seconds to wait after the `attempt`-th failure (0-based)."""
        interval = min(self.config.initial_interval * MULTIPLIER**attempt, self.config.max_interval)
        jittered = interval * (1 + RANDOMIZATION_FACTOR * (2 * self._uniform() - 1))
        return max(jittered, asked or 0.0)
