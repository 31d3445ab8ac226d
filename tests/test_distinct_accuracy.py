"""Distinct counts against the exact truth, and across a SIGKILL.

Accuracy: three replicas in process share one PostgreSQL ledger; departments of 1 to 1,000,000 distinct
sessions an hour (hosts: a half and a third as many) are spread over two hours and the three replicas,
with identities repeated across requests, replicas and hours. What one replica's API answers, hourly and
monthly, is compared with the counts of the sets the test sent: exact up to 1,000 sessions, within 2%
everywhere. The worst relative errors are printed (run with -s to see them).

SIGKILL: a distributor process on SQLite keeps, after a SIGKILL and a restart, every session a flush had
stored and at most those sent since; sessions sent after the restart merge with them, counted once.

Semantics: docs/usage-attribution-api.md ("Distinct counts")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from datadog_api_client.v1.model.hourly_usage_attribution_usage_type import HourlyUsageAttributionUsageType

from distributor.common.distinct import identity_hash
from distributor.common.usage import Usage
from distributor.ledger.ledger import HOSTS, HOSTS_USAGE, HOUR, SESSIONS, SESSIONS_USAGE, hour_of
from tests.support.attribution import (
    COUNTING_TENANT,
    RunningAttribution,
    attribution_service,
    distinct_config,
    visits_request,
)
from tests.support.config_files import edit_yaml
from tests.support.ledger import PostgresSchemas, schemas
from tests.support.polling import eventually
from tests.support.processes import DistributorProcess, distributor_processes, start_distributor
from tests.support.senders import post_traces

__all__ = ["schemas"]  # the fixture, used by name

HOURLY_PATH = "/api/v1/usage/hourly-attribution"
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"
KEY_HEADERS = {"DD-API-KEY": "holding-api", "DD-APPLICATION-KEY": "holding-app"}
USAGE_TYPES = {
    SESSIONS: HourlyUsageAttributionUsageType.RUM_BROWSER_MOBILE_SESSIONS_USAGE,
    HOSTS: HourlyUsageAttributionUsageType.APM_HOST_USAGE,
}
FIELDS = {SESSIONS: SESSIONS_USAGE, HOSTS: HOSTS_USAGE}

# --- accuracy across three replicas -----------------------------------------------------------------------

# Distinct sessions a department has each hour.
SIZES = (1, 2, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
# Departments up to this size are sent as OTLP/HTTP requests; the larger ones go straight into each
# replica's ledger in the shape the pipeline gives it (a million sessions over HTTP would take minutes).
LARGEST_OVER_HTTP = 10_000
VISITS_PER_REQUEST = 2_000
SESSIONS_PER_RECORD = 100_000  # identities per ledger.record() call for the larger departments
EXACT_UP_TO = 1_000  # departments up to this size are counted exactly, every answer
TOLERANCE = 0.02
REPLICAS = 3
HOURS = 2
# The first two hours of November: the month so far is those two hours, so a month of hosts (their 99th
# percentile, nearest rank) is the larger hour's count.
MONTH_START = datetime(2026, 11, 1, tzinfo=UTC)


def department(size: int) -> str:
    return f"size-{size}"


def session_numbers(size: int, hour: int) -> range:
    """`size` sessions; the second hour's start halfway through the first's (sessions going on across
    the hour), so a month of sessions (the sum of its hours) counts those twice."""
    first = hour * (size // 2)
    return range(first, first + size)


def replicas_of(number: int) -> tuple[int, ...]:
    """The replicas a session's requests reach behind the load balancer: all three for one session in
    ten, two for another one in ten, one for the rest."""
    if number % 10 == 0:
        return tuple(range(REPLICAS))
    if number % 10 == 5:
        return (number % REPLICAS, (number + 1) % REPLICAS)
    return (number % REPLICAS,)


@dataclass
class Visits:
    """What one replica receives of a department's hour: sessions and the host each ran on (parallel
    lists), those of a first round of requests, then a later round that repeats some of them."""

    sessions: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    again_sessions: list[str] = field(default_factory=list)
    again_hosts: list[str] = field(default_factory=list)

    def rounds(self) -> Iterator[tuple[list[str], list[str]]]:
        yield self.sessions, self.hosts
        yield self.again_sessions, self.again_hosts


def plan_hour(size: int, hour: int) -> list[Visits]:
    """Each replica's visits of department `size` in `hour`. Two sessions share a host in the first
    hour and three in the second, so the hours' host counts differ; one session in seven comes back in
    a later request."""
    by_replica = [Visits() for _ in range(REPLICAS)]
    label = department(size)
    per_host = 2 + hour
    for number in session_numbers(size, hour):
        session, host = f"{label}-s{number}", f"{label}-h{number // per_host}"
        replicas = replicas_of(number)
        for replica in replicas:
            by_replica[replica].sessions.append(session)
            by_replica[replica].hosts.append(host)
        if number % 7 == 3:
            by_replica[replicas[-1]].again_sessions.append(session)
            by_replica[replicas[-1]].again_hosts.append(host)
    return by_replica


async def send_over_http(running: RunningAttribution, size: int, visits: Visits) -> None:
    for sessions, hosts in visits.rounds():
        for first in range(0, len(sessions), VISITS_PER_REQUEST):
            last = first + VISITS_PER_REQUEST
            body = visits_request(department(size), zip(sessions[first:last], hosts[first:last], strict=True))
            await running.send(COUNTING_TENANT, body.SerializeToString())


def record_directly(running: RunningAttribution, size: int, visits: Visits) -> None:
    """As the pipeline records an accepted request: its usage by label values, none overflowed, and its
    identities (hashed) by kind and label values (one call stands for many requests here)."""
    ledger = running.service.ledger
    assert ledger is not None
    values: tuple[str, ...] = (department(size),)
    for sessions, hosts in visits.rounds():
        for first in range(0, len(sessions), SESSIONS_PER_RECORD):
            last = first + SESSIONS_PER_RECORD
            identities = {  # hashed, as the scan's identities are
                SESSIONS: {values: {identity_hash(session) for session in sessions[first:last]}},
                HOSTS: {values: {identity_hash(host) for host in hosts[first:last]}},
            }
            spans = len(sessions[first:last])
            ledger.record(
                COUNTING_TENANT, ("department",), {values: Usage(100 * spans, spans)}, {}, identities
            )


@dataclass(frozen=True)
class Compared:
    kind: str
    period: str  # "hour 0", "hour 1" or "month"
    size: int
    truth: int
    answer: float

    @property
    def error(self) -> float:
        return abs(self.answer - self.truth) / self.truth


def postgresql_config(directory: Path, dsn: str) -> Path:
    def use_postgresql(document: dict[str, Any]) -> None:
        document["usage_attribution"]["ledger"] = {
            "backend": "postgresql",
            "postgresql": {"dsn": dsn, "pool": {"min_size": 1, "max_size": 2, "timeout": "5s"}},
            "flush_period": "1h",  # the test flushes
        }

    return edit_yaml(distinct_config(directory), use_postgresql)


async def hourly_answers(running: RunningAttribution) -> dict[tuple[str, int, str], float]:
    """(kind, hour index, department): the hourly value, through the official client."""
    answers: dict[tuple[str, int, str], float] = {}
    with running.datadog() as (v1, _):
        for kind, usage_type in USAGE_TYPES.items():
            answer = await running.call(
                v1.get_hourly_usage_attribution,
                start_hr=MONTH_START,
                end_hr=datetime.fromtimestamp(MONTH_START.timestamp() + HOURS * HOUR, UTC),
                usage_type=usage_type,
                tag_breakdown_keys="department",
            )
            assert not answer.metadata.pagination.next_record_id  # one page holds every record
            for record in answer.usage:
                hour = int(record.hour.timestamp() - MONTH_START.timestamp()) // HOUR
                (label,) = record.tags["department"]
                answers[kind, hour, label] = record.total_usage_sum
    return answers


async def monthly_answers(running: RunningAttribution) -> dict[tuple[str, str], float]:
    """(kind, department): November's value, through the raw API."""
    status, body, _ = await running.get(
        MONTHLY_PATH,
        {
            "start_month": "2026-11",
            "end_month": "2026-11",
            "fields": f"{SESSIONS_USAGE},{HOSTS_USAGE}",
            "tag_breakdown_keys": "department",
        },
    )
    assert status == 200, body
    assert not body["metadata"]["pagination"]["next_record_id"]
    return {
        (kind, record["tags"]["department"][0]): record["values"][name]
        for record in body["usage"]
        for kind, name in FIELDS.items()
    }


async def test_three_replicas_count_one_to_a_million_distinct_identities_within_two_percent(
    schemas: PostgresSchemas, tmp_path: Path
) -> None:
    config = postgresql_config(tmp_path, schemas.dsn())
    truth: dict[tuple[str, int, int], set[str]] = {}  # (kind, hour, size): what was sent
    async with contextlib.AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(attribution_service(config, MONTH_START.timestamp() + 1800))
            for _ in range(REPLICAS)
        ]
        for hour in range(HOURS):
            for size in SIZES:
                planned = plan_hour(size, hour)
                truth[SESSIONS, hour, size] = {s for visits in planned for s in visits.sessions}
                truth[HOSTS, hour, size] = {h for visits in planned for h in visits.hosts}
                for running, visits in zip(replicas, planned, strict=True):
                    if size <= LARGEST_OVER_HTTP:
                        await send_over_http(running, size, visits)
                    else:
                        record_directly(running, size, visits)
            for running in replicas:
                await running.flush()
                running.wall.advance(HOUR)
        hourly = await hourly_answers(replicas[1])
        monthly = await monthly_answers(replicas[1])

    assert {len(truth[SESSIONS, hour, size]) for hour in range(HOURS) for size in SIZES} == set(SIZES)
    labels = {department(size) for size in SIZES}
    assert set(hourly) == {
        (kind, hour, label) for kind in FIELDS for hour in range(HOURS) for label in labels
    }
    assert set(monthly) == {(kind, label) for kind in FIELDS for label in labels}
    compared: list[Compared] = []
    for kind in (SESSIONS, HOSTS):
        for size in SIZES:
            label = department(size)
            counts = [len(truth[kind, hour, size]) for hour in range(HOURS)]
            for hour, count in enumerate(counts):
                compared.append(Compared(kind, f"hour {hour}", size, count, hourly[kind, hour, label]))
            month = sum(counts) if kind == SESSIONS else max(counts)
            compared.append(Compared(kind, "month", size, month, monthly[kind, label]))

    print("\nworst relative error per department size (sessions a department has each hour):")
    for size in SIZES:
        worst = max((c for c in compared if c.size == size), key=lambda c: c.error)
        print(
            f"  {size:>9}: {worst.error:.4%} ({worst.kind}, {worst.period}: {worst.answer} for {worst.truth})"
        )
    inexact = [c for c in compared if c.size <= EXACT_UP_TO and c.answer != c.truth]
    assert not inexact, inexact
    beyond = [c for c in compared if c.error > TOLERANCE]
    assert not beyond, beyond


# --- SIGKILL and restart -------------------------------------------------------------------------------


def hour_now() -> int:
    return hour_of(time.time())


@dataclass
class SentSessions:
    """The sessions sent to the process, each with the UTC hours it may be counted in (two when its
    request crossed the hour), apart by whether a flush has stored them since."""

    unflushed: list[tuple[str, frozenset[int]]] = field(default_factory=list)
    flushed: list[tuple[str, frozenset[int]]] = field(default_factory=list)

    async def send(self, http: aiohttp.ClientSession, process: DistributorProcess, *sessions: str) -> None:
        """One browser page load a session, every one on host h1 of department shop."""
        for session in sessions:
            sent_in = hour_now()
            body = visits_request("shop", [(session, "h1")], spans=3).SerializeToString()
            answer = await post_traces(http, process.traces_url, body, COUNTING_TENANT)
            assert answer.status == 200, answer.body
            self.unflushed.append((session, frozenset({sent_in, hour_now()})))

    def stored(self) -> None:
        self.flushed += self.unflushed
        self.unflushed = []

    def hours(self) -> set[int]:
        return {hour for _, hours in self.flushed + self.unflushed for hour in hours}

    def bounds(self, hour: int) -> tuple[int, int]:
        """How many sessions `hour` must count at least (stored, and surely in that hour) and at most."""
        surely = {session for session, hours in self.flushed if hours == {hour}}
        maybe = {session for session, hours in self.flushed + self.unflushed if hour in hours}
        return len(surely), len(maybe)


async def hourly_sessions(
    http: aiohttp.ClientSession, process: DistributorProcess, hours: set[int]
) -> dict[int, float]:
    """The shop department's sessions by hour, as the process's API answers (raw)."""
    params = {
        "start_hr": datetime.fromtimestamp(min(hours), UTC).strftime("%Y-%m-%dT%H"),
        "end_hr": datetime.fromtimestamp(max(hours) + HOUR, UTC).strftime("%Y-%m-%dT%H"),
        "usage_type": SESSIONS_USAGE,
        "tag_breakdown_keys": "department",
    }
    async with http.get(process.server_url + HOURLY_PATH, params=params, headers=KEY_HEADERS) as answer:
        assert answer.status == 200, await answer.text()
        body = await answer.json()
    found: dict[int, float] = {}
    for record in body["usage"]:
        assert record["tags"] == {"department": ["shop"]}
        hour = int(datetime.fromisoformat(record["hour"]).timestamp())
        found[hour] = record["total_usage_sum"]
    return found


async def assert_within_bounds(
    http: aiohttp.ClientSession, process: DistributorProcess, sent: SentSessions
) -> list[tuple[int, int, float]]:
    answered = await hourly_sessions(http, process, sent.hours())
    assert set(answered) <= sent.hours()
    seen = [(*sent.bounds(hour), answered.get(hour, 0.0)) for hour in sorted(sent.hours())]
    for lowest, highest, count in seen:
        assert lowest <= count <= highest, f"by hour, (at least, at most, counted): {seen}"
    return seen


async def test_sessions_a_flush_stored_survive_sigkill_and_merge_with_those_sent_after_the_restart(
    tmp_path: Path,
) -> None:
    config = distinct_config(tmp_path, flush_period="1s")
    sent = SentSessions()
    async with aiohttp.ClientSession() as http:
        with distributor_processes() as started:
            first = await asyncio.to_thread(start_distributor, config)
            started.append(first)
            await sent.send(http, first, "A", "B", "C", "D", "E")
            await eventually(lambda: first.ledger_flushed(http), "A..E flushed", timeout=30)
            sent.stored()
            await sent.send(http, first, "F", "G")
            first.sigkill()

            second = await asyncio.to_thread(start_distributor, config)
            started.append(second)
            seen = await assert_within_bounds(http, second, sent)
            if len(sent.hours()) == 1:  # no request crossed the hour (the usual case): A..E, maybe F, G
                assert seen[0][:2] == (5, 7)

            # Sessions seen before the SIGKILL (A, maybe F and G) come again, with new ones (H, I).
            await sent.send(http, second, "A", "F", "G", "H", "I")
            await eventually(lambda: second.ledger_flushed(http), "A..I flushed", timeout=30)
            sent.stored()
            seen = await assert_within_bounds(http, second, sent)
            if len(sent.hours()) == 1:
                assert seen == [(9, 9, 9)]
