"""Which tenant a request belongs to."""

from __future__ import annotations

from distributor.overrides import tenant_id_problem

SINGLE_TENANT = "single-tenant"
ORG_ID_HEADER = "X-Scope-OrgID"


class TenantError(Exception):
    """The request's tenant is missing (401) or invalid (400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resolve_tenant(org_id: str | None, multitenancy_enabled: bool) -> str:
    """Tempo's rule: without multitenancy every request is "single-tenant", whatever it says."""
    if not multitenancy_enabled:
        return SINGLE_TENANT
    if not org_id:
        raise TenantError(401, f"no org id: the {ORG_ID_HEADER} header is required")
    problem = tenant_id_problem(org_id)
    if problem is not None:
        raise TenantError(400, problem)
    return org_id
