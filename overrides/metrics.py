"""Tempo's runtime-config metrics for the per-tenant overrides file."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from distributor.overrides.reload import RuntimeOverridesReloader


class RuntimeConfigCollector(Collector):
    """Tempo's runtime-config metrics, so an alert can fire on a bad overrides edit."""

    def __init__(self, reloader: RuntimeOverridesReloader) -> None:
        self._reloader = reloader

    def collect(self) -> Iterator[Metric]:
        status = self._reloader.status
        yield GaugeMetricFamily(
            "tempo_runtime_config_last_reload_successful",
            "Whether the last runtime overrides reload attempt was successful",
            value=1 if status.last_reload_successful else 0,
        )
        config_hash = GaugeMetricFamily(
            "tempo_runtime_config_hash", "Hash of the runtime overrides file in force", labels=["sha256"]
        )
        config_hash.add_metric([status.sha256_in_force], 1)
        yield config_hash
        yield GaugeMetricFamily(
            "tempo_runtime_config_last_success_timestamp_seconds",
            "When the runtime overrides in force were loaded",
            value=status.last_success_time,
        )
