"""The result set of one answer: ledger rows grouped into records, in the order of the pages, with each
org's totals (for percentages) and the monthly aggregates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter

from distributor.attribution.orgs import Org, OrgDirectory
from distributor.attribution.query import HourlyQuery, MonthlyQuery, usage_type_of
from distributor.common.usage import Usage
from distributor.ledger.ledger import BYTES_USAGE, SPANS_USAGE, USAGE_TYPES, Tags, UsageRow
from distributor.usage.tracker import MISSING

# (period, org id) -> the usage of that org in that period.
OrgTotals = Mapping[tuple[int, str], Usage]


@dataclass(slots=True)
class Record:
    period: int
    org: Org
    tags: tuple[str, ...] | None  # values of the breakdown keys; () for no breakdown; None: cannot apply
    spans_bytes: int = 0
    spans: int = 0

    def value(self, usage_type: str) -> int:
        """The record's usage of a type; 0 for a Datadog type this service does not record."""
        if usage_type == BYTES_USAGE:
            return self.spans_bytes
        return self.spans if usage_type == SPANS_USAGE else 0


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The sum of one requested field over the whole result set (all pages)."""

    field: str
    value: float


@dataclass(frozen=True, slots=True)
class Result:
    records: list[Record]  # sorted: the order of the pages
    totals: OrgTotals  # empty for hourly answers, which have no percentages
    aggregates: tuple[Aggregate, ...]


def hourly_result(
    rows: list[UsageRow],
    query: HourlyQuery,
    orgs: OrgDirectory,
    org_tags: Callable[[str], tuple[str, ...]],
) -> Result:
    """Records with usage of the queried type, by hour, then org and tags."""
    records = [r for r in group(rows, query.breakdown, orgs, org_tags) if r.value(query.usage_type)]
    records.sort(key=lambda r: (r.period, _identity(r)))
    return Result(records, {}, ())


def monthly_result(
    rows: list[UsageRow],
    query: MonthlyQuery,
    orgs: OrgDirectory,
    org_tags: Callable[[str], tuple[str, ...]],
) -> Result:
    records = group(rows, query.breakdown, orgs, org_tags)
    if not any(usage_type_of(name) in USAGE_TYPES for name in query.fields):
        records = []  # only products this service does not record: no org used them, as Datadog says
    # Summed in mutable pairs (a parent org's month can be 100,000 records), each a Usage at the end.
    sums: dict[tuple[int, str], list[int]] = {}
    for record in records:
        key = (record.period, record.org.org_id)
        entry = sums.get(key)
        if entry is None:
            sums[key] = [record.spans_bytes, record.spans]
        else:
            entry[0] += record.spans_bytes
            entry[1] += record.spans
    totals = {key: Usage(size, spans) for key, (size, spans) in sums.items()}
    # One total order: the value, then the month, then who (ascending whatever the direction), so
    # equal values never shuffle between pages. Percentages order like usage within an org-month,
    # but not across orgs, so they are sorted by their own value.
    sign = -1 if query.descending else 1
    sort_field = query.sort_field
    value: Callable[[Record], float] = (
        attrgetter("spans_bytes" if sort_field == BYTES_USAGE else "spans")
        if sort_field in USAGE_TYPES
        else lambda r: field_value(r, sort_field, totals)
    )  # a field not recorded here is 0 for every record: the order is then by month and org
    records.sort(key=lambda r: (sign * value(r), sign * r.period, *_identity(r)))
    aggregates: list[Aggregate] = []
    for name in query.fields:
        if name in USAGE_TYPES:
            total = float(sum(r.value(name) for r in records))
        else:  # each org-month's percentages add up to 100 (when it has any usage of that type)
            usage_type = usage_type_of(name)
            total = 100.0 * sum(1 for org_total in totals.values() if _of_type(org_total, usage_type))
        aggregates.append(Aggregate(name, total))
    return Result(records, totals, tuple(aggregates))


def field_value(record: Record, name: str, org_totals: OrgTotals) -> float:
    """A `<type>_usage` field, or a `<type>_percentage`: the record's share of its org-month."""
    if name.endswith("_usage"):
        return float(record.value(name))
    usage_type = usage_type_of(name)
    total = _of_type(org_totals[record.period, record.org.org_id], usage_type)
    return 100.0 * record.value(usage_type) / total if total else 0.0


def group(
    rows: list[UsageRow],
    breakdown: tuple[str, ...] | None,
    orgs: OrgDirectory,
    org_tags: Callable[[str], tuple[str, ...]],
) -> list[Record]:
    """One record per (period, org, values of the breakdown keys); an org whose attribution tags lack
    a requested key gets its total with tags null, as Datadog does. Per row this is two dict lookups
    and an addition: a parent org's month can be 100,000 rows, so the sums are mutable pairs here
    rather than Usage values made anew at every row."""
    sums: dict[tuple[int, str, tuple[str, ...] | None], list[int]] = {}
    if breakdown is None:
        for period, tenant, _, size, spans in rows:
            entry = sums.get((period, tenant, ()))
            if entry is None:
                sums[period, tenant, ()] = [size, spans]
            else:
                entry[0] += size
                entry[1] += spans
    else:
        applies: dict[str, bool] = {}
        projections: dict[Tags, tuple[str, ...]] = {}  # tag sets repeat across orgs: computed once each
        wanted = set(breakdown)
        for period, tenant, tags, size, spans in rows:
            usable = applies.get(tenant)
            if usable is None:
                usable = applies[tenant] = wanted <= set(org_tags(tenant))
            values: tuple[str, ...] | None = None
            if usable:
                values = projections.get(tags)
                if values is None:
                    present = dict(tags)
                    # Usage recorded under an older dimension set may lack a label: it was missing.
                    values = projections[tags] = tuple(present.get(k, MISSING) for k in breakdown)
            entry = sums.get((period, tenant, values))
            if entry is None:
                sums[period, tenant, values] = [size, spans]
            else:
                entry[0] += size
                entry[1] += spans
    org_of = {tenant: orgs.org(tenant) for tenant in {key[1] for key in sums}}
    return [
        Record(period, org_of[tenant], values, size, spans)
        for (period, tenant, values), (size, spans) in sums.items()
        if size or spans
    ]


def _of_type(usage: Usage, usage_type: str) -> int:
    if usage_type == BYTES_USAGE:
        return usage.bytes
    return usage.spans if usage_type == SPANS_USAGE else 0


def _identity(record: Record) -> tuple[str, str, tuple[str, ...]]:
    return (record.org.name, record.org.org_id, record.tags or ())
