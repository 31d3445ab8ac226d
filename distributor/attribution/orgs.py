"""Orgs: every tenant is one; the configuration may name it, give it a public id and a parent."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from distributor.attribution.config import UsageAttributionConfig, parent_chain


@dataclass(frozen=True, slots=True)
class Org:
    org_id: str
    name: str
    public_id: str
    region: str
    parent: str


ORG_FIELDS = ("org_name", "public_id", "region", "tag_config_source")


@dataclass(frozen=True, slots=True)
class OrgFields:
    """What every record says of its org: ORG_FIELDS, in the order Datadog's records list them."""

    org_name: str
    public_id: str
    region: str
    tag_config_source: str

    def values(self) -> tuple[str, str, str, str]:
        return (self.org_name, self.public_id, self.region, self.tag_config_source)


class OrgDirectory:
    def __init__(self, config: UsageAttributionConfig) -> None:
        self.region = config.region
        self._configured = {org.org_id: org for org in config.orgs}
        self._cache: dict[str, Org] = {}

    def org(self, org_id: str) -> Org:
        org = self._cache.get(org_id)
        if org is None:
            configured = self._configured.get(org_id)
            org = self._cache[org_id] = Org(
                org_id,
                (configured.name if configured else "") or org_id,
                (configured.public_id if configured else "") or default_public_id(org_id),
                self.region,
                configured.parent if configured else "",
            )
        return org

    def visible(self, key_org: str, include_descendants: bool, tenants: list[str]) -> list[str]:
        """The orgs among `tenants` a key of `key_org` reads: its own, and its descendants if asked."""
        return [t for t in tenants if t == key_org or (include_descendants and self.descends(t, key_org))]

    def descends(self, org_id: str, ancestor: str) -> bool:
        chain, _ = parent_chain(org_id, lambda org: self.org(org).parent)
        return ancestor in chain


def default_public_id(org_id: str) -> str:
    """Stable across restarts and replicas, and not the tenant id itself."""
    return hashlib.sha256(f"org:{org_id}".encode()).hexdigest()[:16]


def tag_config_source(org: Org, tags: tuple[str, ...]) -> str:
    return f"{org.name}:::{'///'.join(tags)}"


def org_describer(org_tags: Callable[[str], tuple[str, ...]]) -> Callable[[Org], OrgFields]:
    """The fields of each org, worked out once per answer: an answer reads the attribution tags as
    they are when it is given, and a page of 500 records has only a few orgs."""
    described: dict[str, OrgFields] = {}

    def describe(org: Org) -> OrgFields:
        fields = described.get(org.org_id)
        if fields is None:
            fields = described[org.org_id] = OrgFields(
                org.name, org.public_id, org.region, tag_config_source(org, org_tags(org.org_id))
            )
        return fields

    return describe
