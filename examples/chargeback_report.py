"""A monthly chargeback report from the distributor's Usage Attribution API, read with Datadog's own
Python client (datadog-api-client), exactly as one would read Datadog's.

    DD_API_KEY=finance-api DD_APP_KEY=finance-app .venv/bin/python examples/chargeback_report.py --by team

Prints one line per org and tag value: bytes, spans and each one's share of its org's month.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v1.api.usage_metering_api import UsageMeteringApi
from datadog_api_client.v1.model.monthly_usage_attribution_supported_metrics import (
    MonthlyUsageAttributionSupportedMetrics,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Monthly trace usage per org and tag, for chargeback.")
    parser.add_argument("--host", default="http://127.0.0.1:3200", help="the distributor's server port")
    parser.add_argument("--month", default=datetime.now(UTC).strftime("%Y-%m"), help="YYYY-MM (default: now)")
    parser.add_argument("--by", default="", help="tag keys to break down by, comma-separated (e.g. team)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configuration = Configuration(host=args.host)
    configuration.api_key["apiKeyAuth"] = os.environ.get("DD_API_KEY", "finance-api")
    configuration.api_key["appKeyAuth"] = os.environ.get("DD_APP_KEY", "finance-app")
    month = datetime.strptime(args.month, "%Y-%m").replace(tzinfo=UTC)
    options = {"tag_breakdown_keys": args.by} if args.by else {}
    rows = []
    with ApiClient(configuration) as client:
        api = UsageMeteringApi(client)
        cursor = None
        try:
            while True:  # every page: follow next_record_id until it is null
                page = api.get_monthly_usage_attribution(
                    start_month=month,
                    end_month=month,
                    fields=MonthlyUsageAttributionSupportedMetrics.ALL,
                    **options,
                    **({"next_record_id": cursor} if cursor else {}),
                )
                rows.extend(page.usage)
                cursor = page.metadata.pagination.next_record_id
                if not cursor:
                    break
        except ApiException as err:
            print(f"error: {err.status} {err.body}", file=sys.stderr)
            return 1
    print(f"{'org':20s} {'tags':32s} {'bytes':>14s} {'share':>7s} {'spans':>10s} {'share':>7s}")
    for row in rows:
        tags = (
            "(all)" if row.tags is None else ", ".join(f"{k}={v[0]}" for k, v in row.tags.to_dict().items())
        )
        values = row.values
        print(
            f"{row.org_name:20s} {tags or '-':32s} {values.ingested_spans_bytes_usage:14,.0f} "
            f"{values.ingested_spans_bytes_percentage:6.1f}% {values.estimated_ingested_spans_usage:10,.0f} "
            f"{values.estimated_ingested_spans_percentage:6.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
