"""`distributor.receivers.otlp` settings: the OTLP/HTTP and OTLP/gRPC listeners."""

from __future__ import annotations

from typing import Any

from distributor.common.config_fields import (
    read_settings,
    render_settings,
    setting,
    setting_keys,
    settings,
)
from distributor.common.config_reader import Foreign, Section, foreign_keys
from distributor.common.endpoint import Endpoint
from distributor.common.http_listener import (
    IDLE_TIMEOUT_SECONDS,
    MAX_CONNECTIONS,
    READ_BODY_TIMEOUT_SECONDS,
    READ_HEADER_TIMEOUT_SECONDS,
)

MIB = 1024 * 1024
RECEIVERS_KEYS = ("otlp",)
PROTOCOLS = ("http", "grpc")

_OTHER_RECEIVER = "only the otlp receiver is implemented here; this one is not started"
RECEIVERS_FOREIGN: Foreign = foreign_keys(
    {name: _OTHER_RECEIVER for name in ("jaeger", "zipkin", "opencensus", "kafka")}
)
# The Collector's settings of an OTLP protocol that this service does not implement. `tls` is not among
# them: a listener an operator configured for TLS must not quietly serve plaintext, so it stays an error.
_COLLECTOR_ONLY = "a Collector setting of the OTLP receiver this service does not implement"
HTTP_FOREIGN: Foreign = foreign_keys(
    {key: _COLLECTOR_ONLY for key in ("include_metadata", "cors", "auth", "response_headers")}
)
GRPC_FOREIGN: Foreign = foreign_keys(
    {
        key: _COLLECTOR_ONLY
        for key in (
            "include_metadata",
            "auth",
            "transport",
            "keepalive",
            "read_buffer_size",
            "write_buffer_size",
            "max_concurrent_streams",
        )
    }
)


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


def parse_receivers(section: Section) -> tuple[OtlpHttpConfig | None, OtlpGrpcConfig | None]:
    """The receivers to run; a protocol is None when disabled.

    As in the Collector, listing protocols enables just those (a bare `grpc:` with its defaults); with no
    `protocols` at all, both run with their defaults."""
    otlp = section.section("otlp", ("protocols",))
    protocols = otlp.section("protocols", PROTOCOLS)
    listed = otlp.node("protocols") is not None
    if listed and not any(protocols.has(name) or protocols.node(name) is not None for name in PROTOCOLS):
        otlp.fail("protocols", "lists no protocol: list http, grpc or both (or leave protocols out for both)")
    http: OtlpHttpConfig | None = None
    grpc: OtlpGrpcConfig | None = None
    if not listed or protocols.node("http") is not None:
        http_section = protocols.section("http", (*setting_keys(OtlpHttpConfig), "tls"), HTTP_FOREIGN)
        _refuse_tls(http_section)
        http = read_settings(http_section, OtlpHttpConfig)
    if not listed or protocols.node("grpc") is not None:
        grpc_section = protocols.section("grpc", (*setting_keys(OtlpGrpcConfig), "tls"), GRPC_FOREIGN)
        _refuse_tls(grpc_section)
        grpc = read_settings(grpc_section, OtlpGrpcConfig)
    return http, grpc


def _refuse_tls(protocol: Section) -> None:
    # Allowed as a key and refused here: what is missing is a feature, not a spelling.
    if protocol.node("tls") is not None:
        protocol.fail("tls", "TLS is not implemented on the receivers; terminate TLS in front of them")


def receivers_as_data(http: OtlpHttpConfig | None, grpc: OtlpGrpcConfig | None) -> dict[str, Any]:
    """Only the enabled protocols are shown, as they would be listed."""
    protocols: dict[str, Any] = {}
    if http is not None:
        protocols["http"] = render_settings(http)
    if grpc is not None:
        protocols["grpc"] = render_settings(grpc)
    return {"otlp": {"protocols": protocols}}
