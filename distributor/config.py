"""The service configuration: each stage's settings, read from their Tempo-shaped YAML sections.

Each stage's config.py declares its settings and checks them; this module only puts them together, and
renders the whole for /status/config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributor.attribution.config import UsageAttributionConfig, parse_usage_attribution
from distributor.common.config_fields import read_settings, render_settings, settings_section
from distributor.common.config_reader import ConfigError, Section, read_yaml
from distributor.forwarding.config import ForwarderConfig, forwarder_as_data, parse_forwarders
from distributor.ingest.workers import IngestWorkersConfig
from distributor.overrides.config import OverridesConfig, parse_overrides
from distributor.receivers.config import (
    RECEIVERS_KEYS,
    OtlpGrpcConfig,
    OtlpHttpConfig,
    parse_receivers,
    receivers_as_data,
)
from distributor.server.config import ServerConfig, parse_server
from distributor.usage.config import CostAttributionConfig, UsageConfig, parse_usage, usage_as_data

TOP_KEYS = ("multitenancy_enabled", "server", "distributor", "overrides", "usage_attribution")
DISTRIBUTOR_KEYS = ("receivers", "usage", "forwarders", "max_active_tenants", "ingest_workers")
# Tenants that sent spans within the usage tracker's stale_duration; a new one past it is refused.
DEFAULT_MAX_ACTIVE_TENANTS = 10_000


@dataclass(frozen=True, slots=True)
class Config:
    multitenancy_enabled: bool = False
    server: ServerConfig = field(default_factory=ServerConfig)
    otlp_http: OtlpHttpConfig = field(default_factory=OtlpHttpConfig)
    otlp_grpc: OtlpGrpcConfig | None = None  # enabled when listed, or when no protocols are listed
    forwarders: tuple[ForwarderConfig, ...] = ()
    max_active_tenants: int = DEFAULT_MAX_ACTIVE_TENANTS
    ingest_workers: IngestWorkersConfig = field(default_factory=IngestWorkersConfig)
    cost_attribution: CostAttributionConfig = field(default_factory=CostAttributionConfig)
    overrides: OverridesConfig = field(default_factory=OverridesConfig)
    usage_attribution: UsageAttributionConfig = field(default_factory=UsageAttributionConfig)
    source: Path | None = None
    expand_env: bool = False


def load_config(path: Path, expand_env: bool = False, problems: list[ConfigError] | None = None) -> Config:
    """Read and validate a configuration file; raises ConfigError naming file, line and key.

    With `problems`, every problem after a successful YAML parse is collected there instead."""
    root, _ = read_yaml(path, expand_env=expand_env)
    top = Section(root, "", str(path), TOP_KEYS, problems)
    server = parse_server(settings_section(top, "server", ServerConfig))
    distributor = top.section("distributor", DISTRIBUTOR_KEYS)
    forwarders = parse_forwarders(distributor)
    otlp_http, otlp_grpc = parse_receivers(distributor.section("receivers", RECEIVERS_KEYS))
    cost_attribution = parse_usage(settings_section(distributor, "usage", UsageConfig))
    overrides = parse_overrides(
        settings_section(top, "overrides", OverridesConfig), [forwarder.name for forwarder in forwarders]
    )
    return Config(
        multitenancy_enabled=top.boolean("multitenancy_enabled", False),
        server=server,
        otlp_http=otlp_http,
        otlp_grpc=otlp_grpc,
        forwarders=forwarders,
        max_active_tenants=distributor.positive_integer("max_active_tenants", DEFAULT_MAX_ACTIVE_TENANTS),
        ingest_workers=read_settings(
            settings_section(distributor, "ingest_workers", IngestWorkersConfig), IngestWorkersConfig
        ),
        cost_attribution=cost_attribution,
        overrides=overrides,
        usage_attribution=parse_usage_attribution(
            settings_section(top, "usage_attribution", UsageAttributionConfig)
        ),
        source=path,
        expand_env=expand_env,
    )


def config_as_data(config: Config) -> dict[str, Any]:
    """The configuration in the YAML shape it is written in (what /status/config shows)."""
    return {
        "multitenancy_enabled": config.multitenancy_enabled,
        "server": render_settings(config.server),
        "distributor": {
            "receivers": receivers_as_data(config.otlp_http, config.otlp_grpc),
            "forwarders": [forwarder_as_data(forwarder) for forwarder in config.forwarders],
            "usage": usage_as_data(config.cost_attribution),
            "max_active_tenants": config.max_active_tenants,
            "ingest_workers": render_settings(config.ingest_workers),
        },
        "overrides": render_settings(config.overrides),
        "usage_attribution": render_settings(config.usage_attribution),
    }


def differences(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Only what differs from the defaults, keeping the nesting."""
    result: dict[str, Any] = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict) and value and default:
            nested = differences(value, default)
            if nested:
                result[key] = nested
        elif value != default:
            result[key] = value
    return result


__all__ = ["Config", "config_as_data", "differences", "load_config"]
