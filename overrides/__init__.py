"""Per-tenant limits: model, loading, validation and the swappable set in force."""

from distributor.common.config_reader import ConfigError, parse_duration
from distributor.overrides.dimensions import (
    Dimension,
    DimensionError,
    Scope,
    parse_dimensions,
    sanitize_label,
)
from distributor.overrides.loading import parse_per_tenant_file, parse_tenant_overrides
from distributor.overrides.model import (
    WILDCARD_TENANT,
    CostAttributionOverrides,
    OverridesSnapshot,
    TenantLimits,
    TenantOverrides,
)
from distributor.overrides.provider import OverridesProvider
from distributor.overrides.tenant_ids import tenant_id_problem

__all__ = [
    "WILDCARD_TENANT",
    "ConfigError",
    "CostAttributionOverrides",
    "Dimension",
    "DimensionError",
    "OverridesProvider",
    "OverridesSnapshot",
    "Scope",
    "TenantLimits",
    "TenantOverrides",
    "parse_dimensions",
    "parse_duration",
    "parse_per_tenant_file",
    "parse_tenant_overrides",
    "sanitize_label",
    "tenant_id_problem",
]
