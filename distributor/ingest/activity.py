"""Which tenants are active: the one record of when each tenant last sent spans, from which the
per-tenant state kept outside the usage tracker (the process metrics' series) is released once the
tenant has been idle for a period.

Kept in order of last activity, so a sweep reads only the tenants it releases and the first one it
keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from distributor.common.clock import Clock

# Told the tenants just released, to drop what it keeps for them.
ReleaseHandler = Callable[[Sequence[str]], None]
# Whether something still works for the tenant (a forwarder holds its requests): it is not idle then.
BusyCheck = Callable[[str], bool]


class TenantActivity:
    def __init__(self, clock: Clock, idle_after: float) -> None:
        self._clock = clock
        self.idle_after = idle_after
        self._last_seen: dict[str, float] = {}  # oldest activity first
        self._on_release: list[ReleaseHandler] = []
        self._busy: list[BusyCheck] = []

    def __len__(self) -> int:
        return len(self._last_seen)

    def __contains__(self, tenant: str) -> bool:
        return tenant in self._last_seen

    def on_release(self, handler: ReleaseHandler) -> None:
        self._on_release.append(handler)

    def busy_while(self, check: BusyCheck) -> None:
        self._busy.append(check)

    def seen(self, tenant: str) -> None:
        """The tenant sent a request with spans now."""
        self._last_seen.pop(tenant, None)  # moved to the end: the most recent
        self._last_seen[tenant] = self._clock()

    def release_idle(self) -> int:
        """Release every tenant not seen for `idle_after` and not busy, telling the handlers; a busy
        one counts as seen now. Returns how many were released."""
        now = self._clock()
        cutoff = now - self.idle_after
        idle: list[str] = []
        busy: list[str] = []
        for tenant, last_seen in self._last_seen.items():
            if last_seen > cutoff:
                break
            (busy if any(check(tenant) for check in self._busy) else idle).append(tenant)
        for tenant in idle:
            del self._last_seen[tenant]
        for tenant in busy:
            self.seen(tenant)
        if idle:
            for handler in self._on_release:
                handler(idle)
        return len(idle)
