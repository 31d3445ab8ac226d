"""The edges of the Usage Attribution API a Datadog user meets: usage types this service does not
record, start_hr in the future, end_month, and what the percentage aggregates add up to.

Semantics: docs/usage-attribution-api.md. START is 2026-11-22 10:30 UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from datadog_api_client.v1.model.hourly_usage_attribution_usage_type import HourlyUsageAttributionUsageType

from distributor.attribution.datadog_types import DATADOG_USAGE_TYPES
from tests.support.attribution import RunningAttribution, attribution_service, spans_request, write_config
from tests.test_attribution_parameters import (
    BYTES,
    BYTES_PCT,
    HOURLY,
    MONTHLY,
    SPANS,
    SPANS_PCT,
    api_get,
    error_message,
    ok,
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def used(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningAttribution]:
    """ACME (child of Holding) and Holding each used traces in November 2026, hour 10."""
    async with attribution_service(write_config(tmp_path_factory.mktemp("edges"))) as running:
        await running.send("acme", spans_request("checkout", 3, team="payments"))
        await running.send("acme", spans_request("search", 1, team="search"))
        await running.send("holding", spans_request("ops", 2, team="ops"))
        await running.flush()
        yield running


def test_every_type_the_official_client_lists_is_a_datadog_usage_type() -> None:
    assert HourlyUsageAttributionUsageType.allowed_values <= DATADOG_USAGE_TYPES


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("usage_type", ["infra_host_usage", "estimated_rum_sessions_usage", "browser_usage"])
async def test_a_datadog_usage_type_not_recorded_here_has_no_usage(
    used: RunningAttribution, usage_type: str
) -> None:
    body = await ok(used, HOURLY, {"start_hr": "2026-11-22T00", "usage_type": usage_type})
    assert body["usage"] == []
    assert body["metadata"]["pagination"]["next_record_id"] is None
    recorded = await ok(used, HOURLY, {"start_hr": "2026-11-22T00", "usage_type": BYTES})
    assert len(recorded["usage"]) == 2  # the same hours have usage of a type recorded here


@pytest.mark.asyncio(loop_scope="module")
async def test_monthly_fields_not_recorded_here_are_no_records_alone_and_zero_beside_recorded_ones(
    used: RunningAttribution,
) -> None:
    alone = await ok(
        used, MONTHLY, {"start_month": "2026-11", "fields": "infra_host_usage,infra_host_percentage"}
    )
    assert alone["usage"] == []
    assert alone["metadata"]["aggregates"] == [
        {"agg_type": "sum", "field": "infra_host_usage", "value": 0.0},
        {"agg_type": "sum", "field": "infra_host_percentage", "value": 0.0},
    ]
    beside = await ok(used, MONTHLY, {"start_month": "2026-11", "fields": f"{SPANS},infra_host_usage"})
    assert [record["values"] for record in beside["usage"]] == [
        {SPANS: 4.0, "infra_host_usage": 0.0},
        {SPANS: 2.0, "infra_host_usage": 0.0},
    ]
    by_unrecorded = await ok(
        used, MONTHLY, {"start_month": "2026-11", "fields": SPANS, "sort_name": "infra_host_usage"}
    )
    assert len(by_unrecorded["usage"]) == 2


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        (HOURLY, {"start_hr": "2026-11-22T00", "usage_type": "infra_hosts_usage"}, "usage_type"),
        (HOURLY, {"start_hr": "2026-11-22T00", "usage_type": "infra_host_percentage"}, "usage_type"),
        (MONTHLY, {"start_month": "2026-11", "fields": "infra_hosts_usage"}, "fields"),
        (MONTHLY, {"start_month": "2026-11", "fields": SPANS, "sort_name": "hosts"}, "sort_name"),
    ],
)
async def test_a_name_that_is_no_datadog_usage_type_stays_a_400(
    used: RunningAttribution, path: str, params: dict[str, str], name: str
) -> None:
    status, body, _ = await api_get(used, path, params)
    assert name in error_message(status, body)


@pytest.mark.asyncio(loop_scope="module")
async def test_start_hr_in_the_future_is_an_empty_answer_not_an_error(used: RunningAttribution) -> None:
    future = await ok(used, HOURLY, {"start_hr": "2026-11-23T00", "usage_type": BYTES})
    assert future["usage"] == []
    with_end = await ok(
        used, HOURLY, {"start_hr": "2026-11-23T00", "end_hr": "2026-11-24T00", "usage_type": BYTES}
    )
    assert with_end["usage"] == []
    future_month = await ok(used, MONTHLY, {"start_month": "2027-01", "fields": SPANS})
    assert future_month["usage"] == []


@pytest.mark.asyncio(loop_scope="module")
async def test_end_month_is_inclusive(used: RunningAttribution) -> None:
    through_november = await ok(
        used, MONTHLY, {"start_month": "2026-10", "end_month": "2026-11", "fields": SPANS}
    )
    assert {record["month"] for record in through_november["usage"]} == {"2026-11-01T00:00:00+00:00"}
    through_october = await ok(
        used, MONTHLY, {"start_month": "2026-10", "end_month": "2026-10", "fields": SPANS}
    )
    assert through_october["usage"] == []


@pytest.mark.asyncio(loop_scope="module")
async def test_percentages_are_shares_within_each_org_so_their_aggregate_is_100_per_org_and_month(
    used: RunningAttribution,
) -> None:
    body: dict[str, Any] = await ok(
        used,
        MONTHLY,
        {
            "start_month": "2026-11",
            "fields": f"{SPANS},{SPANS_PCT},{BYTES_PCT}",
            "tag_breakdown_keys": "team",
        },
    )
    shares: dict[str, float] = {}
    for record in body["usage"]:
        shares[record["org_name"]] = shares.get(record["org_name"], 0.0) + record["values"][SPANS_PCT]
    assert shares == {"ACME": pytest.approx(100.0), "Holding Corp": pytest.approx(100.0)}
    aggregates = {entry["field"]: entry["value"] for entry in body["metadata"]["aggregates"]}
    assert aggregates[SPANS] == 6.0
    # Two orgs with usage in one month: 100 each, 200 in all; a sum of shares, not a share itself.
    assert aggregates[SPANS_PCT] == 200.0
    assert aggregates[BYTES_PCT] == 200.0
