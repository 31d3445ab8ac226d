"""The service configuration: Tempo-shaped YAML sections as typed, validated dataclasses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overrides import TenantOverrides, parse_tenant_overrides
from overrides.status import dimensions_as_config
from overrides.strict_yaml import ConfigError, Section, format_duration, read_yaml

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """`host:port`, `[v6]:port` or `:port` (all interfaces); port 0 picks a free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"invalid listen address {text!r} (expected host:port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {text!r}") from None
    elif ":" in host:
        raise ValueError(f"invalid listen address {text!r} (write IPv6 addresses as [addr]:port)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {text!r} (expected 0-65535)")
    return Endpoint(host or "0.0.0.0", int(port_text))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    http_listen_address: str = "127.0.0.1"
    http_listen_port: int = 3200

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.http_listen_address, self.http_listen_port)


@dataclass(frozen=True, slots=True)
class OtlpHttpConfig:
    endpoint: Endpoint = Endpoint("127.0.0.1", 4318)
    max_request_body_bytes: int = 20 * MIB


@dataclass(frozen=True, slots=True)
class OtlpGrpcConfig:
    endpoint: Endpoint = Endpoint("127.0.0.1", 4317)
    max_recv_msg_size_bytes: int = 4 * MIB


@dataclass(frozen=True, slots=True)
class CostAttributionConfig:
    enabled: bool = False
    max_cardinality: int = 10_000
    stale_duration: float = 15 * 60.0


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


@dataclass(frozen=True, slots=True)
class Config:
    multitenancy_enabled: bool = False
    server: ServerConfig = field(default_factory=ServerConfig)
    otlp_http: OtlpHttpConfig = field(default_factory=OtlpHttpConfig)
    otlp_grpc: OtlpGrpcConfig | None = None  # enabled when listed, or when no protocols are listed
    cost_attribution: CostAttributionConfig = field(default_factory=CostAttributionConfig)
    overrides: OverridesConfig = field(default_factory=OverridesConfig)
    source: Path | None = None
    expand_env: bool = False


def load_config(path: Path, expand_env: bool = False, problems: list[ConfigError] | None = None) -> Config:
    """Read and validate a configuration file; raises ConfigError naming file, line and key.

    With `problems`, every problem after a successful YAML parse is collected there instead."""
    root, _ = read_yaml(path, expand_env=expand_env)
    file = str(path)
    top = Section(root, "", file, ("multitenancy_enabled", "server", "distributor", "overrides"), problems)

    server_defaults, http_defaults, cost_defaults = ServerConfig(), OtlpHttpConfig(), CostAttributionConfig()
    server = top.section("server", ("http_listen_address", "http_listen_port"))
    address = server.string("http_listen_address", server_defaults.http_listen_address)
    try:
        parse_endpoint(f"{address}:0" if ":" not in address else f"[{address}]:0")
    except ValueError as err:
        server.fail("http_listen_address", str(err))
    server_config = ServerConfig(
        http_listen_address=address,
        http_listen_port=server.integer("http_listen_port", server_defaults.http_listen_port, 0, 65535),
    )

    distributor = top.section("distributor", ("receivers", "usage"))
    receivers = distributor.section("receivers", ("otlp",))
    otlp = receivers.section("otlp", ("protocols",))
    protocols = otlp.section("protocols", ("http", "grpc"))
    http = protocols.section("http", ("endpoint", "max_request_body_bytes"))
    otlp_http = OtlpHttpConfig(
        endpoint=_endpoint(http, http_defaults.endpoint),
        max_request_body_bytes=http.integer(
            "max_request_body_bytes", http_defaults.max_request_body_bytes, minimum=1
        ),
    )

    # As in the Collector, listing protocols enables just those; listing none enables both defaults.
    otlp_grpc: OtlpGrpcConfig | None = None
    if protocols.node("grpc") is not None or otlp.node("protocols") is None:
        grpc = protocols.section("grpc", ("endpoint", "max_recv_msg_size_bytes"))
        grpc_defaults = OtlpGrpcConfig()
        otlp_grpc = OtlpGrpcConfig(
            endpoint=_endpoint(grpc, grpc_defaults.endpoint),
            max_recv_msg_size_bytes=grpc.integer(
                "max_recv_msg_size_bytes", grpc_defaults.max_recv_msg_size_bytes, minimum=1
            ),
        )

    usage = distributor.section("usage", ("cost_attribution",))
    cost = usage.section("cost_attribution", ("enabled", "max_cardinality", "stale_duration"))
    cost_config = CostAttributionConfig(
        enabled=cost.boolean("enabled", cost_defaults.enabled),
        max_cardinality=cost.integer("max_cardinality", cost_defaults.max_cardinality, minimum=1),
        stale_duration=cost.duration("stale_duration", cost_defaults.stale_duration),
    )
    if cost.has("stale_duration") and cost_config.stale_duration <= 0:
        cost.fail("stale_duration", "must be greater than 0")

    overrides = top.section(
        "overrides",
        (
            "defaults",
            "per_tenant_override_config",
            "per_tenant_override_period",
            "user_configurable_overrides",
        ),
    )
    tenant_defaults = parse_tenant_overrides(overrides.section("defaults", ("cost_attribution",)))
    per_tenant_file = None
    if overrides.has("per_tenant_override_config"):
        relative = overrides.string("per_tenant_override_config", "")
        if relative:
            per_tenant_file = (path.parent / relative).resolve()
        else:
            overrides.fail("per_tenant_override_config", "must be a file path")
    period = overrides.duration("per_tenant_override_period", OverridesConfig().per_tenant_override_period)
    if overrides.has("per_tenant_override_period") and period <= 0:
        overrides.fail("per_tenant_override_period", "must be greater than 0")
    user = overrides.section("user_configurable_overrides", ("enabled", "storage_path"))
    user_defaults = UserConfigurableOverridesConfig()
    storage = user.string("storage_path", str(user_defaults.storage_path)) or str(user_defaults.storage_path)
    user_config = UserConfigurableOverridesConfig(
        enabled=user.boolean("enabled", False), storage_path=(path.parent / storage).resolve()
    )

    config = Config(
        multitenancy_enabled=top.boolean("multitenancy_enabled", False),
        server=server_config,
        otlp_http=otlp_http,
        otlp_grpc=otlp_grpc,
        cost_attribution=cost_config,
        overrides=OverridesConfig(
            defaults=tenant_defaults,
            per_tenant_override_config=per_tenant_file,
            per_tenant_override_period=period,
            user_configurable_overrides=user_config,
        ),
        source=path,
        expand_env=expand_env,
    )
    return config


def _endpoint(section: Section, default: Endpoint) -> Endpoint:
    """A receiver's `endpoint` key; when collecting problems, a bad one is reported and the default kept."""
    try:
        return parse_endpoint(section.string("endpoint", str(default)))
    except ValueError as err:
        section.fail("endpoint", str(err))
        return default


def config_as_data(config: Config) -> dict[str, Any]:
    """The configuration in the YAML shape it is written in (what /status/config shows)."""
    cost_defaults = config.overrides.defaults.cost_attribution
    per_tenant = config.overrides.per_tenant_override_config
    return {
        "multitenancy_enabled": config.multitenancy_enabled,
        "server": {
            "http_listen_address": config.server.http_listen_address,
            "http_listen_port": config.server.http_listen_port,
        },
        "distributor": {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "http": {
                            "endpoint": str(config.otlp_http.endpoint),
                            "max_request_body_bytes": config.otlp_http.max_request_body_bytes,
                        },
                        **(
                            {
                                "grpc": {
                                    "endpoint": str(config.otlp_grpc.endpoint),
                                    "max_recv_msg_size_bytes": config.otlp_grpc.max_recv_msg_size_bytes,
                                }
                            }
                            if config.otlp_grpc is not None
                            else {}
                        ),
                    }
                }
            },
            "usage": {
                "cost_attribution": {
                    "enabled": config.cost_attribution.enabled,
                    "max_cardinality": config.cost_attribution.max_cardinality,
                    "stale_duration": format_duration(config.cost_attribution.stale_duration),
                }
            },
        },
        "overrides": {
            "defaults": {
                "cost_attribution": {
                    "dimensions": dimensions_as_config(cost_defaults.dimensions or ()),
                    "max_cardinality": cost_defaults.max_cardinality or 0,
                }
            },
            "per_tenant_override_config": str(per_tenant) if per_tenant is not None else None,
            "per_tenant_override_period": format_duration(config.overrides.per_tenant_override_period),
            "user_configurable_overrides": {
                "enabled": config.overrides.user_configurable_overrides.enabled,
                "storage_path": str(config.overrides.user_configurable_overrides.storage_path),
            },
        },
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


__all__ = [
    "Config",
    "ConfigError",
    "Endpoint",
    "config_as_data",
    "differences",
    "load_config",
    "parse_endpoint",
]
