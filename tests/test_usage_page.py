"""The usage attribution page at /usage/, in Debian's Chromium driven headless by Playwright, against a
running service with usage sent through OTLP: what the page shows is what the API answers.

One browser and one service for the module (each test has a fresh browser context: its own session
storage); screenshots of each view go to test-artifacts/usage-page/.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from distributor.attribution.page import CONTENT_SECURITY_POLICY
from tests.support.attribution import (
    COUNTING,
    RunningAttribution,
    attribution_service,
    visits_request,
    write_config,
)
from tests.support.browser import ARTIFACTS, chromium_path
from tests.support.otlp import batch, request, span

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = pytest.mark.asyncio(loop_scope="module")

MONTH = "2026-11"  # the month of tests.support.attribution.START
DAY = "2026-11-22"  # the day of tests.support.attribution.START
MONTHLY = "/api/v1/usage/monthly-attribution"
HOURLY = "/api/v1/usage/hourly-attribution"
USAGE_TYPES = (
    "ingested_spans_bytes_usage",
    "estimated_ingested_spans_usage",
    "rum_browser_mobile_sessions_usage",
    "apm_host_usage",
)
ORGS = {"holding": {"name": "Holding"}, "web": {"name": "Web", "parent": "holding"}}
KEYS = [{"api_key": "holding-api", "app_key": "holding-app", "org": "holding"}]
USER_OVERRIDES = {
    "defaults": {"cost_attribution": {"dimensions": {"service.name": ""}}},
    "per_tenant_override_config": "overrides.yaml",
    "user_configurable_overrides": {"enabled": True, "storage_path": "user-overrides"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningAttribution]:
    """Holding and its subsidiary Web, both attributed by department; Web counts sessions and hosts.
    Usage in two hours of DAY. Pages of 2 records, so the page has to follow next_record_id."""
    config = write_config(
        tmp_path_factory.mktemp("usage-page"),
        page_size=2,
        orgs=ORGS,
        keys=KEYS,
        tenant_dimensions={"holding": {"department": ""}, "web": {"department": ""}},
        tenant_cost_attribution={"web": COUNTING},
        extra={"overrides": USER_OVERRIDES},
    )
    async with attribution_service(config) as service:
        await service.send(
            "web", visits_request("finance", [("s1", "h1"), ("s2", "h1")], spans=2).SerializeToString()
        )
        await service.send("web", visits_request("marketing", [("s3", "h2")]).SerializeToString())
        for department, spans in (("finance", 3), ("ops", 5), ("research", 1)):
            body = request(batch({"service.name": "billing", "department": department}, [span()] * spans))
            await service.send("holding", body.SerializeToString())
        await service.flush()
        # The next hour, more of Holding's: the trends chart has two hours to show.
        service.wall.advance(3600)
        for department, spans in (("finance", 2), ("ops", 4)):
            body = request(batch({"service.name": "billing", "department": department}, [span()] * spans))
            await service.send("holding", body.SerializeToString())
        await service.flush()
        yield service


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, running: RunningAttribution) -> AsyncIterator[Page]:
    """A fresh context (nothing in session storage) at /usage/; the page's script errors and what the
    Content-Security-Policy refused fail the test."""
    context = await browser.new_context(accept_downloads=True, viewport={"width": 1366, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    await opened.goto(running.server_url + "/usage/")
    yield opened
    await context.close()
    # The browser reports every error status (a refused key, no tags yet, no favicon), which the page
    # handles; a script error or anything the policy refused ("Refused to ...") is the page's fault.
    assert [error for error in errors if not error.startswith("Failed to load resource")] == []


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, api_key: str = "holding-api", app_key: str = "holding-app") -> None:
    await page.get_by_label("API key", exact=True).fill(api_key)
    await page.get_by_label("Application key").fill(app_key)
    await page.get_by_role("button", name="Sign in").click()


async def show_month(page: Page, breakdown: str = "department") -> None:
    await page.get_by_label("Month", exact=True).fill(MONTH)
    await page.get_by_label("Group by tag keys").fill(breakdown)
    for name in ("Ingested bytes", "Spans", "RUM sessions", "APM hosts"):
        await page.get_by_label(name, exact=True).check()
    await page.get_by_role("button", name="Show usage").click()
    await page.locator("#monthly-status").filter(has_text=re.compile(r"^\d+ rows?")).wait_for()


async def table(page: Page) -> dict[str, Any]:
    """The table as shown: header labels, and each body and totals cell's exact value (data-value)."""
    result: dict[str, Any] = await page.evaluate(
        """() => {
            const values = (row) => Array.from(row.cells, (cell) => cell.dataset.value);
            const table = document.getElementById("usage-table");
            return {
                header: Array.from(table.tHead.rows[0].cells, (cell) => cell.textContent),
                sorts: Array.from(table.tHead.rows[0].cells, (cell) => cell.getAttribute("aria-sort")),
                rows: Array.from(table.tBodies[0].rows, values),
                totals: values(table.tFoot.rows[0]),
            };
        }"""
    )
    return result


async def api_monthly(running: RunningAttribution, breakdown: str) -> tuple[list[Any], dict[str, float]]:
    """Every record of the API's monthly answer for MONTH (all pages), and its aggregates."""
    fields = ",".join(f for usage in USAGE_TYPES for f in (usage, usage.replace("_usage", "_percentage")))
    params = {"start_month": MONTH, "end_month": MONTH, "fields": fields, "tag_breakdown_keys": breakdown}
    records: list[Any] = []
    while True:
        status, body, _ = await running.get(MONTHLY, params)
        assert status == 200, body
        records.extend(body["usage"])
        aggregates = {aggregate["field"]: aggregate["value"] for aggregate in body["metadata"]["aggregates"]}
        cursor = body["metadata"]["pagination"]["next_record_id"]
        if cursor is None:
            return records, aggregates
        params["next_record_id"] = cursor


def number(text: str) -> float:
    return float(text)


async def test_page_is_served_with_a_strict_content_security_policy(running: RunningAttribution) -> None:
    async with running.session.get(running.server_url + "/usage/") as response:
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert (
            "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
        )
        assert response.headers["Cache-Control"] == "no-cache"
        assert '<script src="app.js"' in await response.text()
        etag = response.headers["ETag"]
    async with running.session.get(
        running.server_url + "/usage/app.js", headers={"If-None-Match": etag}
    ) as js:
        assert js.status == 200 and js.content_type == "text/javascript"
    async with running.session.get(running.server_url + "/usage/", headers={"If-None-Match": etag}) as again:
        assert again.status == 304
    async with running.session.get(running.server_url + "/usage/..%2fpage.py") as other:
        assert other.status == 404
    async with running.session.get(running.server_url + "/usage", allow_redirects=False) as bare:
        assert (bare.status, bare.headers["Location"]) == (308, "/usage/")


async def test_sign_in_shows_the_apis_monthly_answer_and_sign_out_forgets_the_keys(
    page: Page, running: RunningAttribution
) -> None:
    await sign_in(page)
    await page.get_by_text("Signed in to Holding").wait_for()
    await show_month(page)
    shown = await table(page)
    records, aggregates = await api_monthly(running, "department")
    assert len(records) == 5, "2 of Web's departments and 3 of Holding's, over 3 pages of 2"
    assert shown["header"] == ["Org", "department", "Ingested bytes", "Spans", "RUM sessions", "APM hosts"]
    expected = [
        [record["org_name"], record["tags"]["department"][0]] + [record["values"][t] for t in USAGE_TYPES]
        for record in records
    ]
    assert [[org, tag, *map(number, values)] for org, tag, *values in shown["rows"]] == expected
    assert [number(value) for value in shown["totals"][2:]] == [aggregates[t] for t in USAGE_TYPES]
    assert shown["totals"][:2] == ["Total", ""]
    await screenshot(page, "monthly-values")

    assert await page.evaluate("sessionStorage.length") == 1
    await page.get_by_role("button", name="Sign out").click()
    assert await page.evaluate("sessionStorage.length") == 0
    assert await page.locator("#monthly").is_hidden()
    assert await page.get_by_label("API key", exact=True).input_value() == ""


async def test_percentages_toggle_shows_each_records_share_of_its_orgs_month(
    page: Page, running: RunningAttribution
) -> None:
    await sign_in(page)
    await show_month(page)
    await page.get_by_label("Percentages of each org's month").check()
    shown = await table(page)
    records, _ = await api_monthly(running, "department")
    percentages = [t.replace("_usage", "_percentage") for t in USAGE_TYPES]
    assert shown["header"][2] == "Ingested bytes (%)"
    expected = [[record["values"][p] for p in percentages] for record in records]
    assert [[number(value) for value in row[2:]] for row in shown["rows"]] == expected
    # Web's sessions are all Web's: its two departments share 100 %; Holding counts none.
    sessions = {row[1]: number(row[4]) for row in shown["rows"] if row[0] == "Web"}
    assert sum(sessions.values()) == pytest.approx(100.0) and sessions["finance"] > sessions["marketing"]
    assert "%" in await page.locator("#usage-table tbody tr td.number").first.inner_text()
    await screenshot(page, "monthly-percentages")
    await page.get_by_label("Values", exact=True).check()
    assert (await table(page))["header"][2] == "Ingested bytes"


async def test_distinct_count_cells_show_the_csvs_95_percent_bounds_on_hover(
    page: Page, running: RunningAttribution
) -> None:
    sessions, hosts = "rum_browser_mobile_sessions_usage", "apm_host_usage"
    fields = ",".join(f for usage in USAGE_TYPES for f in (usage, usage.replace("_usage", "_percentage")))
    params = {"start_month": MONTH, "end_month": MONTH, "fields": fields, "tag_breakdown_keys": "department"}
    status, text, _ = await running.get(MONTHLY, params, Accept="text/csv")
    assert status == 200, text
    expected = {
        (row["org_name"], row["department"]): {
            usage: (number(row[f"{usage}_lower_bound"]), number(row[f"{usage}_upper_bound"]))
            for usage in (sessions, hosts)
        }
        for row in csv.DictReader(io.StringIO(text))
    }
    # Few sessions are counted exactly: the bounds are the count itself.
    assert expected[("Web", "finance")][sessions] == (2.0, 2.0)
    await sign_in(page)
    await show_month(page)
    await page.get_by_role("button", name="RUM sessions").click()  # rows in another order than the CSV's
    shown = await page.evaluate(
        """() => Array.from(document.querySelectorAll("#usage-table tbody tr"), (row) => ({
            key: [row.cells[0].dataset.value, row.cells[1].dataset.value],
            sessions: [row.cells[4].title, row.cells[4].dataset.value],
            hosts: [row.cells[5].title, row.cells[5].dataset.value],
            others: [row.cells[2].title, row.cells[3].title],
        }))"""
    )
    assert len(shown) == len(expected) == 5
    for row in shown:
        bounds = expected[tuple(row["key"])]
        for usage, (title, value) in ((sessions, row["sessions"]), (hosts, row["hosts"])):
            lower, upper = bounds[usage]
            assert title == f"95% confidence: {lower:g} - {upper:g}"
            assert lower <= number(value) <= upper
        assert row["others"] == ["", ""]
    web_finance = next(row for row in shown if row["key"] == ["Web", "finance"])
    assert web_finance["sessions"] == ["95% confidence: 2 - 2", "2"]
    assert await page.locator("#usage-table tfoot td[title]").count() == 0, "totals have no bounds"
    await page.get_by_label("Percentages of each org's month").check()
    assert await page.locator("#usage-table td[title]").count() == 0, "percentages have no bounds"


async def test_columns_sort_by_click_and_by_keyboard_with_aria_sort(page: Page) -> None:
    await sign_in(page)
    await show_month(page)
    await page.get_by_role("button", name="Spans").click()
    shown = await table(page)
    spans = [number(row[3]) for row in shown["rows"]]
    assert spans == sorted(spans, reverse=True) and spans != sorted(spans)
    assert shown["sorts"][3] == "descending" and set(shown["sorts"]) - {"descending"} == {"none"}
    # The header is rebuilt on sorting: the keyboard stays on its button, Enter sorts again.
    await page.keyboard.press("Enter")
    shown = await table(page)
    assert [number(row[3]) for row in shown["rows"]] == sorted(spans)
    assert shown["sorts"][3] == "ascending"
    await page.get_by_role("button", name="department").click()
    departments = [row[1] for row in (await table(page))["rows"]]
    assert departments == sorted(departments)
    await screenshot(page, "monthly-sorted")


async def test_csv_download_is_exactly_the_table_shown(page: Page, tmp_path: Path) -> None:
    await sign_in(page)
    await show_month(page)
    await page.get_by_label("Percentages of each org's month").check()
    await page.get_by_role("button", name="Spans").click()
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download CSV of this table").click()
    download = await download_info.value
    assert download.suggested_filename == f"usage-{MONTH}-percentages.csv"
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    header, *rows = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8"))))
    shown = await table(page)
    assert header == [
        "org_name",
        "department",
        *(t.replace("_usage", "_percentage") for t in USAGE_TYPES),
    ]
    assert rows == [*shown["rows"], shown["totals"]]


async def test_wrong_key_is_refused_with_the_apis_403(page: Page) -> None:
    await sign_in(page, app_key="not-the-app-key")
    error = page.locator("#sign-in-error")
    await error.filter(has_text="403").wait_for()
    assert "Forbidden" in await error.inner_text()
    assert await page.locator("#monthly").is_hidden()
    assert await page.evaluate("sessionStorage.length") == 0
    await screenshot(page, "sign-in-refused")


async def test_editing_tags_with_a_stale_etag_shows_the_conflict_and_overwrites_nothing(
    page: Page, running: RunningAttribution
) -> None:
    url = running.server_url + "/api/overrides"
    holding = {"X-Scope-OrgID": "holding"}
    first = {"cost_attribution": {"dimensions": {"department": ""}}}
    async with running.session.post(url, json=first, headers=holding) as created:
        assert created.status == 200
        first_etag = created.headers["ETag"]
    await sign_in(page)
    tags = page.get_by_label("Attribution tags of Holding")
    await page.get_by_text("Tags loaded.").wait_for()
    assert await tags.input_value() == "department"

    # Someone else changes them after the page read them.
    theirs = {"cost_attribution": {"dimensions": {"department": "", "team": "squad"}}}
    async with running.session.post(url, json=theirs, headers={**holding, "If-Match": first_etag}) as other:
        assert other.status == 200

    await tags.fill("department\nk8s.namespace.name = namespace")
    await page.get_by_role("button", name="Save tags").click()
    conflict = page.locator("#tags-error")
    await conflict.filter(has_text="changed by someone else").wait_for()
    assert "nothing was overwritten" in await conflict.inner_text()
    assert await tags.input_value() == "department\nk8s.namespace.name = namespace", "the edit is kept"
    async with running.session.get(url, headers=holding) as stored:
        assert await stored.json() == theirs
    await screenshot(page, "edit-tags-conflict")

    await page.get_by_role("button", name="Reload").click()
    await page.get_by_text("Tags loaded.").wait_for()
    assert await tags.input_value() == "department\nteam = squad"
    await tags.fill("department\nteam = squad\nk8s.namespace.name = namespace")
    await page.get_by_role("button", name="Save tags").click()
    await page.get_by_text("Saved:").wait_for()
    async with running.session.get(url, headers=holding) as stored:
        dimensions = {"department": "", "team": "squad", "k8s.namespace.name": "namespace"}
        assert await stored.json() == {"cost_attribution": {"dimensions": dimensions}}
    await screenshot(page, "edit-tags-saved")


async def show_trend(page: Page, range_name: str, usage_name: str, top: int | None = None) -> None:
    """The trend of DAY's range for one usage type, grouped by department (the monthly view's keys)."""
    await page.get_by_label("Group by tag keys").fill("department")
    await page.get_by_label("Range", exact=True).select_option(label=range_name)
    await page.get_by_label("Through day").fill(DAY)
    await page.get_by_label("Usage type", exact=True).select_option(label=usage_name)
    if top is not None:
        await page.get_by_label("Top tag sets").fill(str(top))
    await page.get_by_role("button", name="Show trend").click()
    await page.locator("#trends-status").filter(has_text=re.compile(r"^\d+ tag sets?")).wait_for()


Series = dict[str, dict[datetime, float]]


async def chart(page: Page) -> dict[str, Any]:
    """Each drawn series (its data-series, its title, bars or a line, its marks' hours and values), the
    legend's series, the SVG's role and label, and the visually-hidden table's columns by series."""
    result: dict[str, Any] = await page.evaluate(
        """() => {
            const svg = document.getElementById("trend-chart");
            const table = document.getElementById("trend-table");
            const header = Array.from(table.tHead.rows[0].cells, (cell) => cell.textContent);
            const rows = Array.from(table.tBodies[0].rows, (row) => Array.from(row.cells, (cell) =>
                cell.dataset.value === undefined ? cell.textContent : Number(cell.dataset.value)));
            return {
                role: svg.getAttribute("role"),
                label: svg.getAttribute("aria-label"),
                series: Array.from(svg.querySelectorAll("[data-series]"), (group) => ({
                    name: group.dataset.series,
                    title: group.querySelector(":scope > title").textContent,
                    line: group.querySelector("path") !== null,
                    marks: Array.from(group.querySelectorAll("[data-hour]"),
                        (mark) => [mark.dataset.hour, Number(mark.dataset.value)]),
                })),
                legend: Array.from(document.querySelectorAll("#trend-legend li"),
                    (item) => item.dataset.series),
                note: document.getElementById("trend-note").textContent,
                table: {header, rows},
            };
        }"""
    )
    return result


def drawn(shown: dict[str, Any]) -> Series:
    return {
        series["name"]: {datetime.fromisoformat(hour): value for hour, value in series["marks"]}
        for series in shown["series"]
    }


def tabled(shown: dict[str, Any]) -> Series:
    """The hidden table's numbers as series; its hour cells read 'YYYY-MM-DD hh:mm' (UTC)."""
    header, rows = shown["table"]["header"], shown["table"]["rows"]
    series: Series = {name: {} for name in header[1:]}
    for hour, *values in rows:
        moment = datetime.fromisoformat(hour + "+00:00")
        for name, value in zip(header[1:], values, strict=True):
            if value:
                series[name][moment] = value
    return series


async def api_hourly(running: RunningAttribution, usage_type: str, start_hr: str, end_hr: str) -> Series:
    """The API's hourly answer by department (all pages), one series per org and department."""
    params = {
        "start_hr": start_hr,
        "end_hr": end_hr,
        "usage_type": usage_type,
        "tag_breakdown_keys": "department",
    }
    series: Series = {}
    while True:
        status, body, _ = await running.get(HOURLY, params)
        assert status == 200, body
        for record in body["usage"]:
            hours = series.setdefault(f"{record['org_name']}: {record['tags']['department'][0]}", {})
            moment = datetime.fromisoformat(record["hour"])
            hours[moment] = hours.get(moment, 0) + record["total_usage_sum"]
        cursor = body["metadata"]["pagination"]["next_record_id"]
        if cursor is None:
            return series
        params["next_record_id"] = cursor


def top_and_other(api: Series, top: int, other: bool = True) -> Series:
    """The top `top` series by total, and (when `other`) the rest summed per hour as "other"."""
    ranked = sorted(api.items(), key=lambda item: -sum(item[1].values()))
    if len(ranked) > top:
        assert sum(ranked[top - 1][1].values()) > sum(ranked[top][1].values()), "no tie at the cut"
    expected = dict(ranked[:top])
    rest = ranked[top:]
    if rest and other:
        summed: dict[datetime, float] = {}
        for _, hours in rest:
            for moment, value in hours.items():
                summed[moment] = summed.get(moment, 0) + value
        expected["other"] = summed
    return expected


async def test_trend_draws_the_top_tag_sets_stacked_and_the_rest_as_other(
    page: Page, running: RunningAttribution
) -> None:
    await sign_in(page)
    await show_trend(page, "Day", "Spans", top=3)
    shown = await chart(page)
    api = await api_hourly(running, "estimated_ingested_spans_usage", f"{DAY}T00", "2026-11-23T00")
    assert len(api) == 5 and len({hour for hours in api.values() for hour in hours}) == 2
    expected = top_and_other(api, 3)
    assert list(expected)[-1] == "other" and len(expected) == 4
    assert drawn(shown) == expected
    assert [series["name"] for series in shown["series"]] == list(expected) == shown["legend"]
    assert not any(series["line"] for series in shown["series"])
    assert all(series["title"].startswith(series["name"]) for series in shown["series"])
    assert tabled(shown) == expected, "the hidden table has the chart's numbers"
    assert shown["role"] == "img" and "stacked bar chart of Spans per hour" in shown["label"]
    assert "4 series" in shown["label"] and "Stacked" in shown["note"]
    await screenshot(page, "trends-spans-top-3")


async def test_trend_of_a_week_with_the_default_top_five_has_every_tag_set(
    page: Page, running: RunningAttribution
) -> None:
    await sign_in(page)
    await show_trend(page, "Week (7 days to the date)", "Ingested bytes")
    shown = await chart(page)
    api = await api_hourly(running, "ingested_spans_bytes_usage", "2026-11-16T00", "2026-11-23T00")
    assert len(api) == 5
    assert drawn(shown) == api and "other" not in drawn(shown)
    assert tabled(shown) == api
    await screenshot(page, "trends-bytes-week")


async def test_trend_of_distinct_sessions_draws_lines_not_stacked(
    page: Page, running: RunningAttribution
) -> None:
    await sign_in(page)
    await show_trend(page, "Month to date", "RUM sessions", top=1)
    shown = await chart(page)
    api = await api_hourly(running, "rum_browser_mobile_sessions_usage", "2026-11-01T00", "2026-11-23T00")
    assert set(api) == {"Web: finance", "Web: marketing"}
    assert drawn(shown) == top_and_other(api, 1, other=False), "distinct counts are not summed as other"
    assert all(series["line"] for series in shown["series"])
    assert "not stacked" in shown["note"] and "1 more tag set is not drawn" in shown["note"]
    assert "line chart of RUM sessions per hour" in shown["label"]
    await screenshot(page, "trends-sessions-lines")
