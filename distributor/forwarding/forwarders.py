"""Every configured forwarder, by name: started together, and stopped together at shutdown with one
account of what was queued and what could not be delivered in time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

from distributor.common.lifecycle import StopFailed, stop_together
from distributor.forwarding.clients import ExportClient, create_client
from distributor.forwarding.config import ForwarderConfig
from distributor.forwarding.forwarder import DropHandler, Forwarder
from distributor.forwarding.metrics import ForwarderMetrics

log = logging.getLogger(__name__)


class Forwarders(Mapping[str, Forwarder]):
    def __init__(
        self,
        configs: Sequence[ForwarderConfig],
        metrics: ForwarderMetrics,
        on_drop: DropHandler,
        client_for: Callable[[ForwarderConfig], ExportClient] = create_client,
    ) -> None:
        self._forwarders: dict[str, Forwarder] = {}
        for config in configs:
            forwarder = Forwarder(config, client_for(config), metrics, on_drop)
            self._forwarders[forwarder.name] = forwarder
            metrics.watch_queues(
                forwarder.name, config.queue_size, forwarder.queue_lengths, forwarder.queued_bytes
            )
            if forwarder.log is not None:
                metrics.watch_persistent_queue(forwarder.name, forwarder.log)

    def __getitem__(self, name: str) -> Forwarder:
        return self._forwarders[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._forwarders)

    def __len__(self) -> int:
        return len(self._forwarders)

    async def start(self) -> None:
        for forwarder in self._forwarders.values():
            await forwarder.start()

    def hold_requests_of(self, tenant: str) -> bool:
        """Whether any forwarder still has requests of the tenant waiting or being sent."""
        return any(forwarder.queued_bytes(tenant) for forwarder in self._forwarders.values())

    async def release_idle_tenants(self) -> int:
        """Release the queues and workers of tenants idle past each forwarder's idle_tenant_timeout;
        returns how many were released over all forwarders."""
        released = 0
        for forwarder in self._forwarders.values():
            released += await forwarder.release_idle_tenants()
        return released

    async def stop(self, deadline: float) -> None:
        """Deliver what the queues hold until `deadline`; what is left is dropped and counted by each
        forwarder. Every forwarder is stopped even when one fails to."""
        # A persistent forwarder keeps what it has not sent on disk: not pending, not lost.
        pending = sum(forwarder.pending() for forwarder in self._forwarders.values() if forwarder.log is None)
        if pending:
            log.info("delivering %d queued requests before exit", pending)
        dropped_before = self._dropped_requests()
        failures = await stop_together(
            ((f"forwarder {name}", forwarder) for name, forwarder in self._forwarders.items()), deadline
        )
        dropped = self._dropped_requests() - dropped_before
        if pending and not dropped:
            log.info("all queued requests delivered")
        elif pending:
            log.warning("%d of %d queued requests were not delivered (see above)", dropped, pending)
        if failures:
            raise StopFailed(failures)

    def _dropped_requests(self) -> int:
        return sum(forwarder.dropped_requests for forwarder in self._forwarders.values())
