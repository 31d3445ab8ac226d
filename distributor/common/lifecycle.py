"""The one lifecycle of every long-lived part of the service, and the periodic work it runs.

A component is started once and stopped once. `stop(deadline)` gets an absolute instant on the event
loop's clock (`asyncio.get_running_loop().time()`), not a number of seconds: components stopped one
after another share one graceful-shutdown budget without each recomputing what is left of it.

Background work must never die silently: a periodic task logs a failure (once per distinct error),
counts it, and runs again at the next interval; stopping goes on past a component that fails to stop
and says which ones did.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from distributor.common.errors import DistributorError

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Component(Protocol):
    async def start(self) -> None:
        """Begin serving; raises if it cannot (a port in use), having released what it took."""
        ...

    async def stop(self, deadline: float) -> None:
        """Finish the work taken on by `deadline` (an instant of the event loop's clock), give up on
        the rest as the component documents, and release everything. Called once, after start(),
        also when start() raised half-way."""
        ...


@dataclass(frozen=True, slots=True)
class StopFailure:
    component: str
    error: Exception


class StopFailed(DistributorError):
    """Some components did not stop cleanly; every other one was still stopped."""

    def __init__(self, failures: Sequence[StopFailure]) -> None:
        self.failures = tuple(failures)
        super().__init__(
            "did not stop cleanly: "
            + "; ".join(f"{failure.component}: {failure.error!r}" for failure in self.failures)
        )


async def stop_in_reverse(components: Sequence[tuple[str, Component]], deadline: float) -> list[StopFailure]:
    """Stop (name, component) pairs last-started first, each one even when an earlier one failed;
    returns the failures, each logged."""
    failures: list[StopFailure] = []
    for name, component in reversed(components):
        try:
            await component.stop(deadline)
        except Exception as err:
            log.error("%s did not stop cleanly, stopping the rest: %r", name, err, exc_info=err)
            failures.append(StopFailure(name, err))
    return failures


async def stop_together(components: Iterable[tuple[str, Component]], deadline: float) -> list[StopFailure]:
    """Stop (name, component) pairs concurrently, all towards the same deadline; returns the
    failures, each logged."""
    named = list(components)
    results = await asyncio.gather(
        *(component.stop(deadline) for _, component in named), return_exceptions=True
    )
    failures: list[StopFailure] = []
    for (name, _), result in zip(named, results, strict=True):
        if isinstance(result, Exception):
            log.error("%s did not stop cleanly: %r", name, result, exc_info=result)
            failures.append(StopFailure(name, result))
        elif isinstance(result, BaseException):
            raise result  # cancellation of the caller goes on up
    return failures


class BackgroundTaskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.failures = Counter(
            "tempo_distributor_background_task_failures_total",
            "Runs of a periodic background task that raised (the task keeps running)",
            ["task"],
            registry=registry,
        )


class PeriodicTask:
    """Runs `job` (a function or a coroutine function) every `interval` seconds, from one interval
    after start() until stop().

    A run that raises is counted and logged, once per distinct error (then quiet until the error
    changes or a run succeeds again), and the next run comes at the next interval. stop() cuts only
    the wait between runs, never a run under way (a ledger flush cut off could lose its batch), so it
    may return after the deadline by the length of one run.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        job: Callable[[], object],
        metrics: BackgroundTaskMetrics,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.interval = interval
        self._job = job
        self._failures = metrics.failures.labels(name)
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._running_job = False
        self._stopping = False
        self._last_error: str | None = None
        self._failed_runs = 0  # since the last successful run

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name=f"periodic-{self.name}")

    async def stop(self, deadline: float) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if not self._running_job:
            task.cancel()  # it is waiting for the next run
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run_forever(self) -> None:
        while not self._stopping:
            await self._sleep(self.interval)
            self._running_job = True
            try:
                await self.run_once()
            finally:
                self._running_job = False

    async def run_once(self) -> None:
        """One run of the job, its failure counted and logged; never raises an Exception."""
        try:
            result = self._job()
            if inspect.isawaitable(result):
                await result
        except Exception as err:
            self._failures.inc()
            self._failed_runs += 1
            error = f"{type(err).__name__}: {err}"
            if error != self._last_error:
                log.error(
                    "background task %s failed, will run again in %gs (this error is logged once): %s",
                    self.name,
                    self.interval,
                    error,
                    exc_info=err,
                )
                self._last_error = error
            return
        if self._failed_runs:
            log.info("background task %s works again after %d failed runs", self.name, self._failed_runs)
        self._failed_runs = 0
        self._last_error = None


class StoppedTogether:
    """Components started in order and stopped concurrently towards one deadline: the receivers,
    which must all stop taking requests at the same moment."""

    def __init__(self, components: Sequence[tuple[str, Component]]) -> None:
        self.components = components

    async def start(self) -> None:
        for _, component in self.components:
            await component.start()

    async def stop(self, deadline: float) -> None:
        failures = await stop_together(self.components, deadline)
        if failures:
            raise StopFailed(failures)
