"""The usage ledger: its stores, SQLite and PostgreSQL alike (snapshots as of a flush, merging, retention,
idempotent flushes), what the pipeline
records into it (the tracker's attribution, overflow, refusals), durability across failed flushes,
graceful stops, SIGTERM and SIGKILL, its metrics, and the usage_attribution settings (keys are secrets).

Semantics: docs/usage-attribution-api.md ("Ledger"). Clocks are manual wherever the service
runs in process; only the real CLI (running_cli) uses the wall clock, and its queries start hours back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from distributor.common.distinct import DistinctCount, union
from distributor.common.usage import Usage
from distributor.config import load_config
from distributor.ledger.ledger import (
    BYTES_USAGE,
    DISTINCT_USAGE_TYPES,
    HOSTS,
    HOUR,
    SESSIONS,
    SPANS_USAGE,
    DistinctRow,
    LedgerEntry,
    LedgerStore,
    Snapshot,
    UsageRow,
    add_months,
    hour_of,
    month_of,
)
from distributor.ledger.sqlite import SCHEMA_VERSION, SqliteLedgerStore, encode_tags
from distributor.overrides import ConfigError
from distributor.service import Service
from distributor.usage.config import CostAttributionConfig
from distributor.usage.tracker import MISSING, OVERFLOW, UsageTracker
from tests.support.attribution import (
    KEYS,
    START,
    RunningAttribution,
    attribution_service,
    spans_request,
    write_config,
)
from tests.support.backends import RecordingBackend, forwarder_to
from tests.support.cli import RunningCli, running_cli
from tests.support.clock import ManualClock
from tests.support.config_files import edit_yaml
from tests.support.ledger import BACKENDS, LedgerBackend, ledger_backend, standalone_ledger
from tests.support.metrics import Labels, parse_usage, sample_value, scrape
from tests.support.otlp import batch, limits, received, request, span
from tests.support.polling import eventually
from tests.support.senders import post_traces
from tests.support.service import with_forwarders

H10 = hour_of(START)  # 2026-11-22 10:00 UTC
NOV = month_of(START)
HOURLY_PATH = "/api/v1/usage/hourly-attribution"
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"
Tags = tuple[tuple[str, str], ...]
StoredUsage = dict[tuple[int, str, Tags], tuple[int, int]]


def utc(year: int, month: int, day: int = 1, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


def team(name: str) -> Tags:
    return (("team", name),)


def entry(tenant: str, hour: int, size: int, spans: int, tags: Tags = ()) -> LedgerEntry:
    return LedgerEntry(tenant, hour, tags, size, spans)


def as_usage(rows: list[UsageRow]) -> StoredUsage:
    """{(period, tenant, tags): (bytes, spans)}, rows of one series and period added up (a store may
    return several: flushes not merged yet), series that used nothing left out."""
    usage: StoredUsage = {}
    for row in rows:
        key = (row.period, row.tenant, row.tags)
        size, spans = usage.get(key, (0, 0))
        usage[key] = (size + row.spans_bytes, spans + row.spans)
    return {key: totals for key, totals in usage.items() if totals != (0, 0)}


def row_counts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("hourly", "monthly", "flushes")
        }


def execute(path: Path, statement: str) -> None:
    """One statement on the ledger file through a connection of the test's own."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(statement)
        db.commit()


# A write that fails inside its transaction, after the series rows were inserted: what a full disk does.
FAIL_WRITES = "CREATE TRIGGER disk_full BEFORE INSERT ON hourly BEGIN SELECT RAISE(ABORT, 'disk full'); END"
ALLOW_WRITES = "DROP TRIGGER disk_full"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerBackend]:
    """Each store-level test runs on both backends (PostgreSQL: a schema of its own, dropped after)."""
    with ledger_backend(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def store(backend: LedgerBackend) -> LedgerStore:
    return backend.open()


# --- 1. The stores ----------------------------------------------------------------------------------------


def test_a_read_as_of_a_flush_sees_that_flush_and_earlier_ones_only(store: LedgerStore) -> None:
    assert store.snapshot() == Snapshot(0, 0.0)
    first = store.write(
        [
            entry("acme", H10, 100, 2, team("a")),
            entry("acme", H10, 1, 1, team("a")),  # the same series and hour twice in one flush: summed
            entry("acme", H10 + HOUR, 50, 1, team("a")),
            entry("acme", H10, 0, 0, team("idle")),  # nothing used
            entry("globex", H10, 7, 1),
        ],
        flushed_at=1000.0,
    )
    second = store.write([entry("acme", H10, 10, 1, team("a")), entry("acme", H10, 5, 1, team("b"))], 1001.0)
    assert (first, second) == (1, 2)
    assert store.snapshot() == Snapshot(2, 1001.0)
    assert store.oldest_snapshot() == 0
    assert store.tenants() == ["acme", "globex"]

    def hourly(
        seq: int, tenants: tuple[str, ...] = ("acme",), start: int = H10, end: int = H10 + 2 * HOUR
    ) -> StoredUsage:
        return as_usage(store.hourly(tenants, start, end, seq))

    as_of_first = {(H10, "acme", team("a")): (101, 3), (H10 + HOUR, "acme", team("a")): (50, 1)}
    assert hourly(1) == as_of_first
    assert hourly(2) == {
        (H10, "acme", team("a")): (111, 4),
        (H10, "acme", team("b")): (5, 1),
        (H10 + HOUR, "acme", team("a")): (50, 1),
    }
    assert hourly(0) == {}
    assert hourly(2, end=H10 + HOUR) == {(H10, "acme", team("a")): (111, 4), (H10, "acme", team("b")): (5, 1)}
    assert hourly(2, start=H10 + HOUR) == {(H10 + HOUR, "acme", team("a")): (50, 1)}
    assert hourly(1, tenants=("acme", "globex")) == {**as_of_first, (H10, "globex", ()): (7, 1)}
    assert hourly(2, tenants=()) == {}

    dec = add_months(NOV, 1)
    assert as_usage(store.monthly(["acme"], NOV, dec, 1)) == {(NOV, "acme", team("a")): (151, 4)}
    assert as_usage(store.monthly(["acme"], NOV, dec, 2)) == {
        (NOV, "acme", team("a")): (161, 5),
        (NOV, "acme", team("b")): (5, 1),
    }
    assert as_usage(store.monthly(["acme"], dec, add_months(dec, 1), 2)) == {}


def test_every_tenant_with_usage_is_listed_whichever_months_it_used_until_retention_deletes_them(
    store: LedgerStore,
) -> None:
    store.write([entry("globex", utc(2026, 10, 31, 23), 1, 1), entry("acme", H10, 2, 1)], 1000.0)
    store.write([entry("initech", utc(2026, 9, 1), 3, 1)], 1001.0)
    assert store.tenants() == ["acme", "globex", "initech"]
    # A tenant whose every month retention deleted has no usage left to answer for.
    store.maintain(merge_before=2000.0, keep_from_hour=utc(2026, 10), keep_from_month=utc(2026, 10))
    assert store.tenants() == ["acme", "globex"]


def test_merging_old_flushes_shrinks_the_file_and_changes_no_read_at_or_after_the_horizon(
    backend: LedgerBackend,
) -> None:
    store = backend.open()
    tenants = ["acme", "globex"]

    def reads(seq: int) -> tuple[StoredUsage, StoredUsage]:
        return (
            as_usage(store.hourly(tenants, H10, H10 + 2 * HOUR, seq)),
            as_usage(store.monthly(tenants, NOV, add_months(NOV, 1), seq)),
        )

    flushes = [
        [entry("acme", H10, 100, 2, team("a")), entry("acme", H10, 10, 1, team("b"))],
        [entry("acme", H10, 20, 1, team("a")), entry("acme", H10 + HOUR, 5, 1, team("a"))],
        [entry("acme", H10, 30, 1, team("a")), entry("globex", H10, 7, 1)],
        [entry("acme", H10 + HOUR, 6, 1, team("a")), entry("acme", H10, 1, 1, team("b"))],
        [entry("acme", H10, 40, 1, team("a"))],
    ]
    for index, entries in enumerate(flushes):
        store.write(entries, 1000.0 + index)
    before = {seq: reads(seq) for seq in range(1, 6)}
    # A flush adds its hours, and adds them to its months' running totals (one row per series).
    assert backend.row_counts() == {"hourly": 9, "monthly": 3, "flushes": 5}

    store.maintain(merge_before=1003.5, keep_from_hour=0, keep_from_month=0)  # flushes 1 to 4 are older
    assert store.oldest_snapshot() == 4
    assert store.snapshot() == Snapshot(5, 1004.0)
    # One row per (period, series) up to flush 4: hourly (10:00 a, 10:00 b, 11:00 a, globex) + flush 5,
    # monthly (a, b, globex).
    assert backend.row_counts() == {"hourly": 5, "monthly": 3, "flushes": 2}
    assert {seq: reads(seq) for seq in (4, 5)} == {seq: before[seq] for seq in (4, 5)}

    # A second merge folds the first one's rows together with the newer flushes.
    store.write([entry("acme", H10, 3, 1, team("a"))], 1005.0)
    store.write([entry("acme", H10, 4, 1, team("b"))], 1006.0)
    before.update({seq: reads(seq) for seq in (6, 7)})
    store.maintain(merge_before=2000.0, keep_from_hour=0, keep_from_month=0)
    assert store.oldest_snapshot() == 7
    assert backend.row_counts() == {"hourly": 4, "monthly": 3, "flushes": 1}
    assert reads(7) == before[7]
    store.maintain(merge_before=2000.0, keep_from_hour=0, keep_from_month=0)  # nothing new: no change
    assert backend.row_counts() == {"hourly": 4, "monthly": 3, "flushes": 1}

    # Flush numbers go on after the merged ones, and the merged ledger is what a new process reads.
    assert store.write([entry("acme", H10, 2, 1, team("a"))], 2001.0) == 8
    store.close()
    reopened = backend.open()
    try:
        hourly, monthly = reopened_reads = (
            as_usage(reopened.hourly(tenants, H10, H10 + 2 * HOUR, 8)),
            as_usage(reopened.monthly(tenants, NOV, add_months(NOV, 1), 8)),
        )
        assert reopened.oldest_snapshot() == 7
        assert hourly[H10, "acme", team("a")] == (100 + 20 + 30 + 40 + 3 + 2, 7)
        assert hourly[H10, "acme", team("b")] == (10 + 1 + 4, 3)
        assert monthly[NOV, "acme", team("a")] == (100 + 20 + 5 + 30 + 6 + 40 + 3 + 2, 9)
        assert reopened_reads != before[7]
    finally:
        reopened.close()


def test_retention_deletes_hours_and_months_before_their_starts(store: LedgerStore) -> None:
    jan_23, feb_09, feb_10 = utc(2025, 1, 31, 23), utc(2025, 2, 1, 9), utc(2025, 2, 1, 10)
    store.write(
        [
            entry("acme", jan_23, 1, 1),
            entry("acme", feb_09, 2, 1),
            entry("acme", feb_10, 4, 1),
            entry("acme", H10, 8, 1),
        ],
        1000.0,
    )
    store.maintain(merge_before=0.0, keep_from_hour=feb_10, keep_from_month=utc(2025, 2))
    assert store.oldest_snapshot() == 0  # no flush is older than merge_before: nothing merged

    def stored() -> tuple[StoredUsage, StoredUsage]:
        return (
            as_usage(store.hourly(["acme"], 0, H10 + HOUR, 1)),
            as_usage(store.monthly(["acme"], 0, H10 + HOUR, 1)),
        )

    # The hours of a flush not merged yet stay until it is (a month as of an earlier flush takes them
    # from its totals), unless their month goes too.
    hours, months = stored()
    assert hours == {(feb_09, "acme", ()): (2, 1), (feb_10, "acme", ()): (4, 1), (H10, "acme", ()): (8, 1)}
    assert months == {(utc(2025, 2), "acme", ()): (6, 2), (NOV, "acme", ()): (8, 1)}
    store.maintain(merge_before=2000.0, keep_from_hour=feb_10, keep_from_month=utc(2025, 2))
    assert store.oldest_snapshot() == 1
    hours, months = stored()
    assert hours == {(feb_10, "acme", ()): (4, 1), (H10, "acme", ()): (8, 1)}
    assert months == {
        (utc(2025, 2), "acme", ()): (6, 2),
        (NOV, "acme", ()): (8, 1),
    }  # hours and months are pruned each by its own start


def test_retention_leaves_reads_as_of_an_earlier_flush_exact_for_orgs_and_series(store: LedgerStore) -> None:
    jan, feb = utc(2025, 1), utc(2025, 2)
    feb_09, feb_10 = utc(2025, 2, 1, 9), utc(2025, 2, 1, 10)
    first = store.write(
        [entry("acme", utc(2025, 1, 31, 23), 1, 1), entry("acme", feb_09, 2, 1, team("a"))], 1000.0
    )
    store.write([entry("acme", feb_09, 3, 1, team("a")), entry("globex", feb_10, 4, 1)], 1001.0)
    # Nothing merged: the hour before feb_10 of the second flush is what a read as of the first takes
    # from February's totals; January goes whole, from the series' totals and the orgs' alike.
    store.maintain(merge_before=0.0, keep_from_hour=feb_10, keep_from_month=feb)

    def per_org(seq: int) -> list[UsageRow]:
        return store.monthly_ranked(
            ["acme", "globex"], [], jan, add_months(feb, 1), seq, BYTES_USAGE, True, None
        )

    assert as_usage(store.monthly(["acme"], jan, add_months(feb, 1), first)) == {
        (feb, "acme", team("a")): (2, 1)
    }
    assert per_org(first) == [UsageRow(feb, "acme", (), 2, 1)]
    assert per_org(first + 1) == [UsageRow(feb, "acme", (), 5, 2), UsageRow(feb, "globex", (), 4, 1)]


def test_a_month_read_as_of_a_flush_is_exact_while_another_flush_commits_during_the_read(
    store: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flushes after the snapshot are found by one statement and taken from the totals by the next:
    both must see the same flushes, or a flush committed between them is counted in a month as of an
    earlier one."""
    first = store.write([entry("acme", H10, 100, 2, team("a"))], 1000.0)
    store_module = sys.modules[type(store).__module__]
    months_as_of = store_module._months_as_of
    interloping = [entry("acme", H10 + HOUR, 10, 1, team("a")), entry("acme", H10, 5, 1, team("b"))]

    def a_flush_commits_meanwhile(db: Any, parameters: dict[str, Any]) -> tuple[str, str, str]:
        found = months_as_of(db, parameters)
        if interloping:
            store.write(interloping, 1001.0)  # the store's writer: another connection
            interloping.clear()
        return found

    monkeypatch.setattr(store_module, "_months_as_of", a_flush_commits_meanwhile)
    month = (NOV, add_months(NOV, 1))
    assert as_usage(store.monthly(["acme"], *month, first)) == {(NOV, "acme", team("a")): (100, 2)}
    assert store.snapshot().seq == first + 1
    interloping.append(entry("acme", H10 + 2 * HOUR, 7, 1, team("a")))  # an hour no later flush had
    assert store.monthly_ranked(["acme"], [], *month, first, BYTES_USAGE, True, None) == [
        UsageRow(NOV, "acme", (), 100, 2)
    ]
    assert store.snapshot().seq == first + 2


async def test_a_flush_prunes_usage_older_than_retention_months(backend: LedgerBackend) -> None:
    seeded = backend.open()
    july_last, august_first = utc(2025, 7, 31, 23), utc(2025, 8, 1, 0)
    seeded.write([entry("acme", july_last, 1, 1), entry("acme", august_first, 2, 1)], START - 10 * HOUR)
    seeded.close()
    registry = CollectorRegistry()
    ledger = standalone_ledger(backend.open(), lambda: START, registry)
    try:
        assert await ledger.flush()  # November 2026 keeps 15 months back: from August 2025
        hours = await ledger.read(lambda s: as_usage(s.hourly(["acme"], 0, H10, s.snapshot().seq)))
        assert hours == {(august_first, "acme", ()): (2, 1)}
        months = await ledger.read(lambda s: as_usage(s.monthly(["acme"], 0, NOV, s.snapshot().seq)))
        assert months == {(august_first, "acme", ()): (2, 1)}
    finally:
        await ledger.stop(0.0)


@pytest.mark.parametrize(
    ("moment", "hour", "month"),
    [
        (utc(2026, 12, 31, 23) + 3599.999, utc(2026, 12, 31, 23), utc(2026, 12)),
        (utc(2027, 1, 1, 0), utc(2027, 1, 1, 0), utc(2027, 1)),
        (utc(2024, 2, 29, 12) + 1, utc(2024, 2, 29, 12), utc(2024, 2)),
    ],
)
def test_hour_and_month_of_a_moment(moment: float, hour: int, month: int) -> None:
    assert (hour_of(moment), month_of(moment)) == (hour, month)


@pytest.mark.parametrize(
    ("month", "count", "expected"),
    [
        (utc(2026, 12), 1, utc(2027, 1)),
        (utc(2027, 1), -1, utc(2026, 12)),
        (utc(2026, 11), -15, utc(2025, 8)),
        (utc(2026, 1), -13, utc(2024, 12)),
        (utc(2026, 12), 13, utc(2028, 1)),
        (utc(2026, 1), -12, utc(2025, 1)),
        (utc(2026, 5), 0, utc(2026, 5)),
    ],
)
def test_add_months_across_year_boundaries(month: int, count: int, expected: int) -> None:
    assert add_months(month, count) == expected


def test_one_flush_across_new_year_lands_in_two_months(store: LedgerStore) -> None:
    store.write([entry("acme", utc(2026, 12, 31, 23), 3, 1), entry("acme", utc(2027, 1, 1, 0), 5, 2)], 1.0)
    months = as_usage(store.monthly(["acme"], utc(2026, 12), utc(2027, 2), 1))
    assert months == {(utc(2026, 12), "acme", ()): (3, 1), (utc(2027, 1), "acme", ()): (5, 2)}
    assert as_usage(store.monthly(["acme"], utc(2026, 12), utc(2027, 1), 1)) == {
        (utc(2026, 12), "acme", ()): (3, 1)
    }


def series_ids(path: Path) -> dict[tuple[str, str], int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {(tenant, tags): series for series, tenant, tags in db.execute("SELECT * FROM series")}


def test_a_flush_of_thousands_of_new_series_stores_each_exactly_and_keeps_ids_across_a_restart(
    backend: LedgerBackend,
) -> None:
    tag_sets = [(("service_name", f"svc-{n % 50}"), ("team", f"team-{n // 50}")) for n in range(2500)]
    first = [
        entry(tenant, H10, 1000 + n, 1 + n % 7, tags)
        for tenant in ("acme", "globex")
        for n, tags in enumerate(tag_sets[:500])
    ]
    # After the restart: the first flush's series again (their ids read back from the file), next to
    # 4,000 series the file has never seen.
    second = [
        entry(tenant, H10, 7 + n, 2, tags) for tenant in ("acme", "globex") for n, tags in enumerate(tag_sets)
    ]
    store = backend.open()
    store.write(first, 1.0)
    store.close()
    ids_before_restart = backend.series_ids()
    store = backend.open()
    try:
        store.write(second, 2.0)
        expected: StoredUsage = {}
        for flushed in (first, second):
            for added in flushed:
                key = (H10, added.tenant, added.tags)
                size, spans = expected.get(key, (0, 0))
                expected[key] = (size + added.spans_bytes, spans + added.spans)
        assert len(expected) == 5000
        assert as_usage(store.hourly(["acme", "globex"], H10, H10 + HOUR, 2)) == expected
        assert as_usage(store.monthly(["acme", "globex"], NOV, NOV + 31 * 24 * HOUR, 2)) == {
            (NOV, tenant, tags): totals for (_, tenant, tags), totals in expected.items()
        }
        assert as_usage(store.hourly(["acme", "globex"], H10, H10 + HOUR, 1)) == {
            (H10, added.tenant, added.tags): (added.spans_bytes, added.spans) for added in first
        }
    finally:
        store.close()
    ids_after = backend.series_ids()
    assert len(ids_before_restart) == 1000 and len(ids_after) == 5000
    assert {key: ids_after[key] for key in ids_before_restart} == ids_before_restart


# What version 1 of the store made of five flushes, merged through flush 2, the first hour of November
# then cut by an hourly retention that kept its month: each flush went to `monthly` too, both tables had
# seq indexes, and `series` was a rowid table with a unique (tenant, tags) index.
VERSION_1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE flushes (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL);
CREATE TABLE series (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, tags TEXT NOT NULL, UNIQUE (tenant, tags));
CREATE TABLE hourly (
    hour INTEGER NOT NULL, tenant TEXT NOT NULL, series INTEGER NOT NULL,
    bytes INTEGER NOT NULL, spans INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (hour, tenant, series, seq)
) WITHOUT ROWID;
CREATE INDEX hourly_by_seq ON hourly (seq);
CREATE TABLE monthly (
    month INTEGER NOT NULL, tenant TEXT NOT NULL, series INTEGER NOT NULL,
    bytes INTEGER NOT NULL, spans INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (month, tenant, series, seq)
) WITHOUT ROWID;
CREATE INDEX monthly_by_seq ON monthly (seq);
"""


def write_version_1_ledger(path: Path) -> None:
    """Flush 1: acme a 100. Flush 2: acme a 20, acme b 5 at 11:00 (merged with flush 1). Flush 3: acme
    a 30, globex 7. Flush 4: acme a 6 at 11:00 and 9 on November 1st 00:00, an hour retention cut."""
    a, b, globex = 1, 2, 3
    nov_first = utc(2026, 11, 1, 0)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(VERSION_1_SCHEMA)
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)", [("cursor_secret", b"s" * 32), ("merged_through", 2)]
        )
        db.executemany(
            "INSERT INTO flushes VALUES (?, ?)", [(1, 1000.0), (2, 1001.0), (3, 1002.0), (4, 1003.0)]
        )
        db.execute("DELETE FROM flushes WHERE seq < 2")
        db.executemany(
            "INSERT INTO series VALUES (?, ?, ?)",
            [(a, "acme", '{"team":"a"}'), (b, "acme", '{"team":"b"}'), (globex, "globex", "{}")],
        )
        db.executemany(
            "INSERT INTO hourly VALUES (?, ?, ?, ?, ?, ?)",
            [
                (H10, "acme", a, 120, 3, 2),
                (H10 + HOUR, "acme", b, 5, 1, 2),
                (H10, "acme", a, 30, 1, 3),
                (H10, "globex", globex, 7, 1, 3),
                (H10 + HOUR, "acme", a, 6, 1, 4),
            ],
        )
        db.executemany(
            "INSERT INTO monthly VALUES (?, ?, ?, ?, ?, ?)",
            [
                (NOV, "acme", a, 120, 3, 2),
                (NOV, "acme", b, 5, 1, 2),
                (NOV, "acme", a, 30, 1, 3),
                (NOV, "globex", globex, 7, 1, 3),
                (NOV, "acme", a, 6 + 9, 1 + 2, 4),
            ],
        )
        assert nov_first < H10
        db.commit()


def test_a_ledger_file_of_the_first_schema_opens_and_answers_the_same(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    write_version_1_ledger(path)
    tenants = ["acme", "globex"]
    store = SqliteLedgerStore(path)
    try:
        # Every flush of the file is merged by the migration to version 4 (see _migrate_from_version_3).
        assert (store.oldest_snapshot(), store.snapshot(), store.secret()) == (
            4,
            Snapshot(4, 1003.0),
            b"s" * 32,
        )
        assert as_usage(store.hourly(tenants, H10, H10 + 2 * HOUR, 4)) == {
            (H10, "acme", team("a")): (150, 4),
            (H10 + HOUR, "acme", team("b")): (5, 1),
            (H10, "globex", ()): (7, 1),
            (H10 + HOUR, "acme", team("a")): (6, 1),
        }
        assert as_usage(store.monthly(tenants, NOV, add_months(NOV, 1), 4)) == {
            (NOV, "acme", team("a")): (165, 7),
            (NOV, "acme", team("b")): (5, 1),
            (NOV, "globex", ()): (7, 1),
        }
        # The orgs' month totals are the sums of their series'.
        assert store.monthly_ranked(tenants, [], NOV, add_months(NOV, 1), 4, BYTES_USAGE, True, None) == [
            UsageRow(NOV, "acme", (), 170, 8),
            UsageRow(NOV, "globex", (), 7, 1),
        ]
        # The file goes on: flush numbers and series ids after the old ones, merges fold old and new.
        assert (
            store.write([entry("acme", H10, 1, 1, team("a")), entry("acme", H10, 2, 1, team("c"))], 1004.0)
            == 5
        )
        assert series_ids(path)[("acme", '{"team":"c"}')] == 4
        # Version 3: flushes record their batch id, and a batch stored already is not stored again.
        assert store.write([entry("acme", H10, 4, 1, team("d"))], 1004.5, "batch-6") == 6
        assert store.write([entry("acme", H10, 4, 1, team("d"))], 1004.6, "batch-6") == 6
        assert store.snapshot() == Snapshot(6, 1004.5)
        store.maintain(merge_before=2000.0, keep_from_hour=0, keep_from_month=0)
        assert store.oldest_snapshot() == 6
        assert as_usage(store.monthly(tenants, NOV, add_months(NOV, 1), 6)) == {
            (NOV, "acme", team("a")): (166, 8),
            (NOV, "acme", team("b")): (5, 1),
            (NOV, "acme", team("c")): (2, 1),
            (NOV, "acme", team("d")): (4, 1),
            (NOV, "globex", ()): (7, 1),
        }
        assert row_counts(path) == {"hourly": 6, "monthly": 5, "flushes": 1}
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        indexes = db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%by_seq'")
        assert indexes.fetchall() == []
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (SCHEMA_VERSION,)


def test_the_stored_text_of_a_label_set_is_the_same_however_a_flush_meets_it(backend: LedgerBackend) -> None:
    """Label sets met again (another tenant's, the same flush twice), values JSON must escape, and label
    sets not sorted by label: each stored as encode_tags writes it, so a lookup after a restart finds it."""
    odd = [
        (("team", 'quote " backslash \\ tab \t newline \n nul \x00 é 日本 \U0001f600'),),
        (("a", "1"), ("b", "2")),
        (("b", "2"), ("a", "1")),  # not sorted: what dict() and sort_keys make of it
        (("a", "1"), ("a", "2")),  # a label twice: the last value, as dict() keeps it
        (("", ""),),
        (),
    ]
    entries = [entry(tenant, H10, 1, 1, tags) for tenant in ("acme", "globex") for tags in odd]
    store = backend.open()
    store.write(entries, 1.0)
    store.close()
    stored = backend.series_ids()
    assert set(stored) == {(tenant, encode_tags(tags)) for tenant in ("acme", "globex") for tags in odd}
    assert len(stored) == 10  # (b, a) is (a, b), and (a 1, a 2) is a 2, as stored before
    store = backend.open()
    try:
        store.write(entries, 2.0)
        assert backend.series_ids() == stored
    finally:
        store.close()


def test_a_store_finds_the_series_another_store_added_to_its_file_since_it_opened(
    backend: LedgerBackend,
) -> None:
    """New ids are counted on from the file's highest, not from what this store last wrote; a series
    another store added meanwhile is found under its id, not added twice."""
    first, second = backend.open(), backend.open()
    try:
        first.write([entry("acme", H10, 1, 1, team("a"))], 1.0)
        second.write([entry("acme", H10, 2, 1, team("a")), entry("acme", H10, 4, 1, team("b"))], 2.0)
        first.write([entry("acme", H10, 8, 1, team("b")), entry("acme", H10, 16, 1, team("c"))], 3.0)
        assert backend.series_ids() == {
            ("acme", '{"team":"a"}'): 1,
            ("acme", '{"team":"b"}'): 2,
            ("acme", '{"team":"c"}'): 3,
        }
        assert as_usage(first.hourly(["acme"], H10, H10 + HOUR, 3)) == {
            (H10, "acme", team("a")): (3, 2),
            (H10, "acme", team("b")): (12, 2),
            (H10, "acme", team("c")): (16, 1),
        }
    finally:
        first.close()
        second.close()


def test_the_cursor_secret_is_stable_per_ledger_file_and_differs_between_files(
    backend: LedgerBackend,
) -> None:
    first = backend.open("one")
    secret = first.secret()
    first.close()
    again, other = backend.open("one"), backend.open("two")
    try:
        assert len(secret) >= 16
        assert again.secret() == secret
        assert other.secret() != secret
    finally:
        again.close()
        other.close()


def flush_metrics(registry: CollectorRegistry) -> dict[str, float | None]:
    return {
        "success": registry.get_sample_value("tempo_usage_ledger_flushes_total", {"result": "success"}),
        "failure": registry.get_sample_value("tempo_usage_ledger_flushes_total", {"result": "failure"}),
        "pending": registry.get_sample_value("tempo_usage_ledger_pending_entries"),
        "last": registry.get_sample_value("tempo_usage_ledger_last_successful_flush_timestamp_seconds"),
    }


async def test_a_failed_flush_keeps_its_usage_and_the_next_flush_stores_it_exactly_once(
    backend: LedgerBackend,
) -> None:
    registry = CollectorRegistry()
    now = [START]
    ledger = standalone_ledger(backend.open(), lambda: now[0], registry)
    try:
        ledger.record("acme", ("team",), {("a",): Usage(100, 2), ("b",): Usage(30, 1)}, {})
        backend.fail_writes()
        assert not await ledger.flush()
        assert flush_metrics(registry) == {"success": None, "failure": 1.0, "pending": 2.0, "last": 0.0}
        assert backend.row_counts() == {"hourly": 0, "monthly": 0, "flushes": 0}

        ledger.record("acme", ("team",), {("a",): Usage(5, 1), ("c",): Usage(7, 1)}, {})
        now[0] += HOUR
        ledger.record_total("plain", Usage(11, 1))
        assert flush_metrics(registry)["pending"] == 5.0  # the failed batch's 2, and 3 recorded since
        backend.allow_writes()
        assert await ledger.flush()
        assert flush_metrics(registry) == {
            "success": 1.0,
            "failure": 1.0,
            "pending": 0.0,
            "last": START + HOUR,
        }
        snapshot, first, hourly = await ledger.read(
            lambda s: (
                s.snapshot(),
                as_usage(s.hourly(["acme", "plain"], H10, H10 + 2 * HOUR, 1)),
                as_usage(s.hourly(["acme", "plain"], H10, H10 + 2 * HOUR, 99)),
            )
        )
        # The failed attempt left no flush behind: its batch, retried as it was, is flush 1, and what
        # was recorded since is flush 2.
        assert snapshot.seq == 2
        assert first == {(H10, "acme", team("a")): (100, 2), (H10, "acme", team("b")): (30, 1)}
        assert hourly == {
            (H10, "acme", team("a")): (105, 3),
            (H10, "acme", team("b")): (30, 1),
            (H10, "acme", team("c")): (7, 1),
            (H10 + HOUR, "plain", ()): (11, 1),
        }
    finally:
        await ledger.stop(0.0)


async def test_usage_the_final_flush_cannot_store_is_counted_as_unrecorded_per_tenant_and_logged(
    backend: LedgerBackend, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    ledger = standalone_ledger(backend.open(), lambda: START, registry)
    ledger.record("acme", ("team",), {("a",): Usage(100, 2), ("b",): Usage(30, 1)}, {})
    backend.fail_writes()
    assert not await ledger.flush()  # held as a failed batch, then more usage comes
    ledger.record("acme", ("team",), {("a",): Usage(20, 1)}, {})
    ledger.record_total("plain", Usage(11, 1))
    await ledger.stop(0.0)

    def unrecorded(unit: str, tenant: str) -> float | None:
        labels = {"tenant": tenant, "reason": "shutdown_flush_failed"}
        return registry.get_sample_value(f"tempo_usage_ledger_unrecorded_{unit}_total", labels)

    assert {
        tenant: (unrecorded("bytes", tenant), unrecorded("spans", tenant)) for tenant in ("acme", "plain")
    } == {
        "acme": (150.0, 4.0),
        "plain": (11.0, 1.0),
    }
    assert "usage ledger: 150 bytes and 4 spans of tenant acme were not stored" in caplog.messages
    assert backend.row_counts() == {"hourly": 0, "monthly": 0, "flushes": 0}


async def test_usage_waiting_for_a_failing_store_is_bounded_and_what_does_not_fit_is_counted(
    backend: LedgerBackend,
) -> None:
    registry = CollectorRegistry()
    ledger = standalone_ledger(backend.open(), lambda: START, registry, max_pending_entries=2)
    backend.fail_writes()
    ledger.record("acme", ("team",), {("a",): Usage(100, 2)}, {})
    assert not await ledger.flush()  # held as a failed batch: one entry
    ledger.record("acme", ("team",), {("b",): Usage(30, 1), ("c",): Usage(7, 1)}, {})  # c does not fit
    ledger.record("acme", ("team",), {("b",): Usage(5, 1)}, {})  # b is held already: it still sums

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("tempo_usage_ledger_pending_entries") == 2
    full = {"tenant": "acme", "reason": "pending_full"}
    assert value("tempo_usage_ledger_unrecorded_bytes_total", **full) == 7
    assert value("tempo_usage_ledger_unrecorded_spans_total", **full) == 1
    backend.allow_writes()
    assert await ledger.flush()
    await ledger.stop(0.0)
    stored = backend.open()
    snapshot = stored.snapshot()
    assert as_usage(stored.hourly(["acme"], H10 - 10 * HOUR, H10 + 10 * HOUR, snapshot.seq)) == {
        (hour_of(START), "acme", team("a")): (100, 2),
        (hour_of(START), "acme", team("b")): (35, 2),
    }


def test_a_batch_written_again_under_its_id_is_stored_once(store: LedgerStore) -> None:
    first = store.write([entry("acme", H10, 100, 2, team("a"))], 1000.0, "batch-1")
    assert store.write([entry("acme", H10, 100, 2, team("a"))], 1001.0, "batch-1") == first == 1
    assert store.write([entry("acme", H10, 5, 1, team("a"))], 1002.0, "batch-2") == 2
    assert store.snapshot() == Snapshot(2, 1002.0)
    assert as_usage(store.hourly(["acme"], H10, H10 + HOUR, 2)) == {(H10, "acme", team("a")): (105, 3)}


class AcknowledgementLost:
    """A store whose next write commits, then raises as a connection dropped during COMMIT would."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.lose_next = True

    def write(self, entries: Any, flushed_at: float, batch_id: str | None = None) -> int:
        seq = self.store.write(entries, flushed_at, batch_id)
        if self.lose_next:
            self.lose_next = False
            raise OSError("connection lost during COMMIT")
        return seq

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_flush_whose_commit_succeeded_but_raised_is_stored_once_when_retried(
    backend: LedgerBackend,
) -> None:
    registry = CollectorRegistry()
    now = [START]
    ledger = standalone_ledger(AcknowledgementLost(backend.open()), lambda: now[0], registry)  # type: ignore[arg-type]
    try:
        ledger.record("acme", ("team",), {("a",): Usage(100, 2)}, {})
        assert not await ledger.flush()
        assert backend.row_counts()["flushes"] == 1  # stored, though the ledger could not know
        ledger.record("acme", ("team",), {("a",): Usage(5, 1)}, {})
        assert await ledger.flush()
        snapshot, stored = await ledger.read(
            lambda s: (s.snapshot(), as_usage(s.hourly(["acme"], H10, H10 + HOUR, 99)))
        )
        assert snapshot.seq == 2  # the retry found flush 1; what came after it is flush 2
        assert stored == {(H10, "acme", team("a")): (105, 3)}
        assert flush_metrics(registry)["pending"] == 0.0
    finally:
        await ledger.stop(0.0)


async def test_a_flush_whose_maintenance_fails_does_not_store_its_usage_twice(
    backend: LedgerBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.open()

    def locked(*args: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "maintain", locked)
    registry = CollectorRegistry()
    ledger = standalone_ledger(store, lambda: START, registry)
    try:
        ledger.record_total("acme", Usage(100, 2))
        await ledger.flush()  # the first flush also runs maintenance, which fails here
        await ledger.flush()
        stored = await ledger.read(lambda s: as_usage(s.hourly(["acme"], H10, H10 + HOUR, s.snapshot().seq)))
        assert stored == {(H10, "acme", ()): (100, 2)}
    finally:
        await ledger.stop(0.0)


# Distinct counts (sessions, hosts): stored per flush, merged (never added) by readers and by merging.

DistinctEstimates = dict[tuple[int, str, Tags], int]


def identities(prefix: str, first: int, last: int) -> bytes:
    """A serialized count of the identities prefix-first .. prefix-last: small enough to be estimated
    exactly."""
    count = DistinctCount()
    for number in range(first, last + 1):
        count.add(f"{prefix}-{number}")
    return count.to_bytes()


def counted(
    tenant: str, hour: int, tags: Tags = (), sessions: bytes | None = None, hosts: bytes | None = None
) -> LedgerEntry:
    """An entry (1 byte, 1 span) carrying the counts given."""
    carried = tuple((kind, count) for kind, count in ((SESSIONS, sessions), (HOSTS, hosts)) if count)
    return LedgerEntry(tenant, hour, tags, 1, 1, carried)


def estimates(rows: list[DistinctRow]) -> DistinctEstimates:
    """{(hour, tenant, tags): distinct identities}, the rows of one series and hour merged."""
    merged: dict[tuple[int, str, Tags], list[DistinctCount]] = {}
    for row in rows:
        merged.setdefault((row.hour, row.tenant, row.tags), []).append(
            DistinctCount.from_bytes(row.serialized)
        )
    return {key: round(union(counts).estimate()) for key, counts in merged.items()}


def test_distinct_counts_of_several_replicas_read_as_of_each_flush_are_unions_merging_keeps(
    backend: LedgerBackend,
) -> None:
    """Replicas flush in turn (on PostgreSQL two stores on one schema; SQLite has one writer): each read
    as of flush S is the union of the counts of flushes <= S, overlapping identities once. Merging the
    flushes older than the horizon leaves one row per (hour, series, kind) holding their union, under
    the newest seq merged, and no read at or after the horizon changes."""
    first = backend.open()
    second = backend.open() if backend.kind == "postgresql" else first
    tenants = ["acme", "globex"]

    def read(store: LedgerStore, kind: str, seq: int) -> DistinctEstimates:
        return estimates(store.distinct(tenants, kind, H10, H10 + 2 * HOUR, seq))

    flushes = [
        (
            first,
            [
                counted("acme", H10, team("a"), identities("s", 1, 20), identities("h", 1, 3)),
                counted("acme", H10, team("b"), identities("s", 1, 5)),
                entry("globex", H10, 7, 1),  # no counts
            ],
        ),
        (
            second,
            [
                counted("acme", H10, team("a"), identities("s", 11, 30)),
                counted("acme", H10 + HOUR, team("a"), identities("s", 1, 10)),
            ],
        ),
        # The same series and hour twice in one flush: one row, their union.
        (
            first,
            [
                counted("acme", H10, team("a"), identities("s", 25, 32)),
                counted("acme", H10, team("a"), identities("s", 30, 40)),
            ],
        ),
        (second, [counted("acme", H10, team("b"), identities("s", 3, 8))]),
        (first, [counted("acme", H10, team("a"), identities("s", 41, 50))]),
    ]
    for index, (replica, entries) in enumerate(flushes):
        assert replica.write(entries, 1000.0 + index) == index + 1

    a10, b10, a11 = (H10, "acme", team("a")), (H10, "acme", team("b")), (H10 + HOUR, "acme", team("a"))
    expected_sessions = {
        1: {a10: 20, b10: 5},
        2: {a10: 30, b10: 5, a11: 10},
        3: {a10: 40, b10: 5, a11: 10},
        4: {a10: 40, b10: 8, a11: 10},
        5: {a10: 50, b10: 8, a11: 10},
    }
    for replica in {id(first): first, id(second): second}.values():
        assert {seq: read(replica, SESSIONS, seq) for seq in range(1, 6)} == expected_sessions
        assert read(replica, HOSTS, 1) == read(replica, HOSTS, 5) == {a10: 3}
    assert read(first, SESSIONS, 0) == {}
    assert len(first.distinct(["acme"], SESSIONS, H10, H10 + HOUR, 5)) == 6  # one row per flush and series
    assert estimates(first.distinct(["acme"], SESSIONS, H10 + HOUR, H10 + 2 * HOUR, 5)) == {a11: 10}
    assert first.distinct([], SESSIONS, H10, H10 + 2 * HOUR, 5) == []

    def stored_seqs() -> dict[tuple[str, str, int], list[int]]:
        """The seqs of the rows of each (tags, kind, hour) of acme."""
        found: dict[tuple[str, str, int], list[int]] = {}
        for tags, kind, hour, seq in backend.query(
            """SELECT series.tags, kind, hour, seq FROM hourly_distinct
            JOIN series ON series.id = hourly_distinct.series WHERE hourly_distinct.tenant = 'acme'
            ORDER BY series.tags, kind, hour, seq"""
        ):
            found.setdefault((tags, kind, int(hour)), []).append(int(seq))
        return found

    a, b = '{"team":"a"}', '{"team":"b"}'
    assert stored_seqs() == {
        (a, HOSTS, H10): [1],
        (a, SESSIONS, H10): [1, 2, 3, 5],
        (a, SESSIONS, H10 + HOUR): [2],
        (b, SESSIONS, H10): [1, 4],
    }

    first.maintain(merge_before=1003.5, keep_from_hour=0, keep_from_month=0)  # flushes 1 to 4
    assert first.oldest_snapshot() == 4
    assert stored_seqs() == {
        (a, HOSTS, H10): [1],
        (a, SESSIONS, H10): [3, 5],
        (a, SESSIONS, H10 + HOUR): [2],
        (b, SESSIONS, H10): [4],
    }
    assert {seq: read(first, SESSIONS, seq) for seq in (4, 5)} == {
        seq: expected_sessions[seq] for seq in (4, 5)
    }
    assert read(first, HOSTS, 4) == {a10: 3}
    # The merged row alone holds the union of flushes 1 to 4.
    assert estimates(first.distinct(["acme"], SESSIONS, H10, H10 + HOUR, 4)) == {a10: 40, b10: 8}
    assert len(first.distinct(["acme"], SESSIONS, H10, H10 + HOUR, 4)) == 2

    # A second merge folds the first one's rows with the newer flushes; a new process reads the same.
    second.write([counted("acme", H10, team("b"), identities("s", 100, 101))], 1005.0)
    first.maintain(merge_before=2000.0, keep_from_hour=0, keep_from_month=0)
    assert stored_seqs() == {
        (a, HOSTS, H10): [1],
        (a, SESSIONS, H10): [5],
        (a, SESSIONS, H10 + HOUR): [2],
        (b, SESSIONS, H10): [6],
    }
    reopened = backend.open()
    assert read(reopened, SESSIONS, 6) == {a10: 50, b10: 10, a11: 10}
    assert read(reopened, HOSTS, 6) == {a10: 3}


def test_retention_keeps_distinct_counts_as_long_as_their_month(store: LedgerStore) -> None:
    """A month's distinct count is the union of its hours' (they cannot be added into month totals), so
    an hour's counts go with its month, not with the hourly retention."""
    jan_23, feb_09, feb_10 = utc(2025, 1, 31, 23), utc(2025, 2, 1, 9), utc(2025, 2, 1, 10)
    store.write(
        [
            counted("acme", jan_23, sessions=identities("s", 1, 4)),
            counted("acme", feb_09, sessions=identities("s", 1, 5)),
            counted("acme", feb_10, sessions=identities("s", 1, 6)),
        ],
        1000.0,
    )
    store.write([counted("acme", feb_09, sessions=identities("s", 5, 9))], 1001.0)

    def stored() -> DistinctEstimates:
        return estimates(store.distinct(["acme"], SESSIONS, 0, H10, 2))

    store.maintain(merge_before=2000.0, keep_from_hour=feb_10, keep_from_month=utc(2025, 2))
    assert as_usage(store.hourly(["acme"], 0, H10, 2)) == {(feb_10, "acme", ()): (1, 1)}
    assert stored() == {(feb_09, "acme", ()): 9, (feb_10, "acme", ()): 6}
    # has_distinct says whether distinct would find any row, by tenant, kind, hours and flush.
    assert store.has_distinct(["acme"], SESSIONS, 0, H10, 2)
    assert store.has_distinct(["acme"], SESSIONS, feb_10, feb_10 + HOUR, 1)
    assert not store.has_distinct(["acme"], SESSIONS, feb_10 + HOUR, H10, 2)
    assert not store.has_distinct(["acme"], HOSTS, 0, H10, 2)
    assert not store.has_distinct(["globex"], SESSIONS, 0, H10, 2)
    assert not store.has_distinct([], SESSIONS, 0, H10, 2)
    store.maintain(merge_before=2000.0, keep_from_hour=feb_10, keep_from_month=utc(2025, 3))
    assert stored() == {}
    assert not store.has_distinct(["acme"], SESSIONS, 0, H10, 2)


def test_a_batch_written_again_under_its_id_adds_no_distinct_counts(store: LedgerStore) -> None:
    assert store.write([counted("acme", H10, team("a"), identities("s", 1, 10))], 1000.0, "batch-1") == 1
    # The retry of a batch carries what the batch did; other identities show that nothing was added.
    assert store.write([counted("acme", H10, team("a"), identities("s", 11, 20))], 1001.0, "batch-1") == 1
    assert estimates(store.distinct(["acme"], SESSIONS, H10, H10 + HOUR, 1)) == {(H10, "acme", team("a")): 10}
    assert len(store.distinct(["acme"], SESSIONS, H10, H10 + HOUR, 1)) == 1


def test_a_ledger_file_of_version_4_gains_distinct_counts_and_answers_the_same(tmp_path: Path) -> None:
    """A file as version 4 left it (no `hourly_distinct`, flushes not merged yet) opens as version 5 in
    its opening transaction: its usage reads the same, and flushes with counts are stored, read and
    merged."""
    path = tmp_path / "ledger.db"
    made = SqliteLedgerStore(path)
    made.write([entry("acme", H10, 100, 2, team("a"))], 1000.0)
    made.write([entry("acme", H10, 10, 1, team("a")), entry("globex", H10, 7, 1)], 1001.0)
    made.close()
    execute(path, "DROP TABLE hourly_distinct")
    execute(path, "UPDATE meta SET value = 4 WHERE key = 'schema'")

    store = SqliteLedgerStore(path)
    try:
        assert store.snapshot() == Snapshot(2, 1001.0)
        assert as_usage(store.hourly(["acme", "globex"], H10, H10 + HOUR, 1)) == {
            (H10, "acme", team("a")): (100, 2)
        }
        assert store.distinct(["acme"], SESSIONS, H10, H10 + HOUR, 2) == []
        assert store.write([counted("acme", H10, team("a"), identities("s", 1, 12))], 1002.0) == 3
        assert store.write([counted("acme", H10, team("a"), identities("s", 10, 15))], 1003.0) == 4
        store.maintain(merge_before=2000.0, keep_from_hour=0, keep_from_month=0)
        assert store.oldest_snapshot() == 4
        assert len(store.distinct(["acme"], SESSIONS, H10, H10 + HOUR, 4)) == 1
        assert estimates(store.distinct(["acme"], SESSIONS, H10, H10 + HOUR, 4)) == {
            (H10, "acme", team("a")): 15
        }
        assert as_usage(store.hourly(["acme", "globex"], H10, H10 + HOUR, 4)) == {
            (H10, "acme", team("a")): (112, 5),
            (H10, "globex", ()): (7, 1),
        }
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (SCHEMA_VERSION,)
    assert SCHEMA_VERSION == 5


# --- 2. What the pipeline records: the tracker's attribution ---------------------------------------------


MIXED = batch(
    {"service.name": "shop", "team": "core"},
    [span({"team": "web"}), span(), span({"service.name": "cart", "team": "web"})],
    [span({"service.name": "cart"})],
)
SPAN_LEVEL_REQUESTS = {
    "resource only": request(batch({"service.name": "shop", "team": "core"}, [span(), span()])),
    "span values override the resource's": request(MIXED),
    "batches without spans, empty scopes": request(
        batch({"service.name": "idle"}),
        batch({"service.name": "auth"}, [], [span({"team": "sec"}), span()], []),
        batch({"team": "web"}, [span({"service.name": "cart"})]),
    ),
    "repeated keys, read in order": request(
        batch({"service.name": "shop"}, [span([("team", ""), ("team", "first"), ("team", "x")]), span()])
    ),
}
DIMENSION_SETS = {
    "any scope": {"service.name": "", "team": ""},
    "span scope": {"service.name": "", "span.team": "team"},
    "resource and span scope, combined": {
        "resource.service.name": "svc",
        "span.service.name": "svc",
        "team": "",
    },
}


@pytest.mark.parametrize("dimensions", DIMENSION_SETS.values(), ids=DIMENSION_SETS.keys())
@pytest.mark.parametrize("req", SPAN_LEVEL_REQUESTS.values(), ids=SPAN_LEVEL_REQUESTS.keys())
def test_attribution_counts_every_span_once_under_the_series_of_its_bytes(
    dimensions: dict[str, str], req: ExportTraceServiceRequest
) -> None:
    traces = received(req)
    attribution = UsageTracker(CostAttributionConfig(enabled=True)).attribute(traces, limits(dimensions))
    assert attribution is not None
    assert sum(usage.spans for usage in attribution.usage.values()) == traces.span_count
    assert all(usage.spans > 0 for usage in attribution.usage.values())
    assert sum(usage.bytes for usage in attribution.usage.values()) == traces.attributable_bytes


def test_attribution_spans_follow_span_level_values() -> None:
    attribution = UsageTracker(CostAttributionConfig(enabled=True)).attribute(
        received(request(MIXED)), limits({"service.name": "", "team": ""})
    )
    assert attribution is not None and attribution.labels == ("service_name", "team")
    assert {values: usage.spans for values, usage in attribution.usage.items()} == {
        ("shop", "web"): 1,
        ("shop", "core"): 1,
        ("cart", "web"): 1,
        ("cart", "core"): 1,
    }
    repeated = UsageTracker(CostAttributionConfig(enabled=True)).attribute(
        received(SPAN_LEVEL_REQUESTS["repeated keys, read in order"]),
        limits({"service.name": "", "team": ""}),
    )
    assert repeated is not None
    assert {values: usage.spans for values, usage in repeated.usage.items()} == {
        ("shop", "first"): 1,
        ("shop", MISSING): 1,
    }


async def hourly_records(
    session: aiohttp.ClientSession, server_url: str, key: str, **params: str
) -> list[dict[str, Any]]:
    """Every record of one hourly-attribution answer (one page), as the raw API gives it."""
    headers = {"DD-API-KEY": f"{key}-api", "DD-APPLICATION-KEY": f"{key}-app"}
    async with session.get(server_url + HOURLY_PATH, params=params, headers=headers) as response:
        body = await response.json()
        assert response.status == 200, body
    assert body["metadata"]["pagination"]["next_record_id"] is None
    records: list[dict[str, Any]] = body["usage"]
    return records


async def billed_by_tags(
    running: RunningAttribution, key: str, usage_type: str, labels: str = "service_name,team"
) -> dict[tuple[str, ...], float]:
    """The ledger through the API: usage of hour 10 by the values of `labels`."""
    records = await hourly_records(
        running.session,
        running.server_url,
        key,
        start_hr="2026-11-22T10",
        end_hr="2026-11-22T11",
        usage_type=usage_type,
        tag_breakdown_keys=labels,
    )
    billed: dict[tuple[str, ...], float] = {}
    for record in records:
        values = tuple(record["tags"][label][0] for label in labels.split(","))
        billed[values] = billed.get(values, 0) + record["total_usage_sum"]
    return billed


async def tracked_by_tags(
    running: RunningAttribution, tenant: str, labels: tuple[str, ...] = ("service_name", "team")
) -> dict[tuple[str, ...], float]:
    """/usage_metrics received bytes of one tenant by the values of `labels`."""
    return {
        tuple(dict(series)[label] for label in labels): value
        for series, value in (await running.usage()).items()
        if ("tenant", tenant) in series
    }


async def test_ledger_bytes_and_spans_per_tag_set_equal_usage_metrics_with_span_level_values(
    tmp_path: Path,
) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        await running.send("acme", request(MIXED).SerializeToString())
        await running.send(
            "acme", SPAN_LEVEL_REQUESTS["batches without spans, empty scopes"].SerializeToString()
        )
        await running.send("acme", spans_request("shop", 3, team="core"))
        await running.flush()

        tracked = await tracked_by_tags(running, "acme")
        assert len(tracked) == 6
        assert await billed_by_tags(running, "acme", BYTES_USAGE) == tracked
        assert await billed_by_tags(running, "acme", SPANS_USAGE) == {
            ("shop", "web"): 1,
            ("shop", "core"): 1 + 3,
            ("cart", "web"): 1 + 1,  # the last batch has no service.name: its span names one
            ("cart", "core"): 1,
            ("auth", "sec"): 1,
            ("auth", MISSING): 1,
        }


async def test_overflow_series_are_billed_under_the_same_tags_as_usage_metrics(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path, max_cardinality=2)) as running:
        await running.send("acme", spans_request("svc-a", 1, team="x"))
        await running.send("acme", spans_request("svc-b", 2, team="y"))
        await running.send("acme", spans_request("svc-c", 3, team="x"))  # a third series: over the limit
        both = request(
            batch({"service.name": "svc-a", "team": "x"}, [span()]),  # an existing series stays itself
            batch({"service.name": "svc-d", "team": "z"}, [span(), span()]),
            batch({"service.name": "svc-e"}, [span()]),
        )
        await running.send("acme", both.SerializeToString())
        await running.send("acme", spans_request("svc-c", 1, team="x"))
        await running.flush()

        tracked = await tracked_by_tags(running, "acme")
        assert tracked.keys() == {("svc-a", "x"), ("svc-b", "y"), (OVERFLOW, OVERFLOW)}
        assert await billed_by_tags(running, "acme", BYTES_USAGE) == tracked
        assert await billed_by_tags(running, "acme", SPANS_USAGE) == {
            ("svc-a", "x"): 2,
            ("svc-b", "y"): 2,
            (OVERFLOW, OVERFLOW): 3 + 2 + 1 + 1,
        }
        assert await billed_by_tags(running, "acme", BYTES_USAGE, "team") == {
            ("x",): tracked["svc-a", "x"],
            ("y",): tracked["svc-b", "y"],
            (OVERFLOW,): tracked[OVERFLOW, OVERFLOW],
        }


async def test_a_tenant_without_dimensions_is_billed_with_no_tags_and_has_no_usage_metrics_series(
    tmp_path: Path,
) -> None:
    keys = [*KEYS, {"api_key": "plain-api", "app_key": "plain-app", "org": "plain"}]
    async with attribution_service(write_config(tmp_path, keys=keys)) as running:
        two_spans = batch({"service.name": "batch", "team": "etl"}, [span(), span()])
        idle = batch({"service.name": "idle"})  # no spans: nothing to bill
        one_span = batch({"service.name": "cron"}, [span(pad=50)])
        await running.send("plain", request(two_spans, idle, one_span).SerializeToString())
        await running.flush()

        assert not [series for series in await running.usage() if ("tenant", "plain") in series]
        for usage_type, expected in (
            (BYTES_USAGE, two_spans.ByteSize() + one_span.ByteSize()),
            (SPANS_USAGE, 3),
        ):
            records = await hourly_records(
                running.session, running.server_url, "plain", start_hr="2026-11-22T10", usage_type=usage_type
            )
            assert [(r["tags"], r["tag_config_source"], r["total_usage_sum"]) for r in records] == [
                ({}, "plain:::", expected)
            ]
        stored = await running.service.ledger.read(  # type: ignore[union-attr]
            lambda s: as_usage(s.hourly(["plain"], H10, H10 + HOUR, s.snapshot().seq))
        )
        assert stored == {(H10, "plain", ()): (two_spans.ByteSize() + one_span.ByteSize(), 3)}


async def test_refused_requests_are_not_billed(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    body = spans_request("checkout", 2, team="payments")
    ingestion = {"rate_limit_bytes": len(body), "burst_size_bytes": len(body) * 3 // 2}

    def limit_acme(overrides: dict[str, Any]) -> None:
        overrides["overrides"]["acme"] = {"ingestion": ingestion}

    edit_yaml(tmp_path / "overrides.yaml", limit_acme)
    async with attribution_service(config) as running:
        await running.send("acme", body)
        assert (
            await running.post(body, "acme")
        ).status == 429  # the bucket (manual clock) holds half a request
        over_burst = spans_request("checkout", 9, team="payments", pad=100)
        assert (await running.post(over_burst, "acme")).status == 413  # over the burst
        await running.flush()

        tracked = await tracked_by_tags(running, "acme")
        accepted = received(ExportTraceServiceRequest.FromString(body)).attributable_bytes
        assert tracked == {("checkout", "payments"): accepted}
        assert await billed_by_tags(running, "acme", BYTES_USAGE) == tracked
        assert await billed_by_tags(running, "acme", SPANS_USAGE) == {("checkout", "payments"): 2}
        discarded = await running.discarded()
        reasons = {dict(series)["reason"] for series in discarded if ("tenant", "acme") in series}
        assert reasons == {"rate_limited"}  # refusals are counted as discarded, never billed


# --- 3. Restarts and the flush timer ---------------------------------------------------------------------


async def test_usage_over_several_hours_and_two_months_survives_a_restart(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    start = utc(2026, 11, 30, 22) + 1800
    expected_hours: dict[str, tuple[float, int]] = {}
    async with attribution_service(config, wall_start=start) as running:
        # 22:30 and 23:30 in November, 00:30 and 01:30 in December
        for step, spans in enumerate((1, 2, 3, 4)):
            before = await running.tenant_usage("acme")
            await running.send("acme", spans_request("checkout", spans, team="payments", pad=step))
            hour = datetime.fromtimestamp(hour_of(running.wall()), UTC).isoformat()
            expected_hours[hour] = (await running.tenant_usage("acme") - before, spans)
            if step == 1:
                await running.flush()  # November by hand; December only by the graceful stop
            running.wall.advance(HOUR)
    assert list(expected_hours) == [
        "2026-11-30T22:00:00+00:00",
        "2026-11-30T23:00:00+00:00",
        "2026-12-01T00:00:00+00:00",
        "2026-12-01T01:00:00+00:00",
    ]

    async with attribution_service(config, wall_start=start + 4 * HOUR) as restarted:
        found: dict[str, list[float]] = {}
        for usage_type in (BYTES_USAGE, SPANS_USAGE):
            records = await hourly_records(
                restarted.session,
                restarted.server_url,
                "acme",
                start_hr="2026-11-30T20",
                end_hr="2026-12-01T03",
                usage_type=usage_type,
            )
            for record in records:
                found.setdefault(record["hour"], []).append(record["total_usage_sum"])
        assert found == {hour: [size, spans] for hour, (size, spans) in expected_hours.items()}

        status, body, _ = await restarted.get(
            MONTHLY_PATH,
            {"start_month": "2026-11", "end_month": "2026-12", "fields": "*", "sort_direction": "asc"},
            key="acme",
        )
        assert status == 200, body
        # "*" includes the distinct counts, which this tenant does not count: 0 in every record.
        uncounted = {
            f"{usage_type.removesuffix('_usage')}{suffix}": 0.0
            for usage_type in DISTINCT_USAGE_TYPES
            for suffix in ("_usage", "_percentage")
        }
        months = {r["month"]: r["values"] for r in body["usage"]}
        assert all(values.items() >= uncounted.items() for values in months.values())
        months = {
            month: {k: v for k, v in values.items() if k not in uncounted} for month, values in months.items()
        }
        sizes = [size for size, _ in expected_hours.values()]
        assert months == {
            "2026-11-01T00:00:00+00:00": {
                BYTES_USAGE: sizes[0] + sizes[1],
                "ingested_spans_bytes_percentage": 100.0,
                SPANS_USAGE: 3,
                "estimated_ingested_spans_percentage": 100.0,
            },
            "2026-12-01T00:00:00+00:00": {
                BYTES_USAGE: sizes[2] + sizes[3],
                "ingested_spans_bytes_percentage": 100.0,
                SPANS_USAGE: 7,
                "estimated_ingested_spans_percentage": 100.0,
            },
        }


def file_usage(path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """What the ledger file holds, read by a connection of the test's own: {(tenant, tags): totals}."""
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT s.tenant, s.tags, SUM(h.bytes), SUM(h.spans) FROM hourly h "
            "JOIN series s ON s.id = h.series GROUP BY s.tenant, s.tags"
        ).fetchall()
    return {(tenant, tags): (size, spans) for tenant, tags, size, spans in rows}


async def test_the_flush_period_timer_flushes_a_running_service(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path, flush_period="100ms")) as running:
        await running.send("acme", spans_request("checkout", 2, team="payments"))
        sent = int(await running.tenant_usage("acme"))

        async def stored() -> dict[tuple[str, str], tuple[int, int]]:
            return file_usage(tmp_path / "data" / "ledger.db")

        found = await eventually(stored, "the periodic flush", timeout=5.0)
        assert found == {("acme", '{"service_name":"checkout","team":"payments"}'): (sent, 2)}
        # The batch counts as pending until the flush hears back from the writer thread, a moment after
        # the file has it.
        registry = running.service.registry
        await eventually(lambda: registry.get_sample_value("tempo_usage_ledger_pending_entries") == 0)


async def test_while_the_forwarders_drain_at_stop_the_api_answers_and_the_final_flush_stores_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping goes receivers, forwarders, server port, ledger: the ledger outlives the drain, so the
    API (on the server port, reading the ledger) answers until the port closes, and the final flush
    comes after every request was accounted."""
    hold = asyncio.Event()
    backend = await RecordingBackend(hold=hold).start()
    clock, wall = ManualClock(), ManualClock(START)
    config = with_forwarders(load_config(write_config(tmp_path)), forwarder_to(backend))
    service = Service(config, clock=clock, wall_clock=wall)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            running = RunningAttribution(service, session, clock, wall)
            await running.send("acme", spans_request("checkout", 2, team="payments"))
            await running.flush()
            flushed = await tracked_by_tags(running, "acme")
            await running.send("acme", spans_request("search", 1, team="discovery"))  # only in memory
            tracked = await tracked_by_tags(running, "acme")

            caplog.set_level(logging.INFO, logger="distributor")
            stopping = asyncio.create_task(service.stop())
            await eventually(
                lambda: any("queued requests before exit" in r.getMessage() for r in caplog.records),
                "the forwarders' drain",
            )
            assert await billed_by_tags(running, "acme", BYTES_USAGE) == flushed
            assert not stopping.done() and backend.deliveries == []
            hold.set()
            await asyncio.wait_for(stopping, 30)

        assert len(backend.deliveries) == 2
        stored = {
            tuple(json.loads(tags).values()): size
            for (tenant, tags), (size, _) in file_usage(tmp_path / "data" / "ledger.db").items()
            if tenant == "acme"
        }
        assert stored == tracked
    finally:
        hold.set()
        await service.stop()
        await backend.stop()


# --- 4. The real CLI: SIGKILL and SIGTERM -----------------------------------------------------------------


async def send(session: aiohttp.ClientSession, cli: RunningCli, tenant: str, body: bytes) -> None:
    answer = await post_traces(session, cli.traces_url, body, tenant)
    assert answer.status == 200, answer.body


async def cli_billed(session: aiohttp.ClientSession, cli: RunningCli, usage_type: str) -> dict[str, float]:
    """acme's usage per team over the last hours (the CLI runs on the wall clock)."""
    start = (datetime.now(UTC) - timedelta(hours=3)).strftime("%Y-%m-%dT%H")
    records = await hourly_records(
        session, cli.server_url, "acme", start_hr=start, usage_type=usage_type, tag_breakdown_keys="team"
    )
    billed: dict[str, float] = {}
    for record in records:
        billed[record["tags"]["team"][0]] = (
            billed.get(record["tags"]["team"][0], 0) + record["total_usage_sum"]
        )
    return billed


async def cli_tracked(session: aiohttp.ClientSession, cli: RunningCli) -> dict[str, float]:
    """acme's /usage_metrics received bytes per team."""
    totals: dict[str, float] = {}
    for series, size in parse_usage(await scrape(session, cli.server_url + "/usage_metrics")).items():
        found = dict(series)
        if found["tenant"] == "acme":
            totals[found["team"]] = totals.get(found["team"], 0) + size
    return totals


async def test_a_hard_kill_loses_at_most_the_usage_recorded_after_the_last_flush(tmp_path: Path) -> None:
    config = write_config(tmp_path, flush_period="200ms")
    second = spans_request("search", 2, team="discovery")
    second_size = ExportTraceServiceRequest.FromString(second).resource_spans[0].ByteSize()
    async with aiohttp.ClientSession() as session:
        with running_cli(config) as cli:
            await send(session, cli, "acme", spans_request("checkout", 3, team="payments"))
            flushed = await cli_tracked(session, cli)

            async def stored() -> bool:
                return await cli_billed(session, cli, BYTES_USAGE) == flushed

            await eventually(stored, "a periodic flush to store the first batch")
            await send(session, cli, "acme", second)
            cli.process.kill()
            cli.process.wait(timeout=10)

        with running_cli(config) as again:
            billed = await cli_billed(session, again, BYTES_USAGE)
            spans = await cli_billed(session, again, SPANS_USAGE)
            assert billed["payments"] == flushed["payments"]
            assert billed.keys() <= {"payments", "discovery"}
            assert billed.get("discovery", 0) in (0, second_size)  # all of the last batch, or none of it
            assert spans["payments"] == 3 and spans.get("discovery", 0) == (2 if "discovery" in billed else 0)
            assert again.terminate() == 0


async def test_sigterm_stores_all_usage_before_the_process_exits(tmp_path: Path) -> None:
    config = write_config(tmp_path, flush_period="1h")  # no periodic flush comes: only the shutdown's
    async with aiohttp.ClientSession() as session:
        with running_cli(config) as cli:
            await send(session, cli, "acme", spans_request("checkout", 3, team="payments"))
            await send(session, cli, "acme", spans_request("search", 2, team="discovery"))
            tracked = await cli_tracked(session, cli)
            assert cli.terminate() == 0

        with running_cli(config) as again:
            assert await cli_billed(session, again, BYTES_USAGE) == tracked
            assert await cli_billed(session, again, SPANS_USAGE) == {"payments": 3, "discovery": 2}
            assert again.terminate() == 0


# --- 5. Metrics ------------------------------------------------------------------------------------------


async def ledger_metrics(running: RunningAttribution) -> dict[str, float]:
    samples = await running.samples()
    no_labels: Labels = frozenset()
    return {
        "success": sample_value(samples, "tempo_usage_ledger_flushes_total", result="success"),
        "failure": sample_value(samples, "tempo_usage_ledger_flushes_total", result="failure"),
        "pending": samples[("tempo_usage_ledger_pending_entries", no_labels)],
        "last": samples[("tempo_usage_ledger_last_successful_flush_timestamp_seconds", no_labels)],
        "entries": sample_value(samples, "tempo_usage_ledger_flushed_entries_total"),
    }


async def test_ledger_metrics_count_flushes_by_result_pending_entries_and_the_last_success(
    tmp_path: Path,
) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        assert await ledger_metrics(running) == {
            "success": 0,
            "failure": 0,
            "pending": 0,
            "last": 0,
            "entries": 0,
        }
        await running.send("acme", spans_request("checkout", 1, team="payments"))
        await running.send("acme", spans_request("search", 1, team="discovery"))
        running.wall.advance(HOUR)
        await running.send("acme", spans_request("checkout", 1, team="payments"))  # 3 series-hours
        await running.flush()
        assert await ledger_metrics(running) == {
            "success": 1,
            "failure": 0,
            "pending": 0,
            "last": START + HOUR,
            "entries": 3,
        }

        execute(tmp_path / "data" / "ledger.db", FAIL_WRITES)
        running.wall.advance(60)
        await running.send("globex", spans_request("api", 1, env="prod"))
        assert running.service.ledger is not None and not await running.service.ledger.flush()
        assert await ledger_metrics(running) == {
            "success": 1,
            "failure": 1,
            "pending": 1,
            "last": START + HOUR,
            "entries": 3,
        }

        execute(tmp_path / "data" / "ledger.db", ALLOW_WRITES)
        running.wall.advance(60)
        await running.flush()
        assert await ledger_metrics(running) == {
            "success": 2,
            "failure": 1,
            "pending": 0,
            "last": START + HOUR + 120,
            "entries": 4,
        }


async def test_pending_entries_counts_series_hours_recorded_since_the_last_flush(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        await running.send("acme", spans_request("checkout", 1, team="payments"))
        await running.send("acme", spans_request("search", 1, team="discovery"))
        assert (await ledger_metrics(running))["pending"] == 2


# --- 6. Keys are secrets ----------------------------------------------------------------------------------

SECRET_API, SECRET_APP = "k3y-api-5d1f0b7e", "k3y-app-9c2e44a0"


async def test_keys_never_appear_in_status_config_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = [{"api_key": SECRET_API, "app_key": SECRET_APP, "org": "acme"}]
    config = write_config(tmp_path, keys=keys)
    assert SECRET_API not in repr(load_config(config)) and SECRET_APP not in repr(load_config(config))
    async with attribution_service(config) as running:
        await running.send("acme", spans_request("checkout", 1, team="payments"))
        await running.flush()
        params = {"start_hr": "2026-11-22T10", "usage_type": BYTES_USAGE}
        answers = [
            await running.get(
                HOURLY_PATH, params, key="", **{"DD-API-KEY": SECRET_API, "DD-APPLICATION-KEY": key}
            )
            for key in (SECRET_APP, SECRET_API, SECRET_APP + "x")
        ]
        assert [status for status, _, _ in answers] == [200, 403, 403]
        texts = []
        for mode in ("", "diff"):
            async with running.session.get(
                running.server_url + "/status/config", params={"mode": mode}
            ) as response:
                assert response.status == 200
                texts.append(await response.text())
    for text in texts:
        assert yaml.safe_load(text)["usage_attribution"]["keys"] == [
            {"api_key": "<secret>", "app_key": "<secret>", "org": "acme", "scopes": ["usage_read"]}
        ]
    logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
    assert caplog.records, "the run logs something (start and stop)"
    for secret in (SECRET_API, SECRET_APP):
        assert all(secret not in text for text in texts)
        assert secret not in logged


# --- 7. Configuration -------------------------------------------------------------------------------------


def set_ledger(doc: dict[str, Any], **values: Any) -> None:
    doc["usage_attribution"]["ledger"].update(values)


INVALID = {
    "unknown key": (
        lambda d: set_ledger(d, flush_interval="1s"),
        "usage_attribution.ledger.flush_interval",
    ),
    "unknown section key": (
        lambda d: d["usage_attribution"].update(ledgers={}),
        "usage_attribution.ledgers",
    ),
    "backend postgres": (lambda d: set_ledger(d, backend="postgres"), "usage_attribution.ledger.backend"),
    "flush_period 0": (lambda d: set_ledger(d, flush_period=0), "usage_attribution.ledger.flush_period"),
    "flush_period 0s": (lambda d: set_ledger(d, flush_period="0s"), "usage_attribution.ledger.flush_period"),
    "retention_months 0": (
        lambda d: set_ledger(d, retention_months=0),
        "usage_attribution.ledger.retention_months",
    ),
    "page_size 0": (
        lambda d: d["usage_attribution"]["api"].update(page_size=0),
        "usage_attribution.api.page_size",
    ),
    "key without api_key": (
        lambda d: d["usage_attribution"].update(keys=[{"app_key": "x-app", "org": "acme"}]),
        "usage_attribution.keys[0].api_key",
    ),
    "key with an invalid org id": (
        lambda d: d["usage_attribution"].update(keys=[{"api_key": "a", "app_key": "b", "org": "ac/me"}]),
        "usage_attribution.keys[0].org",
    ),
    "org that is its own parent": (
        lambda d: d["usage_attribution"]["orgs"]["acme"].update(parent="acme"),
        "usage_attribution.orgs.acme.parent",
    ),
    "parent cycle": (
        lambda d: d["usage_attribution"].update(orgs={"a": {"parent": "b"}, "b": {"parent": "a"}}),
        "usage_attribution.orgs.a.parent",
    ),
    "duplicate public_id": (
        lambda d: d["usage_attribution"]["orgs"]["globex"].update(public_id="acme0001"),
        "usage_attribution.orgs.globex.public_id",
    ),
    "duplicate key pair": (
        lambda d: d["usage_attribution"]["keys"].append(
            {"api_key": "acme-api", "app_key": "acme-app", "org": "globex"}
        ),
        f"usage_attribution.keys[{len(KEYS)}].api_key",
    ),
}


def test_the_support_configuration_is_valid(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.usage_attribution.enabled and len(config.usage_attribution.keys) == len(KEYS)


@pytest.mark.parametrize(("change", "key"), INVALID.values(), ids=INVALID.keys())
def test_invalid_usage_attribution_settings_are_refused_naming_the_key(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], key: str
) -> None:
    path = edit_yaml(write_config(tmp_path), change)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.key == key
    assert key in str(raised.value)
    assert "acme-api" not in str(raised.value) and "acme-app" not in str(raised.value)


def test_keys_expand_environment_variables_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [
        {
            "api_key": "${LEDGER_TEST_API_KEY}",
            "app_key": "${LEDGER_TEST_APP_KEY:-fallback-app}",
            "org": "acme",
        }
    ]
    path = write_config(tmp_path, keys=keys)
    monkeypatch.setenv("LEDGER_TEST_API_KEY", "from-the-environment")
    monkeypatch.delenv("LEDGER_TEST_APP_KEY", raising=False)

    (key,) = load_config(path, expand_env=True).usage_attribution.keys
    assert (key.api_key, key.app_key, key.org) == ("from-the-environment", "fallback-app", "acme")
    (literal,) = load_config(path).usage_attribution.keys
    assert literal.api_key == "${LEDGER_TEST_API_KEY}"

    monkeypatch.delenv("LEDGER_TEST_API_KEY")
    with pytest.raises(ConfigError) as raised:
        load_config(path, expand_env=True)
    assert raised.value.key == "usage_attribution.keys[0].api_key"
