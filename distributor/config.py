"""The service configuration: Tempo-shaped YAML sections as typed, validated dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributor.attribution.config import (
    UsageAttributionConfig,
    parse_usage_attribution,
    usage_attribution_as_data,
)
from distributor.common.config_reader import ConfigError, Section, format_duration, read_yaml
from distributor.common.endpoint import Endpoint, parse_endpoint
from distributor.forwarding.config import (
    COMPRESSIONS,
    FORWARDER_BACKENDS,
    ForwarderConfig,
    RetryConfig,
    TlsConfig,
)
from distributor.overrides import parse_tenant_overrides
from distributor.overrides.config import OverridesConfig, UserConfigurableOverridesConfig
from distributor.overrides.model import (
    DEFAULT_BURST_SIZE_BYTES,
    DEFAULT_MAX_ATTRIBUTE_BYTES,
    DEFAULT_RATE_LIMIT_BYTES,
)
from distributor.overrides.status import dimensions_as_config
from distributor.receivers.config import OtlpGrpcConfig, OtlpHttpConfig
from distributor.server.config import ServerConfig
from distributor.usage.config import CostAttributionConfig


@dataclass(frozen=True, slots=True)
class Config:
    multitenancy_enabled: bool = False
    server: ServerConfig = field(default_factory=ServerConfig)
    otlp_http: OtlpHttpConfig = field(default_factory=OtlpHttpConfig)
    otlp_grpc: OtlpGrpcConfig | None = None  # enabled when listed, or when no protocols are listed
    forwarders: tuple[ForwarderConfig, ...] = ()
    cost_attribution: CostAttributionConfig = field(default_factory=CostAttributionConfig)
    overrides: OverridesConfig = field(default_factory=OverridesConfig)
    usage_attribution: UsageAttributionConfig = field(default_factory=UsageAttributionConfig)
    source: Path | None = None
    expand_env: bool = False


def load_config(path: Path, expand_env: bool = False, problems: list[ConfigError] | None = None) -> Config:
    """Read and validate a configuration file; raises ConfigError naming file, line and key.

    With `problems`, every problem after a successful YAML parse is collected there instead."""
    root, _ = read_yaml(path, expand_env=expand_env)
    file = str(path)
    top = Section(
        root,
        "",
        file,
        ("multitenancy_enabled", "server", "distributor", "overrides", "usage_attribution"),
        problems,
    )

    server_defaults, http_defaults, cost_defaults = ServerConfig(), OtlpHttpConfig(), CostAttributionConfig()
    server = top.section("server", ("http_listen_address", "http_listen_port", "graceful_shutdown_timeout"))
    address = server.string("http_listen_address", server_defaults.http_listen_address)
    try:
        parse_endpoint(f"{address}:0" if ":" not in address else f"[{address}]:0")
    except ValueError as err:
        server.fail("http_listen_address", str(err))
    server_config = ServerConfig(
        http_listen_address=address,
        http_listen_port=server.integer("http_listen_port", server_defaults.http_listen_port, 0, 65535),
        graceful_shutdown_timeout=server.duration(
            "graceful_shutdown_timeout", server_defaults.graceful_shutdown_timeout
        ),
    )

    distributor = top.section("distributor", ("receivers", "usage", "forwarders"))
    forwarders = _forwarders(distributor, path)
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
    tenant_defaults = parse_tenant_overrides(
        overrides.section("defaults", ("cost_attribution", "ingestion", "forwarders")),
        [forwarder.name for forwarder in forwarders],
    )
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
        forwarders=forwarders,
        cost_attribution=cost_config,
        overrides=OverridesConfig(
            defaults=tenant_defaults,
            per_tenant_override_config=per_tenant_file,
            per_tenant_override_period=period,
            user_configurable_overrides=user_config,
        ),
        usage_attribution=parse_usage_attribution(top, path),
        source=path,
        expand_env=expand_env,
    )
    return config


FORWARDER_KEYS = ("name", "backend", *FORWARDER_BACKENDS, "queue_size", "workers", "retry")
CLIENT_KEYS = ("endpoint", "traces_endpoint", "tls", "headers", "compression", "timeout")
TLS_KEYS = ("insecure", "insecure_skip_verify", "ca_file", "cert_file", "key_file", "server_name_override")


def _forwarders(distributor: Section, path: Path) -> tuple[ForwarderConfig, ...]:
    node = distributor.node("forwarders")
    if node is None or node.value is None:
        return ()
    if not isinstance(node.value, list):
        distributor.fail("forwarders", "expected a list of forwarders")
        return ()
    forwarders: list[ForwarderConfig] = []
    for index, item in enumerate(node.value):
        entry = Section(
            item, f"distributor.forwarders[{index}]", distributor.file, FORWARDER_KEYS, distributor.problems
        )
        forwarder = _forwarder(entry, path)
        if forwarder is None:
            continue
        if any(other.name == forwarder.name for other in forwarders):
            entry.fail("name", f"forwarder name {forwarder.name!r} is used twice")
            continue
        forwarders.append(forwarder)
    return tuple(forwarders)


def _forwarder(entry: Section, path: Path) -> ForwarderConfig | None:
    name = entry.string("name", "")
    if not name:
        entry.fail("name", "every forwarder needs a name (overrides refer to it)")
        return None
    backend = entry.string("backend", "")
    if backend not in FORWARDER_BACKENDS:
        entry.fail("backend", f"expected one of {', '.join(FORWARDER_BACKENDS)}, got {backend!r}")
        return None
    for other in FORWARDER_BACKENDS:
        if other != backend and entry.has(other):
            entry.fail(other, f"this forwarder's backend is {backend}: configure it under `{backend}`")
    client = entry.section(backend, CLIENT_KEYS)
    defaults = ForwarderConfig(name, backend, "")
    endpoint = client.string("endpoint", "")
    traces_endpoint = client.string("traces_endpoint", "")
    if backend == "otlphttp":
        for key, url in (("endpoint", endpoint), ("traces_endpoint", traces_endpoint)):
            if url and not url.startswith(("http://", "https://")):
                client.fail(key, f"expected an http:// or https:// URL, got {url!r}")
        if not endpoint and not traces_endpoint:
            client.fail("endpoint", "the backend's URL is required, e.g. http://127.0.0.1:4318")
    else:
        if traces_endpoint:
            client.fail("traces_endpoint", "only for otlphttp")
        target = endpoint.removeprefix("http://").removeprefix("https://")
        if not target:
            client.fail("endpoint", "the backend's host:port is required, e.g. 127.0.0.1:4317")
    compression = client.string("compression", defaults.compression)
    if compression not in COMPRESSIONS:
        client.fail("compression", f"expected one of {', '.join(COMPRESSIONS)}, got {compression!r}")
        compression = defaults.compression
    headers_section = client.section("headers", None)
    headers: list[tuple[str, str]] = []
    for key, value in headers_section.items():
        if not isinstance(value.value, str):
            headers_section.fail_at(value, f"expected a string header value, got {value.value!r}")
        elif key.lower() == "x-scope-orgid":
            headers_section.fail_at(value, "the tenant header is set from each request's tenant")
        else:
            headers.append((key, value.value))
    timeout = client.duration("timeout", defaults.timeout)
    if timeout <= 0:
        client.fail("timeout", "must be greater than 0")
        timeout = defaults.timeout
    tls_section = client.section("tls", TLS_KEYS)

    def file(key: str) -> Path | None:
        text = tls_section.string(key, "")
        return (path.parent / text).resolve() if text else None

    tls = TlsConfig(
        insecure=tls_section.boolean("insecure", False),
        insecure_skip_verify=tls_section.boolean("insecure_skip_verify", False),
        ca_file=file("ca_file"),
        cert_file=file("cert_file"),
        key_file=file("key_file"),
        server_name_override=tls_section.string("server_name_override", ""),
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        tls_section.fail("cert_file", "cert_file and key_file go together")
    retry_section = entry.section(
        "retry", ("enabled", "initial_interval", "max_interval", "max_elapsed_time")
    )
    retry_defaults = RetryConfig()
    retry = RetryConfig(
        enabled=retry_section.boolean("enabled", retry_defaults.enabled),
        initial_interval=retry_section.duration("initial_interval", retry_defaults.initial_interval),
        max_interval=retry_section.duration("max_interval", retry_defaults.max_interval),
        max_elapsed_time=retry_section.duration("max_elapsed_time", retry_defaults.max_elapsed_time),
    )
    if retry.initial_interval <= 0:
        retry_section.fail("initial_interval", "must be greater than 0")
    elif retry.max_interval < retry.initial_interval:
        retry_section.fail("max_interval", "must be at least initial_interval")
    return ForwarderConfig(
        name=name,
        backend=backend,
        endpoint=endpoint,
        traces_endpoint=traces_endpoint,
        tls=tls,
        headers=tuple(headers),
        compression=compression,
        timeout=timeout,
        queue_size=entry.integer("queue_size", defaults.queue_size, minimum=1),
        workers=entry.integer("workers", defaults.workers, minimum=1),
        retry=retry,
    )


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
    ingestion = config.overrides.defaults.ingestion
    per_tenant = config.overrides.per_tenant_override_config
    return {
        "multitenancy_enabled": config.multitenancy_enabled,
        "server": {
            "http_listen_address": config.server.http_listen_address,
            "http_listen_port": config.server.http_listen_port,
            "graceful_shutdown_timeout": format_duration(config.server.graceful_shutdown_timeout),
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
            "forwarders": [_forwarder_as_data(forwarder) for forwarder in config.forwarders],
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
                },
                "ingestion": {
                    "rate_limit_bytes": _or(ingestion.rate_limit_bytes, DEFAULT_RATE_LIMIT_BYTES),
                    "burst_size_bytes": _or(ingestion.burst_size_bytes, DEFAULT_BURST_SIZE_BYTES),
                    "max_attribute_bytes": _or(ingestion.max_attribute_bytes, DEFAULT_MAX_ATTRIBUTE_BYTES),
                },
                "forwarders": list(config.overrides.defaults.forwarders or ()),
            },
            "per_tenant_override_config": str(per_tenant) if per_tenant is not None else None,
            "per_tenant_override_period": format_duration(config.overrides.per_tenant_override_period),
            "user_configurable_overrides": {
                "enabled": config.overrides.user_configurable_overrides.enabled,
                "storage_path": str(config.overrides.user_configurable_overrides.storage_path),
            },
        },
        "usage_attribution": usage_attribution_as_data(config.usage_attribution),
    }


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _forwarder_as_data(forwarder: ForwarderConfig) -> dict[str, Any]:
    tls = forwarder.tls
    client: dict[str, Any] = {"endpoint": forwarder.endpoint}
    if forwarder.traces_endpoint:
        client["traces_endpoint"] = forwarder.traces_endpoint
    client.update(
        {
            "tls": {
                "insecure": tls.insecure,
                "insecure_skip_verify": tls.insecure_skip_verify,
                "ca_file": str(tls.ca_file or ""),
                "cert_file": str(tls.cert_file or ""),
                "key_file": str(tls.key_file or ""),
                "server_name_override": tls.server_name_override,
            },
            # Header values are often credentials: shown masked.
            "headers": {key: "<secret>" for key, _ in forwarder.headers},
            "compression": forwarder.compression,
            "timeout": format_duration(forwarder.timeout),
        }
    )
    return {
        "name": forwarder.name,
        "backend": forwarder.backend,
        forwarder.backend: client,
        "queue_size": forwarder.queue_size,
        "workers": forwarder.workers,
        "retry": {
            "enabled": forwarder.retry.enabled,
            "initial_interval": format_duration(forwarder.retry.initial_interval),
            "max_interval": format_duration(forwarder.retry.max_interval),
            "max_elapsed_time": format_duration(forwarder.retry.max_elapsed_time),
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
    "ForwarderConfig",
    "config_as_data",
    "differences",
    "load_config",
    "parse_endpoint",
]
