"""`distributor.receivers.otlp` settings: the OTLP/HTTP and OTLP/gRPC listeners."""

from __future__ import annotations

from typing import Any

from distributor.common.config_fields import (
    read_settings,
    render_settings,
    setting,
    settings,
    settings_section,
)
from distributor.common.config_reader import Section
from distributor.common.endpoint import Endpoint
from distributor.common.http_listener import (
    IDLE_TIMEOUT_SECONDS,
    MAX_CONNECTIONS,
    READ_BODY_TIMEOUT_SECONDS,
    READ_HEADER_TIMEOUT_SECONDS,
)

MIB = 1024 * 1024
RECEIVERS_KEYS = ("otlp",)


@settings
class OtlpHttpConfig:
    endpoint: Endpoint = setting(default=Endpoint("127.0.0.1", 4318))
    max_request_body_bytes: int = setting(default=20 * MIB, positive=True)
    # Exporters send one gzip member; concatenated members are legal but each costs a fresh inflater.
    max_gzip_members: int = setting(default=100, positive=True)
    idle_timeout: float = setting(default=IDLE_TIMEOUT_SECONDS, positive=True)
    read_header_timeout: float = setting(default=READ_HEADER_TIMEOUT_SECONDS, positive=True)
    read_body_timeout: float = setting(default=READ_BODY_TIMEOUT_SECONDS, positive=True)
    max_connections: int = setting(default=MAX_CONNECTIONS, positive=True)


@settings
class OtlpGrpcConfig:
    endpoint: Endpoint = setting(default=Endpoint("127.0.0.1", 4317))
    max_recv_msg_size_bytes: int = setting(default=4 * MIB, positive=True)
    # As for OTLP/HTTP. An idle connection is closed with a GOAWAY, which clients follow by reconnecting
    # before their next call; the handshake (HTTP/2 preface and settings) bounds what headers do there.
    max_connection_idle: float = setting(default=IDLE_TIMEOUT_SECONDS, positive=True)
    handshake_timeout: float = setting(default=READ_HEADER_TIMEOUT_SECONDS, positive=True)
    max_connections: int = setting(default=MAX_CONNECTIONS, positive=True)


def parse_receivers(section: Section) -> tuple[OtlpHttpConfig, OtlpGrpcConfig | None]:
    """The receivers to run; gRPC is None when disabled."""
    otlp = section.section("otlp", ("protocols",))
    protocols = otlp.section("protocols", ("http", "grpc"))
    http = read_settings(settings_section(protocols, "http", OtlpHttpConfig), OtlpHttpConfig)
    # As in the Collector, listing protocols enables just those; listing none enables both defaults.
    if protocols.node("grpc") is None and otlp.node("protocols") is not None:
        return http, None
    return http, read_settings(settings_section(protocols, "grpc", OtlpGrpcConfig), OtlpGrpcConfig)


def receivers_as_data(http: OtlpHttpConfig, grpc: OtlpGrpcConfig | None) -> dict[str, Any]:
    protocols = {"http": render_settings(http)}
    if grpc is not None:
        protocols["grpc"] = render_settings(grpc)
    return {"otlp": {"protocols": protocols}}
