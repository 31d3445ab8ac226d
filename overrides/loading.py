"""Reading overrides: the `defaults` block of the main config and the per-tenant runtime file."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from types import MappingProxyType

from distributor.common.config_reader import (
    ConfigError,
    ConfigNote,
    Foreign,
    Located,
    Section,
    decode_text,
    foreign_keys,
    parse_yaml_text,
    unexpanded_references,
)
from distributor.overrides.dimensions import DimensionError, parse_dimensions
from distributor.overrides.model import (
    RATE_STRATEGIES,
    RATE_STRATEGY_LOCAL,
    WILDCARD_TENANT,
    CostAttributionOverrides,
    DistinctCountOverrides,
    DistinctCountsOverrides,
    IngestionOverrides,
    OverridesSnapshot,
    TenantOverrides,
)
from distributor.overrides.tenant_ids import tenant_id_problem


def _keys(layer: type) -> tuple[str, ...]:
    """An overrides layer is written with its field names as keys."""
    return tuple(field.name for field in fields(layer))


COST_ATTRIBUTION_KEYS = _keys(CostAttributionOverrides)
DISTINCT_COUNTS_KEYS = _keys(DistinctCountsOverrides)
DISTINCT_COUNT_KEYS = _keys(DistinctCountOverrides)
INGESTION_KEYS = _keys(IngestionOverrides)
# The ingestion settings that are byte counts (rate_strategy is the one that is not).
INGESTION_BYTES_KEYS = tuple(key for key in INGESTION_KEYS if key != "rate_strategy")

# Tempo 2.x's legacy flat format, which it still reads (in the main file's `overrides:` block and in each
# tenant's entry of the per-tenant file): the flat name -> the `ingestion` key it stands for.
LEGACY_INGESTION_KEYS = {
    "ingestion_rate_strategy": "rate_strategy",
    "ingestion_rate_limit_bytes": "rate_limit_bytes",
    "ingestion_burst_size_bytes": "burst_size_bytes",
    "ingestion_max_attribute_bytes": "max_attribute_bytes",
}
# `forwarders` and `cost_attribution` have the same names in both formats.
TENANT_KEYS = _keys(TenantOverrides)
LEGACY_TENANT_KEYS = tuple(LEGACY_INGESTION_KEYS)

_INGESTER = "enforced by Tempo's ingesters, which this service does not have"
_OTHER_COMPONENTS = "enforced by Tempo components this service does not have"
_METRICS_GENERATOR = "Tempo's metrics-generator settings; this service has no metrics-generator"
_DISTRIBUTOR_ONLY = "a setting of Tempo's distributor this service does not implement"

# A tenant's settings that Tempo's other components enforce, in both formats: accepted (a Tempo overrides
# file loads as it is) and named in a warning.
TENANT_FOREIGN: Foreign = foreign_keys(
    {
        # The current format's sections
        "read": _OTHER_COMPONENTS,
        "compaction": _OTHER_COMPONENTS,
        "metrics_generator": _METRICS_GENERATOR,
        "global": _OTHER_COMPONENTS,
        "storage": _OTHER_COMPONENTS,
        # the legacy flat names
        "max_traces_per_user": _INGESTER,
        "max_global_traces_per_user": _INGESTER,
        "ingestion_tenant_shard_size": _DISTRIBUTOR_ONLY,
        "ingestion_artificial_delay": _DISTRIBUTOR_ONLY,
        "ingestion_retry_info_enabled": _DISTRIBUTOR_ONLY,
        "max_bytes_per_trace": _OTHER_COMPONENTS,
        "block_retention": _OTHER_COMPONENTS,
        "compaction_window": _OTHER_COMPONENTS,
        "compaction_disabled": _OTHER_COMPONENTS,
        "max_bytes_per_tag_values_query": _OTHER_COMPONENTS,
        "max_blocks_per_tag_values_query": _OTHER_COMPONENTS,
        "max_search_duration": _OTHER_COMPONENTS,
        "max_metrics_duration": _OTHER_COMPONENTS,
        "unsafe_query_hints": _OTHER_COMPONENTS,
        "parquet_dedicated_columns": _OTHER_COMPONENTS,
    },
    {"metrics_generator_": _METRICS_GENERATOR},
)
INGESTION_FOREIGN: Foreign = foreign_keys(
    {
        "max_traces_per_user": _INGESTER,
        "max_global_traces_per_user": _INGESTER,
        "tenant_shard_size": _DISTRIBUTOR_ONLY,
        "artificial_delay": _DISTRIBUTOR_ONLY,
        "retry_info_enabled": _DISTRIBUTOR_ONLY,
    }
)


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
    distinct = cost.section("distinct_counts", DISTINCT_COUNTS_KEYS)
    distinct_counts = DistinctCountsOverrides(
        sessions=_distinct_count(distinct, "sessions"), hosts=_distinct_count(distinct, "hosts")
    )
    ingestion = section.section("ingestion", INGESTION_KEYS, INGESTION_FOREIGN)
    ingestion_values = {key: ingestion.integer(key, -1) for key in INGESTION_BYTES_KEYS}
    rate_strategy = _rate_strategy(ingestion, "rate_strategy")
    for legacy, key in LEGACY_INGESTION_KEYS.items():
        if section.node(legacy) is None:
            continue
        if ingestion.node(key) is not None:
            section.fail(legacy, f"set twice: here and as ingestion.{key}; keep one")
        elif key == "rate_strategy":
            rate_strategy = _rate_strategy(section, legacy)
        else:
            ingestion_values[key] = section.integer(legacy, -1)
    return TenantOverrides(
        cost_attribution=CostAttributionOverrides(
            dimensions=dimensions,
            max_cardinality=None if max_cardinality < 0 else max_cardinality,
            distinct_counts=distinct_counts,
        ),
        ingestion=IngestionOverrides(
            rate_strategy=rate_strategy,
            **{key: None if value < 0 else value for key, value in ingestion_values.items()},
        ),
        forwarders=_forwarders(section, forwarder_names),
    )


# The longest attribute name and the most names a distinct count may try (OTLP keys are short; the list
# is searched on every span that may carry one).
MAX_DISTINCT_ATTRIBUTES = 8
MAX_DISTINCT_ATTRIBUTE_BYTES = 256


def _distinct_count(parent: Section, kind: str) -> DistinctCountOverrides:
    """`distinct_counts.<kind>`: `enabled` and `attributes`, each inherited where not written."""
    section = parent.section(kind, DISTINCT_COUNT_KEYS)
    enabled = section.boolean("enabled", False) if section.has("enabled") else None
    attributes: tuple[str, ...] | None = None
    node = section.node("attributes")
    if node is not None and node.value is not None:
        names = [item.value for item in node.value] if isinstance(node.value, list) else None
        if not names or not all(isinstance(name, str) and name for name in names):
            section.fail("attributes", "expected a non-empty list of attribute names")
        elif len(names) > MAX_DISTINCT_ATTRIBUTES:
            section.fail("attributes", f"{len(names)} names, at most {MAX_DISTINCT_ATTRIBUTES}")
        elif any(len(name.encode()) > MAX_DISTINCT_ATTRIBUTE_BYTES for name in names):
            section.fail("attributes", f"a name longer than {MAX_DISTINCT_ATTRIBUTE_BYTES} bytes")
        elif len(set(names)) < len(names):
            section.fail("attributes", "a name is listed twice")
        else:
            attributes = tuple(names)
    return DistinctCountOverrides(enabled=enabled, attributes=attributes)


def _rate_strategy(section: Section, key: str) -> str | None:
    """`local` or `global`; None when not written here (inherited)."""
    if not section.has(key):
        return None
    strategy = section.string(key, RATE_STRATEGY_LOCAL)
    if strategy not in RATE_STRATEGIES:
        section.fail(key, f"expected local or global, got {strategy!r}")
        return None
    return strategy


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
    notes: list[ConfigNote] | None = None,
) -> OverridesSnapshot:
    """Validate the runtime file's content as a whole (the reloader hashes exactly these bytes).

    Tempo's settings for its other components, in either format, are accepted and reported in `notes`,
    one note per setting however many tenants set it."""
    text = decode_text(data, file, expand_env)
    if not text.strip():
        # Usually a file caught between truncate and write: applying it would drop every tenant's
        # overrides at once, so an empty file is an error and `overrides: {}` says "none" explicitly.
        raise ConfigError(file, None, "", "file is empty (write `overrides: {}` for no per-tenant overrides)")
    root = parse_yaml_text(text, file)
    found: list[ConfigNote] = [] if expand_env else unexpanded_references(root, file)
    top = Section(root, "", file, ("overrides",), problems, found)
    tenants = top.section("overrides", None)  # keys are tenant ids, checked below
    per_tenant: dict[str, TenantOverrides] = {}
    ignored: dict[str, tuple[ConfigNote, int]] = {}  # setting -> its first note, how many tenants
    for tenant, entry in tenants.items():
        problem = None if tenant == WILDCARD_TENANT else tenant_id_problem(tenant)
        if problem:
            tenants.fail_at(entry, problem)
            continue
        tenant_notes: list[ConfigNote] = []
        per_tenant[tenant] = parse_tenant_overrides(
            Section(
                entry,
                entry.path,
                file,
                TENANT_KEYS,
                problems,
                tenant_notes,
                TENANT_FOREIGN,
                LEGACY_TENANT_KEYS,
            ),
            forwarder_names,
        )
        for note in tenant_notes:
            setting = note.key.removeprefix(entry.path)
            first, count = ignored.get(setting, (note, 0))
            ignored[setting] = (first, count + 1)
    for first, count in ignored.values():
        more = f" (and in {count - 1} more tenant{'s' if count > 2 else ''})" if count > 1 else ""
        found.append(ConfigNote(first.file, first.line, first.key, first.text + more))
    if notes is not None:
        notes.extend(sorted(found, key=lambda note: note.line or 0))
    return OverridesSnapshot(defaults=defaults, per_tenant=MappingProxyType(per_tenant), source=file)


def _plain(node: Located) -> object:
    """Strip line information: dimension parsing works on plain values (map order is kept)."""
    value = node.value
    if isinstance(value, dict):
        return {key: _plain(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_plain(child) for child in value]
    return value


__all__ = [
    "LEGACY_TENANT_KEYS",
    "TENANT_FOREIGN",
    "TENANT_KEYS",
    "ConfigError",
    "parse_per_tenant_file",
    "parse_tenant_overrides",
]
