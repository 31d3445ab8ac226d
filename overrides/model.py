"""Per-tenant limits: what can be overridden, and how a tenant's entry merges over the defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import Any

from distributor.overrides.dimensions import Dimension

WILDCARD_TENANT = "*"

# Tempo's ingestion.rate_strategy: with `local` each replica applies a tenant's rate on its own; with
# `global` the rate is divided among the healthy replicas of the distributor ring (the burst is not).
RATE_STRATEGY_LOCAL = "local"
RATE_STRATEGY_GLOBAL = "global"
RATE_STRATEGIES = (RATE_STRATEGY_LOCAL, RATE_STRATEGY_GLOBAL)


@dataclass(frozen=True, slots=True)
class DistinctCountOverrides:
    """A layer of one distinct count's settings; None means "not set here, inherit"."""

    enabled: bool | None = None
    attributes: tuple[str, ...] | None = None  # tried in order: on the span, then on the resource


@dataclass(frozen=True, slots=True)
class DistinctCountsOverrides:
    sessions: DistinctCountOverrides = field(default_factory=DistinctCountOverrides)
    hosts: DistinctCountOverrides = field(default_factory=DistinctCountOverrides)


# What identifies a session: the semantic conventions' `session.id` (OpenTelemetry's web, Android and
# iOS SDKs), older Grafana Faro's `session_id`, Splunk RUM's `splunk.rumSessionId`. A host: the resource's
# `host.name`, else `host.id`.
DEFAULT_SESSION_ATTRIBUTES = ("session.id", "session_id", "splunk.rumSessionId")
DEFAULT_HOST_ATTRIBUTES = ("host.name", "host.id")


@dataclass(frozen=True, slots=True)
class CostAttributionOverrides:
    """A layer of cost-attribution settings; None means "not set here, inherit"."""

    dimensions: tuple[Dimension, ...] | None = None
    max_cardinality: int | None = None
    distinct_counts: DistinctCountsOverrides = field(default_factory=DistinctCountsOverrides)


@dataclass(frozen=True, slots=True)
class IngestionOverrides:
    """A layer of ingestion limits; None means "not set here, inherit"."""

    rate_strategy: str | None = None  # one of RATE_STRATEGIES
    rate_limit_bytes: int | None = None
    burst_size_bytes: int | None = None
    max_attribute_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class TenantOverrides:
    cost_attribution: CostAttributionOverrides = field(default_factory=CostAttributionOverrides)
    ingestion: IngestionOverrides = field(default_factory=IngestionOverrides)
    forwarders: tuple[str, ...] | None = None  # names of distributor.forwarders entries


# Tempo's defaults: 15 MB/s with a 20 MB burst per tenant, attributes cut at 2048 bytes.
DEFAULT_RATE_LIMIT_BYTES = 15_000_000
DEFAULT_BURST_SIZE_BYTES = 20_000_000
DEFAULT_MAX_ATTRIBUTE_BYTES = 2048


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """The effective values for one tenant, every field resolved."""

    dimensions: tuple[Dimension, ...]
    max_cardinality: int  # 0 = use the tracker's setting
    rate_strategy: str = RATE_STRATEGY_LOCAL
    rate_limit_bytes: int = DEFAULT_RATE_LIMIT_BYTES  # 0 = no rate limit
    burst_size_bytes: int = DEFAULT_BURST_SIZE_BYTES
    max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTE_BYTES  # 0 = never truncate
    forwarders: tuple[str, ...] = ()
    # The attributes distinct sessions and hosts are counted by; () when that count is off.
    session_attributes: tuple[str, ...] = ()
    host_attributes: tuple[str, ...] = ()
    # The same attributes whether their counts are on or off (what the status shows).
    sessions_enabled: bool = False
    hosts_enabled: bool = False
    configured_session_attributes: tuple[str, ...] = DEFAULT_SESSION_ATTRIBUTES
    configured_host_attributes: tuple[str, ...] = DEFAULT_HOST_ATTRIBUTES


class Source(Enum):
    """Where an effective value came from, highest precedence first."""

    USER_CONFIGURABLE = "user_configurable"
    RUNTIME_FILE = "runtime_file"
    WILDCARD = "wildcard"
    DEFAULTS = "defaults"


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    limits: TenantLimits
    sources: Mapping[str, Source]  # "cost_attribution.dimensions" -> where it came from


@dataclass(frozen=True)
class OverridesSnapshot:
    """One immutable, fully validated set of overrides; swapped as a whole, never edited in place.

    Each field resolves on its own: the tenant's user-configurable value, else its entry in the
    runtime file, else the runtime file's "*" entry, else the defaults.
    """

    defaults: TenantOverrides
    per_tenant: Mapping[str, TenantOverrides] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None  # the per-tenant file it was read from, if any
    user: Mapping[str, TenantOverrides] = field(default_factory=lambda: MappingProxyType({}))
    # Resolved once per snapshot, not per request: the receiver asks on every request.
    _resolved: dict[str, ResolvedLimits] = field(init=False, repr=False, compare=False)
    _unlisted: ResolvedLimits = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        resolved = {tenant: self._resolve(tenant) for tenant in self.tenants()}
        object.__setattr__(self, "_resolved", resolved)  # frozen: set once, here
        object.__setattr__(self, "_unlisted", self._resolve(None))

    def tenants(self) -> list[str]:
        """Tenants with overrides of their own (the "*" entry is not a tenant)."""
        return sorted((set(self.per_tenant) | set(self.user)) - {WILDCARD_TENANT})

    def for_tenant(self, tenant: str) -> TenantLimits:
        return self._resolved.get(tenant, self._unlisted).limits

    def explain(self, tenant: str) -> ResolvedLimits:
        return self._resolved.get(tenant, self._unlisted)

    def _resolve(self, tenant: str | None) -> ResolvedLimits:
        layers: list[tuple[Source, TenantOverrides | None]] = [
            (Source.USER_CONFIGURABLE, self.user.get(tenant) if tenant else None),
            (Source.RUNTIME_FILE, self.per_tenant.get(tenant) if tenant else None),
            (Source.WILDCARD, self.per_tenant.get(WILDCARD_TENANT)),
        ]
        sources: dict[str, Source] = {}

        def pick(name: str, default: object) -> Any:
            """`name` is "section.field", or "field" for a top-level one."""
            section, _, leaf = name.rpartition(".")

            def read(layer: TenantOverrides) -> Any:
                node: Any = layer
                for name in section.split(".") if section else ():
                    node = getattr(node, name)
                return getattr(node, leaf)

            for source, layer in layers:
                value = read(layer) if layer is not None else None
                if value is not None:
                    sources[name] = source
                    return value
            sources[name] = Source.DEFAULTS
            value = read(self.defaults)
            return default if value is None else value

        limits = TenantLimits(
            dimensions=pick("cost_attribution.dimensions", ()),
            max_cardinality=pick("cost_attribution.max_cardinality", 0),
            rate_strategy=pick("ingestion.rate_strategy", RATE_STRATEGY_LOCAL),
            rate_limit_bytes=pick("ingestion.rate_limit_bytes", DEFAULT_RATE_LIMIT_BYTES),
            burst_size_bytes=pick("ingestion.burst_size_bytes", DEFAULT_BURST_SIZE_BYTES),
            max_attribute_bytes=pick("ingestion.max_attribute_bytes", DEFAULT_MAX_ATTRIBUTE_BYTES),
            forwarders=pick("forwarders", ()),
            sessions_enabled=(sessions := pick("cost_attribution.distinct_counts.sessions.enabled", False)),
            hosts_enabled=(hosts := pick("cost_attribution.distinct_counts.hosts.enabled", False)),
            configured_session_attributes=(
                session_attributes := pick(
                    "cost_attribution.distinct_counts.sessions.attributes", DEFAULT_SESSION_ATTRIBUTES
                )
            ),
            configured_host_attributes=(
                host_attributes := pick(
                    "cost_attribution.distinct_counts.hosts.attributes", DEFAULT_HOST_ATTRIBUTES
                )
            ),
        )
        limits = replace(
            limits,
            session_attributes=session_attributes if sessions else (),
            host_attributes=host_attributes if hosts else (),
        )
        return ResolvedLimits(limits, MappingProxyType(sources))
