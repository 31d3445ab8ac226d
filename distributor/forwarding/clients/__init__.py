"""Forwarding clients, one module per backend (the `backend` of a forwarder's configuration)."""

from __future__ import annotations

from collections.abc import Callable

from distributor.forwarding.clients.base import ExportClient
from distributor.forwarding.clients.otlpgrpc import OtlpGrpcClient
from distributor.forwarding.clients.otlphttp import OtlpHttpClient
from distributor.forwarding.config import ForwarderConfig

# By the `backend` names forwarding/config.py accepts (FORWARDER_BACKENDS).
CLIENTS: dict[str, Callable[[ForwarderConfig], ExportClient]] = {
    "otlphttp": OtlpHttpClient,
    "otlpgrpc": OtlpGrpcClient,
}


def create_client(config: ForwarderConfig) -> ExportClient:
    return CLIENTS[config.backend](config)


__all__ = ["ExportClient", "OtlpGrpcClient", "OtlpHttpClient", "create_client"]
