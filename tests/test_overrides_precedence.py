"""Each field resolves on its own: user-configurable > runtime file entry > "*" > defaults."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from distributor.overrides import (
    CostAttributionOverrides,
    OverridesSnapshot,
    TenantOverrides,
    parse_dimensions,
)
from distributor.overrides.model import DistinctCountOverrides, DistinctCountsOverrides, Source
from distributor.overrides.status import describe_tenant


def layer(dimensions: list[str] | None = None, max_cardinality: int | None = None) -> TenantOverrides:
    return TenantOverrides(
        CostAttributionOverrides(
            dimensions=parse_dimensions(dimensions) if dimensions is not None else None,
            max_cardinality=max_cardinality,
        )
    )


SNAPSHOT = OverridesSnapshot(
    defaults=layer(["service.name"], 0),
    per_tenant=MappingProxyType(
        {
            "*": layer(max_cardinality=7),
            "file-dims": layer(["team"]),
            "file-both": layer(["team"], 3),
            "both": layer(["team"], 3),
        }
    ),
    user=MappingProxyType({"user-only": layer(["app"]), "both": layer(["app"])}),
)

# tenant, expected dimensions' labels, their source, expected max_cardinality, its source
TABLE = [
    ("unlisted", ["service_name"], Source.DEFAULTS, 7, Source.WILDCARD),
    ("file-dims", ["team"], Source.RUNTIME_FILE, 7, Source.WILDCARD),
    ("file-both", ["team"], Source.RUNTIME_FILE, 3, Source.RUNTIME_FILE),
    ("user-only", ["app"], Source.USER_CONFIGURABLE, 7, Source.WILDCARD),
    ("both", ["app"], Source.USER_CONFIGURABLE, 3, Source.RUNTIME_FILE),
]


@pytest.mark.parametrize(
    ("tenant", "labels", "labels_from", "cardinality", "cardinality_from"),
    TABLE,
    ids=[row[0] for row in TABLE],
)
def test_precedence_table(
    tenant: str, labels: list[str], labels_from: Source, cardinality: int, cardinality_from: Source
) -> None:
    resolved = SNAPSHOT.explain(tenant)
    assert [d.label for d in resolved.limits.dimensions] == labels
    assert resolved.limits.max_cardinality == cardinality
    assert {name: source for name, source in resolved.sources.items() if "cost" in name} == {
        "cost_attribution.dimensions": labels_from,
        "cost_attribution.max_cardinality": cardinality_from,
        **{
            f"cost_attribution.distinct_counts.{kind}.{leaf}": Source.DEFAULTS
            for kind in ("sessions", "hosts")
            for leaf in ("enabled", "attributes")
        },
    }
    assert SNAPSHOT.for_tenant(tenant) == resolved.limits


def test_tenants_with_overrides_exclude_the_wildcard() -> None:
    assert SNAPSHOT.tenants() == ["both", "file-both", "file-dims", "user-only"]


def test_describe_tenant_shows_values_and_sources() -> None:
    described = describe_tenant(SNAPSHOT, "both")
    assert described["ingestion"]["rate_limit_bytes"] == {"value": 15_000_000, "source": "defaults"}
    assert described["forwarders"] == {"value": [], "source": "defaults"}
    del described["ingestion"], described["forwarders"]
    assert described == {
        "tenant": "both",
        "cost_attribution": {
            "dimensions": {"value": {"app": "app"}, "source": "user_configurable"},
            "max_cardinality": {"value": 3, "source": "runtime_file"},
            "distinct_counts": {
                "sessions": {
                    "enabled": {"value": False, "source": "defaults"},
                    "attributes": {
                        "value": ["session.id", "session_id", "splunk.rumSessionId"],
                        "source": "defaults",
                    },
                },
                "hosts": {
                    "enabled": {"value": False, "source": "defaults"},
                    "attributes": {"value": ["host.name", "host.id"], "source": "defaults"},
                },
            },
        },
    }


def test_distinct_counts_resolve_field_by_field_and_count_only_when_enabled() -> None:
    def counts(sessions: DistinctCountOverrides, hosts: DistinctCountOverrides) -> TenantOverrides:
        return TenantOverrides(
            cost_attribution=CostAttributionOverrides(
                distinct_counts=DistinctCountsOverrides(sessions, hosts)
            )
        )

    snapshot = OverridesSnapshot(
        defaults=counts(DistinctCountOverrides(), DistinctCountOverrides(attributes=("host.id",))),
        per_tenant={
            "*": counts(DistinctCountOverrides(enabled=True), DistinctCountOverrides()),
            "web": counts(
                DistinctCountOverrides(attributes=("rum.session",)), DistinctCountOverrides(enabled=True)
            ),
        },
    )
    web, other = snapshot.explain("web"), snapshot.explain("other")
    assert (web.limits.session_attributes, web.limits.host_attributes) == (("rum.session",), ("host.id",))
    assert (other.limits.session_attributes, other.limits.host_attributes) == (
        ("session.id", "session_id", "splunk.rumSessionId"),
        (),
    )
    assert other.limits.configured_host_attributes == ("host.id",)
    assert web.sources["cost_attribution.distinct_counts.sessions.enabled"] == Source.WILDCARD
    assert web.sources["cost_attribution.distinct_counts.sessions.attributes"] == Source.RUNTIME_FILE
    assert web.sources["cost_attribution.distinct_counts.hosts.attributes"] == Source.DEFAULTS
