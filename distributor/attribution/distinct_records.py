"""Distinct counts (RUM sessions, APM hosts) as records: the stored counts of each hour merged per
(hour, org, values of the breakdown keys), never added, then estimated; a month is read from its hours
as Datadog bills each type.

- Sessions, `rum_browser_mobile_sessions_usage`: an hour's value is the distinct sessions of that hour; a
  month's is the sum of its hours' values ("the sum of all distinct RUM sessions over all hours").
- Hosts, `apm_host_usage`: an hour's value is the distinct hosts of that hour; a month's is the 99th
  percentile of its hours' values, the hours with no host counting 0 (Datadog bills APM hosts by the
  99th percentile of the hourly counts): the nearest-rank percentile over every hour of the month, or of
  the month so far for the current one.

Values are the sketches' estimates rounded to whole counts (exact for small counts). Each comes with its
95% confidence bounds, which the CSV export shows: an hour's from its sketch, a month of sessions the sum
of its hours' bounds, a month of hosts the bounds of the hour its percentile is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

from distributor.common.distinct import DistinctCount, exact_count, union
from distributor.ledger.ledger import HOSTS_USAGE, HOUR, DistinctRow, Tags, add_months, month_of
from distributor.usage.tracker import MISSING

# (period, tenant, values of the breakdown keys: () without a breakdown, None where the org lacks one)
GroupKey = tuple[int, str, tuple[str, ...] | None]


class Estimate(NamedTuple):
    value: float  # a whole count
    lower: float  # the 95% confidence interval
    upper: float


ZERO = Estimate(0.0, 0.0, 0.0)


def hourly_counts(
    rows: list[DistinctRow], breakdown: tuple[str, ...] | None, org_tags: Callable[[str], tuple[str, ...]]
) -> dict[GroupKey, Estimate]:
    """Per (hour, tenant, values of the breakdown keys), the merged count of every row in it."""
    grouped: dict[GroupKey, list[bytes]] = {}
    applies: dict[str, bool] = {}
    projections: dict[Tags, tuple[str, ...]] = {}  # tag sets repeat over the hours: computed once each
    wanted = set(breakdown or ())
    for hour, tenant, tags, serialized in rows:
        values: tuple[str, ...] | None = ()
        if breakdown is not None:
            usable = applies.get(tenant)
            if usable is None:
                usable = applies[tenant] = wanted <= set(org_tags(tenant))
            values = None
            if usable:
                values = projections.get(tags)
                if values is None:
                    present = dict(tags)
                    # A count recorded under an older dimension set may lack a label: it was missing.
                    values = projections[tags] = tuple(present.get(key, MISSING) for key in breakdown)
        grouped.setdefault((hour, tenant, values), []).append(serialized)
    estimates: dict[GroupKey, Estimate] = {}
    for key, stored in grouped.items():
        exact = exact_count(stored[0]) if len(stored) == 1 else None  # the usual hour: one count, exact
        if exact is not None:
            estimate = Estimate(float(exact), float(exact), float(exact))
        else:
            counts = [DistinctCount.from_bytes(serialized) for serialized in stored]
            estimate = _estimate(counts[0] if len(counts) == 1 else union(counts))
        if estimate.value:
            estimates[key] = estimate
    return estimates


def monthly_counts(
    hourly: Mapping[GroupKey, Estimate], usage_type: str, through_hour: int
) -> dict[GroupKey, Estimate]:
    """Per (month, tenant, values), the month's value from its hours' (see the module). `through_hour`
    ends the current month's hours so far (exclusive)."""
    by_month: dict[GroupKey, list[Estimate]] = {}
    months_of: dict[int, int] = {}
    for (hour, tenant, values), estimate in hourly.items():
        month = months_of.get(hour)
        if month is None:
            month = months_of[hour] = month_of(hour)
        by_month.setdefault((month, tenant, values), []).append(estimate)
    months: dict[GroupKey, Estimate] = {}
    for key, estimates in by_month.items():
        if usage_type == HOSTS_USAGE:
            month = key[0]
            hours = max(len(estimates), (min(add_months(month, 1), through_hour) - month) // HOUR)
            months[key] = percentile_99(estimates, hours)
        else:
            months[key] = Estimate(
                sum(e.value for e in estimates),
                sum(e.lower for e in estimates),
                sum(e.upper for e in estimates),
            )
    return months


def percentile_99(estimates: list[Estimate], hours: int) -> Estimate:
    """The nearest-rank 99th percentile of `hours` hourly values, `estimates` the hours that have one
    (the others are 0)."""
    rank = math.ceil(0.99 * hours)  # 1-based, in ascending order
    zeros = hours - len(estimates)
    if rank <= zeros:
        return ZERO
    return sorted(estimates)[rank - zeros - 1]


def _estimate(count: DistinctCount) -> Estimate:
    value = float(round(count.estimate()))
    lower, upper = count.bounds()
    return Estimate(value, min(lower, value), max(upper, value))
