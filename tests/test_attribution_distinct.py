"""Distinct RUM sessions and APM hosts by department, end to end: browser-shaped OTLP/JSON requests and
the OpenTelemetry SDK's exporter into a running service, read back through the official Datadog client
(hourly and monthly, typed), the raw API (percentages, aggregates, merged tag sets) and the CSV export
(bounds).

Semantics: docs/usage-attribution-api.md ("Distinct counts")."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

from datadog_api_client.v1.model.hourly_usage_attribution_usage_type import HourlyUsageAttributionUsageType
from datadog_api_client.v1.model.monthly_usage_attribution_supported_metrics import (
    MonthlyUsageAttributionSupportedMetrics as Metrics,
)

from distributor.ledger.ledger import HOUR
from tests.support.attribution import (
    RunningAttribution,
    attribution_service,
    distinct_config,
    visits_request,
)
from tests.support.otlp import otlp_json

SESSIONS = HourlyUsageAttributionUsageType.RUM_BROWSER_MOBILE_SESSIONS_USAGE
HOSTS = HourlyUsageAttributionUsageType.APM_HOST_USAGE
SESSIONS_FIELD, HOSTS_FIELD = "rum_browser_mobile_sessions_usage", "apm_host_usage"
HOUR_10 = datetime(2026, 11, 22, 10, tzinfo=UTC)
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"
HOURLY_PATH = "/api/v1/usage/hourly-attribution"


def browser_request(department: str, session: str, host: str, spans: int = 3) -> bytes:
    """A few spans of one page load, as a browser's exporter sends them (OTLP/JSON)."""
    return otlp_json(visits_request(department, [(session, host)], spans))


async def send_json(running: RunningAttribution, body: bytes) -> None:
    answer = await running.post(body, "web", {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body


async def send_browsers(running: RunningAttribution) -> None:
    """Hour 10: marketing has sessions m1..m3 (m1 twice) on hosts h1, h2; sales has s1 on h1. Hour 11:
    marketing's m3 goes on (a session across the hour) and m4 starts, on h1."""
    for session, host in (("m1", "h1"), ("m1", "h1"), ("m2", "h2"), ("m3", "h2")):
        await send_json(running, browser_request("marketing", session, host))
    await send_json(running, browser_request("sales", "s1", "h1"))
    await running.flush()
    running.wall.advance(HOUR)
    for session in ("m3", "m4"):
        await send_json(running, browser_request("marketing", session, "h1"))
    await running.flush()


async def test_sessions_and_hosts_by_department_hourly_and_monthly_through_the_datadog_client(
    tmp_path: Path,
) -> None:
    async with attribution_service(distinct_config(tmp_path)) as running:
        await send_browsers(running)
        with running.datadog() as (v1, _):
            hourly: dict[tuple[str, str, str], float] = {}
            for usage_type in (SESSIONS, HOSTS):
                answer = await running.call(
                    v1.get_hourly_usage_attribution,
                    start_hr=HOUR_10,
                    usage_type=usage_type,
                    tag_breakdown_keys="department",
                )
                for record in answer.usage:
                    (department,) = record.tags["department"]
                    hourly[str(usage_type), record.hour.strftime("%H"), department] = record.total_usage_sum
            assert hourly == {
                (SESSIONS_FIELD, "10", "marketing"): 3,
                (SESSIONS_FIELD, "10", "sales"): 1,
                (SESSIONS_FIELD, "11", "marketing"): 2,
                (HOSTS_FIELD, "10", "marketing"): 2,
                (HOSTS_FIELD, "10", "sales"): 1,
                (HOSTS_FIELD, "11", "marketing"): 1,
            }
            monthly = await running.call(
                v1.get_monthly_usage_attribution,
                start_month=datetime(2026, 11, 1, tzinfo=UTC),
                fields=f"{SESSIONS_FIELD},{HOSTS_FIELD}",
                tag_breakdown_keys="department",
                sort_name=Metrics.RUM_BROWSER_MOBILE_SESSIONS_USAGE,
            )
            values = {
                record.tags["department"][0]: (
                    record.values.rum_browser_mobile_sessions_usage,
                    record.values.apm_host_usage,
                )
                for record in monthly.usage
            }
            # Sessions: the sum of the hours' (m3 counts in both). Hosts: the 99th percentile of the 516
            # hours of November so far (to 12:00 on the 22nd); two hours with hosts are below it.
            assert values == {"marketing": (5, 0), "sales": (1, 0)}
            assert [record.tags["department"][0] for record in monthly.usage] == ["marketing", "sales"]


async def test_a_merged_breakdown_merges_identities_and_the_month_of_hosts_is_their_99th_percentile(
    tmp_path: Path,
) -> None:
    """Without a breakdown, an org's hour merges its departments: h1, seen by both, is one host. Over a
    month of the same hosts each hour, the 99th percentile is that count."""
    async with attribution_service(
        distinct_config(tmp_path), wall_start=datetime(2026, 11, 1, 0, 30, tzinfo=UTC).timestamp()
    ) as running:
        for _ in range(24 * 30):
            await send_json(running, browser_request("marketing", "m1", "h1", spans=1))
            await send_json(running, browser_request("sales", "s1", "h1", spans=1))
            await send_json(running, browser_request("sales", "s2", "h2", spans=1))
            running.wall.advance(HOUR)
        await running.flush()
        status, body, _ = await running.get(
            HOURLY_PATH, {"start_hr": "2026-11-01T00", "end_hr": "2026-11-01T01", "usage_type": HOSTS_FIELD}
        )
        assert status == 200, body
        assert [record["total_usage_sum"] for record in body["usage"]] == [2]  # h1 once
        status, body, _ = await running.get(
            MONTHLY_PATH,
            {
                "start_month": "2026-11",
                "end_month": "2026-11",
                "fields": "*",
                "tag_breakdown_keys": "department",
            },
        )
        assert status == 200, body
        by_department = {record["tags"]["department"][0]: record["values"] for record in body["usage"]}
        assert by_department["marketing"][HOSTS_FIELD] == 1
        assert by_department["sales"][HOSTS_FIELD] == 2
        assert by_department["marketing"][SESSIONS_FIELD] == 720
        assert by_department["sales"][SESSIONS_FIELD] == 1440
        assert by_department["sales"]["rum_browser_mobile_sessions_percentage"] == 100 * 1440 / 2160
        aggregates = {a["field"]: a["value"] for a in body["metadata"]["aggregates"]}
        assert aggregates[SESSIONS_FIELD] == 2160 and aggregates[HOSTS_FIELD] == 3
        assert aggregates["apm_host_percentage"] == 100


async def test_the_csv_carries_each_distinct_counts_bounds(tmp_path: Path) -> None:
    async with attribution_service(distinct_config(tmp_path)) as running:
        await send_browsers(running)
        status, text, _ = await running.get(
            MONTHLY_PATH,
            {
                "start_month": "2026-11",
                "fields": f"{SESSIONS_FIELD},ingested_spans_bytes_usage",
                "tag_breakdown_keys": "department",
            },
            Accept="text/csv",
        )
        assert status == 200, text
        rows = list(csv.DictReader(io.StringIO(text)))
        assert list(rows[0])[-2:] == [f"{SESSIONS_FIELD}_lower_bound", f"{SESSIONS_FIELD}_upper_bound"]
        marketing = next(row for row in rows if row["department"] == "marketing")
        assert float(marketing[f"{SESSIONS_FIELD}_lower_bound"]) <= float(marketing[SESSIONS_FIELD]) == 5
        assert float(marketing[f"{SESSIONS_FIELD}_upper_bound"]) >= 5


async def test_sessions_from_the_opentelemetry_sdk_exporter(tmp_path: Path) -> None:
    """The Python SDK with `session.id` on its spans and the department on its resource, exported over
    OTLP/HTTP: one session per page view, three views of two sessions."""
    import asyncio

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    async with attribution_service(distinct_config(tmp_path)) as running:
        exporter = OTLPSpanExporter(endpoint=running.traces_url, headers={"X-Scope-OrgID": "web"})
        provider = TracerProvider(resource=Resource.create({"service.name": "app", "department": "support"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("browser")

        def views() -> None:
            for session in ("a", "b", "a"):
                with tracer.start_as_current_span("page view", attributes={"session.id": session}):
                    pass
            provider.shutdown()

        await asyncio.to_thread(views)
        await running.flush()
        with running.datadog() as (v1, _):
            answer = await running.call(
                v1.get_hourly_usage_attribution,
                start_hr=HOUR_10,
                usage_type=SESSIONS,
                tag_breakdown_keys="department",
            )
        assert [(record.tags["department"], record.total_usage_sum) for record in answer.usage] == [
            (["support"], 2)
        ]
        assert str(answer.usage[0].usage_type) == SESSIONS_FIELD
