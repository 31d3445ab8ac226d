"""The Usage Attribution API's parameters, parsed without a server: the forms each one accepts, and for
each invalid request the parameter at fault and what is wrong with it.

Semantics: usage-attribution-api.md ("Times in requests" and the two endpoints).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from distributor.attribution.errors import InvalidParameter
from distributor.attribution.query import (
    HourlyQuery,
    MonthlyQuery,
    Parameters,
    parse_hourly,
    parse_monthly,
)

BYTES = "ingested_spans_bytes_usage"
SPANS = "estimated_ingested_spans_usage"
BYTES_PCT = "ingested_spans_bytes_percentage"
SPANS_PCT = "estimated_ingested_spans_percentage"
SESSIONS, SESSIONS_PCT = "rum_browser_mobile_sessions_usage", "rum_browser_mobile_sessions_percentage"
HOSTS, HOSTS_PCT = "apm_host_usage", "apm_host_percentage"
ALL_FIELDS = (BYTES, BYTES_PCT, SPANS, SPANS_PCT, SESSIONS, SESSIONS_PCT, HOSTS, HOSTS_PCT)
USAGE_TYPES_TEXT = f"{BYTES}, {SPANS}, {SESSIONS}, {HOSTS}"
HOURLY_KNOWN = "start_hr, end_hr, usage_type, tag_breakdown_keys, next_record_id, include_descendants"
MONTHLY_KNOWN = (
    "start_month, end_month, fields, sort_direction, sort_name, tag_breakdown_keys, next_record_id, "
    "include_descendants"
)


def at(year: int, month: int, day: int = 1, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


T10 = at(2026, 11, 22, 10)
NOVEMBER = at(2026, 11)


def params(**values: str | list[str]) -> Parameters:
    return {name: value if isinstance(value, list) else [value] for name, value in values.items()}


def hourly(**values: str | list[str]) -> Parameters:
    return params(**{"start_hr": "2026-11-22T10", "usage_type": BYTES, **values})


def monthly(**values: str | list[str]) -> Parameters:
    return params(**{"start_month": "2026-11", "fields": "*", **values})


# The queries of hourly() and monthly() as they stand: each case states only what it changes.
HOURLY_QUERY = HourlyQuery(T10, None, BYTES, None, True, None)
MONTHLY_QUERY = MonthlyQuery(NOVEMBER, None, ALL_FIELDS, BYTES, True, None, True, None)


def expect_hourly(**changes: Any) -> HourlyQuery:
    return replace(HOURLY_QUERY, **changes)


def expect_monthly(**changes: Any) -> MonthlyQuery:
    return replace(MONTHLY_QUERY, **changes)


VALID_HOURLY = {
    "short form": (hourly(), expect_hourly()),
    "full datetime with Z and fractions, truncated to the hour": (
        hourly(start_hr="2026-11-22T10:37:12.512Z"),
        expect_hourly(),
    ),
    "offset": (hourly(start_hr="2026-11-22T12:37:12+02:00"), expect_hourly()),
    "offset whose + arrived as a space": (hourly(start_hr="2026-11-22T12:37:12 02:00"), expect_hourly()),
    "no zone means UTC": (hourly(start_hr="2026-11-22T10:59:59"), expect_hourly()),
    "end_hr, exclusive": (hourly(end_hr="2026-11-22T12"), expect_hourly(end=at(2026, 11, 22, 12))),
    "end_hr one hour after start_hr": (
        hourly(end_hr="2026-11-22T11"),
        expect_hourly(end=at(2026, 11, 22, 11)),
    ),
    "spans": (hourly(usage_type=SPANS), expect_hourly(usage_type=SPANS)),
    "breakdown keys trimmed, repeats dropped": (
        hourly(tag_breakdown_keys=" team,service_name,team"),
        expect_hourly(breakdown=("team", "service_name")),
    ),
    "blank breakdown is none": (hourly(tag_breakdown_keys=" "), expect_hourly()),
    "include_descendants false": (
        hourly(include_descendants="false"),
        expect_hourly(include_descendants=False),
    ),
    "include_descendants 0": (hourly(include_descendants="0"), expect_hourly(include_descendants=False)),
    "include_descendants TRUE": (hourly(include_descendants="TRUE"), expect_hourly()),
    "cursor passed on as given": (hourly(next_record_id="abc.def"), expect_hourly(cursor="abc.def")),
}


@pytest.mark.parametrize(("given", "expected"), VALID_HOURLY.values(), ids=VALID_HOURLY.keys())
def test_valid_hourly_parameters(given: Parameters, expected: HourlyQuery) -> None:
    assert parse_hourly(given) == expected


VALID_MONTHLY = {
    "short form, every field": (monthly(), expect_monthly()),
    "full datetime, truncated to the month": (
        monthly(start_month="2026-11-19T10:37:12.512+00:00"),
        expect_monthly(),
    ),
    "offset that moves the month": (monthly(start_month="2026-12-01T00:30:00+01:00"), expect_monthly()),
    "end_month inclusive: the range ends at the month after": (
        monthly(end_month="2026-12"),
        expect_monthly(end=at(2027, 1)),
    ),
    "end_month equal to start_month": (monthly(end_month="2026-11"), expect_monthly(end=at(2026, 12))),
    "fields in the order given, star adds the rest once": (
        monthly(fields=f"{SPANS}, *"),
        expect_monthly(
            fields=(SPANS, BYTES, BYTES_PCT, SPANS_PCT, SESSIONS, SESSIONS_PCT, HOSTS, HOSTS_PCT),
            sort_field=SPANS,
        ),
    ),
    "sort_name defaults to the first usage field": (
        monthly(fields=f"{BYTES_PCT},{SPANS}"),
        expect_monthly(fields=(BYTES_PCT, SPANS), sort_field=SPANS),
    ),
    "sort_name defaults to a percentage's usage type": (
        monthly(fields=SPANS_PCT),
        expect_monthly(fields=(SPANS_PCT,), sort_field=SPANS),
    ),
    "sort ascending by a percentage": (
        monthly(sort_direction="asc", sort_name=BYTES_PCT),
        expect_monthly(sort_field=BYTES_PCT, descending=False),
    ),
    "breakdown and descendants": (
        monthly(tag_breakdown_keys="team", include_descendants="false"),
        expect_monthly(breakdown=("team",), include_descendants=False),
    ),
}


@pytest.mark.parametrize(("given", "expected"), VALID_MONTHLY.values(), ids=VALID_MONTHLY.keys())
def test_valid_monthly_parameters(given: Parameters, expected: MonthlyQuery) -> None:
    assert parse_monthly(given) == expected


def invalid_time(text: str, expected: str) -> str:
    return f"invalid datetime {text!r}; expected {expected} or an ISO-8601 datetime, UTC"


INVALID_HOURLY = {
    "no start_hr": (params(usage_type=BYTES), "start_hr", "required"),
    "blank start_hr": (hourly(start_hr=" "), "start_hr", "required"),
    "no usage_type": (params(start_hr="2026-11-22T10"), "usage_type", "required"),
    "start_hr a word": (hourly(start_hr="yesterday"), "start_hr", invalid_time("yesterday", "YYYY-MM-DDThh")),
    "start_hr hour 25": (
        hourly(start_hr="2026-11-22T25"),
        "start_hr",
        invalid_time("2026-11-22T25", "YYYY-MM-DDThh"),
    ),
    "start_hr 31 November": (
        hourly(start_hr="2026-11-31T10"),
        "start_hr",
        invalid_time("2026-11-31T10", "YYYY-MM-DDThh"),
    ),
    "end_hr a word": (hourly(end_hr="tomorrow"), "end_hr", invalid_time("tomorrow", "YYYY-MM-DDThh")),
    "end_hr equal to start_hr": (
        hourly(end_hr="2026-11-22T10:59:59Z"),
        "end_hr",
        "must be after start_hr (end_hr is exclusive)",
    ),
    "end_hr before start_hr": (
        hourly(end_hr="2026-11-22T09"),
        "end_hr",
        "must be after start_hr (end_hr is exclusive)",
    ),
    "usage_type not recorded": (
        hourly(usage_type="apm_hosts_usage"),
        "usage_type",
        f"unknown usage type 'apm_hosts_usage'; this service records {USAGE_TYPES_TEXT}",
    ),
    "usage_type a percentage": (
        hourly(usage_type=BYTES_PCT),
        "usage_type",
        f"unknown usage type {BYTES_PCT!r}; this service records {USAGE_TYPES_TEXT}",
    ),
    "include_descendants yes": (
        hourly(include_descendants="yes"),
        "include_descendants",
        "expected true or false, got 'yes'",
    ),
    "breakdown with an empty key": (
        hourly(tag_breakdown_keys="team,,service_name"),
        "tag_breakdown_keys",
        "empty tag key in 'team,,service_name'",
    ),
    "unknown parameter": (hourly(foo="bar"), "foo", f"unknown parameter (known: {HOURLY_KNOWN})"),
    "monthly parameter": (hourly(fields="*"), "fields", f"unknown parameter (known: {HOURLY_KNOWN})"),
    "start_hr twice": (
        hourly(start_hr=["2026-11-22T10", "2026-11-22T10"]),
        "start_hr",
        "given 2 times; give it once",
    ),
}


INVALID_MONTHLY = {
    "no start_month": (params(fields="*"), "start_month", "required"),
    "no fields": (params(start_month="2026-11"), "fields", "required"),
    "blank fields": (monthly(fields=""), "fields", "required"),
    "start_month 13": (monthly(start_month="2026-13"), "start_month", invalid_time("2026-13", "YYYY-MM")),
    "start_month reversed": (
        monthly(start_month="11-2026"),
        "start_month",
        invalid_time("11-2026", "YYYY-MM"),
    ),
    "start_month whose next month is past year 9999": (
        monthly(start_month="9999-12"),
        "start_month",
        invalid_time("9999-12", "YYYY-MM"),
    ),
    "end_month before start_month": (
        monthly(end_month="2026-10"),
        "end_month",
        "must not be before start_month",
    ),
    "unknown field": (
        monthly(fields=f"{BYTES},apm_hosts_usage"),
        "fields",
        f"unknown field 'apm_hosts_usage'; this service records {', '.join(ALL_FIELDS)} (or *)",
    ),
    "empty field": (
        monthly(fields=f"{BYTES},"),
        "fields",
        f"unknown field ''; this service records {', '.join(ALL_FIELDS)} (or *)",
    ),
    "sort_direction up": (monthly(sort_direction="up"), "sort_direction", "expected desc or asc, got 'up'"),
    "sort_name month": (
        monthly(sort_name="month"),
        "sort_name",
        f"unknown field 'month'; use one of {', '.join(ALL_FIELDS)}",
    ),
    "include_descendants maybe": (
        monthly(include_descendants="maybe"),
        "include_descendants",
        "expected true or false, got 'maybe'",
    ),
    "hourly parameter": (
        monthly(usage_type=BYTES),
        "usage_type",
        f"unknown parameter (known: {MONTHLY_KNOWN})",
    ),
    "fields three times": (monthly(fields=["*", "*", "*"]), "fields", "given 3 times; give it once"),
}


Parse = Callable[[Parameters], object]
INVALID: dict[str, tuple[Parse, Parameters, str, str]] = {
    **{f"hourly, {name}": (parse_hourly, *case) for name, case in INVALID_HOURLY.items()},
    **{f"monthly, {name}": (parse_monthly, *case) for name, case in INVALID_MONTHLY.items()},
}


@pytest.mark.parametrize(("parse", "given", "parameter", "problem"), INVALID.values(), ids=INVALID.keys())
def test_invalid_parameter_names_it_and_the_problem(
    parse: Parse, given: Parameters, parameter: str, problem: str
) -> None:
    with pytest.raises(InvalidParameter) as raised:
        parse(given)
    assert (raised.value.parameter, raised.value.problem) == (parameter, problem)
    assert str(raised.value) == f"{parameter}: {problem}"
