"""The Usage Attribution API's parameters through the real HTTP server: every invalid parameter is a 400
naming it, the time formats the official clients send, signed cursors (tampered, reused, expired),
snapshot pagination while usage keeps arriving, sorting, CSV, rate-limit headers and the types endpoint.

Semantics: docs/usage-attribution-api.md. START is 2026-11-22 10:30 UTC.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
import yaml
from datadog_api_client.v1.model.hourly_usage_attribution_usage_type import HourlyUsageAttributionUsageType

from distributor.attribution import api as attribution_api
from distributor.ledger.ledger import DISTINCT_USAGE_TYPES
from tests.support.attribution import (
    START,
    RunningAttribution,
    attribution_service,
    spans_request,
    write_config,
)

HOURLY = "/api/v1/usage/hourly-attribution"
MONTHLY = "/api/v1/usage/monthly-attribution"
TYPES_PATHS = ("/api/v2/usage/usage_attribution_types", "/api/v2/usage/usage-attribution-types")
BYTES = "ingested_spans_bytes_usage"
SPANS = "estimated_ingested_spans_usage"
BYTES_PCT = "ingested_spans_bytes_percentage"
SPANS_PCT = "estimated_ingested_spans_percentage"
RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Period",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Name",
)
# 2026-10-31 23:30 UTC: half an hour before November, for tests that need usage in several months.
OCTOBER_END = datetime(2026, 10, 31, 23, 30, tzinfo=UTC).timestamp()

Params = dict[str, str] | list[tuple[str, str]]


# -- helpers ------------------------------------------------------------------------------------------


async def api_get(
    running: RunningAttribution,
    path: str,
    params: Params,
    key: str = "holding",
    raw_query: str | None = None,
    **headers: str,
) -> tuple[int, Any, Any]:
    """A request with the query string built here (so a parameter can repeat, or a '+' stay raw)."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    query = raw_query if raw_query is not None else urlencode(pairs)
    return await running.get(f"{path}?{query}" if query else path, key=key, **headers)


async def ok(running: RunningAttribution, path: str, params: Params, key: str = "holding") -> Any:
    status, body, _ = await api_get(running, path, params, key=key)
    assert status == 200, body
    return body


def error_message(status: int, body: Any) -> str:
    """The one message of a 400 answer."""
    assert status == 400, body
    assert isinstance(body, dict) and list(body) == ["errors"], body
    (message,) = body["errors"]
    assert isinstance(message, str) and message
    return message


def cursor_of(body: Any) -> str | None:
    cursor: str | None = body["metadata"]["pagination"]["next_record_id"]
    return cursor


async def follow(
    running: RunningAttribution, path: str, params: Params, first: Any, key: str = "holding"
) -> list[Any]:
    """`first` and every page after it, following next_record_id with the same parameters."""
    pages = [first]
    for _ in range(100):
        cursor = cursor_of(pages[-1])
        if cursor is None:
            return pages
        pairs = list(params.items()) if isinstance(params, dict) else list(params)
        pages.append(await ok(running, path, [*pairs, ("next_record_id", cursor)], key=key))
    raise AssertionError("more than 100 pages")


async def all_pages(
    running: RunningAttribution, path: str, params: Params, key: str = "holding"
) -> list[Any]:
    return await follow(running, path, params, await ok(running, path, params, key=key), key=key)


def records_of(pages: list[Any]) -> list[dict[str, Any]]:
    return [record for page in pages for record in page["usage"]]


def label(record: dict[str, Any]) -> tuple[str, ...]:
    """org name and the values of the breakdown keys: unique within one period."""
    return (record["org_name"], *(values[0] for values in (record["tags"] or {}).values()))


def without_updated_at(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "updated_at"} for record in records]


def flip(text: str, index: int) -> str:
    """`text` with the base64url character at `index` replaced by another (the first character of a
    segment carries six significant bits, so the decoded bytes change)."""
    replacement = "B" if text[index] != "B" else "C"
    return text[:index] + replacement + text[index + 1 :]


async def seed_teams(running: RunningAttribution) -> None:
    """One month of usage the holding key sees, with ties on every field when broken down by team:
    ACME/payments (few spans, many bytes), ACME/search (many small spans), ACME/ops and Holding/ops (the
    same request: equal bytes and spans), Globex (no `team` tag: tags null; 4 spans, like the ops)."""
    await running.send("acme", spans_request("checkout", 1, team="payments", pad=3000))
    await running.send("acme", spans_request("search", 12, team="search"))
    await running.send("acme", spans_request("ops", 4, team="ops"))
    await running.send("holding", spans_request("ops", 4, team="ops"))
    await running.send("globex", spans_request("web", 4, env="prod"))
    await running.flush()


# -- 1. every invalid parameter is a 400 naming it ------------------------------------------------------

H = {"start_hr": "2026-11-22T10", "usage_type": BYTES}
M = {"start_month": "2026-11", "fields": "*"}


def changed(base: dict[str, str], **changes: str | None) -> list[tuple[str, str]]:
    params = dict(base)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return list(params.items())


def case(case_id: str, path: str, params: list[tuple[str, str]], name: str, echo: str = "") -> Any:
    return pytest.param(path, params, name, echo, id=case_id)


INVALID = [
    # hourly: required
    case("hourly-no-start_hr", HOURLY, changed(H, start_hr=None), "start_hr"),
    case("hourly-blank-start_hr", HOURLY, changed(H, start_hr=""), "start_hr"),
    case("hourly-no-usage_type", HOURLY, changed(H, usage_type=None), "usage_type"),
    case("hourly-blank-usage_type", HOURLY, changed(H, usage_type=""), "usage_type"),
    # hourly: malformed times
    case("hourly-start_hr-word", HOURLY, changed(H, start_hr="yesterday"), "start_hr", "yesterday"),
    case("hourly-start_hr-hour-25", HOURLY, changed(H, start_hr="2026-11-22T25"), "start_hr", "T25"),
    case("hourly-start_hr-month-13", HOURLY, changed(H, start_hr="2026-13-22T10"), "start_hr", "2026-13"),
    case("hourly-start_hr-nov-31", HOURLY, changed(H, start_hr="2026-11-31T10"), "start_hr"),
    case("hourly-start_hr-bad-offset", HOURLY, changed(H, start_hr="2026-11-22T10:00:00+25:00"), "start_hr"),
    case("hourly-end_hr-word", HOURLY, changed(H, end_hr="tomorrow"), "end_hr", "tomorrow"),
    case("hourly-end_hr-hour-25", HOURLY, changed(H, end_hr="2026-11-22T25"), "end_hr", "T25"),
    # hourly: end_hr is exclusive, so it must be after start_hr (after truncation too)
    case("hourly-end_hr-equal", HOURLY, changed(H, end_hr="2026-11-22T10"), "end_hr"),
    case("hourly-end_hr-equal-truncated", HOURLY, changed(H, end_hr="2026-11-22T10:59:59Z"), "end_hr"),
    case("hourly-end_hr-before", HOURLY, changed(H, end_hr="2026-11-22T09"), "end_hr"),
    # hourly: unknown values
    case(
        "hourly-usage_type-later", HOURLY, changed(H, usage_type="apm_hosts_usage"), "usage_type", "apm_hosts"
    ),
    case("hourly-usage_type-word", HOURLY, changed(H, usage_type="bytes"), "usage_type", "bytes"),
    case("hourly-usage_type-percentage", HOURLY, changed(H, usage_type=BYTES_PCT), "usage_type"),
    case("hourly-usage_type-list", HOURLY, changed(H, usage_type=f"{BYTES},{SPANS}"), "usage_type"),
    case("hourly-include_descendants", HOURLY, changed(H, include_descendants="yes"), "include_descendants"),
    case(
        "hourly-breakdown-empty-key",
        HOURLY,
        changed(H, tag_breakdown_keys="team,,service_name"),
        "tag_breakdown_keys",
    ),
    case("hourly-breakdown-trailing", HOURLY, changed(H, tag_breakdown_keys="team,"), "tag_breakdown_keys"),
    case("hourly-breakdown-commas", HOURLY, changed(H, tag_breakdown_keys=","), "tag_breakdown_keys"),
    # hourly: retention (15 months before 2026-11: 2025-08 and later)
    case("hourly-too-old", HOURLY, changed(H, start_hr="2025-07-31T23"), "start_hr", "15"),
    case("hourly-too-old-by-offset", HOURLY, changed(H, start_hr="2025-08-01T00:30:00+01:00"), "start_hr"),
    # hourly: unknown and repeated parameters, a garbage cursor
    case("hourly-unknown-parameter", HOURLY, [*changed(H), ("foo", "bar")], "foo"),
    case("hourly-monthly-parameter", HOURLY, [*changed(H), ("sort_direction", "asc")], "sort_direction"),
    case("hourly-start_month", HOURLY, [*changed(H), ("start_month", "2026-11")], "start_month"),
    case("hourly-start_hr-twice", HOURLY, [*changed(H), ("start_hr", "2026-11-22T10")], "start_hr"),
    case("hourly-usage_type-twice", HOURLY, [*changed(H), ("usage_type", SPANS)], "usage_type"),
    case(
        "hourly-end_hr-twice",
        HOURLY,
        [*changed(H, end_hr="2026-11-22T12"), ("end_hr", "2026-11-22T12")],
        "end_hr",
    ),
    case("hourly-garbage-cursor", HOURLY, changed(H, next_record_id="garbage"), "next_record_id"),
    # monthly: required
    case("monthly-no-start_month", MONTHLY, changed(M, start_month=None), "start_month"),
    case("monthly-blank-start_month", MONTHLY, changed(M, start_month=" "), "start_month"),
    case("monthly-no-fields", MONTHLY, changed(M, fields=None), "fields"),
    case("monthly-blank-fields", MONTHLY, changed(M, fields=""), "fields"),
    # monthly: malformed times
    case(
        "monthly-start_month-word", MONTHLY, changed(M, start_month="yesterday"), "start_month", "yesterday"
    ),
    case("monthly-start_month-13", MONTHLY, changed(M, start_month="2026-13"), "start_month", "2026-13"),
    case("monthly-start_month-00", MONTHLY, changed(M, start_month="2026-00"), "start_month"),
    case("monthly-start_month-reversed", MONTHLY, changed(M, start_month="11-2026"), "start_month"),
    case("monthly-start_month-hour-25", MONTHLY, changed(M, start_month="2026-11-22T25"), "start_month"),
    case("monthly-end_month-13", MONTHLY, changed(M, end_month="2026-13"), "end_month", "2026-13"),
    case("monthly-end_month-word", MONTHLY, changed(M, end_month="later"), "end_month", "later"),
    # monthly: end_month is inclusive, so only a month before start_month is wrong
    case("monthly-end_month-before", MONTHLY, changed(M, end_month="2026-10"), "end_month"),
    case(
        "monthly-end_month-before-by-offset",
        MONTHLY,
        changed(M, end_month="2026-11-01T00:30:00+01:00"),
        "end_month",
    ),
    # monthly: fields
    case("monthly-fields-unknown", MONTHLY, changed(M, fields="bogus_usage"), "fields", "bogus_usage"),
    case("monthly-fields-later", MONTHLY, changed(M, fields="apm_hosts_usage"), "fields", "apm_hosts_usage"),
    case(
        "monthly-fields-one-bad",
        MONTHLY,
        changed(M, fields=f"{BYTES},apm_hosts_usage,{SPANS}"),
        "fields",
        "apm_hosts_usage",
    ),
    case("monthly-fields-star-and-bad", MONTHLY, changed(M, fields="*,bogus"), "fields", "bogus"),
    case("monthly-fields-empty-item", MONTHLY, changed(M, fields=f"{BYTES},,{SPANS}"), "fields"),
    case("monthly-fields-trailing-comma", MONTHLY, changed(M, fields=f"{BYTES},"), "fields"),
    # monthly: sorting, descendants, breakdown
    case("monthly-sort_direction", MONTHLY, changed(M, sort_direction="up"), "sort_direction", "up"),
    case("monthly-sort_direction-word", MONTHLY, changed(M, sort_direction="descending"), "sort_direction"),
    case(
        "monthly-sort_name-unknown", MONTHLY, changed(M, sort_name="bogus_usage"), "sort_name", "bogus_usage"
    ),
    case("monthly-sort_name-month", MONTHLY, changed(M, sort_name="month"), "sort_name"),
    case(
        "monthly-include_descendants", MONTHLY, changed(M, include_descendants="maybe"), "include_descendants"
    ),
    case(
        "monthly-breakdown-empty-key", MONTHLY, changed(M, tag_breakdown_keys=",team"), "tag_breakdown_keys"
    ),
    # monthly: retention
    case("monthly-too-old", MONTHLY, changed(M, start_month="2025-07"), "start_month", "15"),
    case(
        "monthly-too-old-by-offset",
        MONTHLY,
        changed(M, start_month="2025-08-01T00:30:00+01:00"),
        "start_month",
    ),
    # monthly: unknown and repeated parameters, a garbage cursor
    case("monthly-unknown-parameter", MONTHLY, [*changed(M), ("page", "2")], "page"),
    case("monthly-hourly-parameter", MONTHLY, [*changed(M), ("usage_type", BYTES)], "usage_type"),
    case("monthly-fields-twice", MONTHLY, [*changed(M), ("fields", "*")], "fields"),
    case("monthly-start_month-twice", MONTHLY, [*changed(M), ("start_month", "2026-10")], "start_month"),
    case(
        "monthly-sort_direction-twice",
        MONTHLY,
        [*changed(M, sort_direction="asc"), ("sort_direction", "asc")],
        "sort_direction",
    ),
    case("monthly-garbage-cursor", MONTHLY, changed(M, next_record_id="!!"), "next_record_id"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningAttribution]:
    """One service for the table of invalid requests (a 400 changes nothing: test_a_400_changes_nothing);
    starting one per case would take most of this file's time."""
    async with attribution_service(write_config(tmp_path_factory.mktemp("invalid"))) as running:
        await running.send("acme", spans_request("checkout", 2, team="payments"))
        await running.flush()
        yield running


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("path", "params", "name", "echo"), INVALID)
async def test_invalid_parameter_is_a_400_naming_it(
    shared: RunningAttribution, path: str, params: list[tuple[str, str]], name: str, echo: str
) -> None:
    status, body, headers = await api_get(shared, path, params)
    message = error_message(status, body)
    assert name in message
    assert echo in message
    assert headers["Content-Type"].startswith("application/json")


async def test_boundaries_that_are_valid(tmp_path: Path) -> None:
    """The last month the retention keeps, end_month equal to start_month, end_hr one hour after start."""
    async with attribution_service(write_config(tmp_path)) as running:
        await running.send("acme", spans_request("checkout", 2, team="payments"))
        await running.flush()
        assert (await ok(running, MONTHLY, changed(M, start_month="2025-08")))["usage"]
        assert (await ok(running, HOURLY, changed(H, start_hr="2025-08-01T00")))["usage"]
        assert (await ok(running, HOURLY, changed(H, start_hr="2025-07-31T23:30:00-01:00")))["usage"]
        assert (await ok(running, MONTHLY, changed(M, end_month="2026-11")))["usage"]
        assert (await ok(running, HOURLY, changed(H, end_hr="2026-11-22T11")))["usage"]
        # Blank optional parameters mean "not given".
        assert (await ok(running, HOURLY, changed(H, tag_breakdown_keys="")))["usage"][0]["tags"] == {}
        await running.send("holding", spans_request("own", 1, team="hq"))
        await running.flush()
        for flag, orgs in (
            ("true", {"ACME", "Holding Corp"}),
            ("True", {"ACME", "Holding Corp"}),
            ("1", {"ACME", "Holding Corp"}),
            ("false", {"Holding Corp"}),
            ("FALSE", {"Holding Corp"}),
            ("0", {"Holding Corp"}),
        ):
            body = await ok(running, HOURLY, changed(H, include_descendants=flag))
            assert {r["org_name"] for r in body["usage"]} == orgs, flag


async def test_a_400_changes_nothing(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path, page_size=1)) as running:
        await seed_teams(running)
        hourly_params = changed(H, tag_breakdown_keys="team")
        monthly_params = changed(M, tag_breakdown_keys="team")
        hourly_before = await all_pages(running, HOURLY, hourly_params)
        monthly_before = await all_pages(running, MONTHLY, monthly_params)
        assert len(hourly_before) == len(monthly_before) == 5
        cursor = cursor_of(hourly_before[0])
        assert cursor is not None

        for invalid in INVALID:
            path, params, _, _ = invalid.values
            status, body, _ = await api_get(running, path, params)
            error_message(status, body)
        # Bad requests that carry the good cursor (the cursor stays usable afterwards).
        for params in (
            [*hourly_params, ("next_record_id", cursor), ("foo", "1")],
            [*changed(H, tag_breakdown_keys="team", end_hr="yesterday"), ("next_record_id", cursor)],
            [*hourly_params, ("next_record_id", cursor), ("next_record_id", cursor)],
        ):
            error_message(*(await api_get(running, HOURLY, params))[:2])

        assert await ok(running, HOURLY, [*hourly_params, ("next_record_id", cursor)]) == hourly_before[1]
        assert await all_pages(running, HOURLY, hourly_params) == hourly_before
        assert await all_pages(running, MONTHLY, monthly_params) == monthly_before


@pytest.mark.parametrize(
    ("params", "name"),
    [
        pytest.param(changed(M, start_month="0001-01-01T00:00:00+01:00"), "start_month", id="start-year-0"),
        pytest.param(changed(M, end_month="9999-12-31T23:00:00-01:00"), "end_month", id="end-year-10000"),
    ],
)
async def test_monthly_time_out_of_range_is_a_400(
    tmp_path: Path, params: list[tuple[str, str]], name: str
) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        status, body, _ = await api_get(running, MONTHLY, params)
        assert name in error_message(status, body)


# -- 2. time formats ------------------------------------------------------------------------------------

# (start_hr meaning 10:xx UTC, end_hr meaning 12:xx UTC, sent with '+' unescaped)
HOURLY_FORMS = [
    pytest.param("2026-11-22T10:00:00Z", "2026-11-22T12:00:00Z", False, id="Z"),
    pytest.param("2026-11-22T10:37:12+00:00", "2026-11-22T12:59:59+00:00", False, id="plus-00:00"),
    pytest.param("2026-11-22T12:15:00+02:00", "2026-11-22T14:45:00+02:00", False, id="plus-02:00"),
    pytest.param("2026-11-22T05:10:00-05:00", "2026-11-22T07:00:00-05:00", False, id="minus-05:00"),
    pytest.param("2026-11-22T10:37:12.512Z", "2026-11-22T12:00:00.001Z", False, id="fraction-Z"),
    pytest.param(
        "2026-11-22T10:37:12.512+00:00", "2026-11-22T12:37:12.512+00:00", False, id="fraction-offset"
    ),
    pytest.param(
        "2026-11-22T10:59:59.999999Z", "2026-11-22T12:59:59.999999Z", False, id="truncated-not-rounded"
    ),
    pytest.param("2026-11-22T10:37:12", "2026-11-22T12:00:00", False, id="naive"),
    pytest.param("2026-11-22T10:37:12+00:00", "2026-11-22T14:37:12+02:00", True, id="unescaped-plus"),
    pytest.param(
        "2026-11-22T10:37:12.512+00:00", "2026-11-22T13:00:00.5+01:00", True, id="unescaped-plus-fraction"
    ),
]


async def seed_hours(running: RunningAttribution) -> None:
    """Usage in 09:xx, 10:xx, 11:xx and 12:xx; the wall ends at 12:30."""
    running.wall.advance(-3600)  # 09:30
    for count in (1, 2, 3, 4):
        await running.send("acme", spans_request("checkout", count, team="payments"))
        running.wall.advance(3600)
    running.wall.advance(-3600)
    await running.flush()


@pytest.mark.parametrize(("start", "end", "raw"), HOURLY_FORMS)
async def test_hourly_time_formats(tmp_path: Path, start: str, end: str, raw: bool) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        await seed_hours(running)
        short = await ok(running, HOURLY, {"start_hr": "2026-11-22T10", "usage_type": SPANS})
        assert [(r["hour"], r["total_usage_sum"]) for r in short["usage"]] == [
            ("2026-11-22T10:00:00+00:00", 2),
            ("2026-11-22T11:00:00+00:00", 3),
            ("2026-11-22T12:00:00+00:00", 4),
        ]
        bounded = await ok(
            running, HOURLY, {"start_hr": "2026-11-22T10", "end_hr": "2026-11-22T12", "usage_type": SPANS}
        )
        assert [r["hour"][11:13] for r in bounded["usage"]] == ["10", "11"]  # end_hr is exclusive

        if raw:  # by hand: '+' arrives as a space, as from a client that does not escape it
            assert "%" not in start + end
            status, body, _ = await api_get(
                running, HOURLY, [], raw_query=f"start_hr={start}&usage_type={SPANS}"
            )
            assert (status, body) == (200, short)
            status, body, _ = await api_get(
                running, HOURLY, [], raw_query=f"start_hr={start}&end_hr={end}&usage_type={SPANS}"
            )
            assert (status, body) == (200, bounded)
        else:
            assert await ok(running, HOURLY, {"start_hr": start, "usage_type": SPANS}) == short
            assert (
                await ok(running, HOURLY, {"start_hr": start, "end_hr": end, "usage_type": SPANS}) == bounded
            )


# (start_month and end_month both meaning November UTC, sent with '+' unescaped)
MONTHLY_FORMS = [
    pytest.param("2026-11-01T00:00:00Z", "2026-11-30T23:59:59Z", False, id="Z"),
    pytest.param("2026-11-15T08:00:00+00:00", "2026-11-30T23:59:59.999999+00:00", False, id="plus-00:00"),
    pytest.param("2026-12-01T01:00:00+02:00", "2026-10-31T22:00:00-05:00", False, id="offsets-across-months"),
    pytest.param("2026-11-19T10:37:12.512Z", "2026-11-19T10:37:12.512Z", False, id="fraction-Z"),
    pytest.param(
        "2026-11-19T10:37:12.512+00:00", "2026-11-01T00:00:00.000+00:00", False, id="fraction-offset"
    ),
    pytest.param("2026-11-19T10:37:12", "2026-11-30T23:00:00", False, id="naive"),
    pytest.param("2026-11-19T10", "2026-11-22T10", False, id="short-hour"),
    pytest.param("2026-11-19T10:37:12+00:00", "2026-12-01T00:30:00+01:00", True, id="unescaped-plus"),
]


async def seed_months(running: RunningAttribution) -> None:
    """Usage in October (1 span), November (2 + 3 spans) and December (4 spans) of 2026."""
    await running.send("acme", spans_request("checkout", 1, team="payments"))
    running.wall.advance(3600)  # 2026-11-01 00:30
    await running.send("acme", spans_request("checkout", 2, team="payments"))
    running.wall.advance(29 * 86400 + 22 * 3600)  # 2026-11-30 22:30
    await running.send("acme", spans_request("checkout", 3, team="payments"))
    running.wall.advance(2 * 3600)  # 2026-12-01 00:30
    await running.send("acme", spans_request("checkout", 4, team="payments"))
    await running.flush()


@pytest.mark.parametrize(("start", "end", "raw"), MONTHLY_FORMS)
async def test_monthly_time_formats(tmp_path: Path, start: str, end: str, raw: bool) -> None:
    async with attribution_service(write_config(tmp_path), wall_start=OCTOBER_END) as running:
        await seed_months(running)
        short = await ok(
            running, MONTHLY, {"start_month": "2026-11", "end_month": "2026-11", "fields": SPANS}
        )
        assert [(r["month"], r["values"]) for r in short["usage"]] == [
            ("2026-11-01T00:00:00+00:00", {SPANS: 5})
        ]
        if raw:
            assert "%" not in start + end
            status, body, _ = await api_get(
                running, MONTHLY, [], raw_query=f"start_month={start}&end_month={end}&fields={SPANS}"
            )
            assert (status, body) == (200, short)
        else:
            assert (
                await ok(running, MONTHLY, {"start_month": start, "end_month": end, "fields": SPANS}) == short
            )


async def test_end_month_is_inclusive_and_end_hr_exclusive(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path), wall_start=OCTOBER_END) as running:
        await seed_months(running)

        async def months(**params: str) -> list[tuple[str, float]]:
            body = await ok(running, MONTHLY, {"fields": SPANS, **params})
            return sorted((r["month"][:7], r["values"][SPANS]) for r in body["usage"])

        assert await months(start_month="2026-10", end_month="2026-10") == [("2026-10", 1)]
        assert await months(start_month="2026-10", end_month="2026-11") == [("2026-10", 1), ("2026-11", 5)]
        assert await months(start_month="2026-10", end_month="2026-12") == [
            ("2026-10", 1),
            ("2026-11", 5),
            ("2026-12", 4),
        ]
        assert await months(start_month="2026-10") == await months(start_month="2026-10", end_month="2026-12")

        async def hours(start_hr: str, end_hr: str) -> list[tuple[str, float]]:
            body = await ok(running, HOURLY, {"start_hr": start_hr, "end_hr": end_hr, "usage_type": SPANS})
            return [(r["hour"], r["total_usage_sum"]) for r in body["usage"]]

        assert await hours("2026-10-31T23", "2026-11-01T00") == [("2026-10-31T23:00:00+00:00", 1)]
        assert await hours("2026-10-31T23", "2026-11-01T01") == [
            ("2026-10-31T23:00:00+00:00", 1),
            ("2026-11-01T00:00:00+00:00", 2),
        ]
        assert await hours("2026-11-30T22", "2026-12-01T00") == [("2026-11-30T22:00:00+00:00", 3)]


async def test_official_client_full_datetimes(tmp_path: Path) -> None:
    """datadog-api-client sends datetimes with microseconds and offsets; they truncate like short forms."""
    async with attribution_service(write_config(tmp_path)) as running:
        await seed_hours(running)
        plus_two = timezone(timedelta(hours=2))
        with running.datadog("acme") as (api, _):
            answer = await running.call(
                api.get_hourly_usage_attribution,
                start_hr=datetime(2026, 11, 22, 12, 37, 12, 512000, tzinfo=plus_two),  # 10:37 UTC
                end_hr=datetime(2026, 11, 22, 12, 0, 0, 1, tzinfo=UTC),
                usage_type=HourlyUsageAttributionUsageType.ESTIMATED_INGESTED_SPANS_USAGE,
            )
        assert [(r.hour.hour, r.total_usage_sum) for r in answer.usage] == [(10, 2), (11, 3)]


# -- 3. cursors -----------------------------------------------------------------------------------------

# (endpoint, parameters) whose result has several pages with page_size=1.
PAGED = {
    "hourly": (HOURLY, {"start_hr": "2026-11-22T10", "usage_type": BYTES, "tag_breakdown_keys": "team"}),
    "monthly": (MONTHLY, {"start_month": "2026-11", "fields": "*", "tag_breakdown_keys": "team"}),
}
TAMPERINGS = {
    "payload-first-char": lambda c: flip(c, 0),
    "payload-middle-char": lambda c: flip(c, len(c.split(".")[0]) // 2),
    "signature-first-char": lambda c: flip(c, len(c.split(".")[0]) + 1),
    "signature-dropped": lambda c: c.split(".")[0],
    "signature-empty": lambda c: c.split(".")[0] + ".",
    "payload-empty": lambda c: "." + c.split(".")[1],
    "signature-truncated": lambda c: c[:-3],
    "swapped-halves": lambda c: ".".join(reversed(c.split("."))),
    "extra-dot": lambda c: c + ".x",
    "padding-added": lambda c: c + "==",
    "empty": lambda c: "",
    "dot": lambda c: ".",
    "garbage": lambda c: "garbage",
    "not-base64": lambda c: "%%%.***",
    "unicode": lambda c: "é" + c,
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
@pytest.mark.parametrize("endpoint", list(PAGED))
async def test_tampered_cursor_is_a_400(tmp_path: Path, endpoint: str, tampering: str) -> None:
    path, params = PAGED[endpoint]
    async with attribution_service(write_config(tmp_path, page_size=1)) as running:
        await seed_teams(running)
        first = await ok(running, path, params)
        cursor = cursor_of(first)
        assert cursor is not None and cursor.count(".") == 1
        tampered = TAMPERINGS[tampering](cursor)
        assert tampered != cursor
        status, body, headers = await api_get(running, path, {**params, "next_record_id": tampered})
        assert "next_record_id" in error_message(status, body)
        assert "X-RateLimit-Remaining" in headers
        # The genuine cursor still works.
        second = await ok(running, path, {**params, "next_record_id": cursor})
        assert second["usage"] and second["usage"] != first["usage"]


async def test_forged_payload_with_another_offset_is_a_400(tmp_path: Path) -> None:
    """A readable payload re-encoded with a changed offset, keeping the old signature."""
    path, params = PAGED["hourly"]
    async with attribution_service(write_config(tmp_path, page_size=1)) as running:
        await seed_teams(running)
        cursor = cursor_of(await ok(running, path, params))
        assert cursor is not None
        payload, signature = cursor.split(".")
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        decoded[3] = 0  # the offset: back to the first page
        forged = base64.urlsafe_b64encode(json.dumps(decoded, separators=(",", ":")).encode())
        status, body, _ = await api_get(
            running, path, {**params, "next_record_id": forged.rstrip(b"=").decode() + "." + signature}
        )
        assert "next_record_id" in error_message(status, body)


# The first page is read with PAGED's parameters and the holding key; the cursor comes back with these.
REUSES = [
    pytest.param("hourly", HOURLY, {"usage_type": SPANS}, "holding", id="hourly-other-usage_type"),
    pytest.param("hourly", HOURLY, {"start_hr": "2026-11-22T09"}, "holding", id="hourly-other-start_hr"),
    pytest.param("hourly", HOURLY, {"end_hr": "2026-11-22T12"}, "holding", id="hourly-end_hr-added"),
    pytest.param(
        "hourly", HOURLY, {"tag_breakdown_keys": "service_name"}, "holding", id="hourly-other-breakdown"
    ),
    pytest.param("hourly", HOURLY, {"include_descendants": "false"}, "holding", id="hourly-no-descendants"),
    pytest.param("hourly", HOURLY, {}, "acme", id="hourly-other-key"),
    pytest.param(
        "hourly", MONTHLY, {"start_month": "2026-11", "fields": "*"}, "holding", id="hourly-on-monthly"
    ),
    pytest.param("monthly", MONTHLY, {"fields": BYTES}, "holding", id="monthly-other-fields"),
    pytest.param("monthly", MONTHLY, {"sort_direction": "asc"}, "holding", id="monthly-other-direction"),
    pytest.param("monthly", MONTHLY, {"sort_name": SPANS}, "holding", id="monthly-other-sort_name"),
    pytest.param("monthly", MONTHLY, {"start_month": "2026-10"}, "holding", id="monthly-other-start"),
    pytest.param("monthly", MONTHLY, {"end_month": "2026-11"}, "holding", id="monthly-end_month-added"),
    pytest.param("monthly", MONTHLY, {"tag_breakdown_keys": None}, "holding", id="monthly-breakdown-removed"),
    pytest.param("monthly", MONTHLY, {}, "acme", id="monthly-other-key"),
    pytest.param(
        "monthly",
        HOURLY,
        {"start_hr": "2026-11-22T10", "usage_type": BYTES},
        "holding",
        id="monthly-on-hourly",
    ),
]


@pytest.mark.parametrize(("endpoint", "path", "changes", "key"), REUSES)
async def test_cursor_reused_with_another_query_is_a_400(
    tmp_path: Path, endpoint: str, path: str, changes: dict[str, str | None], key: str
) -> None:
    first_path, first_params = PAGED[endpoint]
    async with attribution_service(write_config(tmp_path, page_size=1)) as running:
        await seed_teams(running)
        cursor = cursor_of(await ok(running, first_path, first_params))
        assert cursor is not None
        base = dict(first_params) if path == first_path else {}
        params = changed(base, **changes)
        assert (await api_get(running, path, params, key=key))[0] == 200  # a valid query without it
        status, body, _ = await api_get(running, path, [*params, ("next_record_id", cursor)], key=key)
        assert "next_record_id" in error_message(status, body)


async def test_cursor_accepts_the_same_query_spelled_differently(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path, page_size=1)) as running:
        await seed_teams(running)
        path, params = PAGED["hourly"]
        first = await ok(running, path, params)
        second = await ok(running, path, {**params, "next_record_id": cursor_of(first) or ""})
        respelled = {
            **params,
            "start_hr": "2026-11-22T12:15:00+02:00",
            "next_record_id": cursor_of(first) or "",
        }
        assert await ok(running, path, respelled) == second


@pytest.mark.parametrize("endpoint", list(PAGED))
async def test_expired_cursor_is_a_400(tmp_path: Path, endpoint: str) -> None:
    """Flushes older than cursor_ttl get merged by the maintenance a flush runs (at most once a wall-clock
    minute); a cursor whose snapshot was merged away is expired. Merging up to the cursor's own flush
    keeps it valid (reading as of that flush stays exact); merging a later one expires it."""
    path, params = PAGED[endpoint]
    async with attribution_service(write_config(tmp_path, cursor_ttl="10m", page_size=1)) as running:
        await seed_teams(running)  # flush 1, at 10:30 (its maintenance merges nothing)
        original = records_of(await all_pages(running, path, params))
        first = await ok(running, path, params)
        cursor = cursor_of(first)
        assert cursor is not None
        second = await ok(running, path, {**params, "next_record_id": cursor})

        running.wall.advance(11 * 60)  # 10:41
        await running.send("acme", spans_request("search", 5, team="search"))
        await running.send("acme", spans_request("ops", 5, team="ops"))
        await running.flush()  # flush 2; maintenance merges flushes before 10:31: flush 1
        assert await ok(running, path, {**params, "next_record_id": cursor}) == second

        running.wall.advance(11 * 60)  # 10:52
        await running.send("acme", spans_request("search", 5, team="search"))
        await running.flush()  # flush 3; maintenance merges flushes before 10:42: flush 2
        status, body, _ = await api_get(running, path, {**params, "next_record_id": cursor})
        message = error_message(status, body)
        assert "next_record_id" in message and "expired" in message

        fresh = records_of(await all_pages(running, path, params))  # a new query reads the new usage
        assert len(fresh) == len(original)
        assert without_updated_at(fresh) != without_updated_at(original)


# -- 4. pagination while usage keeps arriving -----------------------------------------------------------


async def test_hourly_pages_are_one_snapshot_while_usage_arrives(tmp_path: Path) -> None:
    params = {"start_hr": "2026-11-22T10", "usage_type": BYTES, "tag_breakdown_keys": "team"}
    async with attribution_service(write_config(tmp_path, page_size=2)) as running:
        for team, count in (("billing", 1), ("ops", 2), ("search", 3)):
            await running.send("acme", spans_request("svc", count, team=team))
        await running.send("holding", spans_request("svc", 3, team="ops"))
        await running.send("globex", spans_request("web", 1, env="prod"))
        await running.flush()
        snapshot = records_of(await all_pages(running, HOURLY, params))
        assert [label(r) for r in snapshot] == [
            ("ACME", "billing"),
            ("ACME", "ops"),
            ("ACME", "search"),
            ("Globex",),
            ("Holding Corp", "ops"),
        ]

        first = await ok(running, HOURLY, params)
        assert first["usage"] == snapshot[:2]
        # New tag sets (one sorting before every record already returned), more usage on existing ones,
        # and usage in the next hour.
        await running.send("acme", spans_request("svc", 5, team="aaa"))
        await running.send("acme", spans_request("svc", 5, team="billing"))
        await running.send("globex", spans_request("web", 5, env="prod"))
        await running.send("holding", spans_request("svc", 1, team="zzz"))
        await running.flush()
        running.wall.advance(3600)  # 11:30
        await running.send("acme", spans_request("svc", 1, team="ops"))
        await running.flush()

        pages = await follow(running, HOURLY, params, first)
        assert len(pages) == 3
        got = records_of(pages)
        assert without_updated_at(got) == without_updated_at(snapshot)
        assert len({(r["hour"], label(r)) for r in got}) == len(got)

        fresh = records_of(await all_pages(running, HOURLY, params))
        assert {(r["hour"][11:13], label(r)) for r in fresh} >= {
            ("10", ("ACME", "aaa")),
            ("10", ("Holding Corp", "zzz")),
            ("11", ("ACME", "ops")),
        }
        assert {label(r): r["total_usage_sum"] for r in fresh if r["hour"][11:13] == "10"}[
            ("ACME", "billing")
        ] > {label(r): r["total_usage_sum"] for r in snapshot}[("ACME", "billing")]


@pytest.mark.parametrize("direction", ["desc", "asc"])
async def test_monthly_pages_are_one_snapshot_while_usage_reorders(tmp_path: Path, direction: str) -> None:
    params = {
        "start_month": "2026-11",
        "fields": f"{BYTES},{BYTES_PCT}",
        "sort_name": BYTES,
        "sort_direction": direction,
        "tag_breakdown_keys": "team",
    }
    async with attribution_service(write_config(tmp_path, page_size=2)) as running:
        for count, team in enumerate(("a", "b", "c", "d", "e"), start=1):
            await running.send("acme", spans_request("svc", count, team=team))
        await running.flush()
        snapshot_pages = await all_pages(running, MONTHLY, params, key="acme")
        snapshot = records_of(snapshot_pages)
        expected_order = [("ACME", t) for t in ("e", "d", "c", "b", "a")]
        assert [label(r) for r in snapshot] == (
            expected_order if direction == "desc" else expected_order[::-1]
        )
        aggregates = snapshot_pages[0]["metadata"]["aggregates"]

        first = await ok(running, MONTHLY, params, key="acme")
        assert first["usage"] == snapshot[:2]
        # The smallest record becomes the largest, a new largest and a new smallest appear: without a
        # snapshot every later page would shift.
        await running.send("acme", spans_request("svc", 1, team="a", pad=5000))
        await running.send("acme", spans_request("svc", 1, team="f", pad=3000))
        await running.send("acme", spans_request("s", 1, team="0"))
        await running.flush()

        pages = await follow(running, MONTHLY, params, first, key="acme")
        assert len(pages) == 3
        assert without_updated_at(records_of(pages)) == without_updated_at(snapshot)
        assert all(page["metadata"]["aggregates"] == aggregates for page in pages)

        fresh = records_of(await all_pages(running, MONTHLY, params, key="acme"))
        order = [label(r)[1] for r in fresh]
        expected_fresh = ["a", "f", "e", "d", "c", "b", "0"]
        assert order == (expected_fresh if direction == "desc" else expected_fresh[::-1])


async def test_updated_at_stays_that_of_the_snapshot(tmp_path: Path) -> None:
    params = {"start_hr": "2026-11-22T10", "usage_type": BYTES, "tag_breakdown_keys": "team"}
    async with attribution_service(write_config(tmp_path, page_size=1)) as running:
        await seed_teams(running)
        first = await ok(running, HOURLY, params)
        assert first["usage"][0]["updated_at"] == "2026-11-22T10:00:00+00:00"
        running.wall.advance(3600)  # 11:30
        await running.send("acme", spans_request("ops", 1, team="ops"))
        await running.flush()
        pages = await follow(running, HOURLY, params, first)
        assert {r["updated_at"] for r in records_of(pages)} == {"2026-11-22T10:00:00+00:00"}


async def test_later_pages_keep_the_range_of_the_first(tmp_path: Path) -> None:
    """With page_size=1 every record is a page of its own: none from beyond end_hr / end_month."""
    async with attribution_service(write_config(tmp_path, page_size=1), wall_start=OCTOBER_END) as running:
        await seed_months(running)  # 2026-10-31T23, 2026-11-01T00, 2026-11-30T22, 2026-12-01T00
        hourly = records_of(
            await all_pages(
                running, HOURLY, {"start_hr": "2026-10-31T23", "end_hr": "2026-11-30T22", "usage_type": SPANS}
            )
        )
        assert [r["hour"][:13] for r in hourly] == ["2026-10-31T23", "2026-11-01T00"]
        monthly = records_of(
            await all_pages(
                running, MONTHLY, {"start_month": "2026-10", "end_month": "2026-11", "fields": SPANS}
            )
        )
        assert sorted(r["month"][:7] for r in monthly) == ["2026-10", "2026-11"]


SEEDED_BY_TEAM = {
    ("ACME", "ops"),
    ("ACME", "payments"),
    ("ACME", "search"),
    ("Globex",),
    ("Holding Corp", "ops"),
}


async def test_an_answer_larger_than_the_result_cache_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result cache scaled down to 3 records (read when the service starts), for answers of 5: paged
    by recomputing the snapshot (it used to be a 500, TTLCache's "value too large")."""
    monkeypatch.setattr(attribution_api, "RESULT_CACHE_RECORDS", 3)
    async with attribution_service(write_config(tmp_path, page_size=2)) as running:
        await seed_teams(running)
        for team, (path, params) in zip(("aaa", "bbb"), PAGED.values(), strict=True):
            snapshot_pages = await all_pages(running, path, params)
            snapshot = records_of(snapshot_pages)
            assert {label(r) for r in snapshot} >= SEEDED_BY_TEAM
            assert all(len(page["usage"]) == 2 for page in snapshot_pages[:-1])  # full pages, then the rest
            assert 1 <= len(snapshot_pages[-1]["usage"]) <= 2
            first = await ok(running, path, params)
            await running.send("acme", spans_request("late", 3, team=team))  # not in the snapshot
            await running.flush()
            pages = await follow(running, path, params, first)
            assert without_updated_at(records_of(pages)) == without_updated_at(snapshot)
        status, text, _ = await api_get(running, MONTHLY, PAGED["monthly"][1], Accept="text/csv")
        assert status == 200 and len(text.splitlines()) == 1 + 7


# -- 5. sorting -----------------------------------------------------------------------------------------

SORTS = [
    pytest.param({"fields": "*", "sort_name": BYTES}, BYTES, ("ACME", "payments"), id="bytes"),
    pytest.param({"fields": "*", "sort_name": SPANS}, SPANS, ("ACME", "search"), id="spans"),
    pytest.param({"fields": "*", "sort_name": BYTES_PCT}, BYTES_PCT, ("Globex",), id="bytes-percentage"),
    pytest.param({"fields": "*", "sort_name": SPANS_PCT}, SPANS_PCT, ("Globex",), id="spans-percentage"),
    pytest.param({"fields": f"{SPANS},{BYTES}"}, SPANS, ("ACME", "search"), id="default-first-usage-field"),
    pytest.param(
        {"fields": f"{BYTES_PCT},{SPANS}"}, SPANS, ("ACME", "search"), id="default-skips-percentages"
    ),
    pytest.param({"fields": BYTES, "sort_name": SPANS}, SPANS, ("ACME", "search"), id="by-unrequested-field"),
]


@pytest.mark.parametrize(("query", "sort_field", "top"), SORTS)
async def test_monthly_sorting(
    tmp_path: Path, query: dict[str, str], sort_field: str, top: tuple[str, ...]
) -> None:
    base = {"start_month": "2026-11", "tag_breakdown_keys": "team"}
    async with attribution_service(write_config(tmp_path)) as running:
        await seed_teams(running)
        reference = await ok(running, MONTHLY, {**base, "fields": "*"})
        value = {label(r): r["values"][sort_field] for r in reference["usage"]}
        assert len(value) == 5 and len(set(value.values())) < len(value)  # there are ties to order
        assert value[top] == max(value.values())

        for direction in ("desc", "asc", None):  # None: the default, desc
            sent = {**base, **query, **({"sort_direction": direction} if direction else {})}
            body = await ok(running, MONTHLY, sent)
            got = [label(r) for r in body["usage"]]
            descending = direction != "asc"
            # By value; ties in one fixed order (org name, then tags) whatever the direction.
            expected = sorted(sorted(value), key=value.__getitem__, reverse=descending)
            assert got == expected, direction
            assert got[0] == top if descending else value[got[-1]] == value[top]
            assert await ok(running, MONTHLY, sent) == body  # deterministic


async def test_percentages_are_shares_of_each_org(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        await seed_teams(running)
        body = await ok(
            running, MONTHLY, {"start_month": "2026-11", "fields": "*", "tag_breakdown_keys": "team"}
        )
        by_org: dict[str, list[dict[str, float]]] = {}
        for record in body["usage"]:
            by_org.setdefault(record["org_name"], []).append(record["values"])
        for values in by_org.values():
            for usage, share in ((BYTES, BYTES_PCT), (SPANS, SPANS_PCT)):
                total = sum(v[usage] for v in values)
                for v in values:
                    assert math.isclose(v[share], 100 * v[usage] / total)
                assert math.isclose(sum(v[share] for v in values), 100)


# -- 6. CSV ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"fields": "*"}, id="all-fields-no-breakdown"),
        pytest.param({"fields": f"{SPANS},{BYTES_PCT}", "tag_breakdown_keys": "team"}, id="team"),
        pytest.param(
            {
                "fields": f"{SPANS_PCT},{BYTES}",
                "tag_breakdown_keys": "team,service_name",
                "sort_direction": "asc",
            },
            id="two-keys-asc",
        ),
    ],
)
async def test_monthly_csv(tmp_path: Path, query: dict[str, str]) -> None:
    params = {"start_month": "2026-10", **query}
    async with attribution_service(write_config(tmp_path, page_size=1), wall_start=OCTOBER_END) as running:
        await running.send("acme", spans_request("checkout", 7, team="payments"))
        await running.send("globex", spans_request("web", 2, env="prod"))
        running.wall.advance(3600)  # November
        await seed_teams(running)
        pages = await all_pages(running, MONTHLY, params)
        records = records_of(pages)
        assert len(pages) == len(records) > 3

        status, text, headers = await api_get(running, MONTHLY, params, Accept="text/csv")
        assert status == 200
        assert headers["Content-Type"].split(";")[0] == "text/csv"
        assert all(h in headers for h in RATE_LIMIT_HEADERS)
        rows = list(csv.reader(io.StringIO(text)))
        breakdown = query["tag_breakdown_keys"].split(",") if "tag_breakdown_keys" in query else []
        fields = list(records[0]["values"])
        if query["fields"] != "*":
            assert fields == query["fields"].split(",")
        assert rows[0] == [
            "month",
            "org_name",
            "public_id",
            "region",
            "tag_config_source",
            *breakdown,
            *fields,
            # each distinct count's 95% bounds
            *(
                f"{name}_{side}_bound"
                for name in fields
                if name in DISTINCT_USAGE_TYPES
                for side in ("lower", "upper")
            ),
        ]
        assert len(rows) == len(records) + 1
        for row, record in zip(rows[1:], records, strict=True):
            assert row[:5] == [
                record["month"],
                record["org_name"],
                record["public_id"],
                record["region"],
                record["tag_config_source"],
            ]
            tags = record["tags"]
            assert row[5 : 5 + len(breakdown)] == [tags[k][0] if tags else "" for k in breakdown]
            assert [float(cell) for cell in row[5 + len(breakdown) : 5 + len(breakdown) + len(fields)]] == [
                record["values"][f] for f in fields
            ]
        for aggregate in pages[0]["metadata"]["aggregates"]:
            column = rows[0].index(aggregate["field"])
            assert math.isclose(math.fsum(float(row[column]) for row in rows[1:]), aggregate["value"])
        # Both months, and rows with null tags (Globex has no `team`) when broken down by team.
        assert {row[0][:7] for row in rows[1:]} == {"2026-10", "2026-11"}
        if breakdown:
            assert any(row[1] == "Globex" and row[5] == "" for row in rows[1:])


# -- 7. rate-limit headers ------------------------------------------------------------------------------


async def test_rate_limit_headers(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path, rate_limit_requests=3)) as running:
        await seed_teams(running)

        def limits(headers: Any) -> dict[str, str]:
            return {name: headers[name] for name in RATE_LIMIT_HEADERS if name in headers}

        status, _, headers = await api_get(running, HOURLY, H)
        assert status == 200
        assert limits(headers) == {
            "X-RateLimit-Limit": "3",
            "X-RateLimit-Period": "60",
            "X-RateLimit-Remaining": "2",
            "X-RateLimit-Reset": "60",
            "X-RateLimit-Name": "usage_attribution",
        }
        running.clock.advance(15)
        status, body, headers = await api_get(running, MONTHLY, changed(M, fields="bogus"))
        error_message(status, body)
        assert limits(headers) == {
            "X-RateLimit-Limit": "3",
            "X-RateLimit-Period": "60",
            "X-RateLimit-Remaining": "1",  # a 400 counts
            "X-RateLimit-Reset": "45",
            "X-RateLimit-Name": "usage_attribution",
        }
        # 403: no key to charge, no rate-limit headers (and it does not use the holding key's budget).
        for key, extra in (("", {}), ("holding", {"DD-APPLICATION-KEY": "wrong"}), ("noscope", {})):
            status, body, headers = await api_get(running, HOURLY, H, key=key, **extra)
            assert (status, body) == (403, {"errors": ["Forbidden"]})
            assert limits(headers) == {}
        status, _, headers = await api_get(running, TYPES_PATHS[0], {})
        assert status == 200 and limits(headers)["X-RateLimit-Remaining"] == "0"
        status, body, headers = await api_get(running, HOURLY, H)
        assert status == 429 and body == {"errors": ["Too many requests"]}
        assert limits(headers)["X-RateLimit-Remaining"] == "0" and len(limits(headers)) == 5
        # Another key has its own budget; the window resets after the period.
        status, _, headers = await api_get(running, HOURLY, H, key="acme")
        assert status == 200 and limits(headers)["X-RateLimit-Remaining"] == "2"
        running.clock.advance(45)
        status, _, headers = await api_get(running, HOURLY, H)
        assert status == 200 and limits(headers)["X-RateLimit-Remaining"] == "2"


# -- 8. attribution types, and the API disabled ---------------------------------------------------------


async def test_usage_attribution_types(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        for path in TYPES_PATHS:
            for key in ("holding", "acme", "other"):
                status, body, headers = await running.get(path, key=key)
                assert status == 200, body
                assert body["data"]["attributes"]["values"] == [BYTES, SPANS, *DISTINCT_USAGE_TYPES]
                assert body["data"]["type"] == "usage_attribution_types"
                assert "X-RateLimit-Remaining" in headers
            for key in ("", "noscope"):
                assert (await running.get(path, key=key))[:2] == (403, {"errors": ["Forbidden"]})
        with running.datadog("acme") as (_, api_v2):
            answer = await running.call(api_v2.get_usage_attribution_types)
        assert list(answer.data.attributes.values) == [BYTES, SPANS, *DISTINCT_USAGE_TYPES]


def disabled_config(directory: Path, how: str) -> Path:
    path = write_config(directory)
    document = yaml.safe_load(path.read_text())
    if how == "no-section":
        del document["usage_attribution"]
    else:
        document["usage_attribution"]["enabled"] = False
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize("how", ["no-section", "enabled-false"])
async def test_disabled_api_answers_404(tmp_path: Path, how: str) -> None:
    async with attribution_service(disabled_config(tmp_path, how)) as running:
        assert running.service.ledger is None
        await running.send("acme", spans_request("checkout", 1, team="payments"))
        for path, params in ((HOURLY, H), (MONTHLY, M), (TYPES_PATHS[0], {}), (TYPES_PATHS[1], {})):
            for key in ("holding", ""):
                status, body, headers = await api_get(running, path, params, key=key)
                assert status == 404, (path, body)
                assert isinstance(body, dict) and list(body) == ["errors"]
                assert len(body["errors"]) == 1 and "usage_attribution" in body["errors"][0]
                assert "X-RateLimit-Remaining" not in headers


async def test_the_disabled_api_body_is_byte_for_byte_what_it_always_was(tmp_path: Path) -> None:
    # Clients and dashboards match this body exactly: it keeps json's default separators, unlike the
    # compact bodies of the enabled API.
    expected = b'{"errors": ["usage attribution is disabled (usage_attribution.enabled)"]}'
    async with attribution_service(disabled_config(tmp_path, "enabled-false")) as running:
        for path in (HOURLY, MONTHLY, *TYPES_PATHS):
            async with running.session.get(running.server_url + path) as response:
                assert response.status == 404
                assert response.content_type == "application/json"
                assert await response.read() == expected, path


def test_start_is_what_the_tables_assume() -> None:
    assert datetime.fromtimestamp(START, UTC) == datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
