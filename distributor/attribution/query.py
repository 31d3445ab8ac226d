"""The parameters of the hourly and monthly endpoints, parsed and checked; each problem names its
parameter (InvalidParameter)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from distributor.attribution.datadog_types import DATADOG_USAGE_TYPES
from distributor.attribution.errors import InvalidParameter
from distributor.ledger.ledger import USAGE_TYPES, add_months, hour_of, month_of

# A query string: every value of each parameter, in order.
Parameters = Mapping[str, list[str]]

HOURLY_PARAMETERS = (
    "start_hr",
    "end_hr",
    "usage_type",
    "tag_breakdown_keys",
    "next_record_id",
    "include_descendants",
)
MONTHLY_PARAMETERS = (
    "start_month",
    "end_month",
    "fields",
    "sort_direction",
    "sort_name",
    "tag_breakdown_keys",
    "next_record_id",
    "include_descendants",
)
PERCENTAGE_FIELDS = tuple(usage.removesuffix("_usage") + "_percentage" for usage in USAGE_TYPES)
MONTHLY_FIELDS = tuple(f for pair in zip(USAGE_TYPES, PERCENTAGE_FIELDS, strict=True) for f in pair)
# Every monthly field Datadog knows: `<type>_usage` and `<type>_percentage` of each of its usage types.
# (The hourly list names a few types without `_usage`, flex_stored_logs say; the monthly field has it.)
_DATADOG_PRODUCTS = {
    usage.removesuffix("_usage").removesuffix("_percentage") for usage in DATADOG_USAGE_TYPES
}
DATADOG_MONTHLY_FIELDS = frozenset(
    f"{product}{suffix}" for product in _DATADOG_PRODUCTS for suffix in ("_usage", "_percentage")
)


def usage_type_of(field: str) -> str:
    """The usage type a monthly field reads: a `<type>_usage` itself, a `<type>_percentage` its type's."""
    return field if field.endswith("_usage") else field.removesuffix("_percentage") + "_usage"


@dataclass(frozen=True, slots=True)
class HourlyQuery:
    start: int
    end: int | None  # exclusive; None = up to the current hour (fixed by the first page)
    usage_type: str
    breakdown: tuple[str, ...] | None
    include_descendants: bool
    cursor: str | None


@dataclass(frozen=True, slots=True)
class MonthlyQuery:
    start: int
    end: int | None  # exclusive (the month after end_month); None = through the current month
    fields: tuple[str, ...]
    sort_field: str
    descending: bool
    breakdown: tuple[str, ...] | None
    include_descendants: bool
    cursor: str | None


def parse_hourly(query: Parameters) -> HourlyQuery:
    _check_known(query, HOURLY_PARAMETERS)
    start = parse_time("start_hr", _required(query, "start_hr"), month=False)
    end_text = _single(query, "end_hr")
    end = parse_time("end_hr", end_text, month=False) if end_text else None
    if end is not None and end <= start:
        raise InvalidParameter("end_hr", "must be after start_hr (end_hr is exclusive)")
    return HourlyQuery(
        start,
        end,
        _usage_type("usage_type", _required(query, "usage_type")),
        _breakdown_keys(query),
        _include_descendants(query),
        _single(query, "next_record_id"),
    )


def parse_monthly(query: Parameters) -> MonthlyQuery:
    _check_known(query, MONTHLY_PARAMETERS)
    start = parse_time("start_month", _required(query, "start_month"), month=True)
    end_text = _single(query, "end_month")
    end = add_months(parse_time("end_month", end_text, month=True), 1) if end_text else None
    if end is not None and end <= start:
        raise InvalidParameter("end_month", "must not be before start_month")
    fields = _fields(_required(query, "fields"))
    direction = _single(query, "sort_direction") or "desc"
    if direction not in ("desc", "asc"):
        raise InvalidParameter("sort_direction", f"expected desc or asc, got {direction!r}")
    sort_name = _single(query, "sort_name")
    if sort_name is None:
        sort_name = next((f for f in fields if f in USAGE_TYPES), usage_type_of(fields[0]))
    elif sort_name not in DATADOG_MONTHLY_FIELDS:
        raise InvalidParameter(
            "sort_name",
            f"unknown field {sort_name!r}; use one of {', '.join(MONTHLY_FIELDS)}",
        )
    return MonthlyQuery(
        start,
        end,
        fields,
        sort_name,
        direction == "desc",
        _breakdown_keys(query),
        _include_descendants(query),
        _single(query, "next_record_id"),
    )


_SHORT_MONTH = re.compile(r"\d{4}-\d{2}")
_SPACE_OFFSET = re.compile(r" (\d{2}(:?\d{2})?)$")


def parse_time(name: str, text: str, month: bool) -> int:
    """`YYYY-MM-DDThh` / `YYYY-MM` or any ISO-8601 datetime (Z or offset, fractions), truncated down to
    the hour or month, as epoch seconds UTC."""
    # An unescaped '+' of an offset arrives as a space in a query string.
    cleaned = _SPACE_OFFSET.sub(r"+\1", text.strip())
    if month and _SHORT_MONTH.fullmatch(cleaned):
        cleaned += "-01"
    try:
        moment = datetime.fromisoformat(cleaned)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        timestamp = moment.timestamp()
        if not month:
            return hour_of(timestamp)
        start = month_of(timestamp)
        add_months(start, 1)  # the month after must exist too (end_month is inclusive): not past 9999
        return start
    except (ValueError, OverflowError):
        expected = "YYYY-MM" if month else "YYYY-MM-DDThh"
        raise InvalidParameter(
            name, f"invalid datetime {text!r}; expected {expected} or an ISO-8601 datetime, UTC"
        ) from None


def _single(query: Parameters, name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidParameter(name, f"given {len(values)} times; give it once")
    return values[0]


def _required(query: Parameters, name: str) -> str:
    value = _single(query, name)
    if value is None or not value.strip():
        raise InvalidParameter(name, "required")
    return value


def _check_known(query: Parameters, known: tuple[str, ...]) -> None:
    for name in query:
        if name not in known:
            raise InvalidParameter(name, f"unknown parameter (known: {', '.join(known)})")


def _include_descendants(query: Parameters) -> bool:
    text = _single(query, "include_descendants")
    if text is None:
        return True
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise InvalidParameter("include_descendants", f"expected true or false, got {text!r}")


def _breakdown_keys(query: Parameters) -> tuple[str, ...] | None:
    text = _single(query, "tag_breakdown_keys")
    if text is None or not text.strip():
        return None
    keys: list[str] = []
    for key in text.split(","):
        key = key.strip()
        if not key:
            raise InvalidParameter("tag_breakdown_keys", f"empty tag key in {text!r}")
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def _usage_type(name: str, text: str) -> str:
    """One of Datadog's usage types; those this service does not record have no usage."""
    if text not in DATADOG_USAGE_TYPES:
        raise InvalidParameter(
            name,
            f"unknown usage type {text!r}; this service records {', '.join(USAGE_TYPES)}",
        )
    return text


def _fields(text: str) -> tuple[str, ...]:
    fields: list[str] = []
    for name in text.split(","):
        name = name.strip()
        if name == "*":
            candidates: tuple[str, ...] = MONTHLY_FIELDS
        elif name in DATADOG_MONTHLY_FIELDS:
            candidates = (name,)
        else:
            raise InvalidParameter(
                "fields",
                f"unknown field {name!r}; this service records {', '.join(MONTHLY_FIELDS)} (or *)",
            )
        fields.extend(f for f in candidates if f not in fields)
    return tuple(fields)
