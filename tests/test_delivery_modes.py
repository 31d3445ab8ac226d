"""Forwarder delivery modes through the running service, against scriptable backends on real sockets:
`synchronous` answers only once the backend took the request (its failure is the client's answer,
nothing accounted), `persistent` writes the request to its on-disk queue before answering and delivers
it from there, across a stop and a new start of the service. The SIGKILL proofs, with real processes,
are in test_delivery_end_to_end.py."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import aiohttp
import grpc
import pytest

from distributor.common.discards import DiscardReason
from distributor.config import Config
from distributor.forwarding.config import PersistentQueueConfig
from distributor.forwarding.segment_log import RecordRef, SegmentLog
from distributor.server.config import ServerConfig
from distributor.service import Service
from tests.support.backends import Answer, RecordingBackend, forwarder_to
from tests.support.metrics import sample_value
from tests.support.otlp import batch, request, span
from tests.support.polling import eventually
from tests.support.service import (
    RunningService,
    StartService,
)
from tests.test_forwarding import StartBackend, config_for, idle, start_backend

__all__ = ["start_backend"]  # the fixture, used by name

TENANT = "single-tenant"
BODY = request(batch({"service.name": "shop"}, [span(), span()])).SerializeToString()
DISCARDED_SPANS = "tempo_discarded_spans_total"
SPANS_RECEIVED = "tempo_distributor_spans_received_total"
PARTIAL = "tempo_distributor_forwarder_partial_deliveries_total"
REDELIVERIES = "tempo_distributor_forwarder_redeliveries_total"
QUEUE_REQUESTS = "tempo_distributor_forwarder_persistent_queue_requests"
FSYNC_BATCH = "tempo_distributor_forwarder_persistent_queue_fsync_batch_requests_count"


async def assert_nothing_accounted(running: RunningService) -> None:
    """No usage series, no received spans or bytes (the tenant's ingress bytes are counted, as for every
    refusal after decoding)."""
    assert await running.usage() == {}
    samples = await running.samples()
    assert sample_value(samples, SPANS_RECEIVED, tenant=TENANT) == 0
    assert sample_value(samples, "tempo_distributor_bytes_received_total", tenant=TENANT) == 0


async def discarded(running: RunningService, reason: DiscardReason) -> float:
    return sample_value(await running.samples(), DISCARDED_SPANS, tenant=TENANT, reason=reason)


# --- synchronous ---------------------------------------------------------------------------------------


async def test_synchronous_answers_once_the_backend_has_the_request_and_then_accounts_it(
    start_backend: StartBackend, start_service: StartService
) -> None:
    backend = await start_backend()
    running = await start_service(config_for(forwarder_to(backend, delivery="synchronous")))
    answer = await running.post(BODY)
    assert answer.status == 200
    assert [delivery.body for delivery in backend.deliveries] == [BODY], "delivered before the answer"
    assert sample_value(await running.samples(), SPANS_RECEIVED, tenant=TENANT) == 2
    assert running.service.forwarders["backend"].pending() == 0, "nothing queued"


@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_synchronous_backend_unavailable_is_a_503_with_a_retry_hint_and_nothing_accounted(
    start_backend: StartBackend, start_service: StartService, transport: str
) -> None:
    backend = await start_backend(always=Answer(503, retry_after=7))
    running = await start_service(config_for(forwarder_to(backend, delivery="synchronous")))
    if transport == "http":
        answer = await running.post(BODY)
        assert (answer.status, answer.headers["Retry-After"]) == (503, "7")
    else:
        exported = await running.export(BODY)
        assert exported.code == grpc.StatusCode.UNAVAILABLE
        assert "google.rpc.retryinfo-bin" in exported.trailing
    assert backend.attempts == 1, "no retry of its own: the client's retry is the retry"
    await assert_nothing_accounted(running)
    assert await discarded(running, DiscardReason.FORWARD_UNAVAILABLE) == 2


@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_synchronous_permanent_refusal_reaches_the_client_with_the_backends_message(
    start_backend: StartBackend, start_service: StartService, transport: str
) -> None:
    backend = await start_backend(always=Answer(400, grpc.StatusCode.INVALID_ARGUMENT))
    running = await start_service(config_for(forwarder_to(backend, transport, delivery="synchronous")))
    if transport == "http":
        answer = await running.post(BODY)
        assert answer.status == 400
        assert b"scripted failure" in answer.body and "Retry-After" not in answer.headers
    else:
        exported = await running.export(BODY)
        assert exported.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "scripted failure" in exported.details
    await assert_nothing_accounted(running)
    assert await discarded(running, DiscardReason.FORWARD_REJECTED) == 2


async def test_synchronous_sends_are_bounded_per_tenant_and_requests_past_the_queue_are_refused(
    start_backend: StartBackend, start_service: StartService
) -> None:
    hold = asyncio.Event()
    backend = await start_backend(hold=hold)
    forwarder = forwarder_to(backend, delivery="synchronous", workers=2, queue_size=3, timeout=30.0)
    running = await start_service(config_for(forwarder))
    waiting = [asyncio.create_task(running.post(BODY)) for _ in range(3)]
    await eventually(lambda: backend.arrived == 2, "two sends in flight")
    queued = running.service.forwarders["backend"]
    await eventually(lambda: dict(queued.queue_lengths()).get(TENANT) == 3, "the third waiting for a send")
    refused = await running.post(BODY)
    assert refused.status == 503, "past queue_size: refused at once, holding no memory"
    assert backend.arrived == 2, "never more than `workers` sends at a time"
    hold.set()
    assert [answer.status for answer in await asyncio.gather(*waiting)] == [200, 200, 200]
    assert backend.arrived == 3
    assert await discarded(running, DiscardReason.QUEUE_FULL) == 2


async def test_synchronous_backend_slower_than_the_timeout_is_a_503_and_nothing_accounted(
    start_backend: StartBackend, start_service: StartService
) -> None:
    hold = asyncio.Event()
    backend = await start_backend(hold=hold)
    forwarder = forwarder_to(backend, delivery="synchronous", workers=1, timeout=0.2)
    running = await start_service(config_for(forwarder))
    answers = await asyncio.gather(running.post(BODY), running.post(BODY))
    assert [answer.status for answer in answers] == [503, 503]
    assert all(answer.headers["Retry-After"] == "1" for answer in answers)
    hold.set()
    await assert_nothing_accounted(running)


async def test_a_refusal_by_one_forwarder_counts_the_others_that_took_it_as_partial(
    start_backend: StartBackend, start_service: StartService, tmp_path: Path
) -> None:
    up = await start_backend()
    down = await start_backend(always=Answer(503))
    durable = forwarder_to(
        up, name="durable", delivery="persistent", persistent_queue=PersistentQueueConfig(path=tmp_path)
    )
    synchronous = forwarder_to(down, name="synchronous", delivery="synchronous")
    queued = forwarder_to(up, name="queued")
    running = await start_service(config_for(durable, synchronous, queued))
    assert (await running.post(BODY)).status == 503
    samples = await running.samples()
    assert sample_value(samples, PARTIAL, forwarder="durable") == 1, "its copy is delivered all the same"
    assert sample_value(samples, PARTIAL, forwarder="synchronous") == 0
    await eventually(lambda: len(up.deliveries) == 1, "the durable copy delivered")
    assert running.service.forwarders["queued"].pending() == 0, "the in-memory queue never got it"
    await assert_nothing_accounted(running)


# --- persistent ----------------------------------------------------------------------------------------


def persistent_config(backend: RecordingBackend | str, path: Path, **queue: int) -> Config:
    forwarder = forwarder_to(
        backend, delivery="persistent", persistent_queue=PersistentQueueConfig(path=path, **queue)
    )
    return config_for(forwarder)


async def test_persistent_writes_the_request_before_answering_then_delivers_it(
    start_backend: StartBackend, start_service: StartService, tmp_path: Path
) -> None:
    backend = await start_backend()
    running = await start_service(persistent_config(backend, tmp_path))
    assert [(await running.post(BODY)).status for _ in range(3)] == [200, 200, 200]
    samples = await running.samples()
    assert sample_value(samples, FSYNC_BATCH, forwarder="backend") >= 1
    for gauge in ("bytes", "requests", "oldest_age_seconds"):
        name = f"tempo_distributor_forwarder_persistent_queue_{gauge}"
        assert (name, frozenset({("forwarder", "backend")})) in samples, f"{name} is exposed"
    await eventually(lambda: len(backend.deliveries) == 3, "delivered from the queue")
    assert list(backend.bodies()) == [BODY] * 3
    await eventually(lambda: idle(running), "every record acknowledged")
    assert sample_value(await running.samples(), QUEUE_REQUESTS, forwarder="backend") == 0
    assert sample_value(await running.samples(), SPANS_RECEIVED, tenant=TENANT) == 6


async def test_persistent_keeps_what_it_could_not_deliver_at_stop_and_delivers_it_after_a_new_start(
    start_backend: StartBackend, start_service: StartService, tmp_path: Path
) -> None:
    down = await start_backend(always=Answer(503))
    server = ServerConfig("127.0.0.1", 0, graceful_shutdown_timeout=0.5)
    config = replace(persistent_config(down, tmp_path), server=server)
    first = await start_service(config)
    assert [(await first.post(BODY)).status for _ in range(5)] == [200] * 5
    await eventually(lambda: down.attempts >= 1, "a send attempted (and marked as sending)")
    await first.service.stop()
    assert first.service.forwarders["backend"].dropped_requests == 0, "kept on disk, not dropped"

    up = await start_backend()
    second = await start_service(persistent_config(up, tmp_path))
    await eventually(lambda: len(up.deliveries) == 5, "all five delivered after the new start")
    samples = await second.samples()
    assert 1 <= sample_value(samples, REDELIVERIES, forwarder="backend") <= 5
    await eventually(lambda: idle(second), "the queue emptied")


async def test_persistent_queue_past_its_bound_refuses_before_accounting(
    start_backend: StartBackend, start_service: StartService, tmp_path: Path
) -> None:
    down = await start_backend(always=Answer(503))
    running = await start_service(persistent_config(down, tmp_path, max_size_bytes=3 * len(BODY) + 200))
    statuses = [(await running.post(BODY)).status for _ in range(8)]
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    accepted = statuses.count(200)
    samples = await running.samples()
    assert sample_value(samples, SPANS_RECEIVED, tenant=TENANT) == 2 * accepted
    assert sample_value(samples, DISCARDED_SPANS, tenant=TENANT, reason="queue_full") == 2 * (8 - accepted)


async def test_a_record_dropped_after_a_new_start_is_attributed_again_as_discarded(
    start_backend: StartBackend, start_service: StartService, tmp_path: Path
) -> None:
    down = await start_backend(always=Answer(503))
    server = ServerConfig("127.0.0.1", 0, graceful_shutdown_timeout=0.5)
    first = await start_service(replace(persistent_config(down, tmp_path), server=server))
    assert (await first.post(BODY)).status == 200
    await first.service.stop()

    refusing = await start_backend(always=Answer(400, grpc.StatusCode.INVALID_ARGUMENT))
    second = await start_service(persistent_config(refusing, tmp_path))
    await eventually(lambda: idle(second), "the record dropped as refused for good")
    shop = request(batch({"service.name": "shop"}, [span(), span()])).resource_spans[0].ByteSize()
    assert list((await second.discarded()).values()) == [shop]
    assert await discarded(second, DiscardReason.FORWARD_REJECTED) == 2


async def test_ready_answers_503_until_the_persistent_queue_is_opened_and_checked(
    start_backend: StartBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opening = threading.Event()
    may_finish = threading.Event()
    open_log = SegmentLog.open

    def slow_open(log: SegmentLog) -> list[RecordRef]:
        opening.set()
        may_finish.wait(timeout=20)
        return open_log(log)

    monkeypatch.setattr(SegmentLog, "open", slow_open)
    backend = await start_backend()
    service = Service(persistent_config(backend, tmp_path))
    starting = asyncio.create_task(service.start())
    try:
        await eventually(opening.is_set, "the queue being opened")
        assert service.server_address is not None
        ready_url = "http://{}:{}/ready".format(*service.server_address)
        async with aiohttp.ClientSession() as session:
            async with session.get(ready_url) as answer:
                assert answer.status == 503, "the server port is up, the queue is not checked yet"
            may_finish.set()
            await starting
            async with session.get(ready_url) as answer:
                assert answer.status == 200
    finally:
        may_finish.set()
        await asyncio.gather(starting, return_exceptions=True)
        await service.stop()


async def test_a_full_persistent_queue_refuses_before_any_synchronous_backend_is_sent_to(
    start_backend: StartBackend, start_service: StartService, tmp_path: Path
) -> None:
    up = await start_backend()
    durable = forwarder_to(
        up,
        name="durable",
        delivery="persistent",
        persistent_queue=PersistentQueueConfig(path=tmp_path, max_size_bytes=len(BODY)),  # no header room
    )
    synchronous = forwarder_to(up, name="synchronous", delivery="synchronous")
    running = await start_service(config_for(durable, synchronous))
    answer = await running.post(BODY)
    assert answer.status == 503
    assert up.arrived == 0, "refused on the room check, before anything was sent"
    samples = await running.samples()
    assert sample_value(samples, PARTIAL, forwarder="synchronous") == 0
    assert await discarded(running, DiscardReason.QUEUE_FULL) == 2
