"""`server:` settings: the server port (status, metrics, APIs), graceful shutdown and logging."""

from __future__ import annotations

from distributor.common.config_fields import read_settings, setting, settings
from distributor.common.config_reader import Foreign, Section, foreign_keys
from distributor.common.endpoint import Endpoint, parse_endpoint
from distributor.common.http_listener import (
    IDLE_TIMEOUT_SECONDS,
    MAX_SERVER_CONNECTIONS,
    READ_BODY_TIMEOUT_SECONDS,
    READ_HEADER_TIMEOUT_SECONDS,
)
from distributor.common.logging_setup import LOG_FORMATS, TEMPO_LOG_LEVELS


@settings
class ServerConfig:
    http_listen_address: str = setting(default="127.0.0.1")
    http_listen_port: int = setting(default=3200, maximum=65535)
    graceful_shutdown_timeout: float = setting(default=30.0)  # Tempo's default
    # Named as in Tempo's server block; the same defaults as the OTLP/HTTP receiver's, for the same reasons.
    http_server_idle_timeout: float = setting(default=IDLE_TIMEOUT_SECONDS, positive=True)
    http_server_read_header_timeout: float = setting(default=READ_HEADER_TIMEOUT_SECONDS, positive=True)
    http_server_read_body_timeout: float = setting(default=READ_BODY_TIMEOUT_SECONDS, positive=True)
    http_listen_conn_limit: int = setting(default=MAX_SERVER_CONNECTIONS, positive=True)
    # Tempo's names (Python's "warning" is accepted only on the command line); --log.level and
    # --log.format win over them.
    log_level: str = setting(default="info", choices=TEMPO_LOG_LEVELS)
    log_format: str = setting(default="logfmt", choices=LOG_FORMATS)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.http_listen_address, self.http_listen_port)


_NO_GRPC_SERVER = "no gRPC server port here (OTLP/gRPC is distributor.receivers.otlp.protocols.grpc)"
_NO_TLS = "the server port serves plain HTTP; terminate TLS in front of it"
_TEMPO_ONLY = "a setting of Tempo's server this service does not have"

# The rest of Tempo's server block: accepted, so a Tempo configuration loads, and each one named in a
# warning, since none of them changes what this service does.
SERVER_FOREIGN: Foreign = foreign_keys(
    {
        "http_tls_config": _NO_TLS,
        "tls_cipher_suites": _NO_TLS,
        "tls_min_version": _NO_TLS,
        "grpc_listen_network": _NO_GRPC_SERVER,
        "grpc_listen_address": _NO_GRPC_SERVER,
        "grpc_listen_port": _NO_GRPC_SERVER,
        "grpc_listen_conn_limit": _NO_GRPC_SERVER,
        "grpc_tls_config": _NO_GRPC_SERVER,
        "grpc_collect_max_streams_by_conn": _NO_GRPC_SERVER,
        **{
            key: _TEMPO_ONLY
            for key in (
                "http_listen_network",
                "proxy_protocol_enabled",
                "register_instrumentation",
                "report_grpc_codes_in_instrumentation_label_enabled",
                "http_server_read_timeout",
                "http_server_write_timeout",
                "http_log_closed_connections_without_response_enabled",
                "log_source_ips_enabled",
                "log_source_ips_full",
                "log_source_ips_header",
                "log_source_ips_regex",
                "log_request_headers",
                "log_request_at_info_level_enabled",
                "log_request_exclude_headers_list",
                "trace_request_headers",
                "trace_request_exclude_headers_list",
                "http_path_prefix",
                "cluster_validation",
                "create_new_traces",
            )
        },
    },
    {"grpc_server_": _NO_GRPC_SERVER},
)


def parse_server(section: Section) -> ServerConfig:
    config = read_settings(section, ServerConfig)
    address = config.http_listen_address
    try:
        parse_endpoint(f"{address}:0" if ":" not in address else f"[{address}]:0")
    except ValueError as err:
        section.fail("http_listen_address", str(err))
    return config
