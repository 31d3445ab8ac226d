"""Set-up for the usage ledger and Usage Attribution API tests: a real service from a YAML file (ledger
in a temporary directory, both clocks manual), its orgs and keys, and the official Datadog client.

The Datadog client is synchronous (urllib3): call it through `running.call(...)`, which runs it in a
thread so the service on this event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v1.api.usage_metering_api import UsageMeteringApi
from datadog_api_client.v2.api.usage_metering_api import UsageMeteringApi as UsageMeteringApiV2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.config import load_config
from distributor.service import Service
from tests.support.clock import ManualClock
from tests.support.config_files import write_config_files
from tests.support.otlp import batch, request, span
from tests.support.service import RunningService

T = TypeVar("T")

# 2026-11-22 10:30:00 UTC: tests move the wall clock from here across hours and months.
START = datetime(2026, 11, 22, 10, 30, tzinfo=UTC).timestamp()

# A holding with two subsidiaries, and an unrelated org; one key per org (and a few odd ones).
ORGS = {
    "holding": {"name": "Holding Corp", "public_id": "hold0001"},
    "acme": {"name": "ACME", "public_id": "acme0001", "parent": "holding"},
    "globex": {"name": "Globex", "parent": "holding"},
}
KEYS = [
    {"api_key": "holding-api", "app_key": "holding-app", "org": "holding"},
    {"api_key": "acme-api", "app_key": "acme-app", "org": "acme"},
    {"api_key": "globex-api", "app_key": "globex-app", "org": "globex"},
    {"api_key": "other-api", "app_key": "other-app", "org": "other"},
    {"api_key": "noscope-api", "app_key": "noscope-app", "org": "acme", "scopes": ["usage_write"]},
]
# Dimensions per tenant (an overrides file); tenants not listed use the defaults: service.name + team.
TENANT_DIMENSIONS: dict[str, Any] = {
    "globex": {"service.name": "", "deployment.environment": "env"},
    "plain": {},  # no dimensions: not tracked by /usage_metrics, still billed by the ledger
}


def write_config(
    directory: Path,
    *,
    page_size: int = 500,
    rate_limit_requests: int = 1000,
    flush_period: str = "1h",  # tests flush by hand (running.flush()) unless they say otherwise
    cursor_ttl: str = "1h",
    retention_months: int = 15,
    max_cardinality: int = 10_000,
    multitenancy: bool = True,
    orgs: dict[str, Any] | None = None,
    keys: list[dict[str, Any]] | None = None,
    tenant_dimensions: dict[str, Any] | None = None,
    tenant_cost_attribution: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A complete distributor.yaml (+ overrides.yaml) in `directory`; returns its path.
    `tenant_cost_attribution`: more of a tenant's `cost_attribution` overrides (distinct_counts, say)."""
    dimensions = TENANT_DIMENSIONS if tenant_dimensions is None else tenant_dimensions
    overrides = {
        "overrides": {
            tenant: {"cost_attribution": {"dimensions": dims if dims else None}}
            for tenant, dims in dimensions.items()
        }
    }
    # An explicit empty mapping of dimensions is how a tenant opts out; YAML null would mean "unset".
    for tenant, dims in dimensions.items():
        if not dims:
            overrides["overrides"][tenant]["cost_attribution"]["dimensions"] = {}
    for tenant, more in (tenant_cost_attribution or {}).items():
        overrides["overrides"].setdefault(tenant, {"cost_attribution": {}})["cost_attribution"].update(more)
    document: dict[str, Any] = {
        "multitenancy_enabled": multitenancy,
        "server": {"http_listen_port": 0, "graceful_shutdown_timeout": "5s"},
        "distributor": {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
            "usage": {"cost_attribution": {"enabled": True, "max_cardinality": max_cardinality}},
        },
        "overrides": {
            "defaults": {"cost_attribution": {"dimensions": {"service.name": "", "team": ""}}},
            "per_tenant_override_config": "overrides.yaml",
        },
        "usage_attribution": {
            "enabled": True,
            "region": "local",
            "ledger": {
                "backend": "sqlite",
                "sqlite": {"path": "data/ledger.db"},
                "flush_period": flush_period,
                "retention_months": retention_months,
            },
            "api": {
                "page_size": page_size,
                "rate_limit": {"requests": rate_limit_requests, "period": "60s"},
                "cursor_ttl": cursor_ttl,
            },
            "orgs": ORGS if orgs is None else orgs,
            "keys": KEYS if keys is None else keys,
        },
    }
    for key, value in (extra or {}).items():
        document[key] = value
    return write_config_files(directory, document, overrides)


# The tenant that counts distinct sessions and hosts by department (distinct_config), and how it says so.
COUNTING_TENANT = "web"
COUNTING = {"distinct_counts": {"sessions": {"enabled": True}, "hosts": {"enabled": True}}}


def distinct_config(directory: Path, **more: Any) -> Path:
    """write_config for the distinct-count tests: tenant `web` (org Web, a subsidiary of Holding, whose
    keys are holding-api/holding-app) counts sessions and hosts by department; `more` as write_config's."""
    return write_config(
        directory,
        orgs={"holding": {"name": "Holding"}, COUNTING_TENANT: {"name": "Web", "parent": "holding"}},
        keys=[{"api_key": "holding-api", "app_key": "holding-app", "org": "holding"}],
        tenant_dimensions={COUNTING_TENANT: {"department": ""}},
        tenant_cost_attribution={COUNTING_TENANT: COUNTING},
        **more,
    )


def visits_request(
    department: str, visits: Iterable[tuple[str, str]], spans: int = 1
) -> ExportTraceServiceRequest:
    """What browsers' exporters send: per (session, host) visit a resource (the department, set as global
    context, and the host) with `spans` spans of one page load, the session on each span."""
    return request(
        *(
            batch(
                {"service.name": "storefront", "department": department, "host.name": host},
                [span({"session.id": session}) for _ in range(spans)],
            )
            for session, host in visits
        )
    )


def spans_request(service: str, count: int = 1, team: str = "", env: str = "", pad: int = 0) -> bytes:
    """One OTLP request: `count` spans of one service (resource attributes service.name, team, env)."""
    resource: dict[str, object] = {"service.name": service}
    if team:
        resource["team"] = team
    if env:
        resource["deployment.environment"] = env
    return request(batch(resource, [span(pad=pad) for _ in range(count)])).SerializeToString()


class RunningAttribution(RunningService):
    def __init__(
        self, service: Service, session: aiohttp.ClientSession, clock: ManualClock, wall: ManualClock
    ) -> None:
        super().__init__(service, session, clock, wall)  # clock: monotonic, for rate-limit windows
        self.wall = wall  # wall clock: which UTC hour usage lands in

    async def send(self, tenant: str, body: bytes) -> None:
        """One OTLP/HTTP request that must be accepted."""
        answer = await self.post(body, tenant)
        assert answer.status == 200, answer.body

    async def flush(self) -> None:
        assert self.service.ledger is not None
        assert await self.service.ledger.flush()

    async def tenant_usage(self, tenant: str) -> float:
        return sum(v for labels, v in (await self.usage()).items() if ("tenant", tenant) in labels)

    async def get(
        self, path: str, params: dict[str, str] | None = None, key: str = "holding", **headers: str
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        """A raw API request with the key pair `<key>-api`/`<key>-app` (key="" sends none)."""
        sent = dict(headers)
        if key:
            sent.setdefault("DD-API-KEY", f"{key}-api")
            sent.setdefault("DD-APPLICATION-KEY", f"{key}-app")
        async with self.session.get(self.server_url + path, params=params or {}, headers=sent) as response:
            text = await response.text()
            body: Any = text
            if response.content_type == "application/json":
                body = await response.json()
            return response.status, body, response.headers

    @contextlib.contextmanager
    def datadog(self, key: str = "holding") -> Iterator[tuple[UsageMeteringApi, UsageMeteringApiV2]]:
        """The official client (v1 and v2 UsageMeteringApi) pointed at this service."""
        configuration = Configuration(host=self.server_url)
        configuration.api_key["apiKeyAuth"] = f"{key}-api"
        configuration.api_key["appKeyAuth"] = f"{key}-app"
        with ApiClient(configuration) as client:
            yield UsageMeteringApi(client), UsageMeteringApiV2(client)

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)


StartAttribution = Callable[..., Any]


@contextlib.asynccontextmanager
async def attribution_service(
    config_path: Path, wall_start: float = START
) -> AsyncIterator[RunningAttribution]:
    """A service from `config_path` on ephemeral ports; stopped gracefully (ledger flushed) at exit."""
    clock, wall = ManualClock(), ManualClock(wall_start)
    service = Service(load_config(config_path), clock=clock, wall_clock=wall)
    await service.start()
    session = aiohttp.ClientSession()
    try:
        yield RunningAttribution(service, session, clock, wall)
    finally:
        await session.close()
        await service.stop()
