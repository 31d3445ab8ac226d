"""One configured forwarder: a bounded queue and a set of workers per tenant, like Tempo's forwarder
queues, so one tenant's backlog (a slow or failing backend for its traffic) never blocks another's.

Its `delivery` says what the client's 200 means:
- `queued`: the request is in this queue, in memory (`enqueue`); a SIGKILL loses what is queued.
- `synchronous`: the backend took it (`take` sends it once, at most `workers` sends per tenant at a
  time); a failure is the client's answer, and the client's retry is the retry.
- `persistent`: it is written and fsynced to the forwarder's on-disk queue (`take`), whose records the
  workers deliver like the in-memory queue's, after a restart too; only what is being sent is in memory.

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
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from distributor.common.clock import Clock
from distributor.common.discards import DiscardReason
from distributor.common.errors import DistributorError
from distributor.common.logging_setup import LimitedLog, fields
from distributor.forwarding.clients import ExportClient
from distributor.forwarding.config import PERSISTENT, QUEUED, SYNCHRONOUS, ForwarderConfig, queue_path
from distributor.forwarding.metrics import ForwarderMetrics
from distributor.forwarding.retry import Backoff, ExportFailure
from distributor.forwarding.segment_log import QueueStorageError, RecordRef, SegmentLog
from distributor.usage.tracker import Attribution

log = logging.getLogger(__name__)

# The send_failures reason of a client that raised something other than ExportFailure.
INTERNAL_ERROR = "internal_error"
RETRY_LINES_PER_REASON = 5
RETRY_LOG_WINDOW_SECONDS = 60.0


# How long a client is told to wait after a synchronous or persistent forwarder could not take its
# request, when the backend named no time.
DEFAULT_RETRY_AFTER_SECONDS = 1.0


@dataclass(slots=True)
class ForwardItem:
    tenant: str
    payload: bytes  # an encoded ExportTraceServiceRequest (b"" while it waits in a persistent queue)
    span_count: int
    attribution: Attribution | None  # to attribute the bytes if the item is dropped
    record: RecordRef | None = None  # its record in a persistent queue
    size: int = -1  # payload bytes; -1: len(payload)

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.payload)


class DeliveryRefused(DistributorError):
    """A synchronous or persistent forwarder did not take a request: the client's answer says why."""

    def __init__(
        self, forwarder: str, reason: DiscardReason, retryable: bool, message: str, retry_after: float | None
    ) -> None:
        super().__init__(message)
        self.forwarder = forwarder
        self.reason = reason
        self.retryable = retryable  # False: the backend refused it for good (a client error)
        self.retry_after = retry_after


class _KeptForNextStart(Exception):
    """A persistent forwarder is stopping: a record whose send failed is not retried now but kept."""


DropHandler = Callable[[ForwardItem, DiscardReason], None]
Sleep = Callable[[float], Awaitable[None]]


class _TenantQueue:
    def __init__(self, now: float, workers: int) -> None:
        # Unbounded as a structure: `has_room` bounds it (a persistent queue's restart brings back
        # whatever the disk holds, which a bounded asyncio.Queue could refuse).
        self.queue: asyncio.Queue[ForwardItem] = asyncio.Queue()
        self.workers: list[asyncio.Task[None]] = []
        self.send_slots = asyncio.Semaphore(workers)  # synchronous: sends in flight
        self.waiting = 0  # synchronous: requests sending or waiting for a slot
        self.queued_bytes = 0  # payloads waiting or in the workers' hands (or being sent, synchronous)
        self.last_active = now  # when a request was last queued or left the workers' hands

    def requests(self) -> int:
        return self.queue.qsize() + self.waiting

    def idle_since(self, instant: float) -> bool:
        return (
            self.queued_bytes == 0 and self.queue.empty() and not self.waiting and self.last_active <= instant
        )


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
        self.delivery = config.delivery
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
        self.log: SegmentLog | None = None
        if config.delivery == PERSISTENT:
            queue = config.persistent_queue
            self.log = SegmentLog(
                queue_path(config),
                queue.max_size_bytes,
                queue.segment_size_bytes,
                observer=metrics.queue_observer(config.name),
            )
        self._stopping = False
        self._cached_payload_bytes = 0  # persistent: payloads kept in memory besides on disk
        self._sending: set[asyncio.Task[Any]] = set()  # tasks with a send under way

    async def start(self) -> None:
        """Start the client; a persistent forwarder first opens its queue (checking every record, off
        the event loop) and queues what it holds for delivery, oldest first."""
        if self.log is not None:
            recovered = await asyncio.to_thread(self.log.open)
            self._recover(recovered)
        await self.client.start()

    def _recover(self, records: list[RecordRef]) -> None:
        if not records:
            return
        redelivered = 0
        for record in records:
            redelivered += record.was_sending
            self._queue(ForwardItem(record.tenant, b"", record.span_count, None, record, record.payload_size))
        self.metrics.redeliveries.labels(self.name).inc(redelivered)
        log.info(
            "forwarder %s: %d requests (%d spans) recovered from the persistent queue; %d of them were "
            "being sent when the process stopped and are sent again",
            self.name, len(records), sum(record.span_count for record in records), redelivered,
            extra=fields(forwarder=self.name),
        )  # fmt: skip

    def has_room(self, tenant: str, size: int) -> bool:
        """Whether a request of `size` payload bytes fits in the tenant's queue and the byte bounds
        (persistent: its on-disk queue's bound instead of the bound over all tenants)."""
        if self.log is not None:
            if not self.log.has_room(size):
                return False
        elif self._queued_bytes + size > self.config.total_queue_size_bytes:
            return False
        queue = self._tenants.get(tenant)
        if queue is None:
            return size <= self.config.queue_size_bytes
        return (
            queue.requests() < self.config.queue_size
            and queue.queued_bytes + size <= self.config.queue_size_bytes
        )

    def enqueue(self, item: ForwardItem) -> None:
        """Queued delivery: queue it; the caller checked `has_room` (nothing awaits in between)."""
        assert self.delivery == QUEUED, "synchronous and persistent forwarders take requests by `take`"
        self._queue(item)

    def take(self, item: ForwardItem) -> Coroutine[Any, Any, None]:
        """Synchronous delivery: send it now; persistent: write it to the on-disk queue. The room it
        needs is held from this call (the caller checked `has_room`); the coroutine returns once the
        backend or the disk has it, or raises DeliveryRefused having kept nothing."""
        tenant_queue = self._tenant_queue(item.tenant)
        tenant_queue.waiting += 1
        tenant_queue.queued_bytes += item.size
        self._queued_bytes += item.size
        return self._send_now(tenant_queue, item) if self.log is None else self._persist(tenant_queue, item)

    def count_partial_delivery(self) -> None:
        """This forwarder took a request that was refused to the client all the same (another forwarder
        of the tenant did not take it): the client's retry brings it a second copy."""
        self.metrics.partial_deliveries.labels(self.name).inc()

    def _tenant_queue(self, tenant: str) -> _TenantQueue:
        tenant_queue = self._tenants.get(tenant)
        if tenant_queue is None:
            tenant_queue = self._tenants[tenant] = _TenantQueue(self._clock(), self.config.workers)
            if self.delivery != SYNCHRONOUS:
                tenant_queue.workers = [
                    asyncio.create_task(self._work(tenant_queue), name=f"forwarder-{self.name}-{tenant}")
                    for _ in range(self.config.workers)
                ]
        return tenant_queue

    def _queue(self, item: ForwardItem) -> None:
        tenant_queue = self._tenant_queue(item.tenant)
        tenant_queue.queue.put_nowait(item)
        tenant_queue.last_active = self._clock()
        tenant_queue.queued_bytes += item.size
        self._queued_bytes += item.size

    def _untake(self, tenant_queue: _TenantQueue, item: ForwardItem) -> None:
        tenant_queue.waiting -= 1
        self._release(tenant_queue, item)

    async def _persist(self, tenant_queue: _TenantQueue, item: ForwardItem) -> None:
        assert self.log is not None
        try:
            item.record = await self.log.append(item.tenant, item.span_count, item.payload)
        except QueueStorageError as err:
            full = err.reason == "full"
            raise DeliveryRefused(
                self.name,
                DiscardReason.QUEUE_FULL if full else DiscardReason.QUEUE_WRITE_FAILED,
                True,
                f"forwarder {self.name}: the persistent queue "
                + ("is full (persistent_queue.max_size_bytes)" if full else f"could not store it: {err}"),
                DEFAULT_RETRY_AFTER_SECONDS,
            ) from None
        finally:
            self._untake(tenant_queue, item)
        if self._cached_payload_bytes + item.size <= self.config.total_queue_size_bytes:
            # Kept in memory as well, up to the bound a queued forwarder has: sending it then costs no
            # read back from disk (a thread hop, a pread and a checksum: end to end with 4 clients,
            # persistent/queued went from 0.56 to 0.61 in one interleaved run). Past the bound only
            # the record is held, and the payload is read when its turn comes.
            self._cached_payload_bytes += item.size
        else:
            item.payload = b""
        self._queue(item)

    async def _send_now(self, tenant_queue: _TenantQueue, item: ForwardItem) -> None:
        try:
            try:
                # A slot frees when a send ends, each within `timeout`: waiting longer than one send
                # may take means the backend is not keeping up.
                await asyncio.wait_for(tenant_queue.send_slots.acquire(), self.config.timeout)
            except TimeoutError:
                raise DeliveryRefused(
                    self.name,
                    DiscardReason.FORWARD_UNAVAILABLE,
                    True,
                    f"forwarder {self.name}: {self.config.workers} sends for tenant {item.tenant} are in "
                    f"flight and none ended within {self.config.timeout:g}s; retry later",
                    DEFAULT_RETRY_AFTER_SECONDS,
                ) from None
            try:
                failure = await self._attempt(item)
            finally:
                tenant_queue.send_slots.release()
        finally:
            self._untake(tenant_queue, item)
        if failure is None:
            return
        if isinstance(failure, ExportFailure):
            raise DeliveryRefused(
                self.name,
                DiscardReason.FORWARD_UNAVAILABLE if failure.retryable else DiscardReason.FORWARD_REJECTED,
                failure.retryable,
                f"forwarder {self.name}: the backend "
                + ("is unavailable" if failure.retryable else "refused the request")
                + f" ({failure.reason}): {failure.message}",
                (failure.retry_after or DEFAULT_RETRY_AFTER_SECONDS) if failure.retryable else None,
            )
        raise DeliveryRefused(
            self.name,
            DiscardReason.FORWARD_INTERNAL_ERROR,
            True,
            f"forwarder {self.name}: internal error sending the request",
            DEFAULT_RETRY_AFTER_SECONDS,
        )

    def queue_lengths(self) -> Iterator[tuple[str, int]]:
        """(tenant, requests waiting) for every tenant with a queue (synchronous: being sent)."""
        # Read by /metrics on a worker thread while the loop may add a tenant: dict.copy() is atomic.
        for tenant, tenant_queue in self._tenants.copy().items():
            yield tenant, tenant_queue.requests()

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
        while not self._stopping:
            item = await tenant_queue.queue.get()
            self._held[id(item)] = item
            try:
                if item.record is None:
                    await self._deliver(item)
                else:
                    await self._deliver_record(item, item.record)
            finally:
                self._held.pop(id(item), None)
                self._release(tenant_queue, item)
                tenant_queue.queue.task_done()

    async def _deliver_record(self, item: ForwardItem, record: RecordRef) -> None:
        """A record of the persistent queue: read, marked as being sent (so that a restart counts it as
        a redelivery), delivered or dropped, then acknowledged. A send cut off by the stop is not
        acknowledged: the record is delivered after the restart."""
        assert self.log is not None
        cached = bool(item.payload)
        try:
            if not cached:
                item.payload = await self.log.read(record)
        except QueueStorageError as err:
            log.error(
                "forwarder %s: a queued request of tenant %s (%d spans) could not be read back, dropped: %s",
                self.name, item.tenant, item.span_count, err,
            )  # fmt: skip
            self._drop(item, DiscardReason.QUEUE_CORRUPT)
        else:
            self.log.mark_sending(record)
            try:
                await self._deliver(item)
            except _KeptForNextStart:
                return  # not acknowledged: delivered after the next start
            finally:
                item.payload = b""
                if cached:
                    self._cached_payload_bytes -= item.size
        self.log.acknowledge(record)

    def _release(self, tenant_queue: _TenantQueue, item: ForwardItem) -> None:
        tenant_queue.queued_bytes -= item.size
        self._queued_bytes -= item.size
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

    async def _attempt(self, item: ForwardItem) -> ExportFailure | Exception | None:
        """One send, measured and counted: None when the backend took it, else what went wrong (an
        ExportFailure, or any other exception: a bug in the client, logged here)."""
        sender = asyncio.current_task()
        assert sender is not None
        self._sending.add(sender)  # a stopping persistent forwarder waits for these, not for backoffs
        try:
            return await self._send_once(item)
        finally:
            self._sending.discard(sender)

    async def _send_once(self, item: ForwardItem) -> ExportFailure | Exception | None:
        started = self._clock()
        try:
            rejected = await self.client.export(item.tenant, item.payload)
        except ExportFailure as failure:
            self.metrics.send_duration.labels(self.name, "failure").observe(self._clock() - started)
            self.metrics.send_failures.labels(self.name, failure.reason).inc()
            return failure
        except Exception as err:
            self.metrics.send_duration.labels(self.name, "failure").observe(self._clock() - started)
            self.metrics.send_failures.labels(self.name, INTERNAL_ERROR).inc()
            log.error(
                "forwarder %s: the client failed unexpectedly on %d spans of tenant %s: %r",
                self.name, item.span_count, item.tenant, err, exc_info=err,
            )  # fmt: skip
            return err
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
        return None

    async def _deliver(self, item: ForwardItem) -> None:
        """Send until delivered, retrying as configured; returns once delivered or dropped (counted)."""
        retry = self.config.retry
        first_attempt = self._clock()
        attempt = 0
        while True:
            failure = await self._attempt(item)
            if failure is None:
                return
            if isinstance(failure, ExportFailure):
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
                if self._stopping:
                    raise _KeptForNextStart  # persistent: the record waits on disk, not in a retry
                await self._sleep(delay)
                continue
            log.error(
                "forwarder %s: %d spans of tenant %s dropped after an unexpected client failure",
                self.name, item.span_count, item.tenant,
            )  # fmt: skip
            self._drop(item, DiscardReason.FORWARD_INTERNAL_ERROR)
            return

    async def _stop_persistent(self, queue_log: SegmentLog, deadline: float) -> None:
        self._stopping = True  # a worker ending its send takes no other, and retries nothing
        workers = [worker for queue in self._tenants.values() for worker in queue.workers]
        busy = [worker for worker in workers if worker in self._sending]
        for worker in workers:
            if worker not in self._sending:
                # Waiting for an item, or for a retry: nothing is cut off, the record stays on disk.
                worker.cancel()
        if busy:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait(busy, timeout=timeout)
        cut_off = sum(not worker.done() for worker in busy)
        for worker in workers:
            worker.cancel()  # a send still in flight is not acknowledged: it is sent again after a restart
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._tenants.clear()
        self._held.clear()
        kept = queue_log.pending_records()
        await queue_log.close()
        if kept:
            log.info(
                "forwarder %s: %d requests kept in the persistent queue for the next start (%d of them "
                "were being sent at the shutdown timeout and will be sent again)",
                self.name, kept, cut_off, extra=fields(forwarder=self.name),
            )  # fmt: skip

    def _drop(self, item: ForwardItem, reason: DiscardReason) -> None:
        self.dropped_requests += 1
        self.metrics.dropped_requests.labels(self.name, item.tenant, reason).inc()
        self.metrics.dropped_spans.labels(self.name, item.tenant, reason).inc(item.span_count)
        self._on_drop(item, reason)

    async def stop(self, deadline: float) -> None:
        """Deliver what is queued until `deadline` (event loop time), then stop the workers; whatever is
        still undelivered is dropped (counted in `dropped_requests` and the metrics, and logged). A
        persistent forwarder instead finishes the sends in flight until `deadline` and keeps the rest
        on disk for the next start. The client is closed last, so a client that fails to close costs
        no accounting."""
        if self.log is not None:
            await self._stop_persistent(self.log, deadline)
            await self.client.close()
            return
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
