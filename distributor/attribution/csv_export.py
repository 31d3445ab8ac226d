"""The monthly answer as CSV, for spreadsheets: every record of the result (a spreadsheet cannot page),
one row each.

Tag values and org names come from tenants, and a spreadsheet runs a cell that starts with `=`, `+`,
`-` or `@` (also after a tab or carriage return) as a formula: OWASP's "CSV Injection" advice is to
start such a text cell with a single quote, which spreadsheets show as text, and to quote every text
cell: a carriage return inside one then stays in its cell (the csv module does not quote it when rows
end in a bare newline). Numbers are never touched.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from distributor.attribution.orgs import ORG_FIELDS
from distributor.attribution.pages import MonthlyUsage, format_time
from distributor.ledger.ledger import DISTINCT_USAGE_TYPES


def monthly_csv(
    usage: Iterable[MonthlyUsage], breakdown: tuple[str, ...] | None, fields: tuple[str, ...]
) -> str:
    """Columns: month, the org's fields, one per breakdown key (blank where the org lacks one), the
    requested fields, then for each requested distinct count (`<type>_usage` of sessions or hosts) the
    95% confidence bounds of its value, `<type>_usage_lower_bound` and `<type>_usage_upper_bound`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    keys = breakdown or ()
    counted = [name for name in fields if name in DISTINCT_USAGE_TYPES]
    bound_columns = [f"{name}_{side}_bound" for name in counted for side in ("lower", "upper")]
    writer.writerow([_text(name) for name in ("month", *ORG_FIELDS, *keys, *fields, *bound_columns)])
    for record in usage:
        tags = record.tags
        writer.writerow(
            [
                format_time(record.month),
                *(_text(value) for value in record.org.values()),
                *((_text(tags[key][0]) for key in keys) if tags else ("" for _ in keys)),
                *(_number(record.values[name]) for name in fields),
                *(_number(float(bound)) for name in counted for bound in record.bounds.get(name, (0.0, 0.0))),
            ]
        )
    return out.getvalue()


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    """A text cell a spreadsheet shows as text, never runs as a formula."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value
