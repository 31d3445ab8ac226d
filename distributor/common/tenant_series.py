"""Releasing the per-tenant series of a Prometheus counter, whatever its other labels."""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import Counter


def remove_tenants(counter: Counter, tenants: Collection[str]) -> None:
    """Remove every series of `counter` whose `tenant` label is one of `tenants`. A series that comes
    back later starts from zero, which Prometheus reads as a counter reset."""
    if not tenants:
        return
    released = {
        tuple(sample.labels.values())
        for family in counter.collect()
        for sample in family.samples
        if sample.labels.get("tenant") in tenants
    }
    for label_values in released:
        counter.remove(*label_values)
