"""The lifecycle helpers without a server: periodic tasks that survive their failures, and stopping
that goes on past a component that fails to stop."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from distributor.common.lifecycle import (
    BackgroundTaskMetrics,
    Component,
    PeriodicTask,
    StopFailed,
    StoppedTogether,
    stop_in_reverse,
)


class ScriptedJob:
    """Raises the scripted errors in turn (None: a run that succeeds); once done, sets `finished`."""

    def __init__(self, *script: Exception | None) -> None:
        self.script = list(script)
        self.runs = 0
        self.finished = asyncio.Event()

    def __call__(self) -> None:
        self.runs += 1
        if not self.script:
            self.finished.set()
            return
        error = self.script.pop(0)
        if error is not None:
            raise error


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


def failures(registry: CollectorRegistry, task: str) -> float | None:
    return registry.get_sample_value("tempo_distributor_background_task_failures_total", {"task": task})


async def test_a_periodic_task_counts_every_failure_logs_each_distinct_error_once_and_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()

    def disk_full() -> OSError:
        return OSError("disk full")

    def locked() -> RuntimeError:
        return RuntimeError("locked")

    job = ScriptedJob(disk_full(), disk_full(), disk_full(), locked(), locked(), None, disk_full(), None)
    task = PeriodicTask("compaction", 30.0, job, BackgroundTaskMetrics(registry), sleep=no_wait)
    await task.start()
    await asyncio.wait_for(job.finished.wait(), 5)
    await task.stop(asyncio.get_running_loop().time())

    assert failures(registry, "compaction") == 6
    logged = [
        (record.levelname, record.getMessage().rsplit("logged once): ", 1)[-1])
        for record in caplog.records
        if "compaction" in record.getMessage()
    ]
    assert logged == [
        ("ERROR", "OSError: disk full"),
        ("ERROR", "RuntimeError: locked"),
        ("INFO", "background task compaction works again after 5 failed runs"),
        ("ERROR", "OSError: disk full"),  # failing again after a recovery is news again
        ("INFO", "background task compaction works again after 1 failed runs"),
    ]


async def test_a_periodic_task_runs_a_coroutine_function_once_per_interval() -> None:
    waits: list[float] = []
    runs: list[int] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    async def job() -> None:
        runs.append(len(waits))

    task = PeriodicTask("probe", 15.0, job, BackgroundTaskMetrics(CollectorRegistry()), sleep=sleep)
    await task.start()
    while len(runs) < 3:
        await asyncio.sleep(0)
    await task.stop(asyncio.get_running_loop().time())
    assert runs[:3] == [1, 2, 3]  # each run after one wait
    assert set(waits) == {15.0}


async def test_stopping_a_periodic_task_lets_a_run_under_way_finish() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def job() -> None:
        started.set()
        await release.wait()
        finished.append(True)

    task = PeriodicTask("flush", 1.0, job, BackgroundTaskMetrics(CollectorRegistry()), sleep=no_wait)
    await task.start()
    await started.wait()
    stopping = asyncio.create_task(task.stop(asyncio.get_running_loop().time()))
    await asyncio.sleep(0)
    assert not stopping.done()
    release.set()
    await stopping
    assert finished == [True]


class Recorded:
    def __init__(self, name: str, stopped: list[str], error: Exception | None = None) -> None:
        self.name, self.stopped, self.error = name, stopped, error

    async def start(self) -> None:
        pass

    async def stop(self, deadline: float) -> None:
        self.stopped.append(self.name)
        if self.error is not None:
            raise self.error


async def test_stopping_in_reverse_goes_on_past_a_failing_component_and_reports_it() -> None:
    stopped: list[str] = []
    broken = RuntimeError("cannot close")
    components: list[tuple[str, Component]] = [
        ("ledger", Recorded("ledger", stopped)),
        ("forwarders", Recorded("forwarders", stopped, broken)),
        ("receivers", Recorded("receivers", stopped)),
    ]
    failures = await stop_in_reverse(components, 0.0)
    assert stopped == ["receivers", "forwarders", "ledger"]
    assert [(failure.component, failure.error) for failure in failures] == [("forwarders", broken)]


async def test_components_stopped_together_all_stop_and_the_failures_are_named() -> None:
    stopped: list[str] = []
    group = StoppedTogether(
        [
            ("http", Recorded("http", stopped, OSError("socket"))),
            ("grpc", Recorded("grpc", stopped)),
        ]
    )
    with pytest.raises(StopFailed, match="http: OSError"):
        await group.stop(0.0)
    assert sorted(stopped) == ["grpc", "http"]


class MeetingAtStop:
    """A component whose stop() returns only once every component of its group has begun stopping."""

    def __init__(self, everyone_stopping: asyncio.Barrier) -> None:
        self.everyone_stopping = everyone_stopping

    async def start(self) -> None:
        pass

    async def stop(self, deadline: float) -> None:
        await self.everyone_stopping.wait()


async def test_components_stopped_together_all_begin_stopping_before_any_has_finished() -> None:
    # The receivers stop taking requests at the same moment: one that is still finishing its requests in
    # flight must not hold the other open.
    barrier = asyncio.Barrier(2)
    group = StoppedTogether([("http", MeetingAtStop(barrier)), ("grpc", MeetingAtStop(barrier))])
    await asyncio.wait_for(group.stop(0.0), 5)


@pytest.fixture(autouse=True)
def _log_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="distributor.common.lifecycle")
