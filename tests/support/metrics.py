"""Readers for what the service exposes: /usage_metrics series and /metrics samples, always through
prometheus_client's own parser, so a test reads what a Prometheus scraper would."""

from __future__ import annotations

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from distributor.usage.exposition import render_counter
from distributor.usage.tracker import UsageTracker

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]

RECEIVED_BYTES = "tempo_usage_tracker_bytes_received"
DISCARDED_BYTES = "tempo_usage_tracker_bytes_discarded"


def labels(tenant: str = "single-tenant", **values: str) -> Labels:
    """The label set of a usage series: these dimension labels, the tenant and the tracker."""
    return frozenset({**values, "tenant": tenant, "tracker": "cost-attribution"}.items())


def parse_usage(text: str, family_name: str = RECEIVED_BYTES) -> dict[Labels, float]:
    """One family of usage series: {labels: bytes}."""
    series: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            series[frozenset(sample.labels.items())] = sample.value
    return series


def parse_discarded(text: str) -> dict[Labels, float]:
    """The discarded-bytes series (labels include `reason`)."""
    return parse_usage(text, DISCARDED_BYTES)


def usage(tracker: UsageTracker) -> dict[Labels, float]:
    """A tracker's received series as its exposition renders them."""
    return parse_usage(render_counter(tracker.series(), openmetrics=False).decode())


def with_reason(series: dict[Labels, float], reason: str) -> dict[Labels, float]:
    """Received series as the discarded series they become when refused or lost for `reason`."""
    return {key | {("reason", reason)}: value for key, value in series.items()}


def families(text: str) -> dict[str, Metric]:
    """Every metric family of an exposition, by name (a family is listed even with no samples)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def read_samples(text: str) -> Samples:
    """Every sample of an exposition: {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample_value(samples: Samples, name: str, **exact: str) -> float:
    """The sample named `name` with exactly these labels (0 when it is not exposed)."""
    return samples.get((name, frozenset(exact.items())), 0.0)


def total(samples: Samples, name: str, **match: str) -> float:
    """The sum of the samples named `name` whose labels include `match` (0 when there are none)."""
    wanted = set(match.items())
    return sum(found for (sample, keys), found in samples.items() if sample == name and wanted <= keys)


def per_tenant(text: str, family: str, **where: str) -> dict[str, float]:
    """A counter family's `_total` samples summed by tenant, keeping samples whose labels match `where`."""
    totals: dict[str, float] = {}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in where.items()):
                tenant = sample.labels["tenant"]
                totals[tenant] = totals.get(tenant, 0) + sample.value
    return totals


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    """GET an exposition (or any page that must answer 200) as text."""
    async with session.get(url) as response:
        assert response.status == 200, url
        return await response.text()
