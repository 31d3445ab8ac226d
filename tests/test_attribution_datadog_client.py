"""The Usage Attribution API through the official Datadog client (datadog-api-client): typed answers,
pagination, 403 and 429, agreement with /usage_metrics, tag breakdowns, org visibility, and hour and
month boundaries. Raw requests only where the client cannot say it (comma-separated `fields`, headers).

Semantics: docs/usage-attribution-api.md.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException, ForbiddenException
from datadog_api_client.v1.api.usage_metering_api import UsageMeteringApi
from datadog_api_client.v1.model.hourly_usage_attribution_body import HourlyUsageAttributionBody
from datadog_api_client.v1.model.hourly_usage_attribution_response import HourlyUsageAttributionResponse
from datadog_api_client.v1.model.hourly_usage_attribution_usage_type import HourlyUsageAttributionUsageType
from datadog_api_client.v1.model.monthly_usage_attribution_body import MonthlyUsageAttributionBody
from datadog_api_client.v1.model.monthly_usage_attribution_response import MonthlyUsageAttributionResponse
from datadog_api_client.v1.model.monthly_usage_attribution_supported_metrics import (
    MonthlyUsageAttributionSupportedMetrics as Metrics,
)
from datadog_api_client.v1.model.monthly_usage_attribution_values import MonthlyUsageAttributionValues
from datadog_api_client.v1.model.usage_attribution_aggregates_body import UsageAttributionAggregatesBody
from datadog_api_client.v1.model.usage_attribution_tag_names import UsageAttributionTagNames
from datadog_api_client.v1.model.usage_sort_direction import UsageSortDirection
from datadog_api_client.v2.api.usage_metering_api import UsageMeteringApi as UsageMeteringApiV2
from datadog_api_client.v2.model.usage_attribution_types_response import UsageAttributionTypesResponse

from tests.support.attribution import (
    START,
    RunningAttribution,
    attribution_service,
    spans_request,
    write_config,
)

BYTES = HourlyUsageAttributionUsageType.INGESTED_SPANS_BYTES_USAGE
SPANS = HourlyUsageAttributionUsageType.ESTIMATED_INGESTED_SPANS_USAGE
BYTES_FIELD, SPANS_FIELD = "ingested_spans_bytes_usage", "estimated_ingested_spans_usage"
BYTES_PCT, SPANS_PCT = "ingested_spans_bytes_percentage", "estimated_ingested_spans_percentage"
SESSIONS_FIELD, HOSTS_FIELD = "rum_browser_mobile_sessions_usage", "apm_host_usage"
ALL_FIELDS = {
    BYTES_FIELD,
    SPANS_FIELD,
    BYTES_PCT,
    SPANS_PCT,
    SESSIONS_FIELD,
    "rum_browser_mobile_sessions_percentage",
    HOSTS_FIELD,
    "apm_host_percentage",
}
HOUR_10 = datetime(2026, 11, 22, 10, tzinfo=UTC)
HOUR_11 = HOUR_10 + timedelta(hours=1)
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)
HOURLY_PATH = "/api/v1/usage/hourly-attribution"
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"
TYPES_PATH = "/api/v2/usage/usage_attribution_types"
FORBIDDEN = {"errors": ["Forbidden"]}
MISSING = "__missing__"
RATE_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Period",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Name",
)

Apis = tuple[UsageMeteringApi, UsageMeteringApiV2]


@contextlib.contextmanager
def client_with(running: RunningAttribution, api_key: str | None, app_key: str | None) -> Iterator[Apis]:
    """The official client with any key pair (None: that header is not sent at all)."""
    configuration = Configuration(host=running.server_url)
    configuration.api_key.pop("apiKeyAuth", None)
    configuration.api_key.pop("appKeyAuth", None)
    if api_key is not None:
        configuration.api_key["apiKeyAuth"] = api_key
    if app_key is not None:
        configuration.api_key["appKeyAuth"] = app_key
    with ApiClient(configuration) as client:
        yield UsageMeteringApi(client), UsageMeteringApiV2(client)


def tag_dict(tags: UsageAttributionTagNames | None) -> dict[str, list[str]] | None:
    return None if tags is None else tags.to_dict()


def tag_key(tags: UsageAttributionTagNames | None) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    """Hashable form of a record's tags (None stays None)."""
    found = tag_dict(tags)
    return None if found is None else tuple(sorted((k, tuple(v)) for k, v in found.items()))


def is_utc(moment: Any) -> bool:
    return isinstance(moment, datetime) and moment.utcoffset() == timedelta(0)


def is_utc_hour_text(text: Any) -> bool:
    """`updated_at` is a string in the client's models: ISO-8601 UTC, on the hour."""
    moment = datetime.fromisoformat(text)
    return is_utc(moment) and text.endswith("+00:00") and moment.minute == moment.second == 0


async def hourly_pages(
    running: RunningAttribution, api: UsageMeteringApi, **params: Any
) -> list[HourlyUsageAttributionResponse]:
    """Every page of one hourly query, following next_record_id with the client."""
    pages = [await running.call(api.get_hourly_usage_attribution, **params)]
    for _ in range(100):
        cursor = pages[-1].metadata.pagination.next_record_id
        if cursor is None:
            return pages
        pages.append(await running.call(api.get_hourly_usage_attribution, next_record_id=cursor, **params))
    raise AssertionError("pagination never ended")


async def monthly_pages(
    running: RunningAttribution, api: UsageMeteringApi, **params: Any
) -> list[MonthlyUsageAttributionResponse]:
    pages = [await running.call(api.get_monthly_usage_attribution, **params)]
    for _ in range(100):
        cursor = pages[-1].metadata.pagination.next_record_id
        if cursor is None:
            return pages
        pages.append(await running.call(api.get_monthly_usage_attribution, next_record_id=cursor, **params))
    raise AssertionError("pagination never ended")


def hourly_rows(records: list[HourlyUsageAttributionBody]) -> list[tuple[Any, ...]]:
    return [(r.hour, r.org_name, tag_key(r.tags), r.total_usage_sum) for r in records]


def monthly_rows(records: list[MonthlyUsageAttributionBody]) -> list[tuple[Any, ...]]:
    return [
        (r.month, r.org_name, tag_key(r.tags), tuple(sorted(r.values.to_dict().items()))) for r in records
    ]


def check_page_shapes(pages: list[Any], page_size: int) -> None:
    """Full pages, a cursor on each but the last, none on the last."""
    assert len(pages) >= 2
    for page in pages[:-1]:
        assert len(page.usage) == page_size
        assert isinstance(page.metadata.pagination.next_record_id, str)
    assert 1 <= len(pages[-1].usage) <= page_size
    assert pages[-1].metadata.pagination.next_record_id is None


def percentages_by_org_month(records: list[MonthlyUsageAttributionBody], field: str) -> dict[Any, float]:
    sums: dict[Any, float] = defaultdict(float)
    for record in records:
        sums[record.month, record.org_name] += record.values[field]
    return dict(sums)


# -- 1. typed answers -----------------------------------------------------------------------------------


async def test_every_answer_deserializes_into_typed_models(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        await running.send("acme", spans_request("checkout", 3, team="payments"))
        await running.send("acme", spans_request("search", 2))
        await running.send("globex", spans_request("api", 1, env="prod"))
        await running.flush()

        with running.datadog("holding") as (api, api_v2):
            by_type = [
                (
                    usage_type,
                    await running.call(
                        api.get_hourly_usage_attribution,
                        start_hr=HOUR_10,
                        usage_type=usage_type,
                        tag_breakdown_keys="team",
                    ),
                )
                for usage_type in (BYTES, SPANS)
            ]
            monthly_all = await running.call(
                api.get_monthly_usage_attribution, start_month=NOVEMBER, fields=Metrics.ALL
            )
            monthly_one = await running.call(
                api.get_monthly_usage_attribution,
                start_month=NOVEMBER,
                fields=Metrics.INGESTED_SPANS_BYTES_USAGE,
            )
            monthly_pct = await running.call(
                api.get_monthly_usage_attribution,
                start_month=NOVEMBER,
                fields=Metrics.ESTIMATED_INGESTED_SPANS_PERCENTAGE,
                tag_breakdown_keys="team",
            )
            types = await running.call(api_v2.get_usage_attribution_types)

    for usage_type, answer in by_type:
        assert isinstance(answer, HourlyUsageAttributionResponse)
        assert answer.metadata.pagination.next_record_id is None
        assert len(answer.usage) == 3
        for record in answer.usage:
            assert isinstance(record, HourlyUsageAttributionBody)
            assert is_utc(record.hour) and record.hour == HOUR_10
            assert is_utc_hour_text(record.updated_at)
            assert isinstance(record.total_usage_sum, float) and record.total_usage_sum > 0
            assert record.tags is None or isinstance(record.tags, UsageAttributionTagNames)
            assert record.usage_type == usage_type
            assert isinstance(record.usage_type, HourlyUsageAttributionUsageType)
            assert record.region == "local"
            assert all(
                isinstance(v, str) for v in (record.org_name, record.public_id, record.tag_config_source)
            )
    spans = {(r.org_name, str(tag_dict(r.tags))): r.total_usage_sum for r in by_type[1][1].usage}
    assert spans == {
        ("ACME", "{'team': ['payments']}"): 3.0,
        ("ACME", "{'team': ['__missing__']}"): 2.0,
        ("Globex", "None"): 1.0,  # globex has no "team" tag: its total, tags null
    }

    for answer, fields in (
        (monthly_all, ALL_FIELDS),
        (monthly_one, {BYTES_FIELD}),
        (monthly_pct, {SPANS_PCT}),
    ):
        assert isinstance(answer, MonthlyUsageAttributionResponse)
        assert answer.metadata.pagination.next_record_id is None
        assert answer.usage
        for record in answer.usage:
            assert isinstance(record, MonthlyUsageAttributionBody)
            assert is_utc(record.month) and record.month == NOVEMBER
            assert is_utc(record.updated_at)  # a datetime here, a string in the hourly model
            assert record.tags is None or isinstance(record.tags, UsageAttributionTagNames)
            assert isinstance(record.values, MonthlyUsageAttributionValues)
            values = record.values.to_dict()
            assert set(values) == fields  # exactly the requested fields
            assert all(isinstance(v, float) for v in values.values())
        aggregates = answer.metadata.aggregates.value
        assert all(isinstance(a, UsageAttributionAggregatesBody) for a in aggregates)
        assert {a.field for a in aggregates} == fields and len(aggregates) == len(fields)
        for aggregate in aggregates:
            assert aggregate.agg_type == "sum" and isinstance(aggregate.value, float)
            assert aggregate.value == pytest.approx(sum(r.values[aggregate.field] for r in answer.usage))
    assert {r.org_name: r.tags.to_dict() for r in monthly_all.usage} == {"ACME": {}, "Globex": {}}
    assert {r.org_name: r.values[SPANS_FIELD] for r in monthly_all.usage} == {"ACME": 5.0, "Globex": 1.0}
    assert all(r.values[BYTES_PCT] == 100.0 for r in monthly_all.usage)
    # Shares of each org's month: ACME 3 + 2 spans by team; Globex, without a team tag, all of its own.
    assert sorted((r.org_name, str(tag_dict(r.tags)), r.values[SPANS_PCT]) for r in monthly_pct.usage) == [
        ("ACME", "{'team': ['__missing__']}", 40.0),
        ("ACME", "{'team': ['payments']}", 60.0),
        ("Globex", "None", 100.0),
    ]

    assert isinstance(types, UsageAttributionTypesResponse)
    assert str(types.data.type) == "usage_attribution_types"
    assert types.data.attributes.values == [BYTES_FIELD, SPANS_FIELD, SESSIONS_FIELD, HOSTS_FIELD]
    # Every advertised type is one the client accepts for the hourly endpoint.
    assert [HourlyUsageAttributionUsageType(v) for v in types.data.attributes.values] == [
        BYTES,
        SPANS,
        HourlyUsageAttributionUsageType.RUM_BROWSER_MOBILE_SESSIONS_USAGE,
        HourlyUsageAttributionUsageType.APM_HOST_USAGE,
    ]


async def test_comma_separated_fields_raw(tmp_path: Path) -> None:
    """The client's `fields` is one enum value; a comma-separated list needs a raw request."""
    async with attribution_service(write_config(tmp_path)) as running:
        await running.send("acme", spans_request("checkout", 3, team="payments"))
        await running.send("acme", spans_request("search", 1, team="discovery"))
        await running.flush()
        status, body, headers = await running.get(
            MONTHLY_PATH,
            {"start_month": "2026-11", "fields": f"{SPANS_FIELD},{BYTES_PCT}", "tag_breakdown_keys": "team"},
            key="acme",
        )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert [set(r["values"]) for r in body["usage"]] == [{SPANS_FIELD, BYTES_PCT}] * 2
    assert [r["values"][SPANS_FIELD] for r in body["usage"]] == [3.0, 1.0]
    assert math.isclose(sum(r["values"][BYTES_PCT] for r in body["usage"]), 100.0, abs_tol=1e-9)
    assert [a["field"] for a in body["metadata"]["aggregates"]] == [SPANS_FIELD, BYTES_PCT]
    assert body["usage"][0]["month"] == "2026-11-01T00:00:00+00:00"


# -- 2. pagination ---------------------------------------------------------------------------------------

# (hour offset, tenant, service, team, env, spans): 10 sends, 9 hourly records by service_name,team
# (Globex has no "team" tag: one null-tag total per hour), 7 monthly ones.
PAGED_USAGE = [
    (0, "acme", "checkout", "payments", "", 1),
    (0, "acme", "checkout", "discovery", "", 2),
    (0, "acme", "search", "discovery", "", 3),
    (0, "acme", "search", "", "", 4),
    (0, "globex", "api", "", "prod", 5),
    (0, "globex", "api", "", "dev", 6),
    (0, "holding", "ledger", "finance", "", 7),
    (1, "acme", "checkout", "payments", "", 8),
    (1, "globex", "web", "", "prod", 9),
    (1, "holding", "ledger", "", "", 10),
]
ORG_NAMES = {"acme": "ACME", "globex": "Globex", "holding": "Holding Corp"}


def expected_paged_spans() -> Counter[tuple[Any, ...]]:
    """Hourly spans by service_name,team as sent: globex lacks "team", so one null-tag total per hour."""
    result: dict[tuple[Any, ...], float] = defaultdict(float)
    for offset, tenant, service, team, _, count in PAGED_USAGE:
        hour = HOUR_10 + timedelta(hours=offset)
        tags = None if tenant == "globex" else (("service_name", (service,)), ("team", (team or MISSING,)))
        result[hour, ORG_NAMES[tenant], tags] += count
    return Counter((*k, v) for k, v in result.items())


async def send_paged_usage(running: RunningAttribution) -> None:
    for offset in (0, 1):
        for hour, tenant, service, team, env, count in PAGED_USAGE:
            if hour == offset:
                await running.send(tenant, spans_request(service, count, team=team, env=env))
        if offset == 0:
            running.wall.advance(3600)  # 11:30
    await running.flush()


async def test_pagination_collects_every_record_once(tmp_path: Path) -> None:
    breakdown = "service_name,team"
    async with attribution_service(write_config(tmp_path, page_size=2)) as running:
        await send_paged_usage(running)
        with running.datadog("holding") as (api, _):
            spans_pages = await hourly_pages(
                running, api, start_hr=HOUR_10, usage_type=SPANS, tag_breakdown_keys=breakdown
            )
            bytes_pages = await hourly_pages(
                running, api, start_hr=HOUR_10, usage_type=BYTES, tag_breakdown_keys=breakdown
            )
            monthly = {
                direction: await monthly_pages(
                    running,
                    api,
                    start_month=NOVEMBER,
                    fields=Metrics.ALL,
                    tag_breakdown_keys=breakdown,
                    sort_direction=UsageSortDirection(direction),
                )
                for direction in ("desc", "asc")
            }

    spans_records = [r for page in spans_pages for r in page.usage]
    check_page_shapes(spans_pages, 2)
    assert len(spans_pages) == 5  # 9 records: 4 full pages and one of 1
    assert len(set(hourly_rows(spans_records))) == len(spans_records)  # no duplicates
    assert Counter(hourly_rows(spans_records)) == expected_paged_spans()  # nothing missing
    check_page_shapes(bytes_pages, 2)
    for direction, pages in monthly.items():
        check_page_shapes(pages, 2)
        records = [r for page in pages for r in page.usage]
        sizes = [r.values[BYTES_FIELD] for r in records]
        assert sizes == sorted(sizes, reverse=direction == "desc")
        assert len(set(monthly_rows(records))) == len(records) == 7  # hourly groups merged into months
        # The aggregates cover the whole result set, on every page.
        for page in pages:
            aggregates = {a.field: a.value for a in page.metadata.aggregates.value}
            assert aggregates[SPANS_FIELD] == sum(count for *_, count in PAGED_USAGE)
            assert aggregates[BYTES_FIELD] == pytest.approx(sum(sizes))

    # The same ledger read by a service with one big page gives the same records in the same order.
    async with attribution_service(write_config(tmp_path), wall_start=START + 3600) as big:
        with big.datadog("holding") as (api, _):
            (spans_one,) = await hourly_pages(
                big, api, start_hr=HOUR_10, usage_type=SPANS, tag_breakdown_keys=breakdown
            )
            (bytes_one,) = await hourly_pages(
                big, api, start_hr=HOUR_10, usage_type=BYTES, tag_breakdown_keys=breakdown
            )
            monthly_one = {
                direction: await monthly_pages(
                    big,
                    api,
                    start_month=NOVEMBER,
                    fields=Metrics.ALL,
                    tag_breakdown_keys=breakdown,
                    sort_direction=UsageSortDirection(direction),
                )
                for direction in ("desc", "asc")
            }
    assert hourly_rows(spans_one.usage) == hourly_rows(spans_records)
    assert hourly_rows(bytes_one.usage) == hourly_rows([r for p in bytes_pages for r in p.usage])
    for direction, pages in monthly.items():
        (one,) = monthly_one[direction]
        assert monthly_rows(one.usage) == monthly_rows([r for p in pages for r in p.usage])


async def test_pagination_is_a_snapshot_while_usage_arrives(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path, page_size=2)) as running:
        await send_paged_usage(running)
        params = {"start_hr": HOUR_10, "usage_type": SPANS, "tag_breakdown_keys": "service_name,team"}
        with running.datadog("holding") as (api, _):
            pages = [await running.call(api.get_hourly_usage_attribution, **params)]
            # New usage in both hours' orgs, flushed between pages, must not shift or join this answer.
            await running.send("acme", spans_request("aaa", 50, team="aaa"))
            await running.send("holding", spans_request("aaa", 50, team="aaa"))
            await running.flush()
            while (cursor := pages[-1].metadata.pagination.next_record_id) is not None:
                pages.append(
                    await running.call(api.get_hourly_usage_attribution, next_record_id=cursor, **params)
                )
            fresh = await hourly_pages(running, api, **params)
            # A cursor is bound to its query: reusing it with another usage type is a 400.
            status, body, _ = await running.get(
                HOURLY_PATH,
                {
                    "start_hr": "2026-11-22T10",
                    "usage_type": BYTES_FIELD,
                    "tag_breakdown_keys": "service_name,team",
                    "next_record_id": pages[0].metadata.pagination.next_record_id,
                },
            )
            assert status == 400 and len(body["errors"]) == 1
            # A tampered cursor is a 400 too, through the client as an ApiException.
            cursor = pages[0].metadata.pagination.next_record_id
            tampered = cursor[:-1] + ("B" if cursor[-1] == "A" else "A")
            with pytest.raises(ApiException) as raised:
                await running.call(api.get_hourly_usage_attribution, next_record_id=tampered, **params)
            assert raised.value.status == 400

    records = [r for page in pages for r in page.usage]
    check_page_shapes(pages, 2)
    assert Counter(hourly_rows(records)) == expected_paged_spans()
    fresh_rows = Counter(hourly_rows([r for page in fresh for r in page.usage]))
    assert fresh_rows - expected_paged_spans() == Counter(
        {
            (HOUR_11, "ACME", (("service_name", ("aaa",)), ("team", ("aaa",))), 50.0): 1,
            (HOUR_11, "Holding Corp", (("service_name", ("aaa",)), ("team", ("aaa",))), 50.0): 1,
        }
    )


# -- 3. 403 and 429 --------------------------------------------------------------------------------------

BAD_KEYS = {
    "unknown key": ("nobody-api", "nobody-app"),
    "wrong app key for a real api key": ("acme-api", "holding-app"),
    "key without usage_read": ("noscope-api", "noscope-app"),
    "no headers": (None, None),
    "no app key": ("acme-api", None),
    "no api key": (None, "acme-app"),
}


@pytest.mark.parametrize("api_key,app_key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
async def test_forbidden_through_the_client_and_raw(
    tmp_path: Path, api_key: str | None, app_key: str | None
) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        await running.send("acme", spans_request("checkout", 1, team="payments"))
        await running.flush()
        with client_with(running, api_key, app_key) as (api, api_v2):
            calls: list[Callable[[], Any]] = [
                lambda: api.get_hourly_usage_attribution(start_hr=HOUR_10, usage_type=BYTES),
                lambda: api.get_monthly_usage_attribution(start_month=NOVEMBER, fields=Metrics.ALL),
                api_v2.get_usage_attribution_types,
            ]
            for call in calls:
                with pytest.raises(ForbiddenException) as raised:
                    await running.call(call)
                assert raised.value.status == 403
                assert raised.value.body == FORBIDDEN
        headers = {}
        if api_key is not None:
            headers["DD-API-KEY"] = api_key
        if app_key is not None:
            headers["DD-APPLICATION-KEY"] = app_key
        for path, params in (
            (HOURLY_PATH, {"start_hr": "2026-11-22T10", "usage_type": BYTES_FIELD}),
            (MONTHLY_PATH, {"start_month": "2026-11", "fields": "*"}),
            (TYPES_PATH, {}),
            (HOURLY_PATH, {"start_hr": "yesterday", "usage_type": "nope"}),  # 403 before any 400
        ):
            status, body, response_headers = await running.get(path, params, key="", **headers)
            assert (status, body) == (403, FORBIDDEN)
            assert response_headers["Content-Type"].startswith("application/json")
        # The same key pairs' real owners still read: the answer above was about the keys only.
        status, body, _ = await running.get(
            HOURLY_PATH, {"start_hr": "2026-11-22T10", "usage_type": BYTES_FIELD}
        )
        assert status == 200 and len(body["usage"]) == 1


def rate_headers(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in RATE_HEADERS}


async def test_rate_limit_per_key_pair_with_headers(tmp_path: Path) -> None:
    hourly = {"start_hr": "2026-11-22T10", "usage_type": BYTES_FIELD}
    monthly = {"start_month": "2026-11", "fields": "*"}
    async with attribution_service(write_config(tmp_path, rate_limit_requests=3)) as running:
        allowed = []
        for path, params in ((HOURLY_PATH, hourly), (MONTHLY_PATH, monthly), (TYPES_PATH, {})):
            status, _, headers = await running.get(path, params)
            assert status == 200
            allowed.append(rate_headers(headers))
        assert [h["X-RateLimit-Remaining"] for h in allowed] == ["2", "1", "0"]  # one window, all endpoints
        for headers in allowed:
            assert headers["X-RateLimit-Limit"] == "3"
            assert headers["X-RateLimit-Period"] == "60"
            assert 1 <= int(headers["X-RateLimit-Reset"]) <= 60
            assert headers["X-RateLimit-Name"] == allowed[0]["X-RateLimit-Name"] != ""

        status, body, limited = await running.get(HOURLY_PATH, hourly)
        assert status == 429
        assert isinstance(body["errors"], list) and len(body["errors"]) == 1
        assert rate_headers(limited) | {"X-RateLimit-Reset": "?"} == allowed[-1] | {"X-RateLimit-Reset": "?"}
        assert 1 <= int(limited["X-RateLimit-Reset"]) <= 60

        with running.datadog("holding") as (api, api_v2):
            for call in (
                lambda: api.get_hourly_usage_attribution(start_hr=HOUR_10, usage_type=BYTES),
                lambda: api.get_monthly_usage_attribution(start_month=NOVEMBER, fields=Metrics.ALL),
                api_v2.get_usage_attribution_types,
            ):
                with pytest.raises(ApiException) as raised:
                    await running.call(call)
                assert raised.value.status == 429
                assert not isinstance(raised.value, ForbiddenException)
                assert raised.value.headers["X-RateLimit-Remaining"] == "0"
                assert raised.value.headers["X-RateLimit-Limit"] == "3"

        # Another key pair has its own window.
        with running.datadog("acme") as (api, _):
            answer = await running.call(api.get_hourly_usage_attribution, start_hr=HOUR_10, usage_type=BYTES)
            assert answer.usage == []
        status, _, acme = await running.get(HOURLY_PATH, hourly, key="acme")
        assert status == 200 and rate_headers(acme)["X-RateLimit-Remaining"] == "1"
        # The limited api key with an app key that does not belong to it is not a key pair: 403.
        status, body, _ = await running.get(
            HOURLY_PATH, hourly, key="", **{"DD-API-KEY": "holding-api", "DD-APPLICATION-KEY": "acme-app"}
        )
        assert (status, body) == (403, FORBIDDEN)

        running.clock.advance(30)
        status, _, halfway = await running.get(HOURLY_PATH, hourly)
        assert status == 429
        assert 1 <= int(halfway["X-RateLimit-Reset"]) <= 30  # counts down with the clock

        running.clock.advance(30)  # 60 s after the window opened: a new one
        with running.datadog("holding") as (api, api_v2):
            types = await running.call(api_v2.get_usage_attribution_types)
            assert types.data.attributes.values == [BYTES_FIELD, SPANS_FIELD, SESSIONS_FIELD, HOSTS_FIELD]
        status, _, renewed = await running.get(HOURLY_PATH, hourly)
        assert status == 200
        assert rate_headers(renewed)["X-RateLimit-Remaining"] == "1"
        assert renewed["X-RateLimit-Reset"] == "60"
        assert (await running.get(HOURLY_PATH, hourly))[0] == 200
        assert (await running.get(HOURLY_PATH, hourly))[0] == 429


# -- 4. agreement with /usage_metrics -------------------------------------------------------------------

# Per hour: (tenant, service, team, env, spans, pad); pads make uneven shares (non-terminating percentages).
# None is a flush in the middle of the hour; some series repeat, before a flush and across one.
SENT_BY_HOUR: list[list[tuple[str, str, str, str, int, int] | None]] = [
    [
        ("acme", "checkout", "payments", "", 3, 7),
        ("acme", "search", "discovery", "", 1, 0),
        ("globex", "api", "", "prod", 2, 5),
        ("globex", "api", "", "prod", 1, 2),
        None,
        ("acme", "checkout", "payments", "", 2, 0),
        ("acme", "search", "", "", 2, 13),
        ("globex", "api", "", "dev", 1, 0),
        ("holding", "ledger", "finance", "", 1, 3),
    ],
    [
        ("acme", "checkout", "payments", "", 1, 1),
        None,
        ("acme", "checkout", "risk", "", 5, 0),
        ("globex", "web", "", "prod", 4, 11),
        ("acme", "checkout", "payments", "", 1, 4),
    ],
]
TRACKED = ("acme", "globex", "holding")


async def test_hourly_and_monthly_agree_with_usage_metrics_and_percentages(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        increases: dict[tuple[datetime, str], float] = {}
        spans_sent: dict[tuple[datetime, str], float] = defaultdict(float)
        for index, sends in enumerate(SENT_BY_HOUR):
            hour = HOUR_10 + timedelta(hours=index)
            before = {t: await running.tenant_usage(t) for t in TRACKED}
            for sent in sends:
                if sent is None:
                    await running.flush()
                    continue
                tenant, service, team, env, count, pad = sent
                await running.send(tenant, spans_request(service, count, team=team, env=env, pad=pad))
                spans_sent[hour, ORG_NAMES[tenant]] += count
            for tenant in TRACKED:
                if increase := await running.tenant_usage(tenant) - before[tenant]:
                    increases[hour, ORG_NAMES[tenant]] = increase
            running.wall.advance(3600)
        running.wall.advance(3600)  # an hour with no usage at all, then 13:30
        await running.flush()

        with running.datadog("holding") as (api, _):
            answers = {
                (str(usage_type), keys): await running.call(
                    api.get_hourly_usage_attribution,
                    start_hr=HOUR_10,
                    usage_type=usage_type,
                    **({"tag_breakdown_keys": keys} if keys else {}),
                )
                for usage_type in (BYTES, SPANS)
                for keys in ("", "team", "service_name,team")
            }
            monthly = {
                keys: await running.call(
                    api.get_monthly_usage_attribution,
                    start_month=NOVEMBER,
                    fields=Metrics.ALL,
                    **({"tag_breakdown_keys": keys} if keys else {}),
                )
                for keys in ("", "team", "service_name,team")
            }

    assert len(increases) == len(spans_sent) == 5
    for (usage_type, keys), answer in answers.items():
        sums: dict[tuple[datetime, str], float] = defaultdict(float)
        for record in answer.usage:
            sums[record.hour, record.org_name] += record.total_usage_sum
        assert dict(sums) == (increases if usage_type == BYTES_FIELD else dict(spans_sent)), (
            usage_type,
            keys,
        )
        assert HOUR_10 + timedelta(hours=2) not in {r.hour for r in answer.usage}  # no usage, no record
    for keys, answer in monthly.items():
        for field in (BYTES_FIELD, SPANS_FIELD):
            per_org: dict[str, float] = defaultdict(float)
            for record in answer.usage:
                per_org[record.org_name] += record.values[field]
            hourly_per_org: dict[str, float] = defaultdict(float)
            for record in answers[field, ""].usage:
                hourly_per_org[record.org_name] += record.total_usage_sum
            assert per_org == hourly_per_org, (keys, field)
        for field in (BYTES_PCT, SPANS_PCT):
            totals = percentages_by_org_month(answer.usage, field)
            assert set(totals) == {(NOVEMBER, name) for name in ORG_NAMES.values()}
            for org_month, total in totals.items():
                assert math.isclose(total, 100.0, abs_tol=1e-9), (keys, field, org_month, total)
            assert all(0 <= r.values[field] <= 100 for r in answer.usage)
    # The breakdowns really split (the percentages above are not all a trivial 100).
    assert len(monthly["service_name,team"].usage) == 6
    assert any(0 < r.values[BYTES_PCT] < 100 for r in monthly["team"].usage)
    # Each record's percentage is its share of its org's month.
    org_bytes = {r.org_name: r.values[BYTES_FIELD] for r in monthly[""].usage}
    for record in monthly["service_name,team"].usage:
        share = 100.0 * record.values[BYTES_FIELD] / org_bytes[record.org_name]
        assert math.isclose(record.values[BYTES_PCT], share, rel_tol=1e-12)


# -- 5. tag breakdowns -----------------------------------------------------------------------------------


async def test_tag_breakdowns(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        acme_before = await running.tenant_usage("acme")
        await running.send("acme", spans_request("checkout", 2, team="payments"))
        await running.send("acme", spans_request("checkout", 1))
        await running.send("acme", spans_request("search", 3, team="payments"))
        acme_bytes = await running.tenant_usage("acme") - acme_before
        await running.send("globex", spans_request("api", 2, env="prod"))
        await running.send("globex", spans_request("api", 1))
        await running.send("holding", spans_request("ledger", 4, team="finance"))
        await running.flush()

        async def hourly(key: str, usage_type: Any = SPANS, **params: Any) -> dict[Any, float]:
            with running.datadog(key) as (api, _):
                answer = await running.call(
                    api.get_hourly_usage_attribution, start_hr=HOUR_10, usage_type=usage_type, **params
                )
            return {(r.org_name, tag_key(r.tags)): r.total_usage_sum for r in answer.usage}

        assert await hourly("acme", tag_breakdown_keys="team") == {
            ("ACME", (("team", ("payments",)),)): 5.0,
            ("ACME", (("team", (MISSING,)),)): 1.0,
        }
        assert await hourly("acme", tag_breakdown_keys="service_name,team") == {
            ("ACME", (("service_name", ("checkout",)), ("team", ("payments",)))): 2.0,
            ("ACME", (("service_name", ("checkout",)), ("team", (MISSING,)))): 1.0,
            ("ACME", (("service_name", ("search",)), ("team", ("payments",)))): 3.0,
        }
        assert await hourly("acme", tag_breakdown_keys="service_name") == {
            ("ACME", (("service_name", ("checkout",)),)): 3.0,
            ("ACME", (("service_name", ("search",)),)): 3.0,
        }
        # A key acme does not have: its total, tags null.
        assert await hourly("acme", tag_breakdown_keys="env") == {("ACME", None): 6.0}
        assert await hourly("acme", BYTES, tag_breakdown_keys="env") == {("ACME", None): acme_bytes}
        # No breakdown: one record per org, tags {} (not null).
        assert await hourly("acme") == {("ACME", ()): 6.0}
        # The holding asks for "env": Globex has it, ACME and the holding itself do not.
        assert await hourly("holding", tag_breakdown_keys="env") == {
            ("Globex", (("env", ("prod",)),)): 2.0,
            ("Globex", (("env", (MISSING,)),)): 1.0,
            ("ACME", None): 6.0,
            ("Holding Corp", None): 4.0,
        }
        # Globex lacks "team": two keys of which one is missing give its total too.
        assert await hourly("holding", tag_breakdown_keys="service_name,team") == {
            ("ACME", (("service_name", ("checkout",)), ("team", ("payments",)))): 2.0,
            ("ACME", (("service_name", ("checkout",)), ("team", (MISSING,)))): 1.0,
            ("ACME", (("service_name", ("search",)), ("team", ("payments",)))): 3.0,
            ("Globex", None): 3.0,
            ("Holding Corp", (("service_name", ("ledger",)), ("team", ("finance",)))): 4.0,
        }

        with running.datadog("holding") as (api, _):
            monthly = await running.call(
                api.get_monthly_usage_attribution,
                start_month=NOVEMBER,
                fields=Metrics.ESTIMATED_INGESTED_SPANS_USAGE,
                tag_breakdown_keys="team",
            )
        assert {(r.org_name, tag_key(r.tags)): r.values[SPANS_FIELD] for r in monthly.usage} == {
            ("ACME", (("team", ("payments",)),)): 5.0,
            ("ACME", (("team", (MISSING,)),)): 1.0,
            ("Globex", None): 3.0,
            ("Holding Corp", (("team", ("finance",)),)): 4.0,
        }
        assert {r.org_name: r.tag_config_source for r in monthly.usage} == {
            "ACME": "ACME:::service_name///team",
            "Globex": "Globex:::env///service_name",
            "Holding Corp": "Holding Corp:::service_name///team",
        }

        # On the wire: tags null when the key does not apply, {} without a breakdown.
        hour = {"start_hr": "2026-11-22T10", "usage_type": SPANS_FIELD}
        _, body, _ = await running.get(HOURLY_PATH, {**hour, "tag_breakdown_keys": "env"}, key="acme")
        assert [r["tags"] for r in body["usage"]] == [None]
        _, body, _ = await running.get(HOURLY_PATH, hour, key="acme")
        assert [r["tags"] for r in body["usage"]] == [{}]
        assert body["usage"][0]["hour"] == "2026-11-22T10:00:00+00:00"
        assert body["usage"][0]["updated_at"] == "2026-11-22T10:00:00+00:00"  # the hour of the last flush
        assert body["usage"][0]["total_usage_sum"] == 6.0
        _, body, _ = await running.get(MONTHLY_PATH, {"start_month": "2026-11", "fields": "*"}, key="acme")
        assert [r["tags"] for r in body["usage"]] == [{}]


# -- 6. who sees what ------------------------------------------------------------------------------------


async def test_org_visibility_and_include_descendants(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        for tenant in ("holding", "acme", "globex", "plain"):
            await running.send(tenant, spans_request("svc", 1, team="t"))
        await running.flush()

        async def orgs(key: str, **params: Any) -> tuple[list[str], list[str]]:
            with running.datadog(key) as (api, _):
                hourly = await running.call(
                    api.get_hourly_usage_attribution, start_hr=HOUR_10, usage_type=BYTES, **params
                )
                monthly = await running.call(
                    api.get_monthly_usage_attribution, start_month=NOVEMBER, fields=Metrics.ALL, **params
                )
            assert hourly.metadata.pagination.next_record_id is None
            assert monthly.metadata.pagination.next_record_id is None
            return sorted(r.org_name for r in hourly.usage), sorted(r.org_name for r in monthly.usage)

        everyone = ["ACME", "Globex", "Holding Corp"]
        assert await orgs("holding") == (everyone, everyone)
        assert await orgs("holding", include_descendants=True) == (everyone, everyone)
        assert await orgs("holding", include_descendants=False) == (["Holding Corp"], ["Holding Corp"])
        assert await orgs("acme") == (["ACME"], ["ACME"])
        assert await orgs("acme", include_descendants=True) == (["ACME"], ["ACME"])  # not its parent
        assert await orgs("acme", include_descendants=False) == (["ACME"], ["ACME"])
        assert await orgs("globex") == (["Globex"], ["Globex"])
        assert await orgs("other") == ([], [])

        with running.datadog("other") as (api, _):
            monthly = await running.call(
                api.get_monthly_usage_attribution, start_month=NOVEMBER, fields=Metrics.ALL
            )
        assert monthly.usage == []
        assert {a.field: a.value for a in monthly.metadata.aggregates.value} == dict.fromkeys(ALL_FIELDS, 0.0)
        status, body, _ = await running.get(
            HOURLY_PATH, {"start_hr": "2026-11-22T10", "usage_type": BYTES_FIELD}, key="other"
        )
        assert (status, body["usage"], body["metadata"]["pagination"]["next_record_id"]) == (200, [], None)

        with running.datadog("holding") as (api, _):
            hourly = await running.call(api.get_hourly_usage_attribution, start_hr=HOUR_10, usage_type=BYTES)
        ids = {r.org_name: r.public_id for r in hourly.usage}
        assert ids["ACME"] == "acme0001" and ids["Holding Corp"] == "hold0001"
        assert ids["Globex"] not in ("", "globex", "acme0001", "hold0001")  # derived, not the tenant id
        assert {r.region for r in hourly.usage} == {"local"}


# -- 7. hour and month boundaries -----------------------------------------------------------------------


async def test_hour_and_month_boundaries(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        sent: list[float] = []
        last_hour_of_november = datetime(2026, 11, 30, 23, 10, tzinfo=UTC).timestamp()
        for moment in (START, last_hour_of_november, last_hour_of_november + 3600):
            running.wall.advance(moment - running.wall())
            before = await running.tenant_usage("acme")
            await running.send("acme", spans_request("checkout", 2, team="payments"))
            sent.append(await running.tenant_usage("acme") - before)
        await running.flush()
        nov_22, nov_30, dec_1 = sent
        h23 = datetime(2026, 11, 30, 23, tzinfo=UTC)
        h00 = datetime(2026, 12, 1, 0, tzinfo=UTC)

        with running.datadog("acme") as (api, _):

            async def hourly(**params: Any) -> list[tuple[datetime, float]]:
                answer = await running.call(api.get_hourly_usage_attribution, usage_type=BYTES, **params)
                assert all(is_utc(r.hour) for r in answer.usage)
                return [(r.hour, r.total_usage_sum) for r in answer.usage]

            async def monthly(**params: Any) -> list[tuple[datetime, float, float]]:
                answer = await running.call(
                    api.get_monthly_usage_attribution,
                    fields=Metrics.ALL,
                    sort_direction=UsageSortDirection.ASC,
                    **params,
                )
                assert all(is_utc(r.month) for r in answer.usage)
                months = [(r.month, r.values[BYTES_FIELD], r.values[BYTES_PCT]) for r in answer.usage]
                return sorted(months)

            # A start inside the hour is truncated down to it; records on both sides of midnight.
            assert await hourly(start_hr=h23 + timedelta(minutes=45)) == [(h23, nov_30), (h00, dec_1)]
            assert await hourly(start_hr=h23, end_hr=h00) == [(h23, nov_30)]  # end_hr is exclusive
            assert await hourly(start_hr=h00) == [(h00, dec_1)]
            assert await hourly(start_hr=HOUR_10, end_hr=h23) == [(HOUR_10, nov_22)]
            assert await hourly(start_hr=HOUR_10) == [(HOUR_10, nov_22), (h23, nov_30), (h00, dec_1)]

            assert await monthly(start_month=NOVEMBER) == [
                (NOVEMBER, nov_22 + nov_30, 100.0),
                (DECEMBER, dec_1, 100.0),
            ]
            assert await monthly(start_month=NOVEMBER, end_month=NOVEMBER) == [
                (NOVEMBER, nov_22 + nov_30, 100.0)
            ]
            assert await monthly(start_month=DECEMBER + timedelta(days=20)) == [(DECEMBER, dec_1, 100.0)]
            assert await monthly(start_month=NOVEMBER, end_month=DECEMBER) == [
                (NOVEMBER, nov_22 + nov_30, 100.0),
                (DECEMBER, dec_1, 100.0),
            ]
