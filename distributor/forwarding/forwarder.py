"""One configured forwarder: a bounded queue and a set of workers per tenant, like Tempo's forwarder
queues, so one tenant's backlog (a slow or failing backend for its traffic) never blocks another's.

A tenant's queue and workers exist only while it has traffic: they are made by its first request and
released once it has had nothing queued or being sent for `idle_tenant_timeout`, so tenants that come
and go cost nothing once gone.

Nothing is lost silently. A request is only accepted when every forwarder of its tenant has room
(checked by the pipeline before anything is accounted): room in requests waiting for the tenant, and in
payload bytes waiting or being sent, for the tenant and over all tenants, so that a hanging backend
costs bounded memory however many tenants send. Every request that later leaves a queue
without delivery goes through `on_drop` with a reason, which counts it. A client that raises anything
but ExportFailure (a bug) costs the item it held, counted as `forward_internal_error`, and its worker
goes on with the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from distributor.common.clock import Clock
from distributor.common.discards import DiscardReason
from distributor.common.logging_setup import LimitedLog
from distributor.forwarding.clients import ExportClient
from distributor.forwarding.config import ForwarderConfig
from distributor.forwarding.metrics import ForwarderMetrics
from distributor.forwarding.retry import Backoff, ExportFailure
from distributor.usage.tracker import Attribution

log = logging.getLogger(__name__)

# The send_failures reason of a client that raised something other than ExportFailure.
INTERNAL_ERROR = "internal_error"
RETRY_LINES_PER_REASON = 5
RETRY_LOG_WINDOW_SECONDS = 60.0


@dataclass(slots=True)
class ForwardItem:
    tenant: str
    payload: bytes  # an encoded ExportTraceServiceRequest
    span_count: int
    attribution: Attribution | None  # to attribute the bytes if the item is dropped


DropHandler = Callable[[ForwardItem, DiscardReason], None]
Sleep = Callable[[float], Awaitable[None]]


class _TenantQueue:
    def __init__(self, size: int, now: float) -> None:
        self.queue: asyncio.Queue[ForwardItem] = asyncio.Queue(maxsize=size)
        self.workers: list[asyncio.Task[None]] = []
        self.queued_bytes = 0  # payloads waiting or in the workers' hands
        self.last_active = now  # when a request was last queued or left the workers' hands

    def idle_since(self, instant: float) -> bool:
        return self.queued_bytes == 0 and self.queue.empty() and self.last_active <= instant


class Forwarder:
    def __init__(
        self,
        config: ForwarderConfig,
        client: ExportClient,
        metrics: ForwarderMetrics,
        on_drop: DropHandler,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.client = client
        self.metrics = metrics
        self._on_drop = on_drop
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff or Backoff(config.retry)
        self._tenants: dict[str, _TenantQueue] = {}
        self._held: dict[int, ForwardItem] = {}  # what workers are delivering, by id
        self._queued_bytes = 0  # payloads waiting or in the workers' hands, over all tenants
        self.dropped_requests = 0  # for any reason, since start
        # While a backend is down every queued request retries: one line per failure reason and minute
        # at most (the retries are all counted in tempo_distributor_forwarder_retries_total).
        self._retry_lines = LimitedLog(log, RETRY_LINES_PER_REASON, RETRY_LOG_WINDOW_SECONDS, clock)

    async def start(self) -> None:
        await self.client.start()

    def has_room(self, tenant: str, size: int) -> bool:
        """Whether a request of `size` payload bytes fits in the tenant's queue and the byte bounds."""
        if self._queued_bytes + size > self.config.total_queue_size_bytes:
            return False
        queue = self._tenants.get(tenant)
        if queue is None:
            return size <= self.config.queue_size_bytes
        return not queue.queue.full() and queue.queued_bytes + size <= self.config.queue_size_bytes

    def enqueue(self, item: ForwardItem) -> None:
        """Queue for delivery; the caller checked `has_room` (nothing awaits in between)."""
        tenant_queue = self._tenants.get(item.tenant)
        if tenant_queue is None:
            tenant_queue = self._tenants[item.tenant] = _TenantQueue(self.config.queue_size, self._clock())
            tenant_queue.workers = [
                asyncio.create_task(self._work(tenant_queue), name=f"forwarder-{self.name}-{item.tenant}")
                for _ in range(self.config.workers)
            ]
        tenant_queue.queue.put_nowait(item)
        tenant_queue.last_active = self._clock()
        tenant_queue.queued_bytes += len(item.payload)
        self._queued_bytes += len(item.payload)

    def queue_lengths(self) -> Iterator[tuple[str, int]]:
        """(tenant, requests waiting) for every tenant with a queue."""
        # Read by /metrics on a worker thread while the loop may add a tenant: dict.copy() is atomic.
        for tenant, tenant_queue in self._tenants.copy().items():
            yield tenant, tenant_queue.queue.qsize()

    def queued_bytes(self, tenant: str | None = None) -> int:
        """Payload bytes waiting or in the workers' hands: the tenant's, or over all tenants."""
        if tenant is None:
            return self._queued_bytes
        tenant_queue = self._tenants.get(tenant)
        return 0 if tenant_queue is None else tenant_queue.queued_bytes

    def pending(self) -> int:
        """Requests not yet delivered or dropped: queued plus in the workers' hands."""
        return sum(q.queue.qsize() for q in self._tenants.values()) + len(self._held)

    async def _work(self, tenant_queue: _TenantQueue) -> None:
        while True:
            item = await tenant_queue.queue.get()
            self._held[id(item)] = item
            try:
                await self._deliver(item)
            finally:
                self._held.pop(id(item), None)
                self._release(tenant_queue, item)
                tenant_queue.queue.task_done()

    def _release(self, tenant_queue: _TenantQueue, item: ForwardItem) -> None:
        tenant_queue.queued_bytes -= len(item.payload)
        self._queued_bytes -= len(item.payload)
        tenant_queue.last_active = self._clock()

    async def release_idle_tenants(self) -> int:
        """Release the queue and workers of every tenant that has had nothing queued or being sent
        for `idle_tenant_timeout`; returns how many were released."""
        idle_since = self._clock() - self.config.idle_tenant_timeout
        idle = [tenant for tenant, queue in self._tenants.items() if queue.idle_since(idle_since)]
        workers: list[asyncio.Task[None]] = []
        for tenant in idle:
            workers += self._tenants.pop(tenant).workers
        for worker in workers:
            worker.cancel()  # each waits for its queue's next item: nothing is cut off
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        return len(idle)

    async def _deliver(self, item: ForwardItem) -> None:
        retry = self.config.retry
        first_attempt = self._clock()
        attempt = 0
        while True:
            started = self._clock()
            try:
                rejected = await self.client.export(item.tenant, item.payload)
            except ExportFailure as failure:
                self.metrics.send_duration.labels(self.name, "failure").observe(self._clock() - started)
                self.metrics.send_failures.labels(self.name, failure.reason).inc()
                if not failure.retryable:
                    log.warning(
                        "forwarder %s: backend refused %d spans of tenant %s for good (%s), dropped",
                        self.name, item.span_count, item.tenant, failure,
                    )  # fmt: skip
                    self._drop(item, DiscardReason.FORWARD_REJECTED)
                    return
                delay = self._backoff.delay(attempt, failure.retry_after)
                elapsed = self._clock() - first_attempt
                if not retry.enabled or (
                    retry.max_elapsed_time > 0 and elapsed + delay > retry.max_elapsed_time
                ):
                    log.warning(
                        "forwarder %s: giving up on %d spans of tenant %s after %d attempts over %.1fs "
                        "(last: %s), dropped",
                        self.name, item.span_count, item.tenant, attempt + 1, elapsed, failure,
                    )  # fmt: skip
                    self._drop(item, DiscardReason.FORWARD_RETRIES_EXHAUSTED)
                    return
                self.metrics.retries.labels(self.name, failure.reason).inc()
                self._retry_lines.log(
                    logging.INFO,
                    failure.reason,
                    "forwarder %s: sending %d spans of tenant %s failed (%s), retrying in %.1fs (attempt %d)",
                    self.name, item.span_count, item.tenant, failure, delay, attempt + 1,
                    forwarder=self.name, tenant=item.tenant,
                )  # fmt: skip
                attempt += 1
                await self._sleep(delay)
                continue
            except Exception as err:
                self.metrics.send_duration.labels(self.name, "failure").observe(self._clock() - started)
                self.metrics.send_failures.labels(self.name, INTERNAL_ERROR).inc()
                log.error(
                    "forwarder %s: the client failed unexpectedly on %d spans of tenant %s, dropped: %r",
                    self.name, item.span_count, item.tenant, err, exc_info=err,
                )  # fmt: skip
                self._drop(item, DiscardReason.FORWARD_INTERNAL_ERROR)
                return
            self.metrics.send_duration.labels(self.name, "success").observe(self._clock() - started)
            self.metrics.sent_requests.labels(self.name, item.tenant).inc()
            self.metrics.sent_spans.labels(self.name, item.tenant).inc(item.span_count - rejected)
            self.metrics.sent_bytes.labels(self.name, item.tenant).inc(len(item.payload))
            if rejected:
                # The backend names no spans, so no bytes can be attributed: counted, and logged.
                self.metrics.rejected_spans.labels(self.name, item.tenant).inc(rejected)
                log.warning(
                    "forwarder %s: backend rejected %d of %d spans of tenant %s (partial success)",
                    self.name, rejected, item.span_count, item.tenant,
                )  # fmt: skip
            return

    def _drop(self, item: ForwardItem, reason: DiscardReason) -> None:
        self.dropped_requests += 1
        self.metrics.dropped_requests.labels(self.name, item.tenant, reason).inc()
        self.metrics.dropped_spans.labels(self.name, item.tenant, reason).inc(item.span_count)
        self._on_drop(item, reason)

    async def stop(self, deadline: float) -> None:
        """Deliver what is queued until `deadline` (event loop time), then stop the workers; whatever is
        still undelivered is dropped (counted in `dropped_requests` and the metrics, and logged). The
        client is closed last, so a client that fails to close costs no accounting."""
        waits = [tenant_queue.queue.join() for tenant_queue in self._tenants.values()]
        if waits:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)
        undelivered: list[ForwardItem] = list(self._held.values())
        for tenant_queue in self._tenants.values():
            for worker in tenant_queue.workers:
                worker.cancel()
            while not tenant_queue.queue.empty():
                item = tenant_queue.queue.get_nowait()
                self._release(tenant_queue, item)
                undelivered.append(item)
        for tenant_queue in self._tenants.values():
            for worker in tenant_queue.workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        self._tenants.clear()
        self._held.clear()
        if undelivered:
            by_tenant: dict[str, list[int]] = {}  # tenant -> [requests, spans]
            for item in undelivered:
                counts = by_tenant.setdefault(item.tenant, [0, 0])
                counts[0] += 1
                counts[1] += item.span_count
                self._drop(item, DiscardReason.FORWARD_UNDELIVERED_AT_SHUTDOWN)
            log.error(
                "forwarder %s: shutdown timeout reached with %d requests (%d spans) undelivered: %s",
                self.name,
                len(undelivered),
                sum(spans for _, spans in by_tenant.values()),
                ", ".join(
                    f"tenant {tenant}: {requests} requests, {spans} spans"
                    for tenant, (requests, spans) in sorted(by_tenant.items())
                ),
            )
        await self.client.close()
