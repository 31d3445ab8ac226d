"""Plain-data views of overrides for the status endpoints (rendered as YAML by the server)."""

from __future__ import annotations

from typing import Any

from overrides.dimensions import Dimension
from overrides.model import OverridesSnapshot


def dimensions_as_config(dimensions: tuple[Dimension, ...]) -> dict[str, str]:
    """The map form an operator would write, with every label spelled out."""
    return {d.configured: d.label for d in dimensions}


def describe_tenant(snapshot: OverridesSnapshot, tenant: str) -> dict[str, Any]:
    """A tenant's effective values and, for each, which layer it came from."""
    resolved = snapshot.explain(tenant)
    values = {
        "cost_attribution.dimensions": dimensions_as_config(resolved.limits.dimensions),
        "cost_attribution.max_cardinality": resolved.limits.max_cardinality,
    }
    cost_attribution = {
        name.split(".", 1)[1]: {"value": value, "source": resolved.sources[name].value}
        for name, value in values.items()
    }
    return {"tenant": tenant, "cost_attribution": cost_attribution}
