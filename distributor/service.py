"""Assembles the pipeline from a Config and runs its listeners: start, serve, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import time
from collections.abc import Awaitable

from aiohttp import web

from distributor.attribution.api import UsageAttributionApi
from distributor.attribution.http import UsageAttributionHttp
from distributor.common.clock import Clock
from distributor.common.endpoint import Endpoint
from distributor.config import Config
from distributor.forwarding.clients import create_client
from distributor.forwarding.forwarder import Forwarder
from distributor.forwarding.metrics import ForwarderMetrics
from distributor.ingest.limits import IngestionRateLimiter
from distributor.ingest.metrics import IngestMetrics
from distributor.ingest.pipeline import Discards, IngestPipeline
from distributor.ledger.ledger import LedgerMetrics, UsageLedger
from distributor.ledger.sqlite import SqliteLedgerStore
from distributor.overrides import ConfigError, OverridesProvider, OverridesSnapshot
from distributor.overrides.metrics import RuntimeConfigCollector
from distributor.overrides.reload import RuntimeOverridesReloader
from distributor.overrides.user_configurable import UserConfigurableOverrides
from distributor.receivers.otlp_grpc import OtlpGrpcReceiver
from distributor.receivers.otlp_http import OtlpHttpReceiver
from distributor.server.endpoints import ServerEndpoints
from distributor.server.metrics import new_registry, request_metrics_middleware
from distributor.server.user_overrides import UserOverridesApi
from distributor.usage.metrics import UsageTrackerCollector
from distributor.usage.tracker import UsageTracker

log = logging.getLogger(__name__)

STALE_PURGE_INTERVAL_SECONDS = 60.0


class Service:
    """The whole distributor. Raises ConfigError from the constructor if the overrides are invalid."""

    def __init__(self, config: Config, clock: Clock = time.monotonic, wall_clock: Clock = time.time) -> None:
        self.config = config
        path = config.overrides.per_tenant_override_config
        self.reloader: RuntimeOverridesReloader | None = None
        if path is None:
            self.overrides = OverridesProvider(OverridesSnapshot(defaults=config.overrides.defaults))
        else:
            self.reloader = RuntimeOverridesReloader.load_initial(
                path,
                config.overrides.defaults,
                config.expand_env,
                wall_clock,
                [forwarder.name for forwarder in config.forwarders],
            )
            self.overrides = self.reloader.provider
        self.user_overrides: UserConfigurableOverrides | None = None
        user_config = config.overrides.user_configurable_overrides
        if user_config.enabled:
            self.user_overrides = UserConfigurableOverrides(user_config.storage_path, self.overrides)
            self.user_overrides.load_all()
        self.tracker = UsageTracker(config.cost_attribution, clock)
        self.registry = new_registry()
        self.registry.register(UsageTrackerCollector(self.tracker))
        if self.reloader is not None:
            self.registry.register(RuntimeConfigCollector(self.reloader))
        self._request_metrics = request_metrics_middleware(self.registry)
        ingest_metrics = IngestMetrics(self.registry)
        discards = Discards(ingest_metrics, self.tracker)
        forwarder_metrics = ForwarderMetrics(self.registry)
        self.forwarders: dict[str, Forwarder] = {}
        for forwarder_config in config.forwarders:
            forwarder = Forwarder(
                forwarder_config, create_client(forwarder_config), forwarder_metrics, discards.forward_dropped
            )
            self.forwarders[forwarder.name] = forwarder
            forwarder_metrics.watch_queues(
                forwarder.name, forwarder_config.queue_size, forwarder.queue_lengths
            )
        self.rate_limiter = IngestionRateLimiter(clock)
        self.ledger: UsageLedger | None = None
        attribution_api: UsageAttributionApi | None = None
        attribution = config.usage_attribution
        if attribution.enabled:
            try:
                store = SqliteLedgerStore(attribution.ledger.sqlite_path)
            except (OSError, sqlite3.Error) as err:
                raise ConfigError(
                    str(config.source or ""),
                    None,
                    "usage_attribution.ledger.sqlite.path",
                    f"cannot open the ledger {attribution.ledger.sqlite_path}: {err}",
                ) from err
            self.ledger = UsageLedger(
                store,
                LedgerMetrics(self.registry),
                attribution.ledger.flush_period,
                attribution.ledger.retention_months,
                merge_after=attribution.api.cursor_ttl,
                wall_clock=wall_clock,
            )
            attribution_api = UsageAttributionApi(attribution, self.ledger, self.org_tags, clock, wall_clock)
        self.attribution_http = UsageAttributionHttp(attribution_api)
        self.pipeline = IngestPipeline(
            self.overrides,
            self.tracker,
            ingest_metrics,
            discards,
            self.rate_limiter,
            self.forwarders,
            self.ledger,
        )
        self.endpoints = ServerEndpoints(config, self.tracker, self.registry, self.overrides, self.reloader)
        self.otlp_http = OtlpHttpReceiver(config.otlp_http, self.pipeline, config.multitenancy_enabled)
        self.otlp_grpc = (
            OtlpGrpcReceiver(config.otlp_grpc, self.pipeline, config.multitenancy_enabled)
            if config.otlp_grpc is not None
            else None
        )
        self.otlp_grpc_address: tuple[str, int] | None = None
        self.user_overrides_api = UserOverridesApi(self.user_overrides, config.multitenancy_enabled)
        self._server_runner: web.AppRunner | None = None
        self._receiver_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.server_address: tuple[str, int] | None = None
        self.otlp_http_address: tuple[str, int] | None = None

    def _app(self, routes: list[web.AbstractRouteDef], client_max_size: int = 1024**2) -> web.Application:
        app = web.Application(client_max_size=client_max_size)
        app.middlewares.append(self._request_metrics)  # type: ignore[arg-type]
        app.add_routes(routes)
        return app

    async def _listen(
        self, app: web.Application, endpoint: Endpoint, auto_decompress: bool = True
    ) -> tuple[web.AppRunner, tuple[str, int]]:
        sock = socket.create_server((endpoint.host, endpoint.port), backlog=1024)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            auto_decompress=auto_decompress,
            shutdown_timeout=self.config.server.graceful_shutdown_timeout,  # for requests in flight
        )
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            raise
        host, port = sock.getsockname()[:2]
        return runner, (str(host), int(port))

    async def start(self) -> None:
        try:
            for forwarder in self.forwarders.values():
                await forwarder.start()
            server_routes = (
                self.endpoints.routes() + self.user_overrides_api.routes() + self.attribution_http.routes()
            )
            self._server_runner, self.server_address = await self._listen(
                self._app(server_routes), self.config.server.endpoint
            )
            receiver_app = self._app(self.otlp_http.routes(), self.config.otlp_http.max_request_body_bytes)
            # The receiver inflates gzip itself: it must count compressed ingress bytes and stop a
            # gzip bomb at max_request_body_bytes, which aiohttp's automatic inflation would not.
            self._receiver_runner, self.otlp_http_address = await self._listen(
                receiver_app, self.config.otlp_http.endpoint, auto_decompress=False
            )
            if self.otlp_grpc is not None:
                self.otlp_grpc_address = await self.otlp_grpc.start()
                log.info("OTLP/gRPC listening on %s:%d", *self.otlp_grpc_address)
        except BaseException:
            await self.stop()
            raise
        if self.ledger is not None:
            self.ledger.start()
        self._tasks.append(asyncio.create_task(self._purge_stale_forever()))
        if self.reloader is not None or self.user_overrides is not None:
            self._tasks.append(asyncio.create_task(self._reload_overrides_forever()))
        self.endpoints.ready = True
        log.info(
            "distributor ready: server http://%s:%d, OTLP/HTTP http://%s:%d%s",
            *self.server_address,
            *self.otlp_http_address,
            "/v1/traces",
        )

    async def stop(self) -> None:
        """Graceful shutdown within server.graceful_shutdown_timeout: /ready answers 503, the receivers
        stop taking requests and finish those in flight, the forwarders deliver what they hold; what
        is still undelivered at the deadline is counted and logged. The server port (/metrics) closes
        last."""
        self.endpoints.ready = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.server.graceful_shutdown_timeout
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        # New requests are refused from here on (gRPC: UNAVAILABLE; HTTP: the listener closes and
        # requests on open connections get 503); those already being handled are finished first.
        # Not runner.cleanup() at once: aiohttp then drops the rest of a body still arriving.
        stopping: list[Awaitable[None]] = []
        if self.otlp_grpc is not None:
            stopping.append(self.otlp_grpc.stop(max(0.0, deadline - loop.time())))
        if self._receiver_runner is not None:
            for site in list(self._receiver_runner.sites):
                await site.stop()
            stopping.append(self.otlp_http.drain(deadline - loop.time()))
        await asyncio.gather(*stopping)
        if self._receiver_runner is not None:
            await self._receiver_runner.cleanup()
            self._receiver_runner = None
        pending = sum(forwarder.pending() for forwarder in self.forwarders.values())
        if pending:
            log.info("delivering %d queued requests before exit", pending)
        dropped_before = sum(forwarder.dropped_requests for forwarder in self.forwarders.values())
        for forwarder in self.forwarders.values():
            await forwarder.drain(deadline - loop.time())
        dropped = sum(forwarder.dropped_requests for forwarder in self.forwarders.values()) - dropped_before
        if pending and not dropped:
            log.info("all queued requests delivered")
        elif pending:
            log.warning("%d of %d queued requests were not delivered (see above)", dropped, pending)
        if self._server_runner is not None:
            await self._server_runner.cleanup()
            self._server_runner = None
        if self.ledger is not None:
            # Last: the periodic flush went on during the drain; this writes what the final requests added.
            await self.ledger.close()
            self.ledger = None

    def org_tags(self, tenant: str) -> tuple[str, ...]:
        """A tenant's usage attribution tags: its cost-attribution output labels, sorted."""
        if not self.tracker.enabled:
            return ()
        return self.tracker.labels_for(self.overrides.for_tenant(tenant).dimensions)

    def reload_overrides(self) -> bool:
        """Re-read the per-tenant file and the user-configurable directory now (every period, on
        SIGHUP, and from tests); True when anything new was put in force."""
        changed = self.reloader.reload() if self.reloader is not None else False
        if self.user_overrides is not None:
            changed = self.user_overrides.load_all() or changed
        return changed

    async def _reload_overrides_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.overrides.per_tenant_override_period)
            self.reload_overrides()

    async def _purge_stale_forever(self) -> None:
        while True:
            await asyncio.sleep(STALE_PURGE_INTERVAL_SECONDS)
            self.rate_limiter.forget_full_buckets()
            deleted = self.tracker.purge_stale()
            if deleted:
                log.debug("purged %d stale usage series", deleted)
