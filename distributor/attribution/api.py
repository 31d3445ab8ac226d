"""Datadog-compatible Usage Attribution API over the usage ledger: typed answers and domain errors,
no transport (http.py serves it).

Semantics: docs/usage-attribution-api.md. shapes: Datadog's "Get hourly usage attribution",
"Get monthly usage attribution" and "Get usage attribution types" references, so the official clients
(datadog-api-client) read the answers unchanged.

A request goes: failed authentications of the client address (RateLimited) -> key pair (Forbidden,
counted against the address) -> per-key rate limit (RateLimited) -> parameters
(InvalidParameter) -> the ledger as of one flush (a snapshot, carried by the cursor) -> every record of
the result, sorted and cached -> one page. A monthly JSON page the store can sum and order itself
(records.ranked_monthly_page) is read on its own instead, with no result made or cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from cachetools import TTLCache

from distributor.attribution.config import ApiKeyConfig, UsageAttributionConfig
from distributor.attribution.csv_export import monthly_csv
from distributor.attribution.cursors import CURSOR_PARAMETER, Cursor, CursorCodec, fingerprint
from distributor.attribution.distinct_records import hourly_counts, monthly_counts
from distributor.attribution.errors import Forbidden, InvalidParameter
from distributor.attribution.keys import ApiKeys, ApiRateLimiter, AuthFailureLimiter, RateLimitWindow
from distributor.attribution.orgs import OrgDirectory, org_describer
from distributor.attribution.pages import (
    HourlyPage,
    HourlyUsage,
    MonthlyPage,
    MonthlyUsage,
    UsageTypes,
    tags_document,
)
from distributor.attribution.query import (
    MonthlyQuery,
    Parameters,
    parse_hourly,
    parse_monthly,
    usage_type_of,
)
from distributor.attribution.records import (
    DistinctTotals,
    OrgTotals,
    Record,
    Result,
    field_value,
    hourly_distinct_result,
    hourly_result,
    monthly_result,
    ranked_monthly_page,
)
from distributor.ledger.ledger import (
    DISTINCT_USAGE_TYPES,
    HOUR,
    USAGE_TYPES,
    LedgerStore,
    UsageLedger,
    add_months,
    hour_of,
    month_of,
)

RESULT_CACHE_RECORDS = 500_000


@dataclass(frozen=True, slots=True)
class Grant:
    """A key pair admitted for one request, and where it stands in its rate-limit window."""

    key: ApiKeyConfig
    window: RateLimitWindow


@dataclass(frozen=True, slots=True)
class _Located:
    """One answer's whole result as of its snapshot, and where the requested page starts."""

    bound_to: str  # the fingerprint its cursors carry
    position: Cursor
    result: Result


class UsageAttributionApi:
    def __init__(
        self,
        config: UsageAttributionConfig,
        ledger: UsageLedger,
        org_tags: Callable[[str], tuple[str, ...]],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.org_tags = org_tags
        self.orgs = OrgDirectory(config)
        self.keys = ApiKeys(config.keys)
        self.rate_limiter = ApiRateLimiter(
            config.api.rate_limit.requests, config.api.rate_limit.period, clock
        )
        failure_limit = config.api.auth_failure_limit
        self.auth_failures = AuthFailureLimiter(failure_limit.failures, failure_limit.period, clock)
        self._wall_clock = wall_clock
        self._codec: CursorCodec | None = None
        # Bounded by records held (a parent org's month by tags can be 100,000); entries live as long
        # as their cursors.
        self._results: TTLCache[tuple[str, int, int], Result] = TTLCache(
            maxsize=RESULT_CACHE_RECORDS,
            ttl=config.api.cursor_ttl,
            timer=clock,
            getsizeof=lambda result: len(result.records) + 1,
        )

    def admit(self, api_key: str | None, app_key: str | None, address: str) -> Grant:
        """AuthFailuresLimited while the client `address` has failed too often; Forbidden without a
        usage_read key pair; RateLimited when the pair's window is used up."""
        self.auth_failures.check(address)
        try:
            key = self.keys.authenticate(api_key, app_key)
        except Forbidden:
            self.auth_failures.failed(address)
            raise
        return Grant(key, self.rate_limiter.take(key))

    async def types(self, grant: Grant) -> UsageTypes:
        return UsageTypes(USAGE_TYPES)

    async def hourly(self, grant: Grant, parameters: Parameters) -> HourlyPage:
        query = parse_hourly(parameters)
        self._check_retention("start_hr", query.start)
        key = grant.key
        bound_to = fingerprint(
            "hourly",
            key,
            (query.start, query.end, query.usage_type, query.breakdown, query.include_descendants),
        )
        position = await self._position(
            bound_to, query.cursor, query.end or hour_of(self._wall_clock()) + HOUR
        )

        def compute(store: LedgerStore) -> Result:
            tenants = self.orgs.visible(key.org, query.include_descendants, store.tenants())
            kind = DISTINCT_USAGE_TYPES.get(query.usage_type)
            if kind is not None:
                counts = store.distinct(tenants, kind, query.start, position.end, position.seq)
                return hourly_distinct_result(counts, query, self.orgs, self.org_tags)
            rows = store.hourly(tenants, query.start, position.end, position.seq)
            return hourly_result(rows, query, self.orgs, self.org_tags)

        located = _Located(bound_to, position, await self._result(bound_to, position, compute))
        page, next_id = await self._page(located)
        describe = org_describer(self.org_tags)
        usage = [
            HourlyUsage(
                record.period,
                describe(record.org),
                tags_document(query.breakdown, record.tags),
                float(record.value(query.usage_type)),
            )
            for record in page
        ]
        return HourlyPage(usage, query.usage_type, hour_of(position.flushed_at), next_id)

    async def monthly(self, grant: Grant, parameters: Parameters) -> MonthlyPage:
        query = parse_monthly(parameters)
        key = grant.key
        bound_to, position = await self._monthly_position(key, query)
        if (bound_to, position.seq, position.end) not in self._results:
            # A page the store sums and orders, without the whole result (a parent org's month is
            # 100,000 records). A result computed already is read instead, and so is one it cannot order.
            # The org-month totals are kept for the next pages, beside the results they would be part of.
            totals_key = (bound_to + ":totals", position.seq, position.end)
            known = self._results.get(totals_key)
            ranked = await self.ledger.read(
                lambda store: ranked_monthly_page(
                    store,
                    self.orgs.visible(key.org, query.include_descendants, store.tenants()),
                    query,
                    self.orgs,
                    self.org_tags,
                    (query.start, position.end, position.seq),
                    position.offset,
                    self.config.api.page_size,
                    None if known is None else known.totals,
                )
            )
            if ranked is not None:
                if known is None and ranked.more:
                    self._results[totals_key] = Result([], ranked.totals, ranked.aggregates)
                next_id = None
                if ranked.more:
                    next_offset = position.offset + len(ranked.records)
                    next_id = (await self._cursors()).encode(
                        bound_to, Cursor(position.seq, next_offset, position.end, position.flushed_at)
                    )
                usage = list(self._monthly_usage(query, ranked.totals, ranked.records))
                return MonthlyPage(usage, hour_of(position.flushed_at), ranked.aggregates, next_id)
        located = await self._monthly_located(key, query, bound_to, position)
        page, next_id = await self._page(located)
        usage = list(self._monthly_usage(query, located.result.totals, page, located.result.distinct_totals))
        return MonthlyPage(usage, hour_of(located.position.flushed_at), located.result.aggregates, next_id)

    async def monthly_csv(self, grant: Grant, parameters: Parameters) -> bytes:
        """The monthly answer as UTF-8 CSV: every record at once, since a spreadsheet cannot page."""
        query = parse_monthly(parameters)
        bound_to, position = await self._monthly_position(grant.key, query)
        located = await self._monthly_located(grant.key, query, bound_to, position)

        def build() -> bytes:
            result = located.result
            usage = self._monthly_usage(query, result.totals, result.records, result.distinct_totals)
            return monthly_csv(usage, query.breakdown, query.fields).encode()

        # On a worker thread (a 65.8 MB CSV took 4.45 s), from the result, which never changes once
        # computed; org tags are read there as the result's computation reads them on the reader thread.
        return await asyncio.to_thread(build)

    async def _monthly_position(self, key: ApiKeyConfig, query: MonthlyQuery) -> tuple[str, Cursor]:
        """What the answer's cursors are bound to, and where its page starts."""
        self._check_retention("start_month", query.start)
        bound_to = fingerprint(
            "monthly",
            key,
            (
                query.start,
                query.end,
                query.fields,
                query.sort_field,
                query.descending,
                query.breakdown,
                query.include_descendants,
            ),
        )
        position = await self._position(
            bound_to, query.cursor, query.end or add_months(month_of(self._wall_clock()), 1)
        )
        return bound_to, position

    async def _monthly_located(
        self, key: ApiKeyConfig, query: MonthlyQuery, bound_to: str, position: Cursor
    ) -> _Located:
        def compute(store: LedgerStore) -> Result:
            tenants = self.orgs.visible(key.org, query.include_descendants, store.tenants())
            rows = store.monthly(tenants, query.start, position.end, position.seq)
            # The current month's hours so far, as of the snapshot (the same for every page).
            through_hour = hour_of(position.flushed_at) + HOUR
            distinct = {
                usage_type: monthly_counts(
                    hourly_counts(
                        store.distinct(tenants, kind, query.start, position.end, position.seq),
                        query.breakdown,
                        self.org_tags,
                    ),
                    usage_type,
                    through_hour,
                )
                for usage_type, kind in DISTINCT_USAGE_TYPES.items()
                if usage_type in {usage_type_of(name) for name in (*query.fields, query.sort_field)}
            }
            return monthly_result(rows, query, self.orgs, self.org_tags, distinct)

        return _Located(bound_to, position, await self._result(bound_to, position, compute))

    def _monthly_usage(
        self,
        query: MonthlyQuery,
        totals: OrgTotals,
        records: Iterable[Record],
        distinct_totals: DistinctTotals | None = None,
    ) -> Iterator[MonthlyUsage]:
        describe = org_describer(self.org_tags)
        counted = [name for name in query.fields if name in DISTINCT_USAGE_TYPES]
        for record in records:
            yield MonthlyUsage(
                record.period,
                describe(record.org),
                tags_document(query.breakdown, record.tags),
                {name: field_value(record, name, totals, distinct_totals) for name in query.fields},
                {name: record.bounds(name) for name in counted},
            )

    def _check_retention(self, name: str, start: int) -> None:
        months = self.config.ledger.retention_months
        earliest = add_months(month_of(self._wall_clock()), -months)
        if start < earliest:
            raise InvalidParameter(
                name,
                f"older than the {months} months this service keeps "
                f"(earliest {datetime.fromtimestamp(earliest, UTC):%Y-%m})",
            )

    async def _cursors(self) -> CursorCodec:
        if self._codec is None:
            self._codec = CursorCodec(await self.ledger.read(lambda store: store.secret()))
        return self._codec

    async def _position(self, bound_to: str, cursor_text: str | None, default_end: int) -> Cursor:
        """Where this page starts: a new snapshot for a first page, the cursor's for the next ones."""
        if cursor_text is None:
            snapshot = await self.ledger.read(lambda store: store.snapshot())
            return Cursor(
                snapshot.seq, 0, default_end, snapshot.flushed_at if snapshot.seq else self._wall_clock()
            )
        codec = await self._cursors()
        cursor = codec.decode(bound_to, cursor_text)
        oldest = await self.ledger.read(lambda store: store.oldest_snapshot())
        if cursor.seq < oldest:
            raise InvalidParameter(CURSOR_PARAMETER, "expired; start again without next_record_id")
        return cursor

    async def _result(
        self, bound_to: str, position: Cursor, compute: Callable[[LedgerStore], Result]
    ) -> Result:
        """Every record of one answer as of one snapshot: computed once (on the reader thread), then
        each further page is a slice. The snapshot never changes, so neither does the result."""
        cache_key = (bound_to, position.seq, position.end)
        result = self._results.get(cache_key)
        if result is None:
            result = await self.ledger.read(compute)
            if len(result.records) < RESULT_CACHE_RECORDS:  # a bigger one is recomputed for each page
                self._results[cache_key] = result
        return result

    async def _page(self, located: _Located) -> tuple[list[Record], str | None]:
        """The page at the located position, and the cursor of the next one (None on the last page)."""
        records, position = located.result.records, located.position
        page = list(records[position.offset : position.offset + self.config.api.page_size])
        next_offset = position.offset + len(page)
        if next_offset >= len(records):
            return page, None
        codec = await self._cursors()
        return page, codec.encode(
            located.bound_to, Cursor(position.seq, next_offset, position.end, position.flushed_at)
        )
