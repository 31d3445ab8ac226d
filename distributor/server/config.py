"""`server:` settings: the server port (status, metrics, APIs) and graceful shutdown."""

from __future__ import annotations

from distributor.common.config_fields import read_settings, setting, settings
from distributor.common.config_reader import Section
from distributor.common.endpoint import Endpoint, parse_endpoint
from distributor.common.http_listener import (
    IDLE_TIMEOUT_SECONDS,
    MAX_SERVER_CONNECTIONS,
    READ_BODY_TIMEOUT_SECONDS,
    READ_HEADER_TIMEOUT_SECONDS,
)
from distributor.common.logging_setup import LOG_FORMATS, LOG_LEVELS


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
    # Tempo's names; the command line's --log.level / --log.format win over them.
    log_level: str = setting(default="info", choices=tuple(LOG_LEVELS))
    log_format: str = setting(default="logfmt", choices=LOG_FORMATS)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.http_listen_address, self.http_listen_port)


def parse_server(section: Section) -> ServerConfig:
    config = read_settings(section, ServerConfig)
    address = config.http_listen_address
    try:
        parse_endpoint(f"{address}:0" if ":" not in address else f"[{address}]:0")
    except ValueError as err:
        section.fail("http_listen_address", str(err))
    return config
