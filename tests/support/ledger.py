"""A usage ledger on its own, outside a service: the test flushes it (its periodic flush is not started)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from distributor.common.lifecycle import BackgroundTaskMetrics
from distributor.ledger.ledger import LedgerMetrics, LedgerStore, UsageLedger


def standalone_ledger(
    store: LedgerStore, wall_clock: Callable[[], float], registry: CollectorRegistry | None = None
) -> UsageLedger:
    """Flush period, retention and merge horizon as a service's defaults would not get in the way: an
    hour, 15 months, an hour. Its metrics go to `registry` when the test reads them."""
    registry = registry or CollectorRegistry()
    return UsageLedger(
        store,
        LedgerMetrics(registry),
        flush_period=3600.0,
        retention_months=15,
        merge_after=3600.0,
        wall_clock=wall_clock,
        task_metrics=BackgroundTaskMetrics(registry),
    )
