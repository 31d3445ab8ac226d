"""`usage_attribution:` settings: the usage ledger and the Datadog-compatible Usage Attribution API.

Semantics: docs/usage-attribution-api.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from distributor.common.config_fields import (
    read_settings,
    render_settings,
    setting,
    setting_keys,
    settings,
    settings_section,
)
from distributor.common.config_reader import Section, read_entries
from distributor.ledger.config import LedgerConfig, check_postgresql_settings
from distributor.overrides import tenant_id_problem

USAGE_READ = "usage_read"


@settings
class ApiRateLimit:
    requests: int = setting(default=60)
    period: float = setting(default=60.0, positive=True)


@settings
class AuthFailureLimit:
    failures: int = setting(default=10)  # per client address and period; 0: unlimited
    period: float = setting(default=60.0, positive=True)


@settings
class AttributionApiConfig:
    page_size: int = setting(default=500, positive=True, maximum=10_000)
    rate_limit: ApiRateLimit = setting(default_factory=ApiRateLimit)
    auth_failure_limit: AuthFailureLimit = setting(default_factory=AuthFailureLimit)
    # How long a next_record_id stays valid: the ledger keeps each flush apart this long so a paginated
    # answer is a consistent snapshot even while usage arrives.
    cursor_ttl: float = setting(default=3600.0, positive=True)


@settings
class OrgConfig:
    org_id: str  # the tenant id: the key the org is written under
    name: str = setting(default="")  # "" = the tenant id
    public_id: str = setting(default="")  # "" = derived from the tenant id
    parent: str = setting(default="")  # an org id, or "" for none


def _read_scopes(entry: Section, key: str) -> tuple[str, ...]:
    node = entry.node(key)
    if node is None or node.value is None:
        return (USAGE_READ,)
    if not isinstance(node.value, list) or not all(isinstance(s.value, str) for s in node.value):
        entry.fail(key, "expected a list of scope names, e.g. [usage_read]")
        return ()
    return tuple(str(s.value) for s in node.value)


@settings
class ApiKeyConfig:
    api_key: str = setting(secret=True)
    app_key: str = setting(secret=True)
    org: str = setting()
    scopes: tuple[str, ...] = setting(default=(USAGE_READ,), read=_read_scopes)

    def __repr__(self) -> str:  # keys are secrets: never in logs or tracebacks
        return f"ApiKeyConfig(org={self.org!r}, scopes={self.scopes!r})"


def _read_orgs(section: Section, key: str) -> tuple[OrgConfig, ...]:
    return _orgs(section.section(key, None))


def _orgs_as_data(orgs: tuple[OrgConfig, ...]) -> dict[str, Any]:
    return {org.org_id: render_settings(org) for org in orgs}


def _read_keys(section: Section, key: str) -> tuple[ApiKeyConfig, ...]:
    return read_entries(
        section,
        key,
        setting_keys(ApiKeyConfig),
        "expected a list of {api_key, app_key, org, scopes}",
        _api_key,
        unique_by=lambda api_key: (api_key.api_key, api_key.app_key),
        duplicate=("api_key", lambda _: "this api_key/app_key pair is configured twice"),
    )


@settings
class UsageAttributionConfig:
    enabled: bool = setting(default=False)
    region: str = setting(default="local", blank_is_default=True)
    ledger: LedgerConfig = setting(default_factory=LedgerConfig)
    api: AttributionApiConfig = setting(default_factory=AttributionApiConfig)
    orgs: tuple[OrgConfig, ...] = setting(default=(), read=_read_orgs, render=_orgs_as_data)
    keys: tuple[ApiKeyConfig, ...] = setting(default=(), read=_read_keys)


def parse_usage_attribution(section: Section) -> UsageAttributionConfig:
    config = read_settings(section, UsageAttributionConfig)
    ledger = config.ledger
    if ledger.backend == "postgresql":
        postgresql = section.reopened("ledger").reopened("postgresql")
        check_postgresql_settings(postgresql, ledger.postgresql_dsn, ledger.postgresql_pool)
    return config


def _orgs(orgs_section: Section) -> tuple[OrgConfig, ...]:
    orgs: dict[str, OrgConfig] = {}
    for org_id, node in orgs_section.items():
        problem = tenant_id_problem(org_id)
        if problem is not None:
            orgs_section.fail_at(node, f"an org is a tenant: {problem}")
            continue
        org = read_settings(settings_section(orgs_section, org_id, OrgConfig), OrgConfig, {"org_id": org_id})
        orgs[org_id] = _checked_parent(orgs_section.reopened(org_id), org)
    # A cycle would make an org its own descendant.
    for org_id in orgs:
        chain, cyclic = parent_chain(org_id, lambda org: orgs[org].parent if org in orgs else "")
        if cyclic:
            orgs_section.reopened(org_id).fail("parent", f"the parents of {org_id!r} form a cycle")
            return tuple(o for o in orgs.values() if o.org_id != org_id and o.org_id not in chain)
    public_ids: dict[str, str] = {}
    for org in orgs.values():
        if org.public_id and org.public_id in public_ids:
            orgs_section.reopened(org.org_id).fail(
                "public_id", f"public_id {org.public_id!r} is also used by org {public_ids[org.public_id]!r}"
            )
        public_ids[org.public_id] = org.org_id
    return tuple(orgs.values())


def _checked_parent(entry: Section, org: OrgConfig) -> OrgConfig:
    """The org, without its parent when that is not an org id (already reported)."""
    if not org.parent:
        return org
    problem = tenant_id_problem(org.parent)
    if problem is None and org.parent == org.org_id:
        problem = "an org cannot be its own parent"
    if problem is None:
        return org
    entry.fail("parent", problem)
    return replace(org, parent="")


def parent_chain(org_id: str, parent_of: Callable[[str], str]) -> tuple[list[str], bool]:
    """The ancestors of `org_id`, nearest first (`parent_of` gives "" for no parent), and whether the
    chain runs into a cycle (it then stops before the first org it would visit again)."""
    chain: list[str] = []
    seen = {org_id}
    parent = parent_of(org_id)
    while parent:
        if parent in seen:
            return chain, True
        chain.append(parent)
        seen.add(parent)
        parent = parent_of(parent)
    return chain, False


def _api_key(entry: Section) -> ApiKeyConfig | None:
    key = read_settings(entry, ApiKeyConfig)
    # Messages never quote a key: they are secrets.
    if not key.api_key:
        entry.fail("api_key", "required (an empty value usually means an unset environment variable)")
    if not key.app_key:
        entry.fail("app_key", "required (an empty value usually means an unset environment variable)")
    problem = tenant_id_problem(key.org) if key.org else "required: the org (tenant id) this key reads"
    if problem is not None:
        entry.fail("org", problem)
    if not key.api_key or not key.app_key or problem is not None:
        return None
    return key
