"""The forwarder's queue, retries and backoff without a server: a scripted ExportClient, a manual
clock, and a sleep that advances that clock instead of waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from distributor.common.discards import DiscardReason
from distributor.forwarding.config import ForwarderConfig, RetryConfig
from distributor.forwarding.forwarder import Forwarder, ForwardItem
from distributor.forwarding.metrics import ForwarderMetrics
from distributor.forwarding.retry import Backoff, ExportFailure
from tests.support.clock import ManualClock

UNAVAILABLE = ExportFailure("http_503", retryable=True, message="try later")
REJECTED = ExportFailure("http_400", retryable=False, message="bad request")
Outcome = ExportFailure | Exception | None  # None: delivered


class ScriptedClient:
    """Answers each export with the next scripted outcome, then with success; `release` (when set)
    holds every export until the test opens it."""

    def __init__(self, *outcomes: Outcome, release: asyncio.Event | None = None) -> None:
        self.outcomes = list(outcomes)
        self.release = release
        self.exports: list[tuple[str, bytes]] = []
        self.closed = False

    async def start(self) -> None:
        pass

    async def export(self, tenant: str, payload: bytes) -> int:
        if self.release is not None:
            await self.release.wait()
        self.exports.append((tenant, payload))
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return 0

    async def close(self) -> None:
        self.closed = True


class Harness:
    def __init__(self, client: ScriptedClient, **config: object) -> None:
        self.clock = ManualClock(0.0)
        self.slept: list[float] = []
        self.dropped: list[tuple[str, DiscardReason]] = []
        self.registry = CollectorRegistry()
        retry = RetryConfig(initial_interval=1.0, max_interval=8.0, max_elapsed_time=60.0)
        options: dict[str, object] = {
            "name": "backend",
            "backend": "otlphttp",
            "endpoint": "http://127.0.0.1:1",
            "retry": retry,
        }
        options.update(config)
        retry = options["retry"]  # type: ignore[assignment]
        self.forwarder = Forwarder(
            ForwarderConfig(**options),  # type: ignore[arg-type]
            client,
            ForwarderMetrics(self.registry),
            lambda item, reason: self.dropped.append((item.tenant, reason)),
            clock=self.clock,
            sleep=self.sleep,
            backoff=Backoff(retry, uniform=lambda: 0.5),  # no jitter
        )
        self.client = client

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)

    def send(self, tenant: str = "acme", payload: bytes = b"spans") -> None:
        assert self.forwarder.has_room(tenant, len(payload))
        self.forwarder.enqueue(ForwardItem(tenant, payload, span_count=2, attribution=None))

    async def in_the_workers_hands(self, tenant: str = "acme") -> None:
        """Wait until the worker took what `tenant` queued (the test holds the client)."""
        await wait_for(lambda: dict(self.forwarder.queue_lengths())[tenant] == 0)

    async def settled(self) -> None:
        await wait_for(lambda: self.forwarder.pending() == 0)

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"tempo_distributor_forwarder_{name}", labels)
        return value or 0.0

    async def stop_now(self) -> None:
        await self.forwarder.stop(asyncio.get_running_loop().time())


async def wait_for(condition: Callable[[], bool], rounds: int = 1000) -> None:
    """Let the workers run until `condition` holds (within `rounds` turns of the event loop); they never
    wait for real time here."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the workers did not get there")


async def test_a_retryable_failure_is_retried_after_the_backoff_and_then_delivered() -> None:
    harness = Harness(ScriptedClient(UNAVAILABLE, UNAVAILABLE))
    harness.send()
    await harness.settled()
    assert len(harness.client.exports) == 3
    assert harness.slept == [1.0, 1.5]  # initial_interval, then x1.5
    assert harness.sample("retries_total", forwarder="backend", reason="http_503") == 2
    assert harness.sample("sent_requests_total", forwarder="backend", tenant="acme") == 1
    assert harness.dropped == []
    await harness.stop_now()


async def test_a_permanent_rejection_is_dropped_at_once_without_retry() -> None:
    harness = Harness(ScriptedClient(REJECTED))
    harness.send()
    await harness.settled()
    assert len(harness.client.exports) == 1 and harness.slept == []
    assert harness.dropped == [("acme", DiscardReason.FORWARD_REJECTED)]
    reason = DiscardReason.FORWARD_REJECTED
    assert harness.sample("dropped_spans_total", forwarder="backend", tenant="acme", reason=reason) == 2
    await harness.stop_now()


async def test_retries_stop_when_the_next_wait_would_pass_max_elapsed_time() -> None:
    retry = RetryConfig(initial_interval=1.0, max_interval=8.0, max_elapsed_time=5.0)
    harness = Harness(ScriptedClient(*[UNAVAILABLE] * 10), retry=retry)
    harness.send()
    await harness.settled()
    # After 1 + 1.5 + 2.25 = 4.75 s of waiting, the next wait (3.375 s) would end past 5 s.
    assert harness.slept == [1.0, 1.5, 2.25]
    assert len(harness.client.exports) == 4
    assert harness.dropped == [("acme", DiscardReason.FORWARD_RETRIES_EXHAUSTED)]
    await harness.stop_now()


async def test_a_disabled_retry_drops_after_the_first_failure() -> None:
    harness = Harness(ScriptedClient(UNAVAILABLE), retry=RetryConfig(enabled=False))
    harness.send()
    await harness.settled()
    assert harness.slept == []
    assert harness.dropped == [("acme", DiscardReason.FORWARD_RETRIES_EXHAUSTED)]
    await harness.stop_now()


async def test_the_wait_a_backend_asks_for_is_honoured_when_longer_than_the_backoff() -> None:
    asked = ExportFailure("http_429", retryable=True, message="slow down", retry_after=7.0)
    harness = Harness(ScriptedClient(asked, UNAVAILABLE))
    harness.send()
    await harness.settled()
    assert harness.slept == [7.0, 1.5]
    assert harness.dropped == []
    await harness.stop_now()


async def test_a_full_tenant_queue_has_no_room_while_other_tenants_still_have() -> None:
    release = asyncio.Event()
    harness = Harness(ScriptedClient(release=release), queue_size=2, workers=1)
    harness.send()
    await harness.in_the_workers_hands()
    harness.send()
    harness.send()
    assert not harness.forwarder.has_room("acme", 1)
    assert harness.forwarder.has_room("globex", 1)
    release.set()
    await harness.settled()
    assert harness.forwarder.has_room("acme", 1)
    await harness.stop_now()


async def test_stop_at_the_deadline_drops_what_is_left_with_its_reason_and_closes_the_client() -> None:
    harness = Harness(ScriptedClient(release=asyncio.Event()), queue_size=10, workers=1)
    for _ in range(3):
        harness.send()
    await wait_for(lambda: dict(harness.forwarder.queue_lengths())["acme"] == 2)  # one in the worker's hands
    await harness.stop_now()
    assert harness.dropped == [("acme", DiscardReason.FORWARD_UNDELIVERED_AT_SHUTDOWN)] * 3
    assert harness.forwarder.dropped_requests == 3
    assert harness.forwarder.pending() == 0
    assert harness.client.closed


async def test_a_client_that_raises_costs_its_item_counted_and_the_worker_serves_the_queue_on() -> None:
    harness = Harness(ScriptedClient(RuntimeError("a bug in the client")), workers=1)
    harness.send(payload=b"first")
    harness.send(payload=b"second")
    await harness.settled()
    assert harness.dropped == [("acme", DiscardReason.FORWARD_INTERNAL_ERROR)]
    assert harness.client.exports == [("acme", b"first"), ("acme", b"second")]
    assert harness.sample("sent_requests_total", forwarder="backend", tenant="acme") == 1
    assert harness.sample("send_failures_total", forwarder="backend", reason="internal_error") == 1
    reason = DiscardReason.FORWARD_INTERNAL_ERROR
    assert harness.sample("dropped_requests_total", forwarder="backend", tenant="acme", reason=reason) == 1
    await harness.stop_now()


async def test_thousands_of_failed_attempts_without_time_limit_end_in_delivery_and_the_queue_works_on() -> (
    None
):
    # Past attempt 1751 an uncapped 1.5**attempt overflows; the cap keeps the wait at max_interval.
    outage = 3000
    retry = RetryConfig(initial_interval=1.0, max_interval=8.0, max_elapsed_time=0.0)
    harness = Harness(ScriptedClient(*[UNAVAILABLE] * outage), retry=retry, workers=1)
    harness.send(payload=b"through the outage")
    await wait_for(lambda: harness.forwarder.pending() == 0, rounds=10 * outage)
    assert len(harness.client.exports) == outage + 1
    assert harness.slept[-1] == 8.0 and max(harness.slept) == 8.0
    assert harness.dropped == []
    assert harness.forwarder.dropped_requests == 0
    assert harness.sample("sent_requests_total", forwarder="backend", tenant="acme") == 1
    harness.send(payload=b"after recovery")
    await harness.settled()
    assert harness.client.exports[-2:] == [("acme", b"through the outage"), ("acme", b"after recovery")]
    assert harness.dropped == []
    await harness.stop_now()


# --- Queued bytes ----------------------------------------------------------------------------------------


async def test_queued_bytes_count_waiting_and_held_payloads_until_delivered() -> None:
    release = asyncio.Event()
    harness = Harness(ScriptedClient(release=release), workers=1)
    harness.send("acme", b"a" * 10)
    await harness.in_the_workers_hands()
    harness.send("acme", b"b" * 20)
    harness.send("globex", b"c" * 30)
    assert harness.forwarder.queued_bytes("acme") == 10 + 20
    assert harness.forwarder.queued_bytes("globex") == 30
    assert harness.forwarder.queued_bytes() == 10 + 20 + 30
    release.set()
    await harness.settled()
    assert harness.forwarder.queued_bytes() == 0
    assert harness.forwarder.queued_bytes("acme") == harness.forwarder.queued_bytes("globex") == 0
    await harness.stop_now()


@pytest.mark.parametrize("failure", [REJECTED, RuntimeError("a bug in the client")], ids=["rejected", "bug"])
async def test_queued_bytes_are_released_when_a_request_is_dropped(failure: Exception) -> None:
    harness = Harness(ScriptedClient(failure), workers=1)
    harness.send(payload=b"x" * 100)
    await harness.settled()
    assert len(harness.dropped) == 1
    assert harness.forwarder.queued_bytes() == harness.forwarder.queued_bytes("acme") == 0
    await harness.stop_now()


async def test_queued_bytes_are_released_when_retries_are_exhausted() -> None:
    retry = RetryConfig(initial_interval=1.0, max_interval=8.0, max_elapsed_time=5.0)
    harness = Harness(ScriptedClient(*[UNAVAILABLE] * 10), retry=retry)
    harness.send(payload=b"x" * 100)
    await harness.settled()
    assert harness.dropped == [("acme", DiscardReason.FORWARD_RETRIES_EXHAUSTED)]
    assert harness.forwarder.queued_bytes() == 0
    await harness.stop_now()


async def test_queued_bytes_are_released_at_stop_for_waiting_and_held_requests() -> None:
    harness = Harness(ScriptedClient(release=asyncio.Event()), workers=1)
    harness.send("acme", b"a" * 10)
    await harness.in_the_workers_hands()
    harness.send("acme", b"b" * 20)
    harness.send("globex", b"c" * 30)
    assert harness.forwarder.queued_bytes() == 60
    await harness.stop_now()
    assert len(harness.dropped) == 3
    assert harness.forwarder.queued_bytes() == 0


async def test_a_tenant_has_no_room_past_its_queued_bytes_while_other_tenants_still_have() -> None:
    release = asyncio.Event()
    harness = Harness(
        ScriptedClient(release=release), workers=1, queue_size_bytes=100, total_queue_size_bytes=1000
    )
    assert not harness.forwarder.has_room("acme", 101), "larger than the bound even when empty"
    harness.send("acme", b"a" * 60)
    await harness.in_the_workers_hands()  # still counted
    assert harness.forwarder.has_room("acme", 40)
    assert not harness.forwarder.has_room("acme", 41)
    assert harness.forwarder.has_room("globex", 100)
    release.set()
    await harness.settled()
    assert harness.forwarder.has_room("acme", 100)
    await harness.stop_now()


async def test_no_tenant_has_room_past_the_queued_bytes_of_all_tenants() -> None:
    release = asyncio.Event()
    harness = Harness(
        ScriptedClient(release=release), workers=1, queue_size_bytes=100, total_queue_size_bytes=150
    )
    harness.send("acme", b"a" * 100)
    harness.send("globex", b"g" * 40)
    assert harness.forwarder.has_room("initech", 10)
    assert not harness.forwarder.has_room("initech", 11), "each tenant is under its bound, all are at 150"
    assert not harness.forwarder.has_room("globex", 11)
    release.set()
    await harness.settled()
    assert harness.forwarder.has_room("initech", 100)
    await harness.stop_now()


# --- Backoff ----------------------------------------------------------------------------------------------

BACKOFF = RetryConfig(initial_interval=1.0, max_interval=5.0)


async def test_an_idle_tenant_queue_and_its_workers_are_released_after_the_idle_timeout() -> None:
    harness = Harness(ScriptedClient(), idle_tenant_timeout=300.0, workers=2)
    harness.send("acme")
    await harness.settled()
    workers = list(asyncio.all_tasks())
    harness.clock.advance(299.0)
    assert await harness.forwarder.release_idle_tenants() == 0
    assert dict(harness.forwarder.queue_lengths()) == {"acme": 0}
    harness.clock.advance(1.0)
    assert await harness.forwarder.release_idle_tenants() == 1
    assert dict(harness.forwarder.queue_lengths()) == {}
    assert len(workers) - len(asyncio.all_tasks()) == 2
    length = harness.registry.get_sample_value(
        "tempo_distributor_forwarder_queue_length", {"forwarder": "backend", "tenant": "acme"}
    )
    assert length is None
    await harness.stop_now()


async def test_a_tenant_with_a_request_being_sent_is_not_released_however_long_it_takes() -> None:
    release = asyncio.Event()
    harness = Harness(ScriptedClient(release=release), idle_tenant_timeout=300.0, workers=1)
    harness.send("acme")
    await harness.in_the_workers_hands("acme")
    harness.clock.advance(3600.0)
    assert await harness.forwarder.release_idle_tenants() == 0
    release.set()
    await harness.settled()
    assert await harness.forwarder.release_idle_tenants() == 0  # idle from the delivery on
    harness.clock.advance(300.0)
    assert await harness.forwarder.release_idle_tenants() == 1
    await harness.stop_now()


async def test_a_released_tenant_coming_back_gets_a_new_queue_and_is_delivered() -> None:
    harness = Harness(ScriptedClient(), idle_tenant_timeout=300.0)
    harness.send("acme", b"first")
    await harness.settled()
    harness.clock.advance(300.0)
    assert await harness.forwarder.release_idle_tenants() == 1
    harness.send("acme", b"second")
    await harness.settled()
    assert harness.client.exports == [("acme", b"first"), ("acme", b"second")]
    assert harness.sample("sent_requests_total", forwarder="backend", tenant="acme") == 2
    assert dict(harness.forwarder.queue_lengths()) == {"acme": 0}
    await harness.stop_now()
    assert harness.dropped == []


@pytest.mark.parametrize(
    ("attempt", "uniform", "expected"),
    [
        (0, 0.5, 1.0),  # no jitter: the initial interval
        (0, 0.0, 0.5),  # -50 %
        (0, 1.0, 1.5),  # +50 %
        (2, 0.5, 2.25),  # 1 x 1.5^2
        (3, 0.5, 3.375),
        (4, 0.5, 5.0),  # 5.0625 capped at max_interval
        (10, 1.0, 7.5),  # the cap is applied before the jitter
    ],
)
def test_backoff_grows_by_half_each_attempt_within_jitter_bounds_and_cap(
    attempt: int, uniform: float, expected: float
) -> None:
    assert Backoff(BACKOFF, uniform=lambda: uniform).delay(attempt) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1751, 10_000, 10**9])
@pytest.mark.parametrize("uniform", [0.0, 0.5, 1.0])
def test_backoff_stays_at_max_interval_within_jitter_however_many_attempts_failed(
    attempt: int, uniform: float
) -> None:
    delay = Backoff(BACKOFF, uniform=lambda: uniform).delay(attempt)
    assert BACKOFF.max_interval * 0.5 <= delay <= BACKOFF.max_interval * 1.5
    assert delay == pytest.approx(BACKOFF.max_interval * (0.5 + uniform))


@pytest.mark.parametrize(("asked", "expected"), [(4.0, 4.0), (0.2, 1.0), (None, 1.0)])
def test_backoff_never_waits_less_than_the_backend_asked(asked: float | None, expected: float) -> None:
    assert Backoff(BACKOFF, uniform=lambda: 0.5).delay(0, asked) == expected
