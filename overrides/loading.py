"""Reading overrides: the `defaults` block of the main config and the per-tenant runtime file."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from types import MappingProxyType

from distributor.common.config_reader import ConfigError, Located, Section, decode_text, parse_yaml_text
from distributor.overrides.dimensions import DimensionError, parse_dimensions
from distributor.overrides.model import (
    WILDCARD_TENANT,
    CostAttributionOverrides,
    IngestionOverrides,
    OverridesSnapshot,
    TenantOverrides,
)
from distributor.overrides.tenant_ids import tenant_id_problem


def _keys(layer: type) -> tuple[str, ...]:
    """An overrides layer is written with its field names as keys."""
    return tuple(field.name for field in fields(layer))


TENANT_KEYS = _keys(TenantOverrides)
COST_ATTRIBUTION_KEYS = _keys(CostAttributionOverrides)
INGESTION_KEYS = _keys(IngestionOverrides)


def parse_tenant_overrides(
    section: Section, forwarder_names: Collection[str] | None = None
) -> TenantOverrides:
    """One tenant's block (or `defaults`): only the fields written are set, the rest inherit.

    `forwarder_names` are the forwarders the service has configured; a name outside them is an error
    (None: not checked, for callers that validate an overrides file on its own)."""
    cost = section.section("cost_attribution", COST_ATTRIBUTION_KEYS)
    dimensions = None
    node = cost.node("dimensions")
    if node is not None and node.value is not None:
        try:
            dimensions = parse_dimensions(_plain(node))
        except DimensionError as err:
            cost.fail("dimensions", str(err))  # when collecting problems: inherit instead
    max_cardinality = cost.integer("max_cardinality", -1)
    ingestion = section.section("ingestion", INGESTION_KEYS)
    ingestion_values = {key: ingestion.integer(key, -1) for key in INGESTION_KEYS}
    return TenantOverrides(
        cost_attribution=CostAttributionOverrides(
            dimensions=dimensions, max_cardinality=None if max_cardinality < 0 else max_cardinality
        ),
        ingestion=IngestionOverrides(
            **{key: None if value < 0 else value for key, value in ingestion_values.items()}
        ),
        forwarders=_forwarders(section, forwarder_names),
    )


def _forwarders(section: Section, known: Collection[str] | None) -> tuple[str, ...] | None:
    node = section.node("forwarders")
    if node is None or node.value is None:
        return None
    if not isinstance(node.value, list):
        section.fail("forwarders", "expected a list of forwarder names")
        return None
    names: list[str] = []
    for item in node.value:
        name = item.value
        if not isinstance(name, str) or not name:
            section.fail_at(item, f"expected a forwarder name, got {name!r}")
        elif known is not None and name not in known:
            listed = ", ".join(sorted(known)) or "none are configured"
            section.fail_at(item, f"unknown forwarder {name!r} (distributor.forwarders: {listed})")
        elif name in names:
            section.fail_at(item, f"forwarder {name!r} is listed twice")
        else:
            names.append(name)
    return tuple(names)


def parse_per_tenant_file(
    data: bytes,
    file: str,
    defaults: TenantOverrides,
    expand_env: bool = False,
    problems: list[ConfigError] | None = None,
    forwarder_names: Collection[str] | None = None,
) -> OverridesSnapshot:
    """Validate the runtime file's content as a whole (the reloader hashes exactly these bytes)."""
    text = decode_text(data, file, expand_env)
    if not text.strip():
        # Usually a file caught between truncate and write: applying it would drop every tenant's
        # overrides at once, so an empty file is an error and `overrides: {}` says "none" explicitly.
        raise ConfigError(file, None, "", "file is empty (write `overrides: {}` for no per-tenant overrides)")
    root = parse_yaml_text(text, file)
    top = Section(root, "", file, ("overrides",), problems)
    tenants = top.section("overrides", None)  # keys are tenant ids, checked below
    per_tenant: dict[str, TenantOverrides] = {}
    for tenant, entry in tenants.items():
        problem = None if tenant == WILDCARD_TENANT else tenant_id_problem(tenant)
        if problem:
            tenants.fail_at(entry, problem)
            continue
        per_tenant[tenant] = parse_tenant_overrides(
            Section(entry, entry.path, file, TENANT_KEYS, problems), forwarder_names
        )
    return OverridesSnapshot(defaults=defaults, per_tenant=MappingProxyType(per_tenant), source=file)


def _plain(node: Located) -> object:
    """Strip line information: dimension parsing works on plain values (map order is kept)."""
    value = node.value
    if isinstance(value, dict):
        return {key: _plain(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_plain(child) for child in value]
    return value


__all__ = ["ConfigError", "parse_per_tenant_file", "parse_tenant_overrides"]
