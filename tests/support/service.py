"""The service under test, in process: a config for it, a starter that runs it on 127.0.0.1 ephemeral
ports with a manual clock, and a handle to send to it and read what it exposes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import aiohttp
import grpc

from distributor.common.clock import Clock
from distributor.common.endpoint import Endpoint
from distributor.config import Config
from distributor.forwarding.config import ForwarderConfig
from distributor.overrides import TenantOverrides, parse_dimensions
from distributor.overrides.model import CostAttributionOverrides
from distributor.receivers.config import OtlpGrpcConfig, OtlpHttpConfig
from distributor.server.config import ServerConfig
from distributor.service import Service
from distributor.usage.config import CostAttributionConfig
from tests.support.clock import ManualClock
from tests.support.metrics import (
    Labels,
    Samples,
    families,
    parse_discarded,
    parse_usage,
    read_samples,
    scrape,
)
from tests.support.senders import PROTOBUF, GrpcAnswer, HttpAnswer, export_traces, post_traces


class RunningService:
    """A real service on 127.0.0.1 ephemeral ports, and an HTTP client to talk to it."""

    def __init__(
        self, service: Service, session: aiohttp.ClientSession, clock: ManualClock, wall_clock: Clock
    ) -> None:
        self.service = service
        self.session = session
        self.clock = clock
        self.wall_clock = wall_clock
        assert service.server_address and service.otlp_http_address
        self.server_url = "http://{}:{}".format(*service.server_address)
        self.traces_url = "http://{}:{}/v1/traces".format(*service.otlp_http_address)
        self.grpc_target = "{}:{}".format(*service.otlp_grpc_address) if service.otlp_grpc_address else ""

    async def post(
        self, body: bytes, tenant: str | None = None, headers: dict[str, str] = PROTOBUF
    ) -> HttpAnswer:
        """`body` to the OTLP/HTTP receiver (see senders.post_traces)."""
        return await post_traces(self.session, self.traces_url, body, tenant, headers)

    async def export(
        self, body: bytes, tenant: str | None = None, compression: grpc.Compression | None = None
    ) -> GrpcAnswer:
        """`body` to the OTLP/gRPC receiver (see senders.export_traces)."""
        return await export_traces(self.grpc_target, body, tenant, compression)

    async def usage(self) -> dict[Labels, float]:
        """The received-bytes series at /usage_metrics."""
        return parse_usage(await scrape(self.session, self.server_url + "/usage_metrics"))

    async def discarded(self) -> dict[Labels, float]:
        """The discarded-bytes series at /usage_metrics."""
        return parse_discarded(await scrape(self.session, self.server_url + "/usage_metrics"))

    async def metrics_text(self) -> str:
        return await scrape(self.session, self.server_url + "/metrics")

    async def samples(self) -> Samples:
        """Every sample at /metrics."""
        return read_samples(await self.metrics_text())


StartService = Callable[..., Awaitable[RunningService]]


class ServiceStarter:
    """Starts services that share one HTTP client; `stop_all` stops them gracefully, in start order."""

    def __init__(self) -> None:
        self.started: list[RunningService] = []
        self.session = aiohttp.ClientSession()

    async def __call__(self, config: Config | None = None, wall_clock: Clock = time.time) -> RunningService:
        """A service on `config` (make_config() when None) whose monotonic clock is a ManualClock; its
        wall clock is the real one unless a test passes its own (the ring and ledger read it too)."""
        clock = ManualClock()
        service = Service(config or make_config(), clock=clock, wall_clock=wall_clock)
        await service.start()
        running = RunningService(service, self.session, clock, wall_clock)
        self.started.append(running)
        return running

    async def stop_all(self) -> None:
        for running in self.started:
            await running.service.stop()
        await self.session.close()


def make_config(
    dimensions: object = ("service.name",), multitenancy: bool = False, **changes: object
) -> Config:
    """Both OTLP receivers and the server on 127.0.0.1 port 0, cost attribution by these dimensions."""
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


async def assert_nothing_recorded(running: RunningService) -> None:
    """No usage series, and the received spans and bytes families without a sample."""
    assert await running.usage() == {}
    exposed = families(await running.metrics_text())
    assert exposed["tempo_distributor_spans_received"].samples == []
    assert exposed["tempo_distributor_bytes_received"].samples == []
