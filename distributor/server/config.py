"""`server:` settings: the server port (status, metrics, APIs) and graceful shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from distributor.common.endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class ServerConfig:
    http_listen_address: str = "127.0.0.1"
    http_listen_port: int = 3200
    graceful_shutdown_timeout: float = 30.0  # Tempo's default

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.http_listen_address, self.http_listen_port)
