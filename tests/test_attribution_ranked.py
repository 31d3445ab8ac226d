"""A monthly page summed and ordered by the store (records.ranked_monthly_page) is the same slice of the
same result as the whole result computed in Python (records.monthly_result): records, order, totals,
aggregates, and whether more pages follow; and it declines what it cannot order."""

from __future__ import annotations

import random
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from distributor.attribution.config import OrgConfig, UsageAttributionConfig
from distributor.attribution.orgs import OrgDirectory
from distributor.attribution.query import MonthlyQuery
from distributor.attribution.records import (
    RANKED_DEPTH,
    MonthlyPageRecords,
    Record,
    monthly_result,
    ranked_monthly_page,
)
from distributor.ledger.ledger import (
    BYTES_USAGE,
    SPANS_USAGE,
    LedgerEntry,
    Tags,
    UsageRow,
    add_months,
    month_of,
)
from distributor.ledger.postgresql import PostgresLedgerStore
from distributor.ledger.sqlite import SqliteLedgerStore
from tests.support.attribution import RunningAttribution, attribution_service, spans_request, write_config
from tests.support.ledger import PostgresSchemas

MONTH = 1_793_491_200  # 2026-11-01 UTC
MONTHS = (add_months(MONTH, -1), MONTH, add_months(MONTH, 1))
# Names order the orgs otherwise than their ids do, so equal values are ordered by name.
ORGS = (
    OrgConfig("t-a", name="Zeta", parent="holding"),
    OrgConfig("t-b", name="Alpha", parent="t-a"),  # a grandchild of the holding
    OrgConfig("t-c", name="Mid", parent="holding"),
    OrgConfig("t-d", name="Alpha", parent="holding"),  # the same name as t-b: ordered by id then
    OrgConfig("solo", name="Solo", parent="holding"),
    OrgConfig("plain", name="Plain", parent="holding"),
)
PAIR = ("service_name", "team")
LABELS = {"t-a": PAIR, "t-b": PAIR, "t-c": PAIR, "t-d": PAIR, "solo": ("team",), "plain": ()}
TENANTS = sorted(LABELS)


def org_tags(tenant: str) -> tuple[str, ...]:
    return LABELS.get(tenant, PAIR)


class CountingStore(SqliteLedgerStore):
    """Counts the reads of the rows equal to the last one a page read (a page boundary in a tie)."""

    ties_read = 0

    def monthly_ranked(
        self,
        tenants: Collection[str],
        by_series: Collection[str],
        start: int,
        end: int,
        seq: int,
        order_by: str,
        descending: bool,
        limit: int | None,
        at: tuple[int, int] | None = None,
    ) -> list[UsageRow]:
        if at is not None:
            self.ties_read += 1
        return super().monthly_ranked(tenants, by_series, start, end, seq, order_by, descending, limit, at)


def fill(store: SqliteLedgerStore, seed: int) -> int:
    """Several flushes over three months with few distinct values (many ties, zeros among them), the
    same series in several hours and flushes, and the older flushes merged; returns the last seq."""
    rng = random.Random(seed)
    seq = 0
    for flush in range(6):
        entries = []
        for tenant, labels in LABELS.items():
            for _ in range(rng.randrange(4, 14)):
                values = {"service_name": f"svc-{rng.randrange(4)}", "team": rng.choice(["ops", "web", "db"])}
                entries.append(
                    LedgerEntry(
                        tenant,
                        rng.choice(MONTHS) + 3600 * rng.randrange(3),
                        tuple((label, values[label]) for label in labels),
                        rng.choice([0, 1, 2, 3, 5]),
                        rng.choice([0, 1, 2]),
                    )
                )
        seq = store.write(entries, flushed_at=1000.0 + flush)
        if flush == 3:
            store.maintain(merge_before=1000.0 + flush, keep_from_hour=0, keep_from_month=0)
    return seq


def query(
    breakdown: tuple[str, ...] | None, sort_field: str, descending: bool, fields: str = "*"
) -> MonthlyQuery:
    names = (
        BYTES_USAGE,
        "ingested_spans_bytes_percentage",
        SPANS_USAGE,
        "estimated_ingested_spans_percentage",
    )
    return MonthlyQuery(
        MONTHS[0],
        add_months(MONTHS[-1], 1),
        names if fields == "*" else (fields,),
        sort_field,
        descending,
        breakdown,
        True,
        None,
    )


def identity(record: Record) -> tuple[Any, ...]:
    return (record.period, record.org.org_id, record.tags, record.spans_bytes, record.spans)


def pages(
    store: SqliteLedgerStore,
    tenants: list[str],
    monthly: MonthlyQuery,
    orgs: OrgDirectory,
    seq: int,
    size: int,
) -> list[MonthlyPageRecords]:
    """Every page, as the API pages: each starting where the one before ended, with its totals."""
    found: list[MonthlyPageRecords] = []
    offset = 0
    while True:
        known = found[0].totals if found else None
        window = (monthly.start, monthly.end or 0, seq)
        page = ranked_monthly_page(store, tenants, monthly, orgs, org_tags, window, offset, size, known)
        assert page is not None
        found.append(page)
        offset += len(page.records)
        if not page.more:
            return found
        assert len(page.records) == size  # only the last page is short


@pytest.fixture
def orgs() -> OrgDirectory:
    return OrgDirectory(UsageAttributionConfig(orgs=ORGS))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    ("tenants", "breakdown"),
    [
        pytest.param(TENANTS, None, id="no-breakdown"),
        pytest.param(TENANTS, PAIR, id="by-both-tags"),  # solo and plain lack service_name: tags null
        pytest.param(TENANTS, ("team", "service_name"), id="by-both-tags-reversed"),
        pytest.param(["solo", "plain", "t-a"], ("team",), id="by-the-one-tag-of-solo"),
        pytest.param(["t-b"], PAIR, id="one-org"),
    ],
)
@pytest.mark.parametrize("sort_field", [BYTES_USAGE, SPANS_USAGE])
@pytest.mark.parametrize("descending", [True, False])
def test_every_page_is_the_slice_of_the_whole_result(
    tmp_path: Path,
    orgs: OrgDirectory,
    seed: int,
    tenants: list[str],
    breakdown: tuple[str, ...] | None,
    sort_field: str,
    descending: bool,
) -> None:
    store = CountingStore(tmp_path / "ledger.db")
    seq = fill(store, seed)
    monthly = query(breakdown, sort_field, descending)
    if breakdown == ("team",):  # t-a's series have two labels: its records would add several up
        assert (
            ranked_monthly_page(store, tenants, monthly, orgs, org_tags, (MONTHS[0], MONTHS[-1], seq), 0, 5)
            is None
        )
        tenants = ["solo", "plain"]
    whole = monthly_result(
        store.monthly(tenants, monthly.start, monthly.end or 0, seq), monthly, orgs, org_tags
    )
    expected = [identity(record) for record in whole.records]
    assert len(expected) > 10
    for size in (1, 2, 5, 1000):
        paged = pages(store, tenants, monthly, orgs, seq, size)
        assert [identity(record) for page in paged for record in page.records] == expected, size
        for page in paged:
            assert page.aggregates == whole.aggregates
            assert dict(page.totals) == dict(whole.totals)
    if len(tenants) > 2:
        assert len({record[3] for record in expected}) < len(expected)  # equal bytes to order
        if breakdown is not None:
            assert store.ties_read > 0  # some page ended inside a run of equal values
    store.close()


def test_what_the_store_cannot_order_is_declined(tmp_path: Path, orgs: OrgDirectory) -> None:
    store = SqliteLedgerStore(tmp_path / "ledger.db")
    seq = fill(store, 4)
    window = (MONTHS[0], add_months(MONTHS[-1], 1), seq)
    assert store.tenants() == TENANTS  # each once, in order

    def ranked(monthly: MonthlyQuery, tenants: list[str] = TENANTS, offset: int = 0) -> object:
        return ranked_monthly_page(store, tenants, monthly, orgs, org_tags, window, offset, 5)

    assert ranked(query(PAIR, BYTES_USAGE, True)) is not None
    assert ranked(query(PAIR, "ingested_spans_bytes_percentage", True)) is None
    assert ranked(query(PAIR, "infra_host_usage", True)) is None  # a type not recorded: all equal
    assert ranked(query(PAIR, BYTES_USAGE, True, fields="infra_host_usage")) is None  # no records
    assert ranked(query(PAIR, BYTES_USAGE, True), offset=RANKED_DEPTH + 1) is None
    assert ranked(query(PAIR, BYTES_USAGE, True), offset=RANKED_DEPTH) is not None
    assert ranked(query(("team",), BYTES_USAGE, True), tenants=["t-c"]) is None  # two labels a series
    # A series recorded under another dimension set (no team): t-c's records by both tags would add it
    # up with its other series lacking team, so from then on t-c is declined.
    assert ranked(query(PAIR, BYTES_USAGE, True), tenants=["t-c"]) is not None
    store.write([LedgerEntry("t-c", MONTH, (("service_name", "old"),), 1, 1)], flushed_at=2000.0)
    assert ranked(query(PAIR, BYTES_USAGE, True), tenants=["t-c"]) is None
    assert ranked(query(PAIR, BYTES_USAGE, True), tenants=["t-d"]) is not None
    store.close()


def test_label_sets_follow_new_series(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "ledger.db")
    store.write([LedgerEntry("a", MONTH, (("team", "x"), ("zone", "1")), 1, 1)], flushed_at=1.0)
    assert store.label_sets(["a", "b"]) == {"a": {("team", "zone")}, "b": set()}
    store.write([LedgerEntry("a", MONTH, (("team", "y"), ("zone", "2")), 1, 1)], flushed_at=2.0)
    assert store.label_sets(["a"]) == {"a": {("team", "zone")}}
    store.write(
        [LedgerEntry("a", MONTH, (("team", "z"),), 1, 1), LedgerEntry("b", MONTH, (), 1, 1)], flushed_at=3.0
    )
    assert store.label_sets(["a", "b"]) == {"a": {("team", "zone"), ("team",)}, "b": {()}}
    reopened = SqliteLedgerStore(tmp_path / "ledger.db")  # another process on the same file
    assert reopened.label_sets(["b", "a"]) == {"a": {("team", "zone"), ("team",)}, "b": {()}}
    store.close()
    reopened.close()


def test_ranked_rows_are_summed_and_ordered_by_value_then_month(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "ledger.db")
    later = add_months(MONTH, 1)
    team = (("team", "x"),)
    store.write([LedgerEntry("a", MONTH, team, 5, 1), LedgerEntry("b", MONTH, team, 4, 0)], flushed_at=1.0)
    seq = store.write(
        [
            LedgerEntry("a", MONTH + 3600, team, 2, 1),  # the same series again: 7 bytes in the month
            LedgerEntry("a", later, team, 7, 0),
            LedgerEntry("b", later, (("team", "y"),), 3, 0),  # b is summed whole: 7 bytes that month
            LedgerEntry("b", later, (("team", "z"),), 4, 0),
            LedgerEntry("b", MONTH, (("team", "w"),), 0, 0),  # no usage: no row of its own
        ],
        flushed_at=2.0,
    )
    months = (MONTH, add_months(later, 1))

    def ranked(descending: bool, limit: int | None, at: tuple[int, int] | None = None) -> list[UsageRow]:
        return store.monthly_ranked(["a", "b"], ["a"], *months, seq, BYTES_USAGE, descending, limit, at)

    rows = ranked(True, None)
    assert [(row.spans_bytes, row.period) for row in rows] == [(7, later), (7, later), (7, MONTH), (4, MONTH)]
    assert set(rows[:2]) == {UsageRow(later, "a", team, 7, 0), UsageRow(later, "b", (), 7, 0)}
    assert rows[2:] == [UsageRow(MONTH, "a", team, 7, 2), UsageRow(MONTH, "b", (), 4, 0)]
    assert [(row.spans_bytes, row.period) for row in ranked(False, 3)] == [(4, MONTH), (7, MONTH), (7, later)]
    assert set(ranked(True, None, at=(7, later))) == set(rows[:2])
    assert ranked(True, None, at=(7, MONTH)) == [UsageRow(MONTH, "a", team, 7, 2)]
    assert store.monthly_ranked(["a", "b"], [], MONTH, later, seq, SPANS_USAGE, True, None) == [
        UsageRow(MONTH, "a", (), 7, 2),
        UsageRow(MONTH, "b", (), 4, 0),
    ]
    assert store.monthly_ranked(["a"], ["a"], MONTH, later, seq - 1, BYTES_USAGE, True, None) == [
        UsageRow(MONTH, "a", team, 5, 1)  # as of the first flush
    ]
    store.close()


# -- through the API: the same documents, cursors included, as pages of the whole result -------------

MONTHLY_PATH = "/api/v1/usage/monthly-attribution"


async def documents(running: RunningAttribution, params: dict[str, str]) -> list[Any]:
    """Every page of the answer, following next_record_id."""
    pages: list[Any] = []
    cursor: str | None = None
    while not pages or cursor is not None:
        sent = {**params, **({"next_record_id": cursor} if cursor else {})}
        status, body, _ = await running.get(MONTHLY_PATH, sent)
        assert status == 200, body
        pages.append(body)
        cursor = body["metadata"]["pagination"]["next_record_id"]
        assert len(pages) < 100
    return pages


@pytest.mark.parametrize("direction", ["desc", "asc"])
@pytest.mark.parametrize("sort_name", [BYTES_USAGE, SPANS_USAGE])
@pytest.mark.parametrize("descendants", ["true", "false"])
async def test_api_pages_are_those_of_the_whole_result(
    tmp_path: Path, direction: str, sort_name: str, descendants: str
) -> None:
    async with attribution_service(write_config(tmp_path, page_size=2)) as running:
        for tenant, service, spans, team in [
            ("acme", "checkout", 3, "payments"),
            ("acme", "search", 3, "search"),  # equal to checkout's
            ("acme", "ops", 1, ""),  # no team: its value is missing
            ("holding", "ops", 3, "ops"),
            ("holding", "web", 2, "web"),
            ("globex", "web", 3, ""),  # globex's tags lack team: one record, tags null
        ]:
            await running.send(tenant, spans_request(service, spans, team=team))
        await running.flush()
        api = running.service.attribution_http.api
        assert api is not None
        params = {
            "start_month": "2026-11",
            "fields": "*",
            "tag_breakdown_keys": "service_name,team",
            "sort_name": sort_name,
            "sort_direction": direction,
            "include_descendants": descendants,
        }
        ranked = await documents(running, params)
        assert all(key[0].endswith(":totals") for key in api._results)  # no whole result was made
        status, _, _ = await running.get(MONTHLY_PATH, params, Accept="text/csv")  # makes it
        assert status == 200
        assert not all(key[0].endswith(":totals") for key in api._results)
        whole = await documents(running, params)  # pages of it
        assert ranked == whole
        assert len(whole) == (3 if descendants == "true" else 1)  # 6 records, or the holding's 2


def ranked_groups(rows: list[UsageRow], order_by: str) -> list[tuple[tuple[int, int], set[UsageRow]]]:
    """The rows as runs of equal (sum, month), in order: rows within a run may come in any order."""
    runs: list[tuple[tuple[int, int], set[UsageRow]]] = []
    for row in rows:
        key = (row.spans_bytes if order_by == BYTES_USAGE else row.spans, row.period)
        if runs and runs[-1][0] == key:
            runs[-1][1].add(row)
        else:
            runs.append((key, {row}))
    return runs


@pytest.mark.parametrize("seed", [1, 2])
def test_the_postgresql_store_sums_orders_and_cuts_as_sqlite_does(tmp_path: Path, seed: int) -> None:
    """SQLite's ranked months are the oracle for PostgreSQL's, on the same flushes, as of every flush a
    reader can still ask for; and the hours as of that flush, summed here, are the oracle for both (a
    month is read from running totals less the flushes after it, an hour from its own rows)."""
    schemas = PostgresSchemas()
    sqlite_store = SqliteLedgerStore(tmp_path / "ledger.db")
    postgres_store = PostgresLedgerStore(schemas.dsn())
    try:
        seqs = {fill(sqlite_store, seed), fill(postgres_store, seed)}
        assert len(seqs) == 1
        last = seqs.pop()
        assert sqlite_store.oldest_snapshot() == postgres_store.oldest_snapshot() < last
        for seq in range(sqlite_store.oldest_snapshot(), last + 1):
            compare_ranked(sqlite_store, postgres_store, seq)
        assert postgres_store.label_sets([*TENANTS, "nobody"]) == sqlite_store.label_sets(
            [*TENANTS, "nobody"]
        )
    finally:
        sqlite_store.close()
        postgres_store.close()
        schemas.close()


def compare_ranked(sqlite_store: SqliteLedgerStore, postgres_store: PostgresLedgerStore, seq: int) -> None:
    start, end = MONTHS[0], add_months(MONTHS[-1], 1)
    for by_series in (TENANTS, ["t-a", "solo"], []):
        summed: dict[tuple[int, str, Tags], list[int]] = {}
        for row in sqlite_store.hourly(TENANTS, start, end, seq):
            tags = row.tags if row.tenant in by_series else ()
            sums = summed.setdefault((month_of(row.period), row.tenant, tags), [0, 0])
            sums[0] += row.spans_bytes
            sums[1] += row.spans
        from_hours = {UsageRow(*key, size, spans) for key, (size, spans) in summed.items() if size or spans}
        for store in (sqlite_store, postgres_store):
            ranked = store.monthly_ranked(TENANTS, by_series, start, end, seq, BYTES_USAGE, True, None)
            assert set(ranked) == from_hours
            if by_series == TENANTS:
                assert set(store.monthly(TENANTS, start, end, seq)) == from_hours
        for order_by in (BYTES_USAGE, SPANS_USAGE):
            for descending in (True, False):
                arguments = (TENANTS, by_series, start, end, seq, order_by, descending)
                whole = sqlite_store.monthly_ranked(*arguments, None)
                assert ranked_groups(postgres_store.monthly_ranked(*arguments, None), order_by) == (
                    ranked_groups(whole, order_by)
                )
                cut = postgres_store.monthly_ranked(*arguments, 5)
                assert len(cut) == min(5, len(whole))
                first = whole[0]
                at = (first.spans_bytes if order_by == BYTES_USAGE else first.spans, first.period)
                assert set(postgres_store.monthly_ranked(*arguments, None, at)) == set(
                    sqlite_store.monthly_ranked(*arguments, None, at)
                )
