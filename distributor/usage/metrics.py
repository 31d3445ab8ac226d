"""The tracker's own health on /metrics: active series and overflow per tenant (the usage series
themselves are served at /usage_metrics, see exposition.py)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from distributor.usage.tracker import UsageTracker


class UsageTrackerCollector(Collector):
    def __init__(self, tracker: UsageTracker) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "tempo_usage_tracker_active_series",
            "Usage series currently exposed at /usage_metrics per tenant (the overflow series excluded)",
            labels=["tenant"],
        )
        overflow = CounterMetricFamily(
            "tempo_usage_tracker_overflow_bytes",
            "Bytes attributed to the __overflow__ series because the tenant reached max_cardinality",
            labels=["tenant"],
        )
        for stats in self._tracker.stats():
            active.add_metric([stats.tenant], stats.active_series)
            overflow.add_metric([stats.tenant], stats.overflow_bytes)
        yield active
        yield overflow
