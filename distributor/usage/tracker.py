"""The cost-attribution usage tracker: exact protobuf bytes per (tenant, label values).

Semantics: docs/usage-tracker.md. The request's bytes and spans per label values come from the scan that
validated it (distributor/ingest/scan.py); the tracker bounds the values, admits series against the
tenant's cardinality limit and keeps the counters.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from distributor.common.clock import Clock
from distributor.common.discards import DiscardReason
from distributor.common.distinct import DistinctCount, identity_hash
from distributor.common.usage import Usage
from distributor.common.utf8 import utf8_prefix
from distributor.ingest.scan import ScanPlan
from distributor.ingest.traces import ReceivedTraces
from distributor.ledger.ledger import HOSTS, SESSIONS, hour_of
from distributor.overrides import Dimension, Scope, TenantLimits
from distributor.usage.config import CostAttributionConfig

log = logging.getLogger(__name__)
MISSING = "__missing__"
OVERFLOW = "__overflow__"
TRACKER_NAME = "cost-attribution"
# A cut label value ends in "~" and this many hex digits of the SHA-256 of the whole value: 64 bits, so
# even 10,000 long values of one tenant sharing their first bytes all stay distinct series (collision
# odds about 3e-12; 8 digits would give about 1%, merging two tag sets' bills).
DIGEST_HEX_DIGITS = 16
_CUT_SUFFIX_BYTES = 1 + DIGEST_HEX_DIGITS


def bound_label_value(value: str, max_bytes: int) -> str:
    """`value` if its UTF-8 has at most `max_bytes` bytes; else its longest prefix that ends on a
    character boundary and leaves room for "~" and the first 16 hex digits of the SHA-256 of the whole
    value's UTF-8, so the result has at most `max_bytes` bytes and distinct values stay distinct."""
    encoded = value.encode("utf-8")
    if len(encoded) <= max_bytes:
        return value
    prefix = utf8_prefix(encoded, max_bytes - _CUT_SUFFIX_BYTES)
    return f"{prefix}~{hashlib.sha256(encoded).hexdigest()[:DIGEST_HEX_DIGITS]}"


def escape_label_value(value: str) -> str:
    """Prometheus text and OpenMetrics escaping for label values: backslash, quote, newline."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


# What a distinct count reads: (kind, its attributes in order, whether spans may carry them). Sessions
# are looked up on the span first, then on the resource; hosts and services are resource attributes.
DistinctPlan = tuple[tuple[str, tuple[str, ...], bool], ...]
SERVICES = "services"
SERVICE_ATTRIBUTES = ("service.name",)
# The kinds counted per series (services are counted per tenant).
SERIES_KINDS = (SESSIONS, HOSTS)


class _DimensionPlan:
    """Dimensions (and the distinct counts read with them) compiled for the hot path; built once per
    distinct setting.

    A distinct count is read by the same scan as the dimensions, as one more label after them: the
    scan's series are then per (label values, identities), which `split` turns back into usage per label
    values and the identities each saw. A request usually holds one session, host and service per
    resource, so this adds few series to a scan and costs the core nothing it does not do for a
    span-level dimension."""

    def __init__(
        self, dimensions: tuple[Dimension, ...], max_value_bytes: int, distinct: DistinctPlan = ()
    ) -> None:
        self.max_value_bytes = max_value_bytes
        # A character has at most 4 bytes of UTF-8: a value of this many characters or fewer is within
        # the limit without being encoded, which keeps the check to one len() per value.
        self.longest_unchecked = max_value_bytes // 4
        self.labels: tuple[str, ...] = tuple(sorted({d.label for d in dimensions}))
        self.kinds: tuple[str, ...] = tuple(kind for kind, _, _ in distinct)
        # Per label, the attributes to try at each level, in configuration order (combining rule).
        self.scan = ScanPlan(
            resource_keys=tuple(
                tuple(
                    d.attribute.encode() for d in dimensions if d.label == label and d.scope is not Scope.SPAN
                )
                for label in self.labels
            )
            + tuple(tuple(name.encode() for name in names) for _, names, _ in distinct),
            span_keys=tuple(
                tuple(
                    d.attribute.encode()
                    for d in dimensions
                    if d.label == label and d.scope is not Scope.RESOURCE
                )
                for label in self.labels
            )
            + tuple(
                tuple(name.encode() for name in names) if on_spans else () for _, names, on_spans in distinct
            ),
            missing=MISSING,
        )
        # The exposed label set as one format string: the labels sorted, `tenant` among them, the
        # tracker's name written in. Filling it is ~3x cheaper than joining the pairs per series, which
        # was a third of a 50-series request's own Python time.
        names = sorted((*self.labels, "tenant", "tracker"))
        fields = {label: f"{{{index}}}" for index, label in enumerate(self.labels)}
        fields["tenant"] = f"{{{len(self.labels)}}}"
        fields["tracker"] = TRACKER_NAME
        self._template = ",".join(f'{name}="{fields[name]}"' for name in names)

    def bounded(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """`values` with every value longer than max_label_value_bytes cut (docs: bounded length)."""
        return tuple(bound_label_value(value, self.max_value_bytes) for value in values)

    def render(self, tenant: str, values: tuple[str, ...]) -> str:
        """The series' label set as exposed: every label sorted, values escaped."""
        joined = "".join(values) + tenant
        if "\\" in joined or '"' in joined or "\n" in joined:
            return self._template.format(*map(escape_label_value, values), escape_label_value(tenant))
        return self._template.format(*values, tenant)

    def render_discarded(self, tenant: str, values: tuple[str, ...], reason: str) -> str:
        """A discarded-bytes series: the same labels plus `reason` (rare, so no precomputed order)."""
        labels = {**dict(zip(self.labels, values, strict=True)), "tenant": tenant, "tracker": TRACKER_NAME}
        labels["reason"] = reason
        return ",".join(f'{name}="{escape_label_value(labels[name])}"' for name in sorted(labels))


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


class _TenantDistinct:
    """A tenant's distinct counts of one UTC hour: per received series (by its rendered label set, so
    overflow and staleness apply as to its bytes) and kind, and the services of the whole tenant. A new
    hour starts a new one: the ledger keeps the history, the gauges show the hour in progress."""

    __slots__ = ("hour", "series", "services", "services_labels")

    def __init__(self, tenant: str, hour: int) -> None:
        self.hour = hour
        # Only series that exist (a subset of the tenant's received series) and kinds that were seen.
        self.series: dict[str, dict[str, DistinctCount]] = {}
        self.services = DistinctCount()
        self.services_labels = f'tenant="{escape_label_value(tenant)}",tracker="{TRACKER_NAME}"'


# Per kind (sessions, hosts, services), a tenant's gauges: rendered label sets and values in two lists.
DistinctGauges = dict[str, tuple[list[str], list[int]]]


@dataclass(frozen=True, slots=True)
class TenantUsageStats:
    tenant: str
    active_series: int
    overflow_bytes: int


# Per distinct kind, per label values, the identities a request carried (their identity_hash).
Identities = dict[str, dict[tuple[str, ...], set[int]]]


class Attribution(NamedTuple):
    """One request's bytes per series, computed once: recorded as received when the request is
    accepted, or as discarded (by reason) when it is refused or later lost. (A NamedTuple: one is made
    per request, and a frozen dataclass costs ~3x as much to make.)"""

    plan: _DimensionPlan
    usage: dict[tuple[str, ...], Usage]  # by label values, in the plan's label order
    max_cardinality: int
    identities: Identities | None = None  # when the tenant counts distinct sessions, hosts or services

    @property
    def labels(self) -> tuple[str, ...]:
        return self.plan.labels


class UsageTracker:
    def __init__(
        self, config: CostAttributionConfig, clock: Clock = time.monotonic, wall_clock: Clock = time.time
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall_clock = wall_clock  # the UTC hour of the distinct counts
        self._tenants: dict[str, _TenantUsage] = {}
        # Discarded bytes live apart, with the same cardinality limit and staleness per tenant.
        self._discarded: dict[str, _TenantUsage] = {}
        self._plans: dict[tuple[tuple[Dimension, ...], DistinctPlan], _DimensionPlan] = {}
        self._distinct: dict[str, _TenantDistinct] = {}

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def labels_for(self, dimensions: tuple[Dimension, ...]) -> tuple[str, ...]:
        """The output labels these dimensions give, sorted (an org's attribution tags)."""
        return self._plan(dimensions).labels if dimensions else ()

    def _plan(self, dimensions: tuple[Dimension, ...], distinct: DistinctPlan = ()) -> _DimensionPlan:
        key = (dimensions, distinct)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _DimensionPlan(dimensions, self.config.max_label_value_bytes, distinct)
        return plan

    def _tenant_plan(self, limits: TenantLimits) -> _DimensionPlan | None:
        """None when the tenant is neither tracked (no dimensions) nor counts anything distinct."""
        if not self.config.enabled:
            return None
        distinct: DistinctPlan = ()
        if limits.session_attributes or limits.host_attributes:
            distinct = (
                *(((SESSIONS, limits.session_attributes, True),) if limits.session_attributes else ()),
                *(((HOSTS, limits.host_attributes, False),) if limits.host_attributes else ()),
                (SERVICES, SERVICE_ATTRIBUTES, False),
            )
        elif not limits.dimensions:
            return None
        return self._plan(limits.dimensions, distinct)

    def attribute(self, traces: ReceivedTraces, limits: TenantLimits) -> Attribution | None:
        """The request's usage (bytes and spans) per label values, and the identities it carried when
        the tenant counts them; None when the tenant is not tracked and counts nothing distinct."""
        if traces.span_count == 0:
            return None
        plan = self._tenant_plan(limits)
        if plan is None:
            return None
        usage: dict[tuple[str, ...], Usage] = {}
        longest = plan.longest_unchecked
        series = traces.series_for(plan.scan)
        identities: Identities | None = None
        if plan.kinds:
            series, identities = _split(series, len(plan.labels), plan.kinds)
        cut = False
        for values, (size, spans) in series.items():
            if values and max(map(len, values)) > longest:
                cut = True
                values = plan.bounded(values)
                earlier = usage.get(values)  # two long values cut to the same bound: one series
                if earlier is not None:
                    size, spans = size + earlier.bytes, spans + earlier.spans
            usage[values] = Usage(size, spans)
        if identities is not None and cut:
            _bound_identities(identities, plan)
        return Attribution(plan, usage, limits.max_cardinality or self.config.max_cardinality, identities)

    def scan_plan(self, limits: TenantLimits) -> ScanPlan | None:
        """What the scan of a request of a tenant with these limits needs to attribute it; None when the
        tenant is not tracked."""
        plan = self._tenant_plan(limits)
        return plan.scan if plan is not None else None

    def record_received(
        self, tenant: str, attribution: Attribution
    ) -> dict[tuple[str, ...], tuple[str, ...]]:
        """Count the request as received. Returns the series that went to `__overflow__` (label values
        as attributed -> as recorded), usually none, so the ledger records exactly what the tracker does.
        The identities it carried, if the tenant counts them, go into the current hour's distinct counts
        of the series its bytes went to."""
        plan = attribution.plan
        identities = attribution.identities
        if identities is None:
            return self._apply(self._tenants, tenant, plan.render, attribution)
        keys: dict[tuple[str, ...], str] = {}
        overflowed = self._apply(self._tenants, tenant, plan.render, attribution, keys)
        self._count_distinct(tenant, identities, keys)
        return overflowed

    def _count_distinct(self, tenant: str, identities: Identities, keys: dict[tuple[str, ...], str]) -> None:
        """`identities` into the tenant's counts of the current hour; `keys` are the series (rendered
        label sets, overflow applied) the label values were recorded into."""
        hour = hour_of(self._wall_clock())
        distinct = self._distinct.get(tenant)
        if distinct is None or distinct.hour != hour:
            distinct = self._distinct[tenant] = _TenantDistinct(tenant, hour)
        services = distinct.services
        for seen in identities.get(SERVICES, {}).values():
            services.add_hashes(seen)
        by_series = distinct.series
        for kind in SERIES_KINDS:
            for values, seen in identities.get(kind, {}).items():
                key = keys.get(values)
                if key is None:
                    continue  # a tenant without dimensions: no series to count in
                counts = by_series.get(key)
                if counts is None:
                    counts = by_series[key] = {}
                count = counts.get(kind)
                if count is None:
                    count = counts[kind] = DistinctCount()
                count.add_hashes(seen)

    def record_discarded(self, tenant: str, attribution: Attribution, reason: DiscardReason) -> None:
        render = attribution.plan.render_discarded
        self._apply(self._discarded, tenant, lambda t, values: render(t, values, reason), attribution)

    def _apply(
        self,
        tenants: dict[str, _TenantUsage],
        tenant: str,
        render: Callable[[str, tuple[str, ...]], str],
        attribution: Attribution,
        keys: dict[tuple[str, ...], str] | None = None,
    ) -> dict[tuple[str, ...], tuple[str, ...]]:
        """Adds the bytes to their series; `keys`, when given, gets the series each label values went to."""
        if not attribution.plan.labels:
            return {}  # counted for its distinct identities only: a tenant without dimensions has no series
        usage = tenants.get(tenant)
        if usage is None:
            usage = tenants[tenant] = _TenantUsage()
        now = self._clock()
        series = usage.series
        max_cardinality = attribution.max_cardinality
        overflowed: dict[tuple[str, ...], tuple[str, ...]] = {}
        for values, series_usage in attribution.usage.items():
            total = series_usage.bytes
            key = render(tenant, values)
            entry = series.get(key)
            if entry is None:
                if usage.active_series() >= max_cardinality:
                    overflowed[values] = (OVERFLOW,) * len(values)
                    key = render(tenant, overflowed[values])
                    usage.overflow_keys.add(key)
                    usage.overflow_bytes += total
                    entry = series.get(key)
                if entry is None:
                    entry = series[key] = _Series(now)
            entry.total += total
            entry.updated = now
            if keys is not None:
                keys[values] = key
        return overflowed

    def purge_stale(self) -> int:
        """Delete series not updated for stale_duration (and their distinct counts), and the distinct
        counts of hours past; returns how many series were deleted."""
        cutoff = self._clock() - self.config.stale_duration
        hour = hour_of(self._wall_clock())
        for tenant in [tenant for tenant, distinct in self._distinct.items() if distinct.hour != hour]:
            del self._distinct[tenant]
        deleted = 0
        for tenants in (self._tenants, self._discarded):
            for tenant in list(tenants):
                usage = tenants[tenant]
                stale = [key for key, entry in usage.series.items() if entry.updated < cutoff]
                distinct = self._distinct.get(tenant) if tenants is self._tenants else None
                for key in stale:
                    del usage.series[key]
                    usage.overflow_keys.discard(key)
                    if distinct is not None:
                        distinct.series.pop(key, None)
                deleted += len(stale)
                if not usage.series:
                    del tenants[tenant]
        if deleted:
            log.debug("purged %d stale usage series", deleted)
        return deleted

    def series(self) -> Iterator[tuple[str, int]]:
        """(rendered label set, bytes) for every live received-bytes series."""
        for labels, values in self.series_by_tenant():
            yield from zip(labels, values, strict=True)

    def discarded_series(self) -> Iterator[tuple[str, int]]:
        """(rendered label set including `reason`, bytes) for every live discarded-bytes series."""
        for labels, values in self.series_by_tenant(discarded=True):
            yield from zip(labels, values, strict=True)

    def series_by_tenant(self, discarded: bool = False) -> Iterator[tuple[list[str], list[int]]]:
        """The received (or discarded) series, one tenant's copy at a time, each as of the moment it is
        taken: the caller may let the event loop run between two tenants. Two parallel lists rather
        than a tuple per series: 100,000 new tuples that live on bring on a full garbage collection,
        which walks every series (~170 ms at 100,000 series, stopping every thread)."""
        for usage in list((self._discarded if discarded else self._tenants).values()):
            series = usage.series
            yield list(series), [entry.total for entry in series.values()]

    def distinct_by_tenant(self, series_per_piece: int) -> Iterator[DistinctGauges]:
        """The current hour's distinct counts by kind, as gauges: the estimate (rounded) of every series'
        count, and of each tenant's services. A tenant's come in pieces of at most `series_per_piece`
        series, each as of the moment it is taken; the caller may let the event loop run between two.

        The estimates are taken here, on the loop: the loop keeps adding to the counts, so a thread
        could read one only from a copy, and copying (or serializing) a count costs more than
        estimating it. An estimate costs 0.15-0.7 us (20,000 counts, the more on a busy machine; a
        value copy ~0.03 us), so a tenant at the default 10,000 series with sessions and hosts takes
        3-15 ms: hence pieces within a tenant too. Unlike byte totals, distinct counts of two series
        never add up, so estimates of one tenant taken a few milliseconds apart lose nothing."""
        for tenant in list(self._distinct):
            distinct = self._current_distinct(tenant)  # now: the loop may have run since the list was taken
            if distinct is None:
                continue
            # The keys only: they exist already, where (key, counts) pairs would be 10,000 new tuples
            # living across the pauses (see series_by_tenant on what those cost).
            keys = list(distinct.series)
            for start in range(0, max(len(keys), 1), series_per_piece):
                if start and self._current_distinct(tenant) is not distinct:
                    break  # the hour ended during a pause: the rest of this tenant is the next hour's
                gauges: DistinctGauges = {kind: ([], []) for kind in SERIES_KINDS}
                if not start:
                    gauges[SERVICES] = ([distinct.services_labels], [round(distinct.services.estimate())])
                for key in keys[start : start + series_per_piece]:
                    counts = distinct.series.get(key)
                    if counts is None:
                        continue  # purged as stale during a pause
                    for kind, count in counts.items():
                        labels, values = gauges[kind]
                        labels.append(key)
                        values.append(round(count.estimate()))
                yield gauges

    def _current_distinct(self, tenant: str) -> _TenantDistinct | None:
        """The tenant's distinct counts if they are of the current hour (an hour past is the ledger's)."""
        distinct = self._distinct.get(tenant)
        if distinct is None or distinct.hour != hour_of(self._wall_clock()):
            return None
        return distinct

    def stats(self) -> list[TenantUsageStats]:
        # Read by /metrics on a worker thread while the loop may add a tenant: dict.copy() is atomic.
        return [
            TenantUsageStats(tenant, usage.active_series(), usage.overflow_bytes)
            for tenant, usage in self._tenants.copy().items()
        ]


def _split(
    series: dict[tuple[str, ...], tuple[int, int]], labels: int, kinds: tuple[str, ...]
) -> tuple[dict[tuple[str, ...], tuple[int, int]], Identities]:
    """The scan's series by (label values, one value per kind) as usage by label values, and per kind
    the identities each label-value tuple saw (`__missing__`, or empty: none), as their identity_hash:
    each identity is hashed once per request, however many series and counts take it. Services are
    counted per tenant only: theirs are keyed by ()."""
    usage: dict[tuple[str, ...], tuple[int, int]] = {}
    identities: Identities = {kind: {} for kind in kinds}
    per_series = [(labels + index, identities[kind]) for index, kind in enumerate(kinds) if kind != SERVICES]
    service_at = labels + kinds.index(SERVICES) if SERVICES in kinds else -1
    services: set[int] = set()
    hashed: dict[str, int] = {}
    for values, (size, spans) in series.items():
        own = values[:labels]
        earlier = usage.get(own)
        usage[own] = (size, spans) if earlier is None else (earlier[0] + size, earlier[1] + spans)
        for at, by_values in per_series:
            identity = values[at]
            if identity == MISSING or not identity:
                continue
            code = hashed.get(identity)
            if code is None:
                code = hashed[identity] = identity_hash(identity)
            seen = by_values.get(own)
            if seen is None:
                by_values[own] = {code}
            else:
                seen.add(code)
        if service_at >= 0:
            identity = values[service_at]
            if identity != MISSING and identity:
                code = hashed.get(identity)
                if code is None:
                    code = hashed[identity] = identity_hash(identity)
                services.add(code)
    if services:
        identities[SERVICES][()] = services
    return usage, identities


def _bound_identities(identities: Identities, plan: _DimensionPlan) -> None:
    """Identities keyed by label values as the usage is: long values cut to their bound (two values cut
    to one bound are one series, whose identities are the union)."""
    longest = plan.longest_unchecked
    for kind, by_values in identities.items():
        if kind == SERVICES or not any(values and max(map(len, values)) > longest for values in by_values):
            continue
        bounded: dict[tuple[str, ...], set[int]] = {}
        for values, seen in by_values.items():
            key = plan.bounded(values)
            if key in bounded:
                bounded[key] |= seen
            else:
                bounded[key] = seen
        identities[kind] = bounded
