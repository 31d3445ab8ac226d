"""The overrides in force: one reference swapped atomically, so a request sees one whole snapshot."""

from __future__ import annotations

from distributor.overrides.model import OverridesSnapshot, TenantLimits


class OverridesProvider:
    def __init__(self, snapshot: OverridesSnapshot) -> None:
        self._snapshot = snapshot

    @property
    def snapshot(self) -> OverridesSnapshot:
        return self._snapshot

    def for_tenant(self, tenant: str) -> TenantLimits:
        return self._snapshot.for_tenant(tenant)

    def replace(self, snapshot: OverridesSnapshot) -> None:
        # A single attribute store: readers on the event loop see either the old or the new snapshot.
        self._snapshot = snapshot
