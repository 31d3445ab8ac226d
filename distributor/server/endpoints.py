"""The server port's own endpoints: /usage_metrics, /metrics, /ready and /status/*. Handlers stay thin."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from distributor.config import Config, config_as_data, default_config, differences
from distributor.overrides import OverridesProvider, tenant_id_problem
from distributor.overrides.reload import RuntimeOverridesReloader
from distributor.overrides.status import describe_tenant
from distributor.server.metrics import build_info
from distributor.usage.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    usage_exposition,
    wants_openmetrics,
)
from distributor.usage.tracker import UsageTracker


class ServerEndpoints:
    def __init__(
        self,
        config: Config,
        tracker: UsageTracker,
        registry: CollectorRegistry,
        overrides: OverridesProvider,
        reloader: RuntimeOverridesReloader | None,
    ) -> None:
        self.config = config
        self.tracker = tracker
        self.registry = registry
        self.overrides = overrides
        self.reloader = reloader
        self.ready = False

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/usage_metrics", self.usage_metrics),
            web.get("/metrics", self.process_metrics),
            web.get("/ready", self.readiness),
            web.get("/status/config", self.status_config),
            web.get("/status/buildinfo", self.buildinfo),
            web.get("/status/runtime_config", self.runtime_config),
            web.get("/status/overrides", self.overrides_tenants),
            web.get("/status/overrides/{tenant}", self.overrides_of_tenant),
        ]

    async def status_config(self, request: web.Request) -> web.Response:
        mode = request.query.get("mode", "")
        if mode not in ("", "defaults", "diff"):
            return web.Response(status=400, text=f"unknown mode {mode!r}: use defaults or diff\n")
        defaults = config_as_data(default_config())  # both OTLP protocols, as an empty file has
        if mode == "defaults":
            return yaml_response(defaults)
        current = config_as_data(self.config)
        return yaml_response(differences(current, defaults) if mode == "diff" else current)

    async def runtime_config(self, request: web.Request) -> web.Response:
        if self.reloader is None:
            return web.Response(status=404, text="no overrides.per_tenant_override_config is configured\n")
        status = self.reloader.status
        reloaded = datetime.fromtimestamp(status.last_success_time, UTC).isoformat()
        header = (
            f"# {self.reloader.path}\n# sha256: {status.sha256_in_force}\n"
            f"# last successful reload: {reloaded}\n"
        )
        if not status.last_reload_successful:
            header += f"# the last reload failed, this is still in force: {status.last_error}\n"
        body = header + status.content_in_force.decode("utf-8", "replace")
        return web.Response(text=body, content_type="text/yaml", charset="utf-8")

    async def overrides_tenants(self, request: web.Request) -> web.Response:
        return yaml_response({"tenants": self.overrides.snapshot.tenants()})

    async def overrides_of_tenant(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        problem = tenant_id_problem(tenant)
        if problem is not None:
            return web.Response(status=400, text=problem + "\n")
        return yaml_response(describe_tenant(self.overrides.snapshot, tenant))

    async def usage_metrics(self, request: web.Request) -> web.StreamResponse:
        openmetrics = wants_openmetrics(request.headers.get("Accept"))
        pieces = await usage_exposition(self.tracker, openmetrics)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = sum(map(len, pieces))
        await response.prepare(request)
        if request.method != "HEAD":
            # Piece by piece, each written once the previous one has drained: one write of the whole
            # answer would copy all of it into the transport's buffer on the loop.
            for piece in pieces:
                await response.write(piece)
        await response.write_eof()
        return response

    async def process_metrics(self, request: web.Request) -> web.Response:
        # Negotiated as /usage_metrics is: OpenMetrics when the scraper lists it (Prometheus does).
        openmetrics = wants_openmetrics(request.headers.get("Accept"))
        render = generate_openmetrics if openmetrics else generate_latest
        # Off the loop: 50,000 tenants made a 36 MB answer that took 4.4 s. Safe on a thread: the
        # prometheus_client metrics lock themselves, and our collectors copy the dicts they walk.
        body = await asyncio.to_thread(render, self.registry)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE_LATEST
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def buildinfo(self, request: web.Request) -> web.Response:
        """Tempo's GET /status/buildinfo: what this build is, as JSON."""
        return web.json_response(build_info().as_status())

    async def readiness(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")


def yaml_response(document: object) -> web.Response:
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return web.Response(text=text, content_type="text/yaml", charset="utf-8")
