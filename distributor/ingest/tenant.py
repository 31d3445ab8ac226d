"""Which tenant a request belongs to."""

from __future__ import annotations

from enum import Enum

from distributor.common.errors import DistributorError
from distributor.overrides.tenant_ids import ORG_ID_HEADER, tenant_id_problem

SINGLE_TENANT = "single-tenant"


class TenantErrorReason(Enum):
    MISSING = "missing"  # no org id although multitenancy is enabled
    INVALID = "invalid"  # an org id that is not a valid tenant id


class TenantError(DistributorError):
    """The request's tenant is missing or invalid; the message says which and why."""

    def __init__(self, reason: TenantErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def resolve_tenant(org_id: str | None, multitenancy_enabled: bool) -> str:
    """Tempo's rule: without multitenancy every request is "single-tenant", whatever it says."""
    if not multitenancy_enabled:
        return SINGLE_TENANT
    if not org_id:
        raise TenantError(TenantErrorReason.MISSING, f"no org id: the {ORG_ID_HEADER} header is required")
    problem = tenant_id_problem(org_id)
    if problem is not None:
        raise TenantError(TenantErrorReason.INVALID, problem)
    return org_id
