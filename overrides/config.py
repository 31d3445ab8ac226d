"""`overrides:` settings: the defaults, the runtime per-tenant file and user-configurable overrides."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from distributor.common.config_fields import read_settings, setting, setting_keys, settings
from distributor.common.config_reader import MAX_FILE_BYTES, Section
from distributor.ledger.config import PoolConfig, check_postgresql_settings, mask_dsn
from distributor.overrides.loading import (
    LEGACY_TENANT_KEYS,
    TENANT_FOREIGN,
    TENANT_KEYS,
    parse_tenant_overrides,
)
from distributor.overrides.model import OverridesSnapshot, TenantOverrides
from distributor.overrides.status import dimensions_as_config


def defaults_as_data(defaults: TenantOverrides) -> dict[str, Any]:
    """The defaults as they apply, every field resolved (what a tenant without overrides gets)."""
    limits = OverridesSnapshot(defaults=defaults).for_tenant("")
    return {
        "cost_attribution": {
            "dimensions": dimensions_as_config(limits.dimensions),
            "max_cardinality": limits.max_cardinality,
            "distinct_counts": {
                "sessions": {
                    "enabled": limits.sessions_enabled,
                    "attributes": list(limits.configured_session_attributes),
                },
                "hosts": {
                    "enabled": limits.hosts_enabled,
                    "attributes": list(limits.configured_host_attributes),
                },
            },
        },
        "ingestion": {
            "rate_strategy": limits.rate_strategy,
            "rate_limit_bytes": limits.rate_limit_bytes,
            "burst_size_bytes": limits.burst_size_bytes,
            "max_attribute_bytes": limits.max_attribute_bytes,
        },
        "forwarders": list(limits.forwarders),
    }


USER_OVERRIDES_BACKENDS = ("directory", "postgresql")


@settings
class UserConfigurableOverridesConfig:
    enabled: bool = setting(default=False)
    # directory: one file per tenant, for one host (or a mount every replica shares); postgresql: one
    # table every replica shares.
    backend: str = setting(default="directory", choices=USER_OVERRIDES_BACKENDS)
    # Relative paths are relative to the config file.
    storage_path: Path = setting(default=Path("data/user-overrides"), blank_is_default=True)
    # libpq's URL or key=value form; it may carry a password, so it is only ever shown masked.
    postgresql_dsn: str = setting(default="", key="dsn", within="postgresql", render=mask_dsn)
    postgresql_pool: PoolConfig = setting(default_factory=PoolConfig, key="pool", within="postgresql")
    # How often each replica reads the rows other replicas changed.
    postgresql_poll_period: float = setting(
        default=10.0, positive=True, key="poll_period", within="postgresql"
    )


@settings
class OverridesConfig:
    defaults: TenantOverrides = setting(default_factory=TenantOverrides, render=defaults_as_data)
    per_tenant_override_config: Path | None = setting(default=None)
    per_tenant_override_period: float = setting(default=10.0, positive=True)
    # A larger file is refused (at start-up, on reload and by check-config), never read.
    per_tenant_override_max_bytes: int = setting(default=MAX_FILE_BYTES, positive=True)
    user_configurable_overrides: UserConfigurableOverridesConfig = setting(
        default_factory=UserConfigurableOverridesConfig
    )


OVERRIDES_KEYS = setting_keys(OverridesConfig)
# Tempo's legacy format writes the defaults' settings flat in this block instead of under `defaults`.
LEGACY_DEFAULTS_KEYS = (*TENANT_KEYS, *LEGACY_TENANT_KEYS)


def overrides_section(parent: Section) -> Section:
    """The `overrides:` block: this service's settings, Tempo's legacy flat defaults, and Tempo's settings
    for its other components (ignored with a note)."""
    return parent.section("overrides", OVERRIDES_KEYS, TENANT_FOREIGN, LEGACY_DEFAULTS_KEYS)


def parse_overrides(section: Section, forwarder_names: Collection[str]) -> OverridesConfig:
    """`forwarder_names`: the configured forwarders, the only ones the defaults may name."""
    legacy = [key for key in LEGACY_DEFAULTS_KEYS if section.node(key) is not None]
    if legacy and section.node("defaults") is not None:
        for key in legacy:
            section.fail(
                key,
                "Tempo's legacy flat format cannot be mixed with `defaults` in one block: "
                "move it under defaults (legacy ingestion_* names become ingestion.*)",
            )
    if legacy and section.node("defaults") is None:
        # The block itself holds the defaults, as Tempo reads a legacy configuration.
        defaults = parse_tenant_overrides(section, forwarder_names)
    else:
        defaults = parse_tenant_overrides(
            section.section("defaults", TENANT_KEYS, TENANT_FOREIGN, LEGACY_TENANT_KEYS), forwarder_names
        )
    config = read_settings(section, OverridesConfig, given={"defaults": defaults})
    user = config.user_configurable_overrides
    if user.backend == "postgresql":
        postgresql = section.reopened("user_configurable_overrides").reopened("postgresql")
        check_postgresql_settings(postgresql, user.postgresql_dsn, user.postgresql_pool)
    return config
