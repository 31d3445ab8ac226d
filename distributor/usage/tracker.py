"""The cost-attribution usage tracker: exact protobuf bytes per (tenant, label values).

Semantics: ../shared/specs/usage-tracker.md. `observe` is performance sensitive: it runs on every
request, after the full validating decode (which alone costs ~0.55 us per span, see distributor/wire.py),
so everything here avoids touching span objects unless a span-level dimension forces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from overrides import Dimension, Scope, TenantLimits

from distributor.config import CostAttributionConfig
from distributor.traces import ReceivedTraces
from distributor.wire import LazyResourceSpans, framed_size

MISSING = "__missing__"
OVERFLOW = "__overflow__"
TRACKER_NAME = "cost-attribution"

Clock = Callable[[], float]


def escape_label_value(value: str) -> str:
    """Prometheus text and OpenMetrics escaping for label values: backslash, quote, newline."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


class _DimensionPlan:
    """Dimensions compiled for the hot path; built once per distinct dimension set."""

    def __init__(self, dimensions: tuple[Dimension, ...]) -> None:
        self.labels: tuple[str, ...] = tuple(sorted({d.label for d in dimensions}))
        # Per label, the attributes to try at each level, in configuration order (combining rule).
        self.resource_keys = tuple(
            tuple(d.attribute for d in dimensions if d.label == label and d.scope is not Scope.SPAN)
            for label in self.labels
        )
        self.span_keys = tuple(
            tuple(d.attribute for d in dimensions if d.label == label and d.scope is not Scope.RESOURCE)
            for label in self.labels
        )
        self.resource_wanted = frozenset(k for keys in self.resource_keys for k in keys)
        self.span_wanted = frozenset(k for keys in self.span_keys for k in keys)
        # A span whose encoding does not contain a key's UTF-8 bytes cannot carry that attribute,
        # whatever the varint framing: a C-speed `in` spares the ~1 us of reading the span object.
        self.span_needles = tuple(sorted(k.encode("utf-8") for k in self.span_wanted))
        names = sorted((*self.labels, "tenant", "tracker"))
        self._tenant_position = names.index("tenant")
        self._tracker_position = names.index("tracker")
        self._names = names

    def render(self, tenant: str, values: tuple[str, ...]) -> str:
        """The series' label set as exposed: every label sorted, values escaped."""
        rendered = [escape_label_value(v) for v in values]
        rendered.insert(self._tenant_position, escape_label_value(tenant))
        rendered.insert(self._tracker_position, TRACKER_NAME)
        return ",".join(f'{name}="{value}"' for name, value in zip(self._names, rendered, strict=True))

    def resource_values(self, resource: Any) -> tuple[str, ...]:
        found: dict[str, str] = {}
        wanted = self.resource_wanted
        if wanted:
            for kv in resource.attributes:
                key = kv.key
                if key in wanted and key not in found:
                    value = kv.value.string_value  # "" for any other value type: treated as absent
                    if value:
                        found[key] = value
        return tuple(next((found[k] for k in keys if k in found), MISSING) for keys in self.resource_keys)

    def span_values(self, span: Any, resource_values: tuple[str, ...]) -> tuple[str, ...]:
        found: dict[str, str] = {}
        wanted = self.span_wanted
        for kv in span.attributes:
            key = kv.key
            if key in wanted and key not in found:
                value = kv.value.string_value
                if value:
                    found[key] = value
        if not found:
            return resource_values
        return tuple(
            next((found[k] for k in keys if k in found), inherited)
            for keys, inherited in zip(self.span_keys, resource_values, strict=True)
        )


class _Series:
    __slots__ = ("total", "updated")

    def __init__(self, updated: float) -> None:
        self.total = 0
        self.updated = updated


class _TenantUsage:
    __slots__ = ("overflow_bytes", "overflow_keys", "series")

    def __init__(self) -> None:
        # Keyed by the rendered label set: unique per series, and what a scrape writes anyway.
        self.series: dict[str, _Series] = {}
        # Usually one; a second appears only while series of an older dimension set live on.
        self.overflow_keys: set[str] = set()
        self.overflow_bytes = 0

    def active_series(self) -> int:
        return len(self.series) - len(self.overflow_keys)


@dataclass(frozen=True, slots=True)
class TenantUsageStats:
    tenant: str
    active_series: int
    overflow_bytes: int


def _round_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


class UsageTracker:
    def __init__(self, config: CostAttributionConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._tenants: dict[str, _TenantUsage] = {}
        self._plans: dict[tuple[Dimension, ...], _DimensionPlan] = {}

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def _plan(self, dimensions: tuple[Dimension, ...]) -> _DimensionPlan:
        plan = self._plans.get(dimensions)
        if plan is None:
            plan = self._plans[dimensions] = _DimensionPlan(dimensions)
        return plan

    def observe(self, tenant: str, traces: ReceivedTraces, limits: TenantLimits) -> None:
        """Attribute every span's bytes of one validated request to its series."""
        if not self.config.enabled or not limits.dimensions or traces.span_count == 0:
            return
        plan = self._plan(limits.dimensions)
        pending = self._attribute(plan, traces)
        self._apply(tenant, plan, pending, limits.max_cardinality or self.config.max_cardinality)

    def _attribute(self, plan: _DimensionPlan, traces: ReceivedTraces) -> dict[tuple[str, ...], int]:
        pending: dict[tuple[str, ...], int] = {}
        encodings = traces.resource_spans_encodings
        needles = plan.span_needles
        for batch, encoded in zip(traces.request.resource_spans, encodings, strict=True):
            span_count = sum(len(scope.spans) for scope in batch.scope_spans)
            if span_count == 0:
                continue
            resource_values = plan.resource_values(batch.resource)
            if not needles:
                # Every span of the batch shares one series, so span bytes plus portions add up to
                # the batch's encoded size exactly: no per-span work at all.
                pending[resource_values] = pending.get(resource_values, 0) + len(encoded)
                continue
            self._attribute_spans(plan, batch, encoded, span_count, resource_values, pending)
        return pending

    def _attribute_spans(
        self,
        plan: _DimensionPlan,
        batch: Any,
        encoded: bytes,
        span_count: int,
        resource_values: tuple[str, ...],
        pending: dict[tuple[str, ...], int],
    ) -> None:
        needles = plan.span_needles
        single_needle = needles[0] if len(needles) == 1 else None
        span_bytes: dict[tuple[str, ...], int] = {}
        span_counts: dict[tuple[str, ...], int] = {}
        first_values: tuple[str, ...] | None = None
        lazy_batch = LazyResourceSpans.FromString(encoded)
        for lazy_scope, scope in zip(lazy_batch.scope_spans, batch.scope_spans, strict=True):
            decoded_spans = None
            for index, raw in enumerate(lazy_scope.spans):
                size = len(raw)
                framed = size + 2 if size < 0x80 else framed_size(size)
                if (raw.find(single_needle) >= 0) if single_needle is not None else _contains_any(raw, needles):
                    if decoded_spans is None:
                        decoded_spans = scope.spans
                    values = plan.span_values(decoded_spans[index], resource_values)
                else:
                    values = resource_values
                if first_values is None:
                    first_values = values
                span_bytes[values] = span_bytes.get(values, 0) + framed
                span_counts[values] = span_counts.get(values, 0) + 1
        assert first_values is not None
        # Resource, scopes and framing are shared: each span gets an even portion, and the first
        # span takes the rounding remainder so the batch total is exactly its encoded size.
        shared = len(encoded) - sum(span_bytes.values())
        portion = _round_half_even(shared, span_count)
        span_bytes[first_values] += shared - portion * span_count
        for values, total in span_bytes.items():
            pending[values] = pending.get(values, 0) + total + portion * span_counts[values]

    def _apply(
        self, tenant: str, plan: _DimensionPlan, pending: dict[tuple[str, ...], int], max_cardinality: int
    ) -> None:
        usage = self._tenants.get(tenant)
        if usage is None:
            usage = self._tenants[tenant] = _TenantUsage()
        now = self._clock()
        series = usage.series
        for values, total in pending.items():
            key = plan.render(tenant, values)
            entry = series.get(key)
            if entry is None:
                if usage.active_series() >= max_cardinality:
                    key = plan.render(tenant, (OVERFLOW,) * len(values))
                    usage.overflow_keys.add(key)
                    usage.overflow_bytes += total
                    entry = series.get(key)
                if entry is None:
                    entry = series[key] = _Series(now)
            entry.total += total
            entry.updated = now

    def purge_stale(self) -> int:
        """Delete series not updated for stale_duration; returns how many were deleted."""
        cutoff = self._clock() - self.config.stale_duration
        deleted = 0
        for tenant in list(self._tenants):
            usage = self._tenants[tenant]
            stale = [key for key, entry in usage.series.items() if entry.updated < cutoff]
            for key in stale:
                del usage.series[key]
                usage.overflow_keys.discard(key)
            deleted += len(stale)
            if not usage.series:
                del self._tenants[tenant]
        return deleted

    def series(self) -> Iterator[tuple[str, int]]:
        """(rendered label set, bytes) for every live series."""
        for usage in self._tenants.values():
            for key, entry in usage.series.items():
                yield key, entry.total

    def stats(self) -> list[TenantUsageStats]:
        return [
            TenantUsageStats(tenant, usage.active_series(), usage.overflow_bytes)
            for tenant, usage in self._tenants.items()
        ]


def _contains_any(raw: bytes, needles: tuple[bytes, ...]) -> bool:
    return any(needle in raw for needle in needles)
