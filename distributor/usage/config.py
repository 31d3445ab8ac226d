"""`distributor.usage` settings: the usage tracker, under `cost_attribution` as in Tempo."""

from __future__ import annotations

from typing import Any

from distributor.common.config_fields import read_settings, render_settings, setting, settings
from distributor.common.config_reader import Section


@settings
class CostAttributionConfig:
    enabled: bool = setting(default=False)
    max_cardinality: int = setting(default=10_000, positive=True)
    stale_duration: float = setting(default=15 * 60.0, positive=True)
    # Bytes of UTF-8 per label value; a longer value is cut (docs/usage-tracker.md, "Values"). 32 at
    # least, so a cut value keeps 15 bytes of its start beside its 17-byte digest suffix.
    max_label_value_bytes: int = setting(default=256, minimum=32)


@settings
class UsageConfig:
    """The `distributor.usage` section as written; the service keeps only its cost_attribution."""

    cost_attribution: CostAttributionConfig = setting(default_factory=CostAttributionConfig)


def parse_usage(section: Section) -> CostAttributionConfig:
    return read_settings(section, UsageConfig).cost_attribution


def usage_as_data(config: CostAttributionConfig) -> dict[str, Any]:
    return render_settings(UsageConfig(config))
