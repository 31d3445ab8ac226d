"""`distributor.usage.cost_attribution` settings: the usage tracker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CostAttributionConfig:
    enabled: bool = False
    max_cardinality: int = 10_000
    stale_duration: float = 15 * 60.0
