"""Per-tenant limits: what can be overridden, and how a tenant's entry merges over the defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

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


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """The effective values for one tenant, every field resolved."""

    dimensions: tuple[Dimension, ...]
    max_cardinality: int  # 0 = use the tracker's setting


class Source(Enum):
    """Where an effective value came from, highest precedence first."""

    USER_CONFIGURABLE = "user_configurable"
    RUNTIME_FILE = "runtime_file"
    WILDCARD = "wildcard"
    DEFAULTS = "defaults"


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    limits: TenantLimits
    sources: Mapping[str, Source]  # "cost_attribution.dimensions" -> where it came from


@dataclass(frozen=True)
class OverridesSnapshot:
    """One immutable, fully validated set of overrides; swapped as a whole, never edited in place.

    Each field resolves on its own: the tenant's user-configurable value, else its entry in the
    runtime file, else the runtime file's "*" entry, else the defaults.
    """

    defaults: TenantOverrides
    per_tenant: Mapping[str, TenantOverrides] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None  # the per-tenant file it was read from, if any
    user: Mapping[str, TenantOverrides] = field(default_factory=lambda: MappingProxyType({}))
    # Resolved once per snapshot, not per request: the receiver asks on every request.
    _resolved: dict[str, ResolvedLimits] = field(init=False, repr=False, compare=False)
    _unlisted: ResolvedLimits = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        resolved = {tenant: self._resolve(tenant) for tenant in self.tenants()}
        object.__setattr__(self, "_resolved", resolved)  # frozen: set once, here
        object.__setattr__(self, "_unlisted", self._resolve(None))

    def tenants(self) -> list[str]:
        """Tenants with overrides of their own (the "*" entry is not a tenant)."""
        return sorted((set(self.per_tenant) | set(self.user)) - {WILDCARD_TENANT})

    def for_tenant(self, tenant: str) -> TenantLimits:
        return self._resolved.get(tenant, self._unlisted).limits

    def explain(self, tenant: str) -> ResolvedLimits:
        return self._resolved.get(tenant, self._unlisted)

    def _resolve(self, tenant: str | None) -> ResolvedLimits:
        layers: list[tuple[Source, TenantOverrides | None]] = [
            (Source.USER_CONFIGURABLE, self.user.get(tenant) if tenant else None),
            (Source.RUNTIME_FILE, self.per_tenant.get(tenant) if tenant else None),
            (Source.WILDCARD, self.per_tenant.get(WILDCARD_TENANT)),
        ]
        sources: dict[str, Source] = {}

        def pick(name: str, default: object) -> Any:
            for source, layer in layers:
                value = getattr(layer.cost_attribution, name) if layer is not None else None
                if value is not None:
                    sources[f"cost_attribution.{name}"] = source
                    return value
            sources[f"cost_attribution.{name}"] = Source.DEFAULTS
            value = getattr(self.defaults.cost_attribution, name)
            return default if value is None else value

        limits = TenantLimits(dimensions=pick("dimensions", ()), max_cardinality=pick("max_cardinality", 0))
        return ResolvedLimits(limits, MappingProxyType(sources))
