"""The process's metrics registry, served at GET /metrics (usage series live at /usage_metrics), and
the HTTP request metrics of both listeners."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def new_registry() -> CollectorRegistry:
    """One registry per service instance, so several services can run in one process (tests)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def request_metrics_middleware(registry: CollectorRegistry) -> Middleware:
    """Counts and times every request by route template (not raw path, to bound cardinality)."""
    request_duration = Histogram(
        "tempo_request_duration_seconds",
        "Time (in seconds) spent serving HTTP requests",
        ["method", "route", "status_code"],
        registry=registry,
    )

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
            request_duration.labels(request.method, route, str(status)).observe(time.perf_counter() - started)

    return middleware
