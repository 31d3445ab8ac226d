"""The composition root: builds the pipeline's components from a Config, starts them in order and
stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from distributor.attribution.api import UsageAttributionApi
from distributor.attribution.http import UsageAttributionHttp
from distributor.attribution.page import UsagePage
from distributor.common.clock import Clock
from distributor.common.http_listener import (
    ConnectionLimits,
    ConnectionMetrics,
    HttpListener,
    RequestMetrics,
)
from distributor.common.lifecycle import (
    BackgroundTaskMetrics,
    Component,
    PeriodicTask,
    StopFailed,
    StoppedTogether,
    stop_in_reverse,
)
from distributor.common.logging_setup import fields
from distributor.common.url_masking import mask_url
from distributor.config import Config
from distributor.forwarding.forwarders import Forwarders
from distributor.forwarding.metrics import ForwarderMetrics
from distributor.ingest import scan
from distributor.ingest.activity import TenantActivity
from distributor.ingest.limits import IngestionRateLimiter
from distributor.ingest.metrics import IngestMetrics
from distributor.ingest.pipeline import Discards, IngestPipeline
from distributor.ingest.workers import IngestWorkerMetrics, IngestWorkers
from distributor.ledger.config import mask_dsn
from distributor.ledger.ledger import LedgerMetrics, UsageLedger
from distributor.ledger.stores import open_store
from distributor.overrides import OverridesProvider, OverridesSnapshot
from distributor.overrides.metrics import RuntimeConfigCollector
from distributor.overrides.reload import OverridesRefresh, RuntimeOverridesReloader
from distributor.overrides.user_configurable import UserConfigurableOverrides, UserOverridesStore
from distributor.overrides.user_configurable_postgresql import PostgresUserOverrides
from distributor.receivers.otlp_grpc import OtlpGrpcReceiver
from distributor.receivers.otlp_http import OtlpHttpReceiver
from distributor.ring.config import global_rate_tenants, without_ring_note
from distributor.ring.ring import DistributorRing, RingMetrics
from distributor.server.endpoints import ServerEndpoints
from distributor.server.metrics import new_registry
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
                config.overrides.per_tenant_override_max_bytes,
            )
            self.overrides = self.reloader.provider
        self.user_overrides: UserOverridesStore | None = None
        # Closed last, after everything that reads or writes through it stopped.
        user_overrides_database: PostgresUserOverrides | None = None
        user_config = config.overrides.user_configurable_overrides
        if user_config.enabled and user_config.backend == "postgresql":
            pool = user_config.postgresql_pool
            user_overrides_database = PostgresUserOverrides(
                user_config.postgresql_dsn, self.overrides, pool.min_size, pool.max_size, pool.timeout
            )
            user_overrides_database.load_all()
            self.user_overrides = user_overrides_database
        elif user_config.enabled:
            directory = UserConfigurableOverrides(user_config.storage_path, self.overrides)
            directory.load_all()
            self.user_overrides = directory
        self.tracker = UsageTracker(config.cost_attribution, clock, wall_clock)
        self.registry = new_registry()
        self.registry.register(UsageTrackerCollector(self.tracker))
        if self.reloader is not None:
            self.registry.register(RuntimeConfigCollector(self.reloader))
        request_metrics = RequestMetrics(self.registry)
        task_metrics = BackgroundTaskMetrics(self.registry)
        ingest_metrics = IngestMetrics(self.registry)
        ingest_metrics.core_loaded.set(1 if scan.CORE is not None else 0)
        if scan.CORE is None:
            log.warning(
                "the compiled ingest core is not loaded (it could not be built on this machine): every "
                "request is scanned by the reference path, several times slower; reinstall with a C "
                "compiler and the Python headers to build it"
            )
        discards = Discards(ingest_metrics, self.tracker, self.overrides)
        forwarder_metrics = ForwarderMetrics(self.registry)
        self.forwarders = Forwarders(config.forwarders, forwarder_metrics, discards.forward_dropped)
        # A tenant's process metric series are released when idle as long as its usage series are.
        self.tenant_activity = TenantActivity(clock, config.cost_attribution.stale_duration)
        self.tenant_activity.busy_while(self.forwarders.hold_requests_of)
        self.tenant_activity.on_release(ingest_metrics.release_tenants)
        self.tenant_activity.on_release(forwarder_metrics.release_tenants)
        ring_metrics = RingMetrics(self.registry)
        self.ring: DistributorRing | None = None
        if config.ring.backend == "postgresql":
            self.ring = DistributorRing(config.ring, ring_metrics, task_metrics, wall_clock)
            self.rate_limiter = IngestionRateLimiter(clock, self.ring.healthy_replicas)
        else:
            self.rate_limiter = IngestionRateLimiter(clock)
        self.ledger: UsageLedger | None = None
        attribution_api: UsageAttributionApi | None = None
        attribution = config.usage_attribution
        if attribution.enabled:
            self.ledger = UsageLedger(
                open_store(attribution.ledger, config.source),
                LedgerMetrics(self.registry),
                attribution.ledger.flush_period,
                attribution.ledger.retention_months,
                merge_after=attribution.api.cursor_ttl,
                wall_clock=wall_clock,
                task_metrics=task_metrics,
                max_pending_entries=attribution.ledger.max_pending_entries,
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
            self.tenant_activity,
            config.max_active_tenants,
            self.ledger,
        )
        self.ingest_workers = IngestWorkers(
            config.ingest_workers, IngestWorkerMetrics(self.registry), ingest_metrics.refused_requests
        )
        self.endpoints = ServerEndpoints(config, self.tracker, self.registry, self.overrides, self.reloader)
        self.user_overrides_api = UserOverridesApi(self.user_overrides, config.multitenancy_enabled)
        shutdown_timeout = config.server.graceful_shutdown_timeout
        connection_metrics = ConnectionMetrics(self.registry)
        self.server_port = HttpListener(
            "server",
            config.server.endpoint,
            self.endpoints.routes()
            + self.user_overrides_api.routes()
            + self.attribution_http.routes()
            + UsagePage().routes(),
            request_metrics.middleware,
            shutdown_timeout,
            ConnectionLimits(
                config.server.http_server_idle_timeout,
                config.server.http_server_read_header_timeout,
                config.server.http_server_read_body_timeout,
                config.server.http_listen_conn_limit,
            ),
            connection_metrics,
        )
        receivers: list[tuple[str, Component]] = []
        self.otlp_http: OtlpHttpReceiver | None = None
        if config.otlp_http is not None:
            self.otlp_http = OtlpHttpReceiver(
                config.otlp_http,
                self.pipeline,
                config.multitenancy_enabled,
                request_metrics.middleware,
                connection_metrics,
                shutdown_timeout,
                self.ingest_workers,
            )
            receivers.append(("OTLP/HTTP receiver", self.otlp_http))
        self.otlp_grpc: OtlpGrpcReceiver | None = None
        if config.otlp_grpc is not None:
            self.otlp_grpc = OtlpGrpcReceiver(
                config.otlp_grpc,
                self.pipeline,
                config.multitenancy_enabled,
                self.ingest_workers,
                request_metrics,
            )
            receivers.append(("OTLP/gRPC receiver", self.otlp_grpc))
        self._overrides_refresh = OverridesRefresh(
            self.reloader, self.user_overrides, polled_apart=user_overrides_database is not None
        )

        # Started in this order, stopped in the reverse one: periodic work first, then the receivers
        # stop taking requests and finish those in flight, the forwarders deliver what they hold, the
        # server port (/metrics) closes, and the ledger's final flush stores what all that added.
        components: list[tuple[str, Component]] = []
        if user_overrides_database is not None:
            components.append(("user-configurable overrides database", user_overrides_database))
        if self.ledger is not None:
            components.append(("usage ledger", self.ledger))
        if self.ring is not None:
            # Before the receivers, so the first requests are limited with the ring's count; after them
            # when stopping, so that this replica is counted while it still takes requests.
            components.append(("distributor ring", self.ring))
        components += [
            ("server port", self.server_port),
            ("forwarders", self.forwarders),
            ("ingest workers", self.ingest_workers),
            ("receivers", StoppedTogether(receivers)),
            (
                "stale series purge",
                PeriodicTask(
                    "purge_stale_series", STALE_PURGE_INTERVAL_SECONDS, self.tracker.purge_stale, task_metrics
                ),
            ),
            (
                "idle forwarding queues release",
                PeriodicTask(
                    "release_idle_forwarding_queues",
                    STALE_PURGE_INTERVAL_SECONDS,
                    self.forwarders.release_idle_tenants,
                    task_metrics,
                ),
            ),
            (
                "idle tenants' series release",
                PeriodicTask(
                    "release_idle_tenant_series",
                    STALE_PURGE_INTERVAL_SECONDS,
                    self.tenant_activity.release_idle,
                    task_metrics,
                ),
            ),
            (
                "full rate buckets purge",
                PeriodicTask(
                    "forget_full_rate_buckets",
                    STALE_PURGE_INTERVAL_SECONDS,
                    self.rate_limiter.forget_full_buckets,
                    task_metrics,
                ),
            ),
        ]
        self._overrides_reload: PeriodicTask | None = None
        if self._overrides_refresh.has_sources:
            self._overrides_reload = PeriodicTask(
                "overrides_reload",
                config.overrides.per_tenant_override_period,
                self._overrides_refresh.reload_on_file_period,
                task_metrics,
            )
            components.append(("overrides reload", self._overrides_reload))
        self._user_overrides_poll: PeriodicTask | None = None
        if user_overrides_database is not None:
            self._user_overrides_poll = PeriodicTask(
                "user_overrides_poll",
                user_config.postgresql_poll_period,
                self._overrides_refresh.reload_user_overrides,
                task_metrics,
            )
            components.append(("user-configurable overrides poll", self._user_overrides_poll))
        self._signalled_reloads: set[asyncio.Task[None]] = set()
        self._components = components
        self._started: list[tuple[str, Component]] = []

    @property
    def server_address(self) -> tuple[str, int] | None:
        return self.server_port.address

    @property
    def otlp_http_address(self) -> tuple[str, int] | None:
        return self.otlp_http.address if self.otlp_http is not None else None

    @property
    def otlp_grpc_address(self) -> tuple[str, int] | None:
        return self.otlp_grpc.address if self.otlp_grpc is not None else None

    async def start(self) -> None:
        """Start every component in order; if one cannot start (a port in use), stop what was
        started and raise its error."""
        try:
            for named in self._components:
                self._started.append(named)  # stopped even when its start fails half-way
                await named[1].start()
        except BaseException:
            with contextlib.suppress(StopFailed):  # each failure is logged; the start error matters
                await self.stop()
            raise
        self.endpoints.ready = True
        self.log_start_summary()

    def log_start_summary(self) -> None:
        """What an operator checks first: where it listens, where traces go, where usage is kept, which
        overrides are in force, and whether the compiled ingest core runs. Credentials in forwarder
        endpoints are masked. The last line, `distributor ready`, names the listeners."""
        for forwarder in self.config.forwarders:
            client = self.forwarders[forwarder.name].client
            endpoint = mask_url(str(getattr(client, "url", forwarder.endpoint)))  # otlphttp: the full URL
            log.info(
                "forwarder %s: %s to %s",
                forwarder.name,
                forwarder.backend,
                endpoint,
                extra=fields(forwarder=forwarder.name, backend=forwarder.backend, endpoint=endpoint),
            )
        if not self.config.forwarders:
            log.info("no forwarders: accepted traces are counted, then dropped")
        if self.ledger is not None:
            ledger = self.config.usage_attribution.ledger
            where = (
                mask_dsn(ledger.postgresql_dsn) if ledger.backend == "postgresql" else str(ledger.sqlite_path)
            )
            log.info(
                "usage ledger: %s at %s",
                ledger.backend,
                where,
                extra=fields(backend=ledger.backend, at=where),
            )
        else:
            log.info("usage ledger: off (usage_attribution.enabled is false)")
        user_config = self.config.overrides.user_configurable_overrides
        if user_config.enabled and user_config.backend == "postgresql":
            where = mask_dsn(user_config.postgresql_dsn)
            log.info(
                "user-configurable overrides: postgresql at %s, polled every %gs",
                where,
                user_config.postgresql_poll_period,
                extra=fields(backend="postgresql", dsn=where),
            )
        elif user_config.enabled:
            log.info(
                "user-configurable overrides: directory %s",
                user_config.storage_path,
                extra=fields(backend="directory", path=str(user_config.storage_path)),
            )
        if self.reloader is not None:
            # Resolved from the configuration file's folder (Tempo resolves from the working directory).
            # Tempo resolves this path against its working directory; this service, against the config
            # file's: said here so that an operator coming from Tempo sees which file is read.
            log.info(
                "per-tenant overrides file %s, %d tenants (overrides.per_tenant_override_config; a "
                "relative path is resolved against the config file's directory, not the working directory)",
                self.reloader.path,
                len(self.overrides.snapshot.tenants()),
                extra=fields(
                    file=str(self.reloader.path),
                    tenants=len(self.overrides.snapshot.tenants()),
                    period=f"{self.config.overrides.per_tenant_override_period:g}s",
                ),
            )
        else:
            log.info("per-tenant overrides file: none (no overrides.per_tenant_override_config)")
        if self.ring is not None:
            log.info(
                "distributor ring: postgresql, instance %s, %d healthy replicas",
                self.ring.instance_id,
                self.ring.healthy_replicas(),
                extra=fields(instance_id=self.ring.instance_id, replicas=self.ring.healthy_replicas()),
            )
        else:
            tenants = global_rate_tenants(self.overrides.snapshot)
            if tenants:
                log.warning("distributor.ring.backend %s", without_ring_note(tenants))
        log.info(
            "compiled ingest core: %s",
            "loaded" if scan.CORE is not None else "NOT loaded, the reference scan runs instead",
            extra=fields(core_loaded=scan.CORE is not None),
        )
        assert self.server_address is not None
        listeners = {"server": "http://{}:{}".format(*self.server_address)}
        if self.otlp_http_address is not None:
            listeners["otlp_http"] = "http://{}:{}/v1/traces".format(*self.otlp_http_address)
        else:
            listeners["otlp_http"] = "disabled"
        if self.otlp_grpc_address is not None:
            listeners["otlp_grpc"] = "{}:{}".format(*self.otlp_grpc_address)
        log.info("distributor ready", extra=fields(**listeners))

    async def stop(self) -> None:
        """Graceful shutdown within server.graceful_shutdown_timeout: /ready answers 503, the receivers
        stop taking requests and finish those in flight, the forwarders deliver what they hold; what
        is still undelivered at the deadline is counted and logged. The server port (/metrics) closes
        after them, and the ledger's final flush comes last.

        Every step runs even when an earlier one fails; then StopFailed names what failed."""
        self.endpoints.ready = False
        deadline = asyncio.get_running_loop().time() + self.config.server.graceful_shutdown_timeout
        started, self._started = self._started, []
        failures = await stop_in_reverse(started, deadline)
        if failures:
            raise StopFailed(failures)

    def org_tags(self, tenant: str) -> tuple[str, ...]:
        """A tenant's usage attribution tags: its cost-attribution output labels, sorted."""
        if not self.tracker.enabled:
            return ()
        return self.tracker.labels_for(self.overrides.for_tenant(tenant).dimensions)

    async def reload_overrides(self) -> bool:
        """Re-read the per-tenant file and the user-configurable overrides (directory or database) now,
        off the event loop (every period, on SIGHUP, and from tests); True when anything new was put in
        force."""
        return await self._overrides_refresh.reload()

    def reload_overrides_soon(self) -> None:
        """SIGHUP: one reload (and one poll of the user-configurable overrides database) now, outside
        the period, its failure counted and logged like the periodic ones'."""
        for periodic in (self._overrides_reload, self._user_overrides_poll):
            if periodic is not None:
                task = asyncio.get_running_loop().create_task(periodic.run_once())
                self._signalled_reloads.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(self._signalled_reloads.discard)
