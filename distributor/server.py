"""The server port: /usage_metrics, /metrics and /ready (later the APIs). Handlers stay thin."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from distributor.metrics import DistributorMetrics
from distributor.usage.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    render_counter,
    wants_openmetrics,
)
from distributor.usage.tracker import UsageTracker
from overrides import OverridesProvider, tenant_id_problem
from overrides.status import describe_tenant

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


class ServerEndpoints:
    def __init__(
        self, tracker: UsageTracker, metrics: DistributorMetrics, overrides: OverridesProvider
    ) -> None:
        self.tracker = tracker
        self.metrics = metrics
        self.overrides = overrides
        self.ready = False

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/usage_metrics", self.usage_metrics),
            web.get("/metrics", self.process_metrics),
            web.get("/ready", self.readiness),
            web.get("/status/overrides", self.overrides_tenants),
            web.get("/status/overrides/{tenant}", self.overrides_of_tenant),
        ]

    async def overrides_tenants(self, request: web.Request) -> web.Response:
        return yaml_response({"tenants": self.overrides.snapshot.tenants()})

    async def overrides_of_tenant(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        problem = tenant_id_problem(tenant)
        if problem is not None:
            return web.Response(status=400, text=problem + "\n")
        return yaml_response(describe_tenant(self.overrides.snapshot, tenant))

    async def usage_metrics(self, request: web.Request) -> web.Response:
        openmetrics = wants_openmetrics(request.headers.get("Accept"))
        body = render_counter(self.tracker.series(), openmetrics)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def process_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def readiness(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")


def yaml_response(document: object) -> web.Response:
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return web.Response(text=text, content_type="text/yaml", charset="utf-8")


def request_metrics_middleware(metrics: DistributorMetrics) -> Middleware:
    """Counts and times every request by route template (not raw path, to bound cardinality)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as err:
            status = err.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "other"
            metrics.request_duration.labels(request.method, route, str(status)).observe(
                time.perf_counter() - started
            )

    return middleware
