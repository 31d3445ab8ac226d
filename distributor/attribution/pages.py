"""What the API answers, typed, and each answer as the document of Datadog's reference (times in
ISO-8601 UTC), which the official clients read unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from distributor.attribution.orgs import ORG_FIELDS, OrgFields
from distributor.attribution.records import Aggregate

# The tags of a record: {} without a breakdown, None when the org lacks a breakdown key.
TagsDocument = dict[str, list[str]] | None


def tags_document(breakdown: tuple[str, ...] | None, values: tuple[str, ...] | None) -> TagsDocument:
    if values is None:
        return None
    if breakdown is None:
        return {}
    return {key: [value] for key, value in zip(breakdown, values, strict=True)}


def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


class _OrgDocuments:
    """Each org's fields as a document once per page: a page of 500 records has a few orgs."""

    def __init__(self) -> None:
        self._documents: dict[OrgFields, dict[str, str]] = {}

    def of(self, org: OrgFields) -> dict[str, str]:
        document = self._documents.get(org)
        if document is None:
            document = self._documents[org] = dict(zip(ORG_FIELDS, org.values(), strict=True))
        return document


@dataclass(frozen=True, slots=True)
class HourlyUsage:
    hour: int
    org: OrgFields
    tags: TagsDocument
    total_usage_sum: float


@dataclass(frozen=True, slots=True)
class HourlyPage:
    usage: list[HourlyUsage]
    usage_type: str
    updated_at: int  # every record's: the most recent hour usage had been calculated for, as of the snapshot
    next_record_id: str | None  # None on the last page

    def document(self) -> dict[str, Any]:
        updated_at = format_time(self.updated_at)
        orgs = _OrgDocuments()
        usage = [
            {
                "hour": format_time(record.hour),
                **orgs.of(record.org),
                "tags": record.tags,
                "total_usage_sum": record.total_usage_sum,
                "updated_at": updated_at,
                "usage_type": self.usage_type,
            }
            for record in self.usage
        ]
        return {"metadata": {"pagination": {"next_record_id": self.next_record_id}}, "usage": usage}


@dataclass(frozen=True, slots=True)
class MonthlyUsage:
    month: int
    org: OrgFields
    tags: TagsDocument
    values: dict[str, float]  # exactly the requested fields, in their order
    # The 95% confidence interval of each requested distinct count (`<type>_usage`): the CSV shows them.
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MonthlyPage:
    usage: list[MonthlyUsage]
    updated_at: int  # every record's: the most recent hour usage had been calculated for, as of the snapshot
    aggregates: tuple[Aggregate, ...]  # over every page
    next_record_id: str | None  # None on the last page

    def document(self) -> dict[str, Any]:
        updated_at = format_time(self.updated_at)
        orgs = _OrgDocuments()
        usage = [
            {
                "month": format_time(record.month),
                **orgs.of(record.org),
                "tags": record.tags,
                "updated_at": updated_at,
                "values": record.values,
            }
            for record in self.usage
        ]
        aggregates = [
            {"agg_type": "sum", "field": aggregate.field, "value": aggregate.value}
            for aggregate in self.aggregates
        ]
        return {
            "metadata": {"aggregates": aggregates, "pagination": {"next_record_id": self.next_record_id}},
            "usage": usage,
        }


@dataclass(frozen=True, slots=True)
class UsageTypes:
    values: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        return {
            "data": {
                "attributes": {"values": list(self.values)},
                "id": "usage_attribution_types",
                "type": "usage_attribution_types",
            }
        }
