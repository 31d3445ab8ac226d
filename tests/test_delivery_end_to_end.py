"""The forwarders' delivery modes proven on real processes, sockets and files.

persistent: what was answered 200 survives SIGKILL (at least once, the duplicates counted as
redeliveries), a corrupt tail of the on-disk queue costs only itself and is counted, and a full disk
refuses new requests unaccounted without taking the process down.
synchronous: the client's answer is the backend's: 503 while it is down, nothing accounted; its own
refusal and message when it refuses; and no more than `workers` requests at it at once.

The backend is a second distributor process (its spans_received counter is what arrived) or, where a
test must hold or refuse requests, a small aiohttp server in the test's own event loop; processes are
therefore started and waited for in threads, so that loop keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from distributor.common.rpc_status import Status
from tests.support.config_files import write_config_files
from tests.support.metrics import parse_usage, scrape, total
from tests.support.otlp import batch, request, span
from tests.support.polling import eventually
from tests.support.processes import (
    DistributorProcess,
    distributor_processes,
    export_with_sdk,
    free_port,
    sdk_batches,
    small_tmpfs,
    start_distributor,
)
from tests.support.senders import export_traces, post_traces

FORWARDER = "backend"
SPANS_RECEIVED = "tempo_distributor_spans_received_total"
DISCARDED_SPANS = "tempo_discarded_spans_total"
QUEUE_REQUESTS = "tempo_distributor_forwarder_persistent_queue_requests"
QUEUE_BYTES = "tempo_distributor_forwarder_persistent_queue_bytes"
REDELIVERIES = "tempo_distributor_forwarder_redeliveries_total"
SKIPPED_RECORDS = "tempo_distributor_forwarder_persistent_queue_skipped_records_total"
SKIPPED_BYTES = "tempo_distributor_forwarder_persistent_queue_skipped_bytes_total"
FSYNC_BATCH = "tempo_distributor_forwarder_persistent_queue_fsync_batch_requests"
FSYNC_BATCH_SUM, FSYNC_BATCH_COUNT = FSYNC_BATCH + "_sum", FSYNC_BATCH + "_count"

# A persistent queue's segments are small here, so a few hundred requests fill several.
SEGMENT_BYTES = 64 * 1024


# --- configuration ----------------------------------------------------------------------------------


def forwarder(
    endpoint: str,
    delivery: str,
    queue_path: Path | None = None,
    backend: str = "otlphttp",
    **settings: Any,
) -> dict[str, Any]:
    """One forwarder named `backend`, retrying fast (50 ms .. 200 ms) and for as long as it takes."""
    entry: dict[str, Any] = {
        "name": FORWARDER,
        "backend": backend,
        "delivery": delivery,
        backend: {"endpoint": endpoint, "tls": {"insecure": True}, "timeout": "10s"},
        "workers": 4,
        "queue_size": 100_000,
        "retry": {"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed_time": 0},
    }
    if queue_path is not None:
        entry["persistent_queue"] = {
            "path": str(queue_path),
            "max_size_bytes": 1 << 30,
            "segment_size_bytes": SEGMENT_BYTES,
        }
    return entry | settings


def write_distributor(directory: Path, name: str, http_port: int = 0, *forwarders: dict[str, Any]) -> Path:
    """A single-tenant distributor attributing by service.name, its OTLP/HTTP receiver on `http_port`
    (ephemeral when 0), forwarding everything to `forwarders`; no ingestion rate limit."""
    config = {
        "server": {"http_listen_port": 0, "graceful_shutdown_timeout": "2s"},
        "distributor": {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "http": {"endpoint": f"127.0.0.1:{http_port}"},
                        "grpc": {"endpoint": "127.0.0.1:0"},
                    }
                }
            },
            "usage": {"cost_attribution": {"enabled": True}},
            "forwarders": list(forwarders),
        },
        "overrides": {
            "defaults": {
                "cost_attribution": {"dimensions": ["service.name"]},
                "ingestion": {"rate_limit_bytes": 0},
                "forwarders": [entry["name"] for entry in forwarders],
            }
        },
    }
    return write_config_files(directory, config, name=f"{name}.yaml")


# --- processes ---------------------------------------------------------------------------------------


async def start(config: Path, started: list[DistributorProcess]) -> DistributorProcess:
    """A distributor process, once it has logged that it is ready and /ready answers 200 (a persistent
    queue is opened and checked first)."""
    running = await asyncio.to_thread(start_distributor, config)
    started.append(running)
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            assert running.process.poll() is None, f"the distributor exited:\n{running.log}"
            return await running.ready_status(session) == 200

        await eventually(ready, "/ready answers 200")
    return running


async def queued(session: aiohttp.ClientSession, front: DistributorProcess) -> float:
    return await front.total(session, QUEUE_REQUESTS, forwarder=FORWARDER)


async def spans_received(session: aiohttp.ClientSession, process: DistributorProcess) -> float:
    return await process.total(session, SPANS_RECEIVED)


async def received_usage(session: aiohttp.ClientSession, process: DistributorProcess) -> float:
    """The bytes at /usage_metrics, over every series."""
    return sum(parse_usage(await scrape(session, process.server_url + "/usage_metrics")).values())


# --- 1. persistent: SIGKILL, twice -------------------------------------------------------------------

LOAD_BATCHES = 2000
SPANS_PER_BATCH = 2


async def test_persistent_delivers_every_accepted_span_after_sigkills_duplicates_counted_as_redeliveries(
    tmp_path: Path,
) -> None:
    backend_port = free_port()
    queue_path = tmp_path / "queue"
    front_config = write_distributor(
        tmp_path, "front", 0, forwarder(f"http://127.0.0.1:{backend_port}", "persistent", queue_path)
    )
    backend_config = write_distributor(tmp_path, "backend", backend_port)
    batches = sdk_batches(LOAD_BATCHES, SPANS_PER_BATCH)
    with distributor_processes() as started:
        async with aiohttp.ClientSession() as session:
            front = await start(front_config, started)
            # The backend is down: every request the SDK sees accepted is on disk and nowhere else.
            outcome = await asyncio.to_thread(export_with_sdk, front.traces_url, batches)
            assert outcome.failed == 0 and outcome.succeeded == LOAD_BATCHES
            accepted_spans = outcome.spans_succeeded
            assert await spans_received(session, front) == accepted_spans
            assert await queued(session, front) == LOAD_BATCHES
            # Each was made durable by an fsync before its answer, several sharing one (group commit).
            samples = await front.metrics(session)
            assert total(samples, FSYNC_BATCH_SUM, forwarder=FORWARDER) == LOAD_BATCHES
            assert 0 < total(samples, FSYNC_BATCH_COUNT, forwarder=FORWARDER) <= LOAD_BATCHES

            front.sigkill()
            front = await start(front_config, started)
            assert await queued(session, front) == LOAD_BATCHES, "nothing answered 200 was lost"
            assert await spans_received(session, front) == 0, "a restart accounts nothing again"

            # The backend comes up; the front is killed again in the middle of delivering to it.
            backend = await start(backend_config, started)

            async def delivery_under_way() -> bool:
                return await spans_received(session, backend) >= accepted_spans // 4

            await eventually(delivery_under_way, "a quarter of the spans reached the backend")
            front.sigkill()
            arrived_at_kill = await spans_received(session, backend)
            assert arrived_at_kill < accepted_spans, "killed with requests still to deliver"

            front = await start(front_config, started)

            async def drained() -> bool:
                return (
                    await queued(session, front) == 0
                    and await spans_received(session, backend) >= accepted_spans
                )

            await eventually(drained, "the queue is empty and the backend has every accepted span", 30)
            # Only the second kill can have cost duplicates (nothing reached the backend before the
            # first), and whatever was being sent at that kill is counted by the process after it.
            redelivered = await front.total(session, REDELIVERIES, forwarder=FORWARDER)
            arrived = await spans_received(session, backend)
            excess = arrived - accepted_spans
            # At least once: every accepted span arrived; any more are requests sent again after a kill.
            assert 0 <= excess <= redelivered * SPANS_PER_BATCH, (arrived, accepted_spans, redelivered)
            assert front.process.poll() is None and backend.process.poll() is None
            assert front.stop() == 0 and backend.stop() == 0


# --- 2. persistent: a corrupt tail -------------------------------------------------------------------


def segment_files(queue_path: Path) -> list[Path]:
    """The queue's segment files, oldest first (named after their first record id, zero-padded)."""
    return sorted(queue_path.rglob("segment-*.log"))


# How the last record of the newest segment is damaged: (bytes cut off its end, garbage appended after
# what is left, the reason recovery names)
DAMAGE = {
    "torn": (10, b"", "torn_tail"),  # the machine died in the middle of writing it
    "garbage": (10, b"\xde\xad\xbe\xef" * 64, "checksum"),  # and something else was written after it
}


@pytest.mark.parametrize("damage", DAMAGE)
async def test_persistent_skips_and_counts_a_corrupt_tail_then_delivers_the_rest(
    tmp_path: Path, damage: str
) -> None:
    cut, garbage, reason = DAMAGE[damage]
    backend_port = free_port()
    queue_path = tmp_path / "queue"
    front_config = write_distributor(
        tmp_path, "front", 0, forwarder(f"http://127.0.0.1:{backend_port}", "persistent", queue_path)
    )
    requests = 300
    bodies = [
        request(batch({"service.name": "tail"}, [span({"index": index}, pad=200)] * 2)).SerializeToString()
        for index in range(requests)
    ]
    with distributor_processes() as started:
        async with aiohttp.ClientSession() as session:
            front = await start(front_config, started)
            for body in bodies:
                assert (await post_traces(session, front.traces_url, body)).status == 200
            assert await queued(session, front) == requests
            front.sigkill()

            segments = segment_files(queue_path)
            assert len(segments) >= 2, f"{requests} requests fill several segments: {segments}"
            last = segments[-1]
            with last.open("r+b") as file:
                file.truncate(last.stat().st_size - cut)
                file.seek(0, os.SEEK_END)
                file.write(garbage)

            front = await start(front_config, started)
            samples = await front.metrics(session)
            assert total(samples, SKIPPED_RECORDS, forwarder=FORWARDER) == 1, "only the damaged record"
            assert total(samples, SKIPPED_RECORDS, forwarder=FORWARDER, reason=reason) == 1
            # What is left of the record (its payload and a header of under 128 bytes) and what follows.
            skipped_bytes = total(samples, SKIPPED_BYTES, forwarder=FORWARDER)
            left_of_it = len(bodies[-1]) - cut + len(garbage)
            assert left_of_it <= skipped_bytes < left_of_it + 128
            assert await queued(session, front) == requests - 1
            backend = await start(write_distributor(tmp_path, "backend", backend_port), started)

            async def drained() -> bool:
                return await queued(session, front) == 0

            await eventually(drained, "the rest of the queue is delivered")
            # Everything but the cut record arrives, once.
            assert await spans_received(session, backend) == (requests - 1) * 2
            assert front.process.poll() is None


# --- 3. persistent: a full disk ----------------------------------------------------------------------


async def test_persistent_on_a_full_disk_refuses_unaccounted_stays_up_and_accepts_again_once_drained(
    tmp_path: Path,
) -> None:
    backend_port = free_port()
    with small_tmpfs(tmp_path / "small-disk", "2m") as disk:
        front_config = write_distributor(
            tmp_path, "front", 0, forwarder(f"http://127.0.0.1:{backend_port}", "persistent", disk / "queue")
        )
        body = request(batch({"service.name": "full"}, [span(pad=1000)] * 8)).SerializeToString()
        with distributor_processes() as started:
            async with aiohttp.ClientSession() as session:
                front = await start(front_config, started)
                assert (await post_traces(session, front.traces_url, body)).status == 200
                usage_per_request = await received_usage(session, front)
                accepted = 1
                refusal = None
                for _ in range(2 * 2 * 1024 * 1024 // len(body)):  # twice what the disk can hold
                    answer = await post_traces(session, front.traces_url, body)
                    if answer.status != 200:
                        refusal = answer
                        break
                    accepted += 1
                assert refusal is not None, "a 2 MiB disk refuses long before this"
                assert refusal.status == 503 and "Retry-After" in refusal.headers
                on_disk = await front.total(session, QUEUE_BYTES, forwarder=FORWARDER)
                assert accepted * len(body) <= on_disk <= 2 * 1024 * 1024, "the disk was full, not the bound"
                refused_too = [await post_traces(session, front.traces_url, body) for _ in range(5)]
                assert [answer.status for answer in refused_too] == [503] * 5
                grpc_refused = await export_traces(front.grpc_target, body)
                assert grpc_refused.code == grpc.StatusCode.UNAVAILABLE

                # Nothing refused is accounted; the process is up and serving.
                assert await spans_received(session, front) == accepted * 8
                assert await received_usage(session, front) == accepted * usage_per_request
                assert front.process.poll() is None

                backend = await start(write_distributor(tmp_path, "backend", backend_port), started)

                async def drained() -> bool:
                    return (
                        await queued(session, front) == 0
                        and await spans_received(session, backend) >= accepted * 8
                    )

                await eventually(drained, "the backend drains the queue", 30)
                assert await spans_received(session, backend) == accepted * 8

                async def accepted_again() -> bool:
                    return (await post_traces(session, front.traces_url, body)).status == 200

                await eventually(accepted_again, "new requests are accepted once the disk has room")
                assert await spans_received(session, front) == (accepted + 1) * 8
                assert front.process.poll() is None


# --- 4. synchronous ----------------------------------------------------------------------------------


@dataclass
class HoldingBackend:
    """An OTLP/HTTP backend in the test's event loop: it can hold requests until released, or answer
    every request with one status and message; it records how many requests it held at once."""

    hold: asyncio.Event = field(default_factory=asyncio.Event)
    refuse: tuple[int, str] | None = None  # (status, message) for every request
    in_flight: int = 0
    most_in_flight: int = 0
    arrived: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _traces(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived += 1
        if self.refuse is not None:
            status, message = self.refuse
            body = Status(code=3, message=message).SerializeToString()  # INVALID_ARGUMENT
            return web.Response(status=status, body=body, content_type="application/x-protobuf")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.hold.wait()
        finally:
            self.in_flight -= 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self) -> HoldingBackend:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.SockSite(self._runner, socket.create_server(("127.0.0.1", 0)))
        await site.start()
        self.url = f"http://127.0.0.1:{site._sock.getsockname()[1]}"
        return self

    async def stop(self) -> None:
        self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def holding_backend() -> AsyncIterator[HoldingBackend]:
    backend = await HoldingBackend().start()
    yield backend
    await backend.stop()


SYNC_BODY = request(batch({"service.name": "sync"}, [span(pad=3000)] * 2)).SerializeToString()


@pytest.mark.parametrize("outage", ["down", "timing_out"])
async def test_synchronous_with_the_backend_down_or_timing_out_answers_unavailable_and_accounts_nothing(
    tmp_path: Path, holding_backend: HoldingBackend, outage: str
) -> None:
    # A backend that never answers (held for the whole test) makes each send time out after 300 ms.
    endpoint = f"http://127.0.0.1:{free_port()}" if outage == "down" else holding_backend.url
    sync = forwarder(endpoint, "synchronous", otlphttp={"endpoint": endpoint, "timeout": "300ms"})
    with distributor_processes() as started:
        async with aiohttp.ClientSession() as session:
            front = await start(write_distributor(tmp_path, "front", 0, sync), started)
            answer = await post_traces(session, front.traces_url, SYNC_BODY)
            assert answer.status == 503
            assert "Retry-After" in answer.headers, "the client is told to come back"
            refused = await export_traces(front.grpc_target, SYNC_BODY)
            assert refused.code == grpc.StatusCode.UNAVAILABLE
            assert await spans_received(session, front) == 0
            assert await received_usage(session, front) == 0
            # Refused, so not received: counted as discarded because the backend was unavailable.
            assert await front.total(session, DISCARDED_SPANS, reason="forward_unavailable") == 2 * 2
            if outage == "timing_out":
                assert holding_backend.arrived == 2, "both requests reached the backend, which never answered"


async def test_synchronous_holds_at_most_workers_requests_at_a_slow_backend_and_bounds_the_bytes(
    tmp_path: Path, holding_backend: HoldingBackend
) -> None:
    workers, admitted_bytes = 2, 5 * len(SYNC_BODY)
    sync = forwarder(
        holding_backend.url,
        "synchronous",
        workers=workers,
        queue_size_bytes=admitted_bytes,
        total_queue_size_bytes=admitted_bytes,
    )
    clients = 9
    with distributor_processes() as started:
        async with aiohttp.ClientSession() as session:
            front = await start(write_distributor(tmp_path, "front", 0, sync), started)
            posts = [
                asyncio.create_task(post_traces(session, front.traces_url, SYNC_BODY)) for _ in range(clients)
            ]

            def refused() -> list[int]:
                return [task.result().status for task in posts if task.done()]

            # Past the bytes bound the rest are refused at once; `workers` requests reach the backend.
            await eventually(
                lambda: len(refused()) >= clients - 5, "the requests past the bytes bound are refused"
            )
            await eventually(
                lambda: holding_backend.in_flight == workers, "exactly `workers` requests held at the backend"
            )
            assert set(refused()) == {503}
            assert await spans_received(session, front) == 0, "nothing is accounted before it is delivered"
            assert holding_backend.most_in_flight == workers

            holding_backend.hold.set()
            answers = [answer.status for answer in await asyncio.gather(*posts)]
            delivered = answers.count(200)
            # Exactly what fits in the bytes bound was taken: `workers` sending, the rest waiting for them.
            assert answers.count(503) == clients - 5 and delivered == 5
            assert holding_backend.arrived == delivered
            assert holding_backend.most_in_flight == workers, "never more than `workers` at the backend"
            assert await spans_received(session, front) == 2 * delivered


async def test_synchronous_passes_the_backends_refusal_and_message_to_the_client(
    tmp_path: Path, holding_backend: HoldingBackend
) -> None:
    message = "span 0 has an empty trace_id"
    holding_backend.refuse = (400, message)
    sync = forwarder(holding_backend.url, "synchronous")
    with distributor_processes() as started:
        async with aiohttp.ClientSession() as session:
            front = await start(write_distributor(tmp_path, "front", 0, sync), started)
            answer = await post_traces(session, front.traces_url, SYNC_BODY)
            assert answer.status == 400
            assert message in Status.FromString(answer.body).message
            refused = await export_traces(front.grpc_target, SYNC_BODY)
            assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
            assert message in refused.details
            assert holding_backend.arrived == 2
            # Refused, so not received: counted as discarded because the backend rejected it.
            assert await spans_received(session, front) == 0
            assert await received_usage(session, front) == 0
            assert await front.total(session, DISCARDED_SPANS, reason="forward_rejected") == 2 * 2
