"""The result set of one answer: ledger rows grouped into records, in the order of the pages, with each
org's totals (for percentages) and the monthly aggregates."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

from distributor.attribution.distinct_records import Estimate, GroupKey, hourly_counts
from distributor.attribution.orgs import Org, OrgDirectory
from distributor.attribution.query import HourlyQuery, MonthlyQuery, usage_type_of
from distributor.common.usage import Usage
from distributor.ledger.ledger import (
    BYTES_USAGE,
    DISTINCT_USAGE_TYPES,
    SPANS_USAGE,
    SUMMED_USAGE_TYPES,
    DistinctRow,
    LedgerStore,
    Tags,
    UsageRow,
)
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
    distinct: Mapping[str, Estimate] | None = None  # by distinct usage type, those it has

    def value(self, usage_type: str) -> float:
        """The record's usage of a type; 0 for a Datadog type this service does not record."""
        if usage_type == BYTES_USAGE:
            return self.spans_bytes
        if usage_type == SPANS_USAGE:
            return self.spans
        estimate = self.distinct.get(usage_type) if self.distinct else None
        return estimate.value if estimate is not None else 0

    def bounds(self, usage_type: str) -> tuple[float, float]:
        """The 95% confidence interval of a distinct count's value (the value itself for a sum)."""
        estimate = self.distinct.get(usage_type) if self.distinct else None
        if estimate is None:
            value = self.value(usage_type)
            return value, value
        return estimate.lower, estimate.upper


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The sum of one requested field over the whole result set (all pages)."""

    field: str
    value: float


# (period, org id) -> distinct usage type -> the sum of that org's records' values (a monthly percentage
# of a distinct count is a share of its records' sum).
DistinctTotals = Mapping[tuple[int, str], Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class Result:
    records: Sequence[Record]  # sorted: the order of the pages
    totals: OrgTotals  # empty for hourly answers, which have no percentages
    aggregates: tuple[Aggregate, ...]
    distinct_totals: DistinctTotals = field(default_factory=dict)


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


def hourly_distinct_result(
    rows: list[DistinctRow],
    query: HourlyQuery,
    orgs: OrgDirectory,
    org_tags: Callable[[str], tuple[str, ...]],
) -> Result:
    """Records of a distinct count (the queried type), by hour, then org and tags."""
    counts = hourly_counts(rows, query.breakdown, org_tags)
    org_of = {tenant: orgs.org(tenant) for tenant in {key[1] for key in counts}}
    records = [
        Record(hour, org_of[tenant], values, distinct={query.usage_type: estimate})
        for (hour, tenant, values), estimate in counts.items()
    ]
    records.sort(key=lambda r: (r.period, _identity(r)))
    return Result(records, {}, ())


def monthly_result(
    rows: list[UsageRow],
    query: MonthlyQuery,
    orgs: OrgDirectory,
    org_tags: Callable[[str], tuple[str, ...]],
    distinct: Mapping[str, Mapping[GroupKey, Estimate]] | None = None,
) -> Result:
    """`distinct`: the month values of each distinct usage type requested (distinct_records.py)."""
    sums = group_sums(rows, query.breakdown, org_tags)  # records without usage are skipped below
    if not any(usage_type_of(name) in SUMMED_USAGE_TYPES for name in query.fields):
        sums = {}  # only products this service does not sum: none of their usage is read
    # Each org-month's usage, for percentages: summed in mutable pairs, each a Usage at the end.
    org_sums: dict[tuple[int, str], list[int]] = {}
    for (period, tenant, _), (size, spans) in sums.items():
        entry = org_sums.get((period, tenant))
        if not (size or spans):
            continue
        if entry is None:
            org_sums[period, tenant] = [size, spans]
        else:
            entry[0] += size
            entry[1] += spans
    totals = {key: Usage(size, spans) for key, (size, spans) in org_sums.items()}
    # Distinct counts by record, and each org-month's sum of them.
    counts: dict[GroupKey, dict[str, Estimate]] = {}
    distinct_sums: dict[tuple[int, str], dict[str, float]] = {}
    for usage_type, estimates in (distinct or {}).items():
        for key, estimate in estimates.items():
            if estimate.value:
                counts.setdefault(key, {})[usage_type] = estimate
                org_month = distinct_sums.setdefault((key[0], key[1]), {})
                org_month[usage_type] = org_month.get(usage_type, 0.0) + estimate.value
    # One total order: the value, then the month, then who (ascending whatever the direction), so
    # equal values never shuffle between pages. Percentages order like usage within an org-month,
    # but not across orgs, so they are sorted by their own value. A field not recorded here is 0 for
    # every record: the order is then by month and org.
    sign = -1 if query.descending else 1
    sort_field = query.sort_field
    sort_type = usage_type_of(sort_field)
    by_share = not sort_field.endswith("_usage")
    org_of = {
        tenant: orgs.org(tenant) for tenant in {tenant for _, tenant in org_sums} | {k[1] for k in counts}
    }
    # Each sort key carries its record's parts after the key proper, which (period, org id, tags)
    # already makes unique, so comparisons never reach them: the sorted keys are the result, and a
    # Record is made only for a page that is served (a parent org's month can be 100,000 records).
    keyed: list[_Keyed] = []
    for key in sums.keys() | counts.keys():
        period, tenant, values = key
        size, spans = sums.get(key, _NO_SUMS)
        record_counts = counts.get(key)
        if not (size or spans or record_counts):
            continue
        value: float = 0.0
        total: float = 0.0
        if sort_type in SUMMED_USAGE_TYPES:
            value = size if sort_type == BYTES_USAGE else spans
            if by_share and (period, tenant) in totals:
                total = _of_type(totals[period, tenant], sort_type)
        elif sort_type in DISTINCT_USAGE_TYPES:
            counted = record_counts.get(sort_type) if record_counts else None
            value = counted.value if counted is not None else 0.0
            total = distinct_sums.get((period, tenant), {}).get(sort_type, 0.0)
        if by_share:
            value = 100.0 * value / total if total else 0.0
        org = org_of[tenant]
        keyed.append(
            (
                sign * value,
                sign * period,
                org.name,
                org.org_id,
                values or (),
                values,
                size,
                spans,
                record_counts,
            )
        )
    keyed.sort()
    distinct_totals = {
        (period, org_of[tenant].org_id): sums_ for (period, tenant), sums_ in distinct_sums.items()
    }
    return Result(
        _MonthlyRecords(keyed, org_of),
        totals,
        monthly_aggregates(query.fields, totals, distinct_totals),
        distinct_totals,
    )


_NO_SUMS = (0, 0)


def monthly_aggregates(
    fields: tuple[str, ...], totals: OrgTotals, distinct_totals: DistinctTotals | None = None
) -> tuple[Aggregate, ...]:
    """The sum of each field over every record, from the org-months' usage (and sums of distinct
    counts)."""
    aggregates: list[Aggregate] = []
    for name in fields:
        usage_type = usage_type_of(name)
        if usage_type in DISTINCT_USAGE_TYPES:
            org_months = [sums.get(usage_type, 0.0) for sums in (distinct_totals or {}).values()]
        else:
            org_months = [float(_of_type(org_total, usage_type)) for org_total in totals.values()]
        if name.endswith("_usage"):
            aggregates.append(Aggregate(name, float(sum(org_months))))
        else:  # each org-month's percentages add up to 100 (when it has any usage of that type)
            aggregates.append(Aggregate(name, 100.0 * sum(1 for value in org_months if value)))
    return tuple(aggregates)


@dataclass(frozen=True, slots=True)
class MonthlyPageRecords:
    """One page of a monthly result, read without the rest of it."""

    records: list[Record]
    more: bool  # records follow this page
    totals: OrgTotals  # of every org-month of the result
    aggregates: tuple[Aggregate, ...]


# Pages further in read the whole result (and keep it for the next pages): the ranked read hands
# every record before the page to Python.
RANKED_DEPTH = 5_000


def ranked_monthly_page(
    store: LedgerStore,
    tenants: list[str],
    query: MonthlyQuery,
    orgs: OrgDirectory,
    org_tags: Callable[[str], tuple[str, ...]],
    window: tuple[int, int, int],
    offset: int,
    size: int,
    known_totals: OrgTotals | None = None,
) -> MonthlyPageRecords | None:
    """The records [offset, offset + size) of `monthly_result` and whether more follow, summed and
    ordered by the store (`monthly_ranked`) as of the snapshot of `window` = (start, end, seq); None
    when the store cannot order them: a sort by a percentage or by a type not recorded here, a page
    past RANKED_DEPTH, or an org whose records would each add up several series (a series lacking a
    breakdown key, or with labels besides them).

    The store orders by value and month; equal ones are ordered here by org and tags, after reading
    every row equal to the last one read (so a page may end inside a run of equal values).
    `known_totals`: the result's org-month totals, as an earlier page returned them (not read again)."""
    if (
        query.sort_field not in SUMMED_USAGE_TYPES
        or offset > RANKED_DEPTH
        or not any(usage_type_of(name) in SUMMED_USAGE_TYPES for name in query.fields)
    ):
        return None
    start, end, seq = window
    counted = {DISTINCT_USAGE_TYPES.get(usage_type_of(name)) for name in query.fields} - {None}
    if any(store.has_distinct(tenants, kind, start, end, seq) for kind in counted if kind is not None):
        return None  # distinct counts to merge: the whole result is read (monthly_result)
    breakdown = query.breakdown
    by_series: set[str] = set()
    if breakdown is not None:
        wanted = set(breakdown)
        by_series = {tenant for tenant in tenants if wanted <= set(org_tags(tenant))}
        exact = tuple(sorted(wanted))
        label_sets = store.label_sets(sorted(by_series)) if by_series else {}
        if any(labels != exact for sets in label_sets.values() for labels in sets):
            return None
    sort_field, descending = query.sort_field, query.descending

    def ranked(limit: int | None, at: tuple[int, int] | None = None) -> list[UsageRow]:
        return store.monthly_ranked(
            tenants, sorted(by_series), start, end, seq, sort_field, descending, limit, at
        )

    def value(row: UsageRow) -> int:
        return row.spans_bytes if sort_field == BYTES_USAGE else row.spans

    totals: OrgTotals | None = known_totals
    if not by_series:
        # A record per org-month: few enough to read all, which are the totals as well.
        rows = ranked(None)
        totals = {(row.period, row.tenant): Usage(row.spans_bytes, row.spans) for row in rows}
        more = len(rows) > offset + size
    else:
        limit = offset + size + 1
        rows = ranked(limit)
        more = len(rows) == limit
        if more:
            last = (value(rows[-1]), rows[-1].period)
            settled = next(i for i, row in enumerate(rows) if (value(row), row.period) == last)
            rows = rows[:settled]
            if settled < offset + size:  # the page reaches into the run of rows equal to the last one
                rows += ranked(None, last)
    sign = -1 if descending else 1
    org_of = {tenant: orgs.org(tenant) for tenant in {row.tenant for row in rows}}
    keyed: list[_Keyed] = []
    for period, tenant, tags, size_bytes, spans in rows:
        values: tuple[str, ...] | None = None
        if breakdown is None:
            values = ()
        elif tenant in by_series:
            present = dict(tags)
            values = tuple(present[key] for key in breakdown)
        org = org_of[tenant]
        row_value = size_bytes if sort_field == BYTES_USAGE else spans
        keyed.append(
            (
                sign * row_value,
                sign * period,
                org.name,
                org.org_id,
                values or (),
                values,
                size_bytes,
                spans,
                None,
            )
        )
    keyed.sort()
    page = _MonthlyRecords(keyed, org_of)[offset : offset + size]
    if totals is None:
        totals = {
            (period, tenant): Usage(size_bytes, spans)
            for period, tenant, _, size_bytes, spans in store.monthly_ranked(
                tenants, (), start, end, seq, sort_field, descending, None
            )
        }
    return MonthlyPageRecords(page, more, totals, monthly_aggregates(query.fields, totals))


# A monthly record as sorted: (signed value, signed period, org name, org id, tags or (), tags, bytes,
# spans, distinct counts or None).
_Keyed = tuple[
    float, int, str, str, tuple[str, ...], tuple[str, ...] | None, int, int, dict[str, Estimate] | None
]


class _MonthlyRecords(Sequence[Record]):
    """The records of a monthly result in page order, each made when it is read."""

    def __init__(self, keyed: list[_Keyed], org_of: Mapping[str, Org]) -> None:
        self._keyed = keyed
        self._org_of = org_of

    def __len__(self) -> int:
        return len(self._keyed)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self._record(keyed) for keyed in self._keyed[index]]
        return self._record(self._keyed[index])

    def _record(self, keyed: _Keyed) -> Record:
        signed_period, org_id, values, size, spans, counts = (
            keyed[1],
            keyed[3],
            keyed[5],
            keyed[6],
            keyed[7],
            keyed[8],
        )
        return Record(abs(signed_period), self._org_of[org_id], values, size, spans, counts)


def field_value(
    record: Record, name: str, org_totals: OrgTotals, distinct_totals: DistinctTotals | None = None
) -> float:
    """A `<type>_usage` field, or a `<type>_percentage`: the record's share of its org-month (of a
    distinct count, its share of the sum of the org-month's records)."""
    if name.endswith("_usage"):
        return float(record.value(name))
    usage_type = usage_type_of(name)
    key = (record.period, record.org.org_id)
    if usage_type in DISTINCT_USAGE_TYPES:
        total = (distinct_totals or {}).get(key, {}).get(usage_type, 0.0)
    else:
        total = _of_type(org_totals[key], usage_type) if key in org_totals else 0
    return 100.0 * record.value(usage_type) / total if total else 0.0


# (period, tenant, values of the breakdown keys) -> [bytes, spans]
GroupSums = dict[tuple[int, str, tuple[str, ...] | None], list[int]]


def group(
    rows: list[UsageRow],
    breakdown: tuple[str, ...] | None,
    orgs: OrgDirectory,
    org_tags: Callable[[str], tuple[str, ...]],
) -> list[Record]:
    """One record per (period, org, values of the breakdown keys) with any usage (see group_sums)."""
    sums = group_sums(rows, breakdown, org_tags)
    org_of = {tenant: orgs.org(tenant) for tenant in {key[1] for key in sums}}
    return [
        Record(period, org_of[tenant], values, size, spans)
        for (period, tenant, values), (size, spans) in sums.items()
        if size or spans
    ]


def group_sums(
    rows: list[UsageRow], breakdown: tuple[str, ...] | None, org_tags: Callable[[str], tuple[str, ...]]
) -> GroupSums:
    """The usage of each (period, org, values of the breakdown keys), zeros included; an org whose
    attribution tags lack a requested key gets its total with tags null, as Datadog does. Per row this
    is two dict lookups and an addition: a parent org's month can be 100,000 rows, so the sums are
    mutable pairs here rather than Usage values made anew at every row."""
    sums: GroupSums = {}
    if breakdown is None:
        for period, tenant, _, size, spans in rows:
            entry = sums.get((period, tenant, ()))
            if entry is None:
                sums[period, tenant, ()] = [size, spans]
            else:
                entry[0] += size
                entry[1] += spans
        return sums
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
    return sums


def _of_type(usage: Usage, usage_type: str) -> int:
    if usage_type == BYTES_USAGE:
        return usage.bytes
    return usage.spans if usage_type == SPANS_USAGE else 0


def _identity(record: Record) -> tuple[str, str, tuple[str, ...]]:
    return (record.org.name, record.org.org_id, record.tags or ())
