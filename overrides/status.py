"""Plain-data views of overrides for the status endpoints (rendered as YAML by the server)."""

from __future__ import annotations

from typing import Any

from distributor.overrides.dimensions import Dimension
from distributor.overrides.model import OverridesSnapshot


def dimensions_as_config(dimensions: tuple[Dimension, ...]) -> dict[str, str]:
    """The map form an operator would write, with every label spelled out."""
    return {d.configured: d.label for d in dimensions}


def describe_tenant(snapshot: OverridesSnapshot, tenant: str) -> dict[str, Any]:
    """A tenant's effective values and, for each, which layer it came from."""
    resolved = snapshot.explain(tenant)
    limits = resolved.limits
    values = {
        "cost_attribution.dimensions": dimensions_as_config(limits.dimensions),
        "cost_attribution.max_cardinality": limits.max_cardinality,
        "ingestion.rate_strategy": limits.rate_strategy,
        "ingestion.rate_limit_bytes": limits.rate_limit_bytes,
        "ingestion.burst_size_bytes": limits.burst_size_bytes,
        "ingestion.max_attribute_bytes": limits.max_attribute_bytes,
        "forwarders": list(limits.forwarders),
        "cost_attribution.distinct_counts.sessions.enabled": limits.sessions_enabled,
        "cost_attribution.distinct_counts.sessions.attributes": list(limits.configured_session_attributes),
        "cost_attribution.distinct_counts.hosts.enabled": limits.hosts_enabled,
        "cost_attribution.distinct_counts.hosts.attributes": list(limits.configured_host_attributes),
    }
    described: dict[str, Any] = {"tenant": tenant}
    for name, value in values.items():
        *sections, leaf = name.split(".")
        entry = {"value": value, "source": resolved.sources[name].value}
        node = described
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = entry
    return described
