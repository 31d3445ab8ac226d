"""Per-tenant limits: what can be overridden, and how a tenant's entry merges over the defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from overrides.dimensions import Dimension

WILDCARD_TENANT = "*"


@dataclass(frozen=True, slots=True)
class CostAttributionOverrides:
    """A layer of cost-attribution settings; None means "not set here, inherit"."""

    dimensions: tuple[Dimension, ...] | None = None
    max_cardinality: int | None = None

    def merged_over(self, base: CostAttributionOverrides) -> CostAttributionOverrides:
        return CostAttributionOverrides(
            dimensions=self.dimensions if self.dimensions is not None else base.dimensions,
            max_cardinality=self.max_cardinality
            if self.max_cardinality is not None
            else base.max_cardinality,
        )


@dataclass(frozen=True, slots=True)
class TenantOverrides:
    cost_attribution: CostAttributionOverrides = field(default_factory=CostAttributionOverrides)

    def merged_over(self, base: TenantOverrides) -> TenantOverrides:
        return TenantOverrides(cost_attribution=self.cost_attribution.merged_over(base.cost_attribution))


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """The effective values for one tenant, every field resolved."""

    dimensions: tuple[Dimension, ...]
    max_cardinality: int  # 0 = use the tracker's setting


@dataclass(frozen=True)
class OverridesSnapshot:
    """One immutable, fully validated set of overrides; swapped as a whole, never edited in place."""

    defaults: TenantOverrides
    per_tenant: Mapping[str, TenantOverrides] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None  # the per-tenant file it was read from, if any
    # Resolved once per snapshot, not per request: the receiver asks on every request.
    _resolved: dict[str, TenantLimits] = field(init=False, repr=False, compare=False)
    _default_limits: TenantLimits = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        resolved = {
            tenant: _resolve(entry.merged_over(self.defaults)) for tenant, entry in self.per_tenant.items()
        }
        object.__setattr__(self, "_resolved", resolved)  # frozen: set once, here
        object.__setattr__(self, "_default_limits", _resolve(self.defaults))

    def for_tenant(self, tenant: str) -> TenantLimits:
        limits = self._resolved.get(tenant)
        if limits is None:
            limits = self._resolved.get(WILDCARD_TENANT, self._default_limits)
        return limits


def _resolve(entry: TenantOverrides) -> TenantLimits:
    cost = entry.cost_attribution
    return TenantLimits(dimensions=cost.dimensions or (), max_cardinality=cost.max_cardinality or 0)
