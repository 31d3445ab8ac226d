"""The usage ledger and the Usage Attribution API end to end: traces in over OTLP/HTTP, the official
Datadog client reading hourly and monthly attribution that agrees with /usage_metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from datadog_api_client.v1.model.hourly_usage_attribution_usage_type import HourlyUsageAttributionUsageType
from datadog_api_client.v1.model.monthly_usage_attribution_supported_metrics import (
    MonthlyUsageAttributionSupportedMetrics as Metrics,
)

from tests.support.attribution import START, attribution_service, spans_request, write_config

BYTES = HourlyUsageAttributionUsageType.INGESTED_SPANS_BYTES_USAGE
SPANS = HourlyUsageAttributionUsageType.ESTIMATED_INGESTED_SPANS_USAGE
HOUR_10 = datetime(2026, 11, 22, 10, tzinfo=UTC)


async def test_hourly_and_monthly_agree_with_usage_metrics(tmp_path: Path) -> None:
    async with attribution_service(write_config(tmp_path)) as running:
        await running.send("acme", spans_request("checkout", 3, team="payments"))
        await running.send("acme", spans_request("search", 2, team="discovery"))
        await running.send("plain", spans_request("batch", 4))
        acme_hour_10 = await running.tenant_usage("acme")
        running.wall.advance(3600)  # 11:30
        await running.send("acme", spans_request("checkout", 1, team="payments"))
        acme_hour_11 = await running.tenant_usage("acme") - acme_hour_10
        await running.flush()
        assert await running.tenant_usage("plain") == 0  # no dimensions: not on /usage_metrics

        with running.datadog("acme") as (api, _):
            hourly = await running.call(api.get_hourly_usage_attribution, start_hr=HOUR_10, usage_type=BYTES)
            spans = await running.call(api.get_hourly_usage_attribution, start_hr=HOUR_10, usage_type=SPANS)
            monthly = await running.call(
                api.get_monthly_usage_attribution,
                start_month=datetime(2026, 11, 1, tzinfo=UTC),
                fields=Metrics("*"),
            )
        assert [(r.hour, r.org_name, r.tags.to_dict(), r.total_usage_sum) for r in hourly.usage] == [
            (HOUR_10, "ACME", {}, acme_hour_10),
            (HOUR_10.replace(hour=11), "ACME", {}, acme_hour_11),
        ]
        assert [r.total_usage_sum for r in spans.usage] == [5, 1]
        assert hourly.usage[0].tag_config_source == "ACME:::service_name///team"
        assert hourly.usage[0].public_id == "acme0001" and hourly.usage[0].region == "local"
        assert hourly.metadata.pagination.next_record_id is None
        (record,) = monthly.usage
        assert record.values.ingested_spans_bytes_usage == acme_hour_10 + acme_hour_11
        assert record.values.estimated_ingested_spans_usage == 6
        assert record.values.ingested_spans_bytes_percentage == 100.0

        with running.datadog("holding") as (api, _):  # the parent sees its subsidiaries
            hourly = await running.call(
                api.get_hourly_usage_attribution,
                start_hr=HOUR_10,
                usage_type=BYTES,
                tag_breakdown_keys="team",
            )
        assert {(r.org_name, r.hour.hour, str(r.tags.to_dict())) for r in hourly.usage} == {
            ("ACME", 10, "{'team': ['discovery']}"),
            ("ACME", 10, "{'team': ['payments']}"),
            ("ACME", 11, "{'team': ['payments']}"),
        }

    # After a graceful stop and a restart on the same ledger file, the history is all there.
    async with attribution_service(write_config(tmp_path), wall_start=START + 7200) as restarted:
        status, body, _ = await restarted.get(
            "/api/v1/usage/hourly-attribution",
            {"start_hr": "2026-11-22T10", "usage_type": "ingested_spans_bytes_usage"},
            key="acme",
        )
        assert status == 200
        assert [r["total_usage_sum"] for r in body["usage"]] == [acme_hour_10, acme_hour_11]
