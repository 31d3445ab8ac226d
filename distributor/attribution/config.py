"""`usage_attribution:` settings: the usage ledger and the Datadog-compatible Usage Attribution API.

Semantics: ../shared/specs/usage-attribution-api.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributor.common.config_reader import Section, format_duration
from distributor.ledger.config import LEDGER_BACKENDS, LedgerConfig
from distributor.overrides import tenant_id_problem

USAGE_READ = "usage_read"


@dataclass(frozen=True, slots=True)
class ApiRateLimit:
    requests: int = 60
    period: float = 60.0


@dataclass(frozen=True, slots=True)
class AttributionApiConfig:
    page_size: int = 500
    rate_limit: ApiRateLimit = field(default_factory=ApiRateLimit)
    # How long a next_record_id stays valid: the ledger keeps each flush apart this long so a paginated
    # answer is a consistent snapshot even while usage arrives.
    cursor_ttl: float = 3600.0


@dataclass(frozen=True, slots=True)
class OrgConfig:
    org_id: str  # the tenant id
    name: str = ""  # "" = the tenant id
    public_id: str = ""  # "" = derived from the tenant id
    parent: str = ""  # an org id, or "" for none


@dataclass(frozen=True, slots=True)
class ApiKeyConfig:
    api_key: str
    app_key: str
    org: str
    scopes: tuple[str, ...] = (USAGE_READ,)

    def __repr__(self) -> str:  # keys are secrets: never in logs or tracebacks
        return f"ApiKeyConfig(org={self.org!r}, scopes={self.scopes!r})"


@dataclass(frozen=True, slots=True)
class UsageAttributionConfig:
    enabled: bool = False
    region: str = "local"
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    api: AttributionApiConfig = field(default_factory=AttributionApiConfig)
    orgs: tuple[OrgConfig, ...] = ()
    keys: tuple[ApiKeyConfig, ...] = ()


def parse_usage_attribution(top: Section, path: Path) -> UsageAttributionConfig:
    defaults = UsageAttributionConfig()
    section = top.section("usage_attribution", ("enabled", "region", "ledger", "api", "orgs", "keys"))
    ledger_section = section.section("ledger", ("backend", "sqlite", "flush_period", "retention_months"))
    backend = ledger_section.string("backend", defaults.ledger.backend)
    if backend not in LEDGER_BACKENDS:
        ledger_section.fail("backend", f"expected one of {', '.join(LEDGER_BACKENDS)}, got {backend!r}")
        backend = defaults.ledger.backend
    sqlite = ledger_section.section("sqlite", ("path",))
    sqlite_path = sqlite.string("path", str(defaults.ledger.sqlite_path))
    if not sqlite_path:
        sqlite.fail("path", "must be a file path")
        sqlite_path = str(defaults.ledger.sqlite_path)
    flush_period = ledger_section.duration("flush_period", defaults.ledger.flush_period)
    if flush_period <= 0:
        ledger_section.fail("flush_period", "must be greater than 0")
        flush_period = defaults.ledger.flush_period
    ledger = LedgerConfig(
        backend=backend,
        sqlite_path=(path.parent / sqlite_path).resolve(),
        flush_period=flush_period,
        retention_months=ledger_section.integer(
            "retention_months", defaults.ledger.retention_months, minimum=1, maximum=120
        ),
    )

    api_section = section.section("api", ("page_size", "rate_limit", "cursor_ttl"))
    rate_section = api_section.section("rate_limit", ("requests", "period"))
    rate_limit = ApiRateLimit(
        requests=rate_section.integer("requests", defaults.api.rate_limit.requests, minimum=0),
        period=rate_section.duration("period", defaults.api.rate_limit.period),
    )
    if rate_limit.period <= 0:
        rate_section.fail("period", "must be greater than 0")
        rate_limit = ApiRateLimit(rate_limit.requests)
    cursor_ttl = api_section.duration("cursor_ttl", defaults.api.cursor_ttl)
    if cursor_ttl <= 0:
        api_section.fail("cursor_ttl", "must be greater than 0")
        cursor_ttl = defaults.api.cursor_ttl
    api = AttributionApiConfig(
        page_size=api_section.integer("page_size", defaults.api.page_size, minimum=1, maximum=10_000),
        rate_limit=rate_limit,
        cursor_ttl=cursor_ttl,
    )

    orgs = _orgs(section.section("orgs", None))
    keys = _keys(section)
    return UsageAttributionConfig(
        enabled=section.boolean("enabled", defaults.enabled),
        region=section.string("region", defaults.region) or defaults.region,
        ledger=ledger,
        api=api,
        orgs=orgs,
        keys=keys,
    )


def _orgs(orgs_section: Section) -> tuple[OrgConfig, ...]:
    orgs: dict[str, OrgConfig] = {}
    for org_id, node in orgs_section.items():
        problem = tenant_id_problem(org_id)
        if problem is not None:
            orgs_section.fail_at(node, f"an org is a tenant: {problem}")
            continue
        entry = orgs_section.section(org_id, ("name", "public_id", "parent"))
        parent = entry.string("parent", "")
        if parent:
            parent_problem = tenant_id_problem(parent)
            if parent_problem is not None:
                entry.fail("parent", parent_problem)
                parent = ""
            elif parent == org_id:
                entry.fail("parent", "an org cannot be its own parent")
                parent = ""
        orgs[org_id] = OrgConfig(org_id, entry.string("name", ""), entry.string("public_id", ""), parent)
    # A cycle would make an org its own descendant.
    for org_id in orgs:
        chain, cyclic = parent_chain(org_id, lambda org: orgs[org].parent if org in orgs else "")
        if cyclic:
            orgs_section.section(org_id, None).fail("parent", f"the parents of {org_id!r} form a cycle")
            return tuple(o for o in orgs.values() if o.org_id != org_id and o.org_id not in chain)
    public_ids: dict[str, str] = {}
    for org in orgs.values():
        if org.public_id and org.public_id in public_ids:
            orgs_section.section(org.org_id, None).fail(
                "public_id", f"public_id {org.public_id!r} is also used by org {public_ids[org.public_id]!r}"
            )
        public_ids[org.public_id] = org.org_id
    return tuple(orgs.values())


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


def _keys(section: Section) -> tuple[ApiKeyConfig, ...]:
    node = section.node("keys")
    if node is None or node.value is None:
        return ()
    if not isinstance(node.value, list):
        section.fail("keys", "expected a list of {api_key, app_key, org, scopes}")
        return ()
    keys: list[ApiKeyConfig] = []
    for index, item in enumerate(node.value):
        entry = Section(
            item,
            f"usage_attribution.keys[{index}]",
            section.file,
            ("api_key", "app_key", "org", "scopes"),
            section.problems,
        )
        api_key, app_key, org = (
            entry.string("api_key", ""),
            entry.string("app_key", ""),
            entry.string("org", ""),
        )
        # Messages never quote a key: they are secrets.
        if not api_key:
            entry.fail("api_key", "required (an empty value usually means an unset environment variable)")
        if not app_key:
            entry.fail("app_key", "required (an empty value usually means an unset environment variable)")
        problem = tenant_id_problem(org) if org else "required: the org (tenant id) this key reads"
        if problem is not None:
            entry.fail("org", problem)
        scopes = _scopes(entry)
        if not api_key or not app_key or problem is not None:
            continue
        if any(k.api_key == api_key and k.app_key == app_key for k in keys):
            entry.fail("api_key", "this api_key/app_key pair is configured twice")
            continue
        keys.append(ApiKeyConfig(api_key, app_key, org, scopes))
    return tuple(keys)


def _scopes(entry: Section) -> tuple[str, ...]:
    node = entry.node("scopes")
    if node is None or node.value is None:
        return (USAGE_READ,)
    if not isinstance(node.value, list) or not all(isinstance(s.value, str) for s in node.value):
        entry.fail("scopes", "expected a list of scope names, e.g. [usage_read]")
        return ()
    return tuple(str(s.value) for s in node.value)


def usage_attribution_as_data(config: UsageAttributionConfig) -> dict[str, Any]:
    """The YAML shape for /status/config; keys masked."""
    return {
        "enabled": config.enabled,
        "region": config.region,
        "ledger": {
            "backend": config.ledger.backend,
            "sqlite": {"path": str(config.ledger.sqlite_path)},
            "flush_period": format_duration(config.ledger.flush_period),
            "retention_months": config.ledger.retention_months,
        },
        "api": {
            "page_size": config.api.page_size,
            "rate_limit": {
                "requests": config.api.rate_limit.requests,
                "period": format_duration(config.api.rate_limit.period),
            },
            "cursor_ttl": format_duration(config.api.cursor_ttl),
        },
        "orgs": {
            org.org_id: {"name": org.name, "public_id": org.public_id, "parent": org.parent}
            for org in config.orgs
        },
        "keys": [
            {"api_key": "<secret>", "app_key": "<secret>", "org": key.org, "scopes": list(key.scopes)}
            for key in config.keys
        ],
    }
