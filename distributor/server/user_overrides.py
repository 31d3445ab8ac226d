"""GET/POST/PATCH/DELETE /api/overrides: a tenant's own cost-attribution dimensions. Thin handlers."""

from __future__ import annotations

import json

from aiohttp import web

from distributor.common.http_listener import read_body
from distributor.ingest.tenant import TenantError, TenantErrorReason, resolve_tenant
from distributor.overrides.tenant_ids import ORG_ID_HEADER
from distributor.overrides.user_configurable import (
    StoredOverrides,
    UserOverridesError,
    UserOverridesErrorReason,
    UserOverridesStore,
)

PATH = "/api/overrides"

_TENANT_STATUSES = {TenantErrorReason.MISSING: 401, TenantErrorReason.INVALID: 400}
_STATUSES = {
    UserOverridesErrorReason.INVALID_DOCUMENT: 400,
    UserOverridesErrorReason.INVALID_TENANT: 400,
    UserOverridesErrorReason.NOT_FOUND: 404,
    UserOverridesErrorReason.PRECONDITION_FAILED: 412,
    UserOverridesErrorReason.PRECONDITION_REQUIRED: 428,
    UserOverridesErrorReason.UNAVAILABLE: 503,
}


class UserOverridesApi:
    def __init__(self, store: UserOverridesStore | None, multitenancy_enabled: bool) -> None:
        self.store = store
        self.multitenancy_enabled = multitenancy_enabled

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.route("*", PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        if self.store is None:
            return _error(
                404, "user-configurable overrides are disabled (overrides.user_configurable_overrides)"
            )
        try:
            tenant = resolve_tenant(request.headers.get(ORG_ID_HEADER), self.multitenancy_enabled)
            if_match = request.headers.get("If-Match")
            if request.method == "GET":
                return _document(await self.store.get(tenant))
            if request.method == "DELETE":
                await self.store.delete(tenant, if_match)
                return web.Response(status=204)
            if request.method not in ("POST", "PATCH"):
                return _error(
                    405, f"method {request.method} not allowed", {"Allow": "GET, POST, PATCH, DELETE"}
                )
            try:
                body = json.loads(await read_body(request))
            except ValueError as err:
                return _error(400, f"the body is not JSON: {err}")
            except RecursionError:  # deeper than the parser goes; shallower ones the store refuses
                return _error(400, "the body is not JSON: nested too deeply")
            if request.method == "POST":
                return _document(await self.store.set(tenant, body, if_match))
            return _document(await self.store.patch(tenant, body, if_match))
        except TenantError as err:
            return _error(_TENANT_STATUSES[err.reason], str(err))
        except UserOverridesError as err:
            return _error(_STATUSES[err.reason], str(err))


def _document(stored: StoredOverrides) -> web.Response:
    return web.json_response(stored.document, headers={"ETag": stored.etag})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)
