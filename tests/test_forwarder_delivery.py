"""Synchronous and persistent delivery in one forwarder, without a server: a scripted client, a manual
clock, a real on-disk queue in tmp_path. Room is held from the moment a request is taken; the
queue's failures become the client's answers; a stop keeps on disk what was not delivered, and the
next start sends it again, counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from distributor.common.discards import DiscardReason
from distributor.forwarding.config import PersistentQueueConfig
from distributor.forwarding.forwarder import DeliveryRefused, ForwardItem
from distributor.forwarding.metrics import ForwarderMetrics
from distributor.forwarding.segment_log import QueueStorageError, RecordRef
from tests.support.polling import eventually
from tests.test_forwarder_queue import UNAVAILABLE, Harness, ScriptedClient, wait_for

PAYLOAD = b"a request of twenty-eight b"


def item(payload: bytes = PAYLOAD, tenant: str = "acme") -> ForwardItem:
    return ForwardItem(tenant, payload, span_count=2, attribution=None)


def persistent(path: Path, client: ScriptedClient, **config: object) -> Harness:
    return Harness(client, delivery="persistent", persistent_queue=PersistentQueueConfig(path=path), **config)


async def all_done(harness: Harness) -> None:
    """Nothing pending. Records read back from disk go through a thread: real time passes, not only
    turns of the loop, so this polls."""
    await eventually(lambda: harness.forwarder.pending() == 0, "every record delivered or dropped")


async def started(harness: Harness) -> Harness:
    await harness.forwarder.start()
    return harness


# --- synchronous ---------------------------------------------------------------------------------------


async def test_synchronous_take_holds_its_room_before_the_send_starts() -> None:
    release = asyncio.Event()
    harness = Harness(ScriptedClient(release=release), delivery="synchronous", queue_size_bytes=40)
    sending = harness.forwarder.take(item())
    assert not harness.forwarder.has_room("acme", len(PAYLOAD)), "held from the call, not the first await"
    assert harness.forwarder.queued_bytes("acme") == len(PAYLOAD)
    task = asyncio.create_task(sending)
    release.set()
    await task
    assert harness.forwarder.queued_bytes("acme") == 0 and harness.forwarder.queued_bytes() == 0
    assert harness.forwarder.has_room("acme", 40)


async def test_synchronous_client_failing_unexpectedly_is_an_internal_error_to_retry() -> None:
    harness = Harness(ScriptedClient(RuntimeError("a bug")), delivery="synchronous")
    with pytest.raises(DeliveryRefused) as refused:
        await harness.forwarder.take(item())
    assert refused.value.reason == DiscardReason.FORWARD_INTERNAL_ERROR
    assert refused.value.retryable and refused.value.retry_after == 1.0
    assert harness.forwarder.queued_bytes() == 0


# --- persistent: taking --------------------------------------------------------------------------------


async def test_persistent_take_holds_the_tenants_room_while_the_append_is_under_way(tmp_path: Path) -> None:
    harness = await started(persistent(tmp_path, ScriptedClient(), queue_size_bytes=40))
    writing = harness.forwarder.take(item())
    assert not harness.forwarder.has_room("acme", len(PAYLOAD))
    await writing
    await all_done(harness)
    assert harness.forwarder.has_room("acme", 40)
    await harness.stop_now()


@pytest.mark.parametrize(
    ("storage_reason", "discard_reason"),
    [("full", DiscardReason.QUEUE_FULL), ("io_error", DiscardReason.QUEUE_WRITE_FAILED)],
)
async def test_a_queue_that_cannot_store_the_request_refuses_it_for_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage_reason: str, discard_reason: DiscardReason
) -> None:
    harness = await started(persistent(tmp_path, ScriptedClient()))
    assert harness.forwarder.log is not None

    async def failing_append(tenant: str, span_count: int, payload: bytes) -> RecordRef:
        raise QueueStorageError(storage_reason, "scripted")

    monkeypatch.setattr(harness.forwarder.log, "append", failing_append)
    with pytest.raises(DeliveryRefused) as refused:
        await harness.forwarder.take(item())
    assert refused.value.reason == discard_reason
    assert refused.value.retryable and refused.value.retry_after == 1.0
    assert harness.forwarder.queued_bytes() == 0 and harness.forwarder.pending() == 0
    await harness.stop_now()


async def test_past_total_queue_size_bytes_only_the_record_is_held_and_the_payload_read_back(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()
    client = ScriptedClient(release=release)
    harness = await started(persistent(tmp_path, client, total_queue_size_bytes=len(PAYLOAD) + 5, workers=1))
    await harness.forwarder.take(item(b"first " + PAYLOAD[6:]))
    await harness.in_the_workers_hands()
    await harness.forwarder.take(item())
    await harness.forwarder.take(item(b"third " + PAYLOAD[6:]))
    waiting = [queued for queued in harness.forwarder._tenants["acme"].queue._queue]
    assert [queued.payload for queued in waiting] == [b"", b""], "on disk only, past the memory bound"
    release.set()
    # Read back from disk on a thread: real time passes, not only turns of the loop.
    await eventually(lambda: harness.forwarder.pending() == 0, "everything delivered")
    assert [payload for _, payload in client.exports] == [
        b"first " + PAYLOAD[6:],
        PAYLOAD,
        b"third " + PAYLOAD[6:],
    ]
    await harness.stop_now()


# --- persistent: stopping and starting again -----------------------------------------------------------


async def test_a_send_cut_off_by_the_stop_is_kept_and_counted_as_one_redelivery_at_the_next_start(
    tmp_path: Path,
) -> None:
    held = await started(persistent(tmp_path, ScriptedClient(release=asyncio.Event()), workers=1))
    await held.forwarder.take(item())
    await held.forwarder.take(item(b"never sent " + PAYLOAD[11:]))
    await wait_for(lambda: dict(held.forwarder.queue_lengths())["acme"] == 1)  # the first being sent
    await held.stop_now()
    assert held.dropped == [] and held.forwarder.dropped_requests == 0

    client = ScriptedClient()
    again = persistent(tmp_path, client, workers=1)
    await again.forwarder.start()
    assert again.forwarder.queued_bytes("acme") == 2 * len(PAYLOAD), "recovered with their sizes"
    await all_done(again)
    assert [payload for _, payload in client.exports] == [PAYLOAD, b"never sent " + PAYLOAD[11:]]
    assert again.sample("redeliveries_total", forwarder="backend") == 1, "only the one being sent"
    await again.stop_now()


async def test_the_stop_waits_for_a_send_in_flight_and_then_nothing_is_left(tmp_path: Path) -> None:
    release = asyncio.Event()
    harness = await started(persistent(tmp_path, ScriptedClient(release=release)))
    await harness.forwarder.take(item())
    await harness.in_the_workers_hands()
    loop = asyncio.get_running_loop()
    stopping = asyncio.create_task(harness.forwarder.stop(loop.time() + 30))
    await asyncio.sleep(0)
    assert not stopping.done(), "waits for the send in flight"
    release.set()
    await stopping
    assert len(harness.client.exports) == 1

    again = await started(persistent(tmp_path, ScriptedClient()))
    assert again.forwarder.pending() == 0, "delivered, acknowledged: nothing to send again"
    await again.stop_now()


async def test_a_stopping_forwarder_keeps_a_failed_record_instead_of_retrying_it(tmp_path: Path) -> None:
    never = asyncio.Event()

    async def sleep_forever(seconds: float) -> None:
        await never.wait()

    harness = await started(persistent(tmp_path, ScriptedClient(*[UNAVAILABLE] * 100)))
    harness.forwarder._sleep = sleep_forever
    await harness.forwarder.take(item())
    await wait_for(lambda: len(harness.client.exports) == 1)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(harness.forwarder.stop(loop.time() + 30), timeout=5)
    assert len(harness.client.exports) == 1 and harness.dropped == []

    again = await started(persistent(tmp_path, ScriptedClient()))
    await all_done(again)
    assert [payload for _, payload in again.client.exports] == [PAYLOAD]
    await again.stop_now()


async def test_a_record_that_fails_its_checksum_when_read_is_dropped_once_and_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = await started(persistent(tmp_path, ScriptedClient(release=asyncio.Event())))
    await down.forwarder.take(item())
    await down.stop_now()

    corrupt = persistent(tmp_path, ScriptedClient())
    assert corrupt.forwarder.log is not None

    async def corrupt_read(ref: RecordRef) -> bytes:
        raise QueueStorageError("corrupt", "scripted")

    monkeypatch.setattr(corrupt.forwarder.log, "read", corrupt_read)
    await corrupt.forwarder.start()
    await all_done(corrupt)
    assert corrupt.dropped == [("acme", DiscardReason.QUEUE_CORRUPT)]
    await corrupt.stop_now()

    again = await started(persistent(tmp_path, ScriptedClient()))
    assert again.forwarder.pending() == 0, "acknowledged: not dropped a second time"
    await again.stop_now()


# --- metrics --------------------------------------------------------------------------------------------


def test_the_queue_observer_counts_commits_skips_and_state_write_failures() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    observer = ForwarderMetrics(registry).queue_observer("backend")
    observer.committed(0.002, 3, 900)
    observer.skipped("torn_tail", 1, 123)
    observer.state_write_failed(OSError(28, "No space left on device"))

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(f"tempo_distributor_forwarder_{name}", labels) or 0.0

    assert value("persistent_queue_fsync_batch_requests_sum", forwarder="backend") == 3
    assert value("persistent_queue_fsync_batch_requests_count", forwarder="backend") == 1
    assert value("persistent_queue_fsync_duration_seconds_sum", forwarder="backend") == 0.002
    assert value("persistent_queue_skipped_records_total", forwarder="backend", reason="torn_tail") == 1
    assert value("persistent_queue_skipped_bytes_total", forwarder="backend", reason="torn_tail") == 123
    assert value("persistent_queue_state_write_failures_total", forwarder="backend") == 1


class QueueState:
    def __init__(self, appended_at: float | None) -> None:
        self.appended_at = appended_at

    def bytes_on_disk(self) -> int:
        return 4096

    def pending_records(self) -> int:
        return 3

    def oldest_appended_at(self) -> float | None:
        return self.appended_at


def test_the_persistent_queue_gauges_show_bytes_requests_and_the_oldest_age() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = ForwarderMetrics(registry, wall_clock=lambda: 1000.0)
    metrics.watch_persistent_queue("backend", QueueState(appended_at=995.0))
    metrics.watch_persistent_queue("empty", QueueState(appended_at=None))

    def value(name: str, forwarder: str) -> float | None:
        return registry.get_sample_value(
            f"tempo_distributor_forwarder_persistent_queue_{name}", {"forwarder": forwarder}
        )

    assert (value("bytes", "backend"), value("requests", "backend")) == (4096, 3)
    assert value("oldest_age_seconds", "backend") == 5.0
    assert value("oldest_age_seconds", "empty") == 0.0
