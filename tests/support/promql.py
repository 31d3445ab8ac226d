"""Reading PromQL as far as the tests of the monitoring examples need: which metrics an expression
selects, with which label matchers, and which rule names it reads. Grafana's template variables
($tenant, ${datasource}, [[name]]) may appear anywhere; they are read as placeholders."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words of the language that look like metric names where they stand.
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
    | {"offset", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A name not inside another word or a number (5m, 1e3, 0.5).
_NAME = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass(frozen=True, slots=True)
class Selector:
    metric: str
    matchers: str  # the text between the braces as written, "" when there are none


def _blank(text: str, pattern: re.Pattern[str], keep_ends: bool = False) -> str:
    """`text` with every match of `pattern` replaced by spaces of the same length (the ends kept when
    `keep_ends`), so positions still line up with the original."""

    def spaces(match: re.Match[str]) -> str:
        found = match.group(0)
        if keep_ends and len(found) >= 2:
            return found[0] + " " * (len(found) - 2) + found[-1]
        return " " * len(found)

    return pattern.sub(spaces, text)


def selectors(expression: str) -> list[Selector]:
    """Every vector selector of `expression`, in order: metric names with their matchers. Functions,
    aggregations, keywords, label names (in matchers and grouping clauses), durations and strings are
    not selectors."""
    # Strings and variables first: they may hold anything, braces and names included.
    masked = _blank(_blank(expression, _STRING, keep_ends=True), _VARIABLE)
    # Then what holds names that are not metrics: matchers, ranges and grouping labels.
    names_only = _blank(masked, re.compile(r"\{[^}]*\}"), keep_ends=True)
    names_only = _blank(names_only, re.compile(r"\[[^\]]*\]"), keep_ends=True)
    names_only = _blank(names_only, _GROUPING)
    found: list[Selector] = []
    for match in _NAME.finditer(names_only):
        name = match.group(0)
        rest = names_only[match.end() :].lstrip()
        if name.lower() in KEYWORDS or rest.startswith("("):
            continue  # a keyword, or a function or aggregation called
        matchers = ""
        if rest.startswith("{"):
            start = masked.index("{", match.end())
            matchers = expression[start + 1 : masked.index("}", start)].strip()
        found.append(Selector(name, matchers))
    return found


def metric_names(expression: str) -> set[str]:
    return {selector.metric for selector in selectors(expression)}


def is_recorded(name: str) -> bool:
    """A recording rule's name: level:metric:operations (exposed metrics have no colon)."""
    return ":" in name


def filters_tenant(selector: Selector, variable: str = "tenant") -> bool:
    """The selector keeps only the tenants chosen in the dashboard's variable."""
    return re.search(rf'(?:^|,)\s*tenant\s*=~\s*"\${variable}"', selector.matchers) is not None
