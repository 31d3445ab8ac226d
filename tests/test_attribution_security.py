"""The Usage Attribution API against hostile input through the real HTTP server: tenant-supplied text
that a spreadsheet would run as a formula, and a client guessing keys.

Semantics: docs/usage-attribution-api.md.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import aiohttp

from tests.support.attribution import attribution_service, spans_request, write_config

MONTHLY = "/api/v1/usage/monthly-attribution"
SPANS = "estimated_ingested_spans_usage"
# Each starts a formula (or, after a tab or carriage return, may) in a spreadsheet.
FORMULA_VALUES = ('=HYPERLINK("http://evil.example","x")', "+1", "-2", "@x", "\tx", "\rx")
HOSTILE_TENANT = "-evil"  # a valid tenant id, and the org name of an org the config does not name


async def test_monthly_csv_neutralises_text_cells_a_spreadsheet_would_run_as_formulas(
    tmp_path: Path,
) -> None:
    keys = [{"api_key": "evil-api", "app_key": "evil-app", "org": HOSTILE_TENANT}]
    async with attribution_service(write_config(tmp_path, keys=keys)) as running:
        for count, value in enumerate(FORMULA_VALUES, start=1):
            await running.send(HOSTILE_TENANT, spans_request(value, count))
        await running.flush()
        params = {"start_month": "2026-11", "fields": SPANS, "tag_breakdown_keys": "service_name"}

        status, text, _ = await running.get(MONTHLY, params, key="evil", Accept="text/csv")
        assert status == 200, text
        header, *rows = list(csv.reader(io.StringIO(text, newline="")))
        assert header == [
            "month",
            "org_name",
            "public_id",
            "region",
            "tag_config_source",
            "service_name",
            SPANS,
        ]
        assert {row[5]: int(row[6]) for row in rows} == {
            "'" + value: count for count, value in enumerate(FORMULA_VALUES, start=1)
        }
        for count, value in enumerate(FORMULA_VALUES, start=1):  # text quoted, numbers bare
            assert "\"'" + value.replace('"', '""') + f'",{count}\n' in text
        assert {row[1] for row in rows} == {"'" + HOSTILE_TENANT}
        assert {row[4] for row in rows} == {"'" + HOSTILE_TENANT + ":::service_name///team"}

        status, body, _ = await running.get(MONTHLY, params, key="evil")
        assert status == 200, body
        usage = body["usage"]
        assert {record["tags"]["service_name"][0]: record["values"][SPANS] for record in usage} == {
            value: count for count, value in enumerate(FORMULA_VALUES, start=1)
        }
        assert {record["org_name"] for record in usage} == {HOSTILE_TENANT}


async def test_an_address_that_fails_to_authenticate_too_often_is_refused_until_its_window_ends(
    tmp_path: Path,
) -> None:
    """10 failures a minute per address by default. The limited address is refused even with a correct
    key pair (a guesser must not learn which guess was right); the same pair from elsewhere is not."""
    async with attribution_service(write_config(tmp_path)) as running:
        wrong = {"DD-API-KEY": "holding-api", "DD-APPLICATION-KEY": "guess"}
        for _ in range(10):
            status, body, _ = await running.get(MONTHLY, {}, key="", **wrong)
            assert (status, body) == (403, {"errors": ["Forbidden"]})
        running.clock.advance(15)

        for key_headers in (wrong, {}):  # {}: the correct pair
            status, body, headers = await running.get(MONTHLY, {}, **key_headers)
            assert (status, body) == (429, {"errors": ["Too many requests"]})
            assert {name: headers[name] for name in headers if name.startswith("X-RateLimit-")} == {
                "X-RateLimit-Limit": "10",
                "X-RateLimit-Period": "60",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": "45",
                "X-RateLimit-Name": "usage_attribution_auth_failures",
            }

        elsewhere = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=elsewhere) as session:
            url = f"{running.server_url}{MONTHLY}?start_month=2026-11&fields=*"
            headers = {"DD-API-KEY": "holding-api", "DD-APPLICATION-KEY": "holding-app"}
            async with session.get(url, headers=headers) as answer:
                assert answer.status == 200, await answer.text()

        running.clock.advance(45)
        status, body, _ = await running.get(MONTHLY, {"start_month": "2026-11", "fields": "*"})
        assert status == 200, body
