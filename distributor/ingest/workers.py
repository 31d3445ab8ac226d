"""Bounded pools for the CPU-heavy steps of large requests, so that none holds the event loop: gzip
inflation, OTLP/JSON conversion, and the scan of a large body.

A step on at most `inline_max_bytes` runs inline (a hand-over costs more than the work of a small
request). A larger one runs elsewhere:
- inflation and the scan on one of `workers` threads: zlib and the compiled core release the
  interpreter lock while they work, so the loop runs beside them;
- OTLP/JSON conversion in one of `workers` processes, started on first use: parsing JSON builds Python
  objects, and the parser holds the interpreter lock throughout (orjson.loads of 6.9 MB: 86 ms, their
  release 21 ms more), which in a thread would stop the loop for as long.
What waits or runs in the pools is bounded by the bytes of its inputs: past `max_pending_bytes` a
request is refused (WorkersBusy: 503 / UNAVAILABLE with a retry hint) before anything of it is counted,
so memory stays bounded however many large requests arrive at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from distributor.common.config_fields import setting, settings
from distributor.common.errors import DistributorError

log = logging.getLogger(__name__)
MIB = 1024 * 1024
Result = TypeVar("Result")
# How long a client refused for a busy pool should wait: the time a worker takes for a large request.
BUSY_RETRY_AFTER_SECONDS = 1.0


@settings
class IngestWorkersConfig:
    workers: int = setting(default=2, positive=True)
    # ~256 KiB of protobuf takes ~0.2 ms to scan with the compiled core, of OTLP/JSON a few ms to convert:
    # both well under the loop's budget, and below a thread hop's cost for small requests.
    inline_max_bytes: int = setting(default=256 * 1024, positive=True)
    max_pending_bytes: int = setting(default=64 * MIB, positive=True)


class WorkersBusy(DistributorError):
    """The pool holds max_pending_bytes already: the request is refused before anything is counted."""

    def __init__(self, message: str, retry_after: float = BUSY_RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IngestWorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending_bytes = Gauge(
            "tempo_distributor_ingest_workers_pending_bytes",
            "Bytes of request steps waiting for or running on the ingest worker threads",
            registry=registry,
        )
        self.offloaded = Counter(
            "tempo_distributor_ingest_workers_steps_total",
            "Request steps (inflate, convert, scan) run on the ingest worker threads",
            registry=registry,
        )


class IngestWorkers:
    """Runs a request's heavy step inline or on a worker thread; a Component (started before the
    receivers, stopped after them, so every request in flight has finished its steps)."""

    def __init__(self, config: IngestWorkersConfig, metrics: IngestWorkerMetrics, refused: Counter) -> None:
        self.config = config
        self.metrics = metrics
        self._refused = refused  # requests refused before anything was counted, by reason
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._processes: concurrent.futures.ProcessPoolExecutor | None = None
        self._running = False
        self._pending_bytes = 0

    @property
    def inline_max_bytes(self) -> int:
        return self.config.inline_max_bytes

    async def start(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.config.workers, thread_name_prefix="ingest-worker"
        )
        self._running = True

    async def stop(self, deadline: float) -> None:
        self._running = False
        executor, self._executor = self._executor, None
        processes, self._processes = self._processes, None
        # The receivers stopped first and waited for their requests, so nothing is left to run.
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if processes is not None:
            processes.shutdown(wait=False, cancel_futures=True)

    async def run(self, size: int, step: Callable[..., Result], *args: object) -> Result:
        """`step(*args)`, whose input has `size` bytes: inline when small, else on a worker thread.
        Raises WorkersBusy when the pools already hold max_pending_bytes (a step alone larger than that
        still runs when they are empty, so every request within the body limits can pass)."""
        if size <= self.config.inline_max_bytes or self._executor is None:
            return step(*args)
        return await self._submit(self._executor, size, step, *args)

    async def run_in_process(self, size: int, step: Callable[..., Result], *args: object) -> Result:
        """As `run`, but a large step runs in a worker process: for steps that hold the interpreter
        lock. `step` and its arguments must be picklable (a module-level function, bytes)."""
        if size <= self.config.inline_max_bytes or not self._running:
            return step(*args)
        if self._processes is None:
            # Spawned, not forked: the service has threads (grpc's among them) that a fork would copy
            # in whatever state they are in.
            self._processes = concurrent.futures.ProcessPoolExecutor(
                self.config.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return await self._submit(self._processes, size, step, *args)

    async def _submit(
        self, executor: concurrent.futures.Executor, size: int, step: Callable[..., Result], *args: object
    ) -> Result:
        if self._pending_bytes and self._pending_bytes + size > self.config.max_pending_bytes:
            self._refused.labels("ingest_workers_busy").inc()
            raise WorkersBusy(
                f"the ingest workers hold {self._pending_bytes} bytes of large requests already "
                f"(max_pending_bytes {self.config.max_pending_bytes}); retry later"
            )
        loop = asyncio.get_running_loop()
        self._reserve(size)
        future = executor.submit(step, *args)
        # Released when the step is really over: a cancelled request leaves it running on its thread.
        future.add_done_callback(lambda _: _call_soon(loop, self._reserve, -size))
        self.metrics.offloaded.inc()
        return await asyncio.wrap_future(future)

    def _reserve(self, size: int) -> None:
        self._pending_bytes += size
        self.metrics.pending_bytes.set(self._pending_bytes)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[int], None], argument: int) -> None:
    """From a worker thread: `callback(argument)` on the loop, unless the loop is closed already (the
    service has stopped; nothing is left to account)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, argument)
