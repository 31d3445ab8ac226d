"""Datadog's Usage Attribution endpoints on the server port: statuses, X-RateLimit-* headers, content
negotiation and JSON encoding around UsageAttributionApi.

Statuses: 403 Forbidden, 429 RateLimited (a key pair's requests, or an address's failed
authentications), 400 InvalidParameter, 404 while usage attribution is
disabled, 503 while the usage ledger cannot be read; every error body is {"errors": ["<message>"]}.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from distributor.attribution.api import Grant, UsageAttributionApi
from distributor.attribution.errors import (
    AuthFailuresLimited,
    Forbidden,
    InvalidParameter,
    RateLimited,
)
from distributor.attribution.keys import RateLimitWindow
from distributor.attribution.query import Parameters
from distributor.common.errors import DistributorError
from distributor.ledger.ledger import LedgerUnavailable

HOURLY_PATH = "/api/v1/usage/hourly-attribution"
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"
# The spec's path, and the one the official clients call.
TYPES_PATHS = ("/api/v2/usage/usage_attribution_types", "/api/v2/usage/usage-attribution-types")
JSON_CONTENT_TYPE = "application/json"
CSV_CONTENT_TYPE = "text/csv"
RATE_LIMIT_NAME = "usage_attribution"
AUTH_FAILURE_LIMIT_NAME = "usage_attribution_auth_failures"
# Not Datadog's: which org a key pair signs the usage page in as (the tenant whose tags it edits).
SESSION_PATH = "/usage/session"
DISABLED = "usage attribution is disabled (usage_attribution.enabled)"


class _Document(Protocol):
    def document(self) -> dict[str, Any]: ...


# One endpoint's work once the key pair is admitted: the body and its content type.
_Handler = Callable[[UsageAttributionApi, Grant], Awaitable[tuple[bytes, str]]]


class UsageAttributionHttp:
    def __init__(self, api: UsageAttributionApi | None) -> None:
        self.api = api

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get(HOURLY_PATH, self.hourly),
            web.get(MONTHLY_PATH, self.monthly),
            *(web.get(path, self.types) for path in TYPES_PATHS),
            web.get(SESSION_PATH, self.session),
        ]

    async def hourly(self, request: web.Request) -> web.Response:
        parameters = _parameters(request)

        async def handle(api: UsageAttributionApi, grant: Grant) -> tuple[bytes, str]:
            return _json(await api.hourly(grant, parameters)), JSON_CONTENT_TYPE

        return await self._answer(request, handle)

    async def monthly(self, request: web.Request) -> web.Response:
        parameters = _parameters(request)
        csv_wanted = CSV_CONTENT_TYPE in request.headers.get("Accept", "").lower()

        async def handle(api: UsageAttributionApi, grant: Grant) -> tuple[bytes, str]:
            if csv_wanted:
                return await api.monthly_csv(grant, parameters), CSV_CONTENT_TYPE + "; charset=utf-8"
            return _json(await api.monthly(grant, parameters)), JSON_CONTENT_TYPE

        return await self._answer(request, handle)

    async def types(self, request: web.Request) -> web.Response:
        async def handle(api: UsageAttributionApi, grant: Grant) -> tuple[bytes, str]:
            return _json(await api.types(grant)), JSON_CONTENT_TYPE

        return await self._answer(request, handle)

    async def session(self, request: web.Request) -> web.Response:
        """The key pair's own org: its tenant id and name. Nothing of any other org."""

        async def handle(api: UsageAttributionApi, grant: Grant) -> tuple[bytes, str]:
            org = api.orgs.org(grant.key.org)
            document = {"org_id": org.org_id, "org_name": org.name, "public_id": org.public_id}
            return json.dumps(document, separators=(",", ":")).encode(), JSON_CONTENT_TYPE

        return await self._answer(request, handle)

    async def _answer(self, request: web.Request, handle: _Handler) -> web.Response:
        if self.api is None:
            # Not _error: this body keeps json's default separators, byte for byte as it always was.
            disabled = json.dumps({"errors": [DISABLED]}).encode()
            return web.Response(status=404, body=disabled, content_type=JSON_CONTENT_TYPE)
        try:
            grant = self.api.admit(
                request.headers.get("DD-API-KEY"),
                request.headers.get("DD-APPLICATION-KEY"),
                request.remote or "",  # no address (a Unix socket): all such clients share one window
            )
        except Forbidden as err:
            return _error(403, err, {})
        except AuthFailuresLimited as err:
            return _error(429, err, _rate_limit_headers(err.window, AUTH_FAILURE_LIMIT_NAME))
        except RateLimited as err:
            return _error(429, err, _rate_limit_headers(err.window, RATE_LIMIT_NAME))
        headers = _rate_limit_headers(grant.window, RATE_LIMIT_NAME)
        try:
            body, content_type = await handle(self.api, grant)
        except InvalidParameter as err:
            return _error(400, err, headers)
        except LedgerUnavailable as err:
            return _error(503, err, headers)
        return web.Response(status=200, body=body, headers={"Content-Type": content_type, **headers})


def _parameters(request: web.Request) -> Parameters:
    return {name: request.query.getall(name) for name in request.query}


def _json(answer: _Document) -> bytes:
    return json.dumps(answer.document(), separators=(",", ":")).encode()


def _error(status: int, err: DistributorError, headers: dict[str, str]) -> web.Response:
    body = json.dumps({"errors": [str(err)]}, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, headers={"Content-Type": JSON_CONTENT_TYPE, **headers})


def _rate_limit_headers(window: RateLimitWindow, name: str) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(window.limit),
        "X-RateLimit-Period": str(window.period),
        "X-RateLimit-Remaining": str(window.remaining),
        "X-RateLimit-Reset": str(window.reset),
        "X-RateLimit-Name": name,
    }
