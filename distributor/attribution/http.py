"""Datadog's Usage Attribution endpoints on the server port. Thin handlers over UsageAttributionApi."""

from __future__ import annotations

import json

from aiohttp import web

from distributor.attribution.api import ApiAnswer, UsageAttributionApi

HOURLY_PATH = "/api/v1/usage/hourly-attribution"
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"
# The spec's path, and the one the official clients call.
TYPES_PATHS = ("/api/v2/usage/usage_attribution_types", "/api/v2/usage/usage-attribution-types")


class UsageAttributionHttp:
    def __init__(self, api: UsageAttributionApi | None) -> None:
        self.api = api

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get(HOURLY_PATH, self.hourly),
            web.get(MONTHLY_PATH, self.monthly),
            *(web.get(path, self.types) for path in TYPES_PATHS),
        ]

    async def hourly(self, request: web.Request) -> web.Response:
        if self.api is None:
            return _disabled()
        return _response(await self.api.hourly(request.headers, _query(request)))

    async def monthly(self, request: web.Request) -> web.Response:
        if self.api is None:
            return _disabled()
        answer = await self.api.monthly(request.headers, _query(request), request.headers.get("Accept", ""))
        return _response(answer)

    async def types(self, request: web.Request) -> web.Response:
        if self.api is None:
            return _disabled()
        return _response(await self.api.types(request.headers))


def _query(request: web.Request) -> dict[str, list[str]]:
    return {name: request.query.getall(name) for name in request.query}


def _response(answer: ApiAnswer) -> web.Response:
    if isinstance(answer.body, str):
        body = answer.body.encode()
    else:
        body = json.dumps(answer.body, separators=(",", ":")).encode()
    return web.Response(
        status=answer.status, body=body, headers={"Content-Type": answer.content_type, **answer.headers}
    )


def _disabled() -> web.Response:
    body = {"errors": ["usage attribution is disabled (usage_attribution.enabled)"]}
    return web.Response(status=404, body=json.dumps(body).encode(), content_type="application/json")
