"""The service configuration: each stage's settings, read from their Tempo-shaped YAML sections.

Each stage's config.py declares its settings and checks them; this module only puts them together, and
renders the whole for /status/config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributor.attribution.config import UsageAttributionConfig, parse_usage_attribution
from distributor.common.config_fields import read_settings, render_settings, setting_keys, settings_section
from distributor.common.config_reader import (
    ConfigError,
    ConfigNote,
    Foreign,
    Section,
    foreign_keys,
    read_yaml,
    unexpanded_references,
)
from distributor.forwarding.config import ForwarderConfig, forwarder_as_data, parse_forwarders
from distributor.ingest.workers import IngestWorkersConfig
from distributor.overrides.config import OverridesConfig, overrides_section, parse_overrides
from distributor.receivers.config import (
    RECEIVERS_FOREIGN,
    RECEIVERS_KEYS,
    OtlpGrpcConfig,
    OtlpHttpConfig,
    parse_receivers,
    receivers_as_data,
)
from distributor.ring.config import RingConfig, parse_ring
from distributor.server.config import SERVER_FOREIGN, ServerConfig, parse_server
from distributor.usage.config import CostAttributionConfig, UsageConfig, parse_usage, usage_as_data

TOP_KEYS = ("multitenancy_enabled", "server", "distributor", "overrides", "usage_attribution")
DISTRIBUTOR_KEYS = ("receivers", "usage", "forwarders", "max_active_tenants", "ingest_workers", "ring")

_OTHER_COMPONENT = "configures a Tempo component this service does not have"
_TEMPO_ONLY = "a Tempo setting this service does not use"
# The rest of a Tempo configuration: accepted, so a whole tempo.yaml loads, and each section or setting
# named in one warning. Anything else is still an unknown key: a misspelt `sever:` is an error.
TOP_FOREIGN: Foreign = foreign_keys(
    {
        **{
            section: _OTHER_COMPONENT
            for section in (
                "ingester",
                "ingester_client",
                "metrics_generator",
                "metrics_generator_client",
                "querier",
                "query_frontend",
                "compactor",
                "storage",
                "memberlist",
                "internal_server",
                "ingest",
                "block_builder",
                "live_store",
                "live_store_client",
                "partition_ring_live_store",
                "backend_scheduler",
                "backend_scheduler_client",
                "backend_worker",
                "cache",
                "frontend_worker",
            )
        },
        **{
            setting: _TEMPO_ONLY
            for setting in (
                "target",
                "http_api_prefix",
                "stream_over_http_enabled",
                "usage_report",
                "memory",
                "shutdown_delay",
                "enable_go_runtime_metrics",
                "automemlimit_enabled",
                "automemlimit_ratio",
                "span_profiling",
                "use_otel_tracer",
                "autocomplete_filtering_enabled",
                "search_enabled",
                "metrics_generator_enabled",
            )
        },
        "auth_enabled": "Tempo's former name of multitenancy_enabled; write multitenancy_enabled",
    }
)
_DISTRIBUTOR_ONLY = "a setting of Tempo's distributor this service does not implement"
DISTRIBUTOR_FOREIGN: Foreign = foreign_keys(
    {
        **{
            setting: _DISTRIBUTOR_ONLY
            for setting in (
                "override_ring_key",
                "log_received_spans",
                "log_discarded_spans",
                "metric_received_spans",
                "ingester_write_path_enabled",
                "kafka_write_path_enabled",
                "kafka_config",
                "extend_writes",
                "retry_after_on_resource_exhausted",
                "artificial_delay",
            )
        },
        "max_attribute_bytes": "here it is per tenant: set overrides.defaults.ingestion.max_attribute_bytes",
    }
)
# Tenants that sent spans within the usage tracker's stale_duration; a new one past it is refused.
DEFAULT_MAX_ACTIVE_TENANTS = 10_000


@dataclass(frozen=True, slots=True)
class Config:
    multitenancy_enabled: bool = False
    server: ServerConfig = field(default_factory=ServerConfig)
    # Each protocol is enabled when listed, or when no protocols are listed; None when disabled.
    otlp_http: OtlpHttpConfig | None = field(default_factory=OtlpHttpConfig)
    otlp_grpc: OtlpGrpcConfig | None = None
    forwarders: tuple[ForwarderConfig, ...] = ()
    max_active_tenants: int = DEFAULT_MAX_ACTIVE_TENANTS
    ingest_workers: IngestWorkersConfig = field(default_factory=IngestWorkersConfig)
    ring: RingConfig = field(default_factory=RingConfig)
    cost_attribution: CostAttributionConfig = field(default_factory=CostAttributionConfig)
    overrides: OverridesConfig = field(default_factory=OverridesConfig)
    usage_attribution: UsageAttributionConfig = field(default_factory=UsageAttributionConfig)
    source: Path | None = None
    expand_env: bool = False
    # What was accepted with a warning: Tempo settings this service does not use, unexpanded `${VAR}`s.
    notes: tuple[ConfigNote, ...] = field(default=(), compare=False)


def default_config() -> Config:
    """What an empty file configures: both OTLP protocols, as with no `protocols` listed."""
    return Config(otlp_grpc=OtlpGrpcConfig())


def load_config(path: Path, expand_env: bool = False, problems: list[ConfigError] | None = None) -> Config:
    """Read and validate a configuration file; raises ConfigError naming file, line and key.

    With `problems`, every problem after a successful YAML parse is collected there instead. What is
    accepted with a warning is in the result's `notes`."""
    root, _ = read_yaml(path, expand_env=expand_env)
    notes: list[ConfigNote] = [] if expand_env else unexpanded_references(root, str(path))
    top = Section(root, "", str(path), TOP_KEYS, problems, notes, TOP_FOREIGN)
    server = parse_server(top.section("server", setting_keys(ServerConfig), SERVER_FOREIGN))
    distributor = top.section("distributor", DISTRIBUTOR_KEYS, DISTRIBUTOR_FOREIGN)
    forwarders = parse_forwarders(distributor)
    otlp_http, otlp_grpc = parse_receivers(
        distributor.section("receivers", RECEIVERS_KEYS, RECEIVERS_FOREIGN)
    )
    cost_attribution = parse_usage(settings_section(distributor, "usage", UsageConfig))
    overrides = parse_overrides(overrides_section(top), [forwarder.name for forwarder in forwarders])
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
        ring=parse_ring(distributor),
        cost_attribution=cost_attribution,
        overrides=overrides,
        usage_attribution=parse_usage_attribution(
            settings_section(top, "usage_attribution", UsageAttributionConfig)
        ),
        source=path,
        expand_env=expand_env,
        notes=tuple(sorted(notes, key=lambda note: note.line or 0)),
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
            "ring": render_settings(config.ring),
        },
        "overrides": render_settings(config.overrides),
        "usage_attribution": render_settings(config.usage_attribution),
    }


def differences(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Only what differs from the defaults, keeping the nesting.

    A section turned off (`enabled: false`) shows nothing but that switch, if it differs: its other
    values do nothing (a relative path resolved against the config file would differ from the bare
    default without meaning anything). A section the defaults have and the values lack (an OTLP
    protocol not listed) shows as null."""
    if values.get("enabled") is False:
        return {"enabled": False} if defaults.get("enabled") is not False else {}
    result: dict[str, Any] = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            nested = differences(value, default)
            if nested or (not value and default):
                result[key] = nested
        elif value != default:
            result[key] = value
    for key, default in defaults.items():
        if key not in values and isinstance(default, dict):
            result[key] = None
    return result


__all__ = ["Config", "config_as_data", "default_config", "differences", "load_config"]
