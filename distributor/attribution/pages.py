"""What the API answers, typed, and each answer as the document of Datadog's reference (times in
ISO-8601 UTC), which the official clients read unchanged."""

from __future__ import annotations

from dataclasses import dataclass
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


def _org_document(org: OrgFields) -> dict[str, str]:
    return dict(zip(ORG_FIELDS, org.values(), strict=True))


@dataclass(frozen=True, slots=True)
class HourlyUsage:
    hour: int
    org: OrgFields
    tags: TagsDocument
    total_usage_sum: float
    updated_at: int  # the most recent hour usage had been calculated for, as of the snapshot
    usage_type: str

    def document(self) -> dict[str, Any]:
        return {
            "hour": format_time(self.hour),
            **_org_document(self.org),
            "tags": self.tags,
            "total_usage_sum": self.total_usage_sum,
            "updated_at": format_time(self.updated_at),
            "usage_type": self.usage_type,
        }


@dataclass(frozen=True, slots=True)
class HourlyPage:
    usage: list[HourlyUsage]
    next_record_id: str | None  # None on the last page

    def document(self) -> dict[str, Any]:
        return {
            "metadata": {"pagination": {"next_record_id": self.next_record_id}},
            "usage": [record.document() for record in self.usage],
        }


@dataclass(frozen=True, slots=True)
class MonthlyUsage:
    month: int
    org: OrgFields
    tags: TagsDocument
    updated_at: int  # the most recent hour usage had been calculated for, as of the snapshot
    values: dict[str, float]  # exactly the requested fields, in their order

    def document(self) -> dict[str, Any]:
        return {
            "month": format_time(self.month),
            **_org_document(self.org),
            "tags": self.tags,
            "updated_at": format_time(self.updated_at),
            "values": self.values,
        }


@dataclass(frozen=True, slots=True)
class MonthlyPage:
    usage: list[MonthlyUsage]
    aggregates: tuple[Aggregate, ...]  # over every page
    next_record_id: str | None  # None on the last page

    def document(self) -> dict[str, Any]:
        return {
            "metadata": {
                "aggregates": [
                    {"agg_type": "sum", "field": aggregate.field, "value": aggregate.value}
                    for aggregate in self.aggregates
                ],
                "pagination": {"next_record_id": self.next_record_id},
            },
            "usage": [record.document() for record in self.usage],
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
