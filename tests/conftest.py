from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import aiohttp
import pytest
from distributor.overrides import TenantOverrides, parse_dimensions
from distributor.overrides.model import CostAttributionOverrides

from distributor.common.endpoint import Endpoint
from distributor.config import Config
from distributor.forwarding.config import ForwarderConfig
from distributor.receivers.config import OtlpGrpcConfig, OtlpHttpConfig
from distributor.server.config import ServerConfig
from distributor.service import Service
from distributor.usage.config import CostAttributionConfig
from tests.support.otlp import ManualClock, parse_usage

StartService = Callable[..., Awaitable["RunningService"]]


class RunningService:
    """A real service on 127.0.0.1 ephemeral ports, and an HTTP client to talk to it."""

    def __init__(self, service: Service, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        self.service = service
        self.session = session
        self.clock = clock
        assert service.server_address and service.otlp_http_address
        self.server_url = "http://{}:{}".format(*service.server_address)
        self.traces_url = "http://{}:{}/v1/traces".format(*service.otlp_http_address)
        self.grpc_target = "{}:{}".format(*service.otlp_grpc_address) if service.otlp_grpc_address else ""

    async def usage(self) -> dict[frozenset[tuple[str, str]], float]:
        async with self.session.get(self.server_url + "/usage_metrics") as response:
            assert response.status == 200
            return parse_usage(await response.text())

    async def metrics_text(self) -> str:
        async with self.session.get(self.server_url + "/metrics") as response:
            assert response.status == 200
            return await response.text()


def make_config(
    dimensions: object = ("service.name",), multitenancy: bool = False, **changes: object
) -> Config:
    defaults = TenantOverrides(
        CostAttributionOverrides(
            dimensions=parse_dimensions(list(dimensions))
            if isinstance(dimensions, tuple)
            else parse_dimensions(dimensions)
        )
    )
    config = Config(
        multitenancy_enabled=multitenancy,
        server=ServerConfig("127.0.0.1", 0),
        otlp_http=OtlpHttpConfig(endpoint=Endpoint("127.0.0.1", 0)),
        otlp_grpc=OtlpGrpcConfig(endpoint=Endpoint("127.0.0.1", 0)),
        cost_attribution=CostAttributionConfig(enabled=True),
    )
    config = replace(config, overrides=replace(config.overrides, defaults=defaults))
    return replace(config, **changes)  # type: ignore[arg-type]


def with_forwarders(config: Config, *forwarders: ForwarderConfig, **ingestion: int) -> Config:
    """The config with these forwarders, every tenant forwarding to all of them by default, and any
    ingestion defaults given (rate_limit_bytes=..., max_attribute_bytes=...)."""
    defaults = replace(
        config.overrides.defaults,
        forwarders=tuple(forwarder.name for forwarder in forwarders),
        ingestion=replace(config.overrides.defaults.ingestion, **ingestion),
    )
    return replace(config, forwarders=forwarders, overrides=replace(config.overrides, defaults=defaults))


@pytest.fixture
async def start_service() -> AsyncIterator[StartService]:
    started: list[RunningService] = []
    session = aiohttp.ClientSession()

    async def start(config: Config | None = None) -> RunningService:
        clock = ManualClock()
        service = Service(config or make_config(), clock=clock)
        await service.start()
        running = RunningService(service, session, clock)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.service.stop()
    await session.close()
