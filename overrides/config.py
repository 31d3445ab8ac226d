"""`overrides:` settings: the defaults, the runtime per-tenant file and user-configurable overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distributor.overrides.model import TenantOverrides


@dataclass(frozen=True, slots=True)
class UserConfigurableOverridesConfig:
    enabled: bool = False
    storage_path: Path = Path("data/user-overrides")  # relative paths: relative to the config file


@dataclass(frozen=True, slots=True)
class OverridesConfig:
    defaults: TenantOverrides = field(default_factory=TenantOverrides)
    per_tenant_override_config: Path | None = None
    per_tenant_override_period: float = 10.0
    user_configurable_overrides: UserConfigurableOverridesConfig = field(
        default_factory=UserConfigurableOverridesConfig
    )
