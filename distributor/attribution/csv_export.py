"""The monthly answer as CSV, for spreadsheets: every record of the result (a spreadsheet cannot page),
one row each."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from distributor.attribution.orgs import ORG_FIELDS
from distributor.attribution.pages import MonthlyUsage, format_time


def monthly_csv(
    usage: Iterable[MonthlyUsage], breakdown: tuple[str, ...] | None, fields: tuple[str, ...]
) -> str:
    """Columns: month, the org's fields, one per breakdown key (blank where the org lacks one), then
    the requested fields."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = breakdown or ()
    writer.writerow(["month", *ORG_FIELDS, *keys, *fields])
    for record in usage:
        tags = record.tags
        writer.writerow(
            [
                format_time(record.month),
                *record.org.values(),
                *((tags[key][0] for key in keys) if tags else ("" for _ in keys)),
                *(_number(record.values[name]) for name in fields),
            ]
        )
    return out.getvalue()


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
