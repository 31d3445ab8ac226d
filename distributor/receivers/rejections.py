"""Refused export requests in the log, rate-limited per reason.

Levels: a refusal by which the service sheds load or enforces a limit (429 rate limit or too many
tenants, 413 larger than the tenant's burst, 503 queue full or workers busy; their gRPC equivalents)
is `warn`: the operator may have to act (raise a limit, add capacity, look at a backend), and Tempo
writes its own discards at warn. A request the client got wrong (400 invalid body, 401 no tenant,
405, 413 body too large, 415) is `info`: the service is healthy and only the sender can fix it, yet
an operator asked why a client's traces are missing must find it at the default level (Tempo's
request log keeps 4xx answers at debug, where nobody sees them). Every refusal is also counted in the
request metrics, so the limit on lines loses no count: past `limit` lines per reason in a window,
one line later says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from distributor.common.logging_setup import LimitedLog
from distributor.ingest.pipeline import PushRefused, Refusal
from distributor.ingest.scan import InvalidTraces
from distributor.ingest.tenant import TenantError
from distributor.ingest.workers import WorkersBusy
from distributor.receivers.otlp import ReceiveError

log = logging.getLogger(__name__)

LINES_PER_REASON = 10
WINDOW_SECONDS = 60.0
_LOAD_SHEDDING = frozenset(
    (Refusal.RATE_LIMITED, Refusal.LARGER_THAN_BURST, Refusal.QUEUE_FULL, Refusal.TOO_MANY_ACTIVE_TENANTS)
)

Refused = ReceiveError | InvalidTraces | TenantError | PushRefused | WorkersBusy


def rejection_reason(error: Refused) -> str:
    """A short, bounded name of why a request was refused (one rate-limit window per name)."""
    if isinstance(error, ReceiveError):
        return error.reason.value
    if isinstance(error, InvalidTraces):
        return "invalid_traces"
    if isinstance(error, TenantError):
        return f"tenant_{error.reason.value}"
    if isinstance(error, WorkersBusy):
        return "workers_busy"
    return error.reason.value


def rejection_level(error: Refused) -> int:
    if isinstance(error, WorkersBusy) or (isinstance(error, PushRefused) and error.reason in _LOAD_SHEDDING):
        return logging.WARNING
    return logging.INFO


class RejectionLog:
    """One receiver's refused requests: at most LINES_PER_REASON lines per reason and minute."""

    def __init__(
        self,
        transport: str,
        clock: Callable[[], float] = time.monotonic,
        limit: int = LINES_PER_REASON,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self.transport = transport
        self._lines = LimitedLog(log, limit, window, clock)

    def refused(self, error: Refused, tenant: str | None, status: int | str) -> None:
        """`status`: the HTTP status, or the gRPC code's name."""
        self._lines.log(
            rejection_level(error),
            rejection_reason(error),
            "%s request refused (%s): %s",
            self.transport,
            status,
            error,
            transport=self.transport,
            status=status,
            tenant=tenant if tenant is not None else "",
        )
