"""Large requests are inflated, converted and scanned on the ingest worker threads: the event loop keeps
answering while they are, and a pool that holds too much refuses new large requests with 503 /
UNAVAILABLE before anything of them is counted."""

from __future__ import annotations

import asyncio
import gc
import gzip
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace

import grpc

from distributor.common.endpoint import Endpoint
from distributor.ingest.workers import IngestWorkersConfig
from distributor.receivers.config import OtlpHttpConfig
from distributor.receivers.otlp import SCAN_COST_DIVISOR
from tests.support.metrics import sample_value
from tests.support.otlp import batch, otlp_json, request, span
from tests.support.senders import JSON, PROTOBUF
from tests.support.service import RunningService, StartService, assert_nothing_recorded, make_config

GZIP_PROTOBUF = {**PROTOBUF, "Content-Encoding": "gzip"}
GZIP_JSON = {**JSON, "Content-Encoding": "gzip"}


def many_spans(spans: int, services: int = 50) -> bytes:
    """A request of `spans` spans in `services` batches, each span with its own `team`."""
    per_batch = spans // services
    return request(
        *(
            batch(
                {"service.name": f"service-{b}"},
                [span({"team": f"team-{i % 7}", "http.route": "/api/items/{id}"}) for i in range(per_batch)],
            )
            for b in range(services)
        )
    ).SerializeToString()


async def longest_ready_wait(running: RunningService, work: Awaitable[object]) -> tuple[float, object]:
    """Ask /ready back to back while `work` runs: the longest an answer took, and the work's result."""
    gc.collect()  # what earlier tests left must not be collected in the middle of this one
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    waits: list[float] = []
    while not task.done():
        asked = loop.time()
        async with running.session.get(running.server_url + "/ready") as response:
            assert response.status == 200
        waits.append(loop.time() - asked)
    assert len(waits) > 1, "the work ended before /ready was asked twice"
    return max(waits), task.result()


# The receiver's body limit for the test: every request below is as large as it allows (the default,
# 20 MiB, would make the test build bodies for many seconds; the bound is what it is about).
BODY_LIMIT = 8 * 1024 * 1024


async def test_ready_answers_promptly_while_the_largest_allowed_requests_of_every_kind_are_processed(
    start_service: StartService,
) -> None:
    http = OtlpHttpConfig(endpoint=Endpoint("127.0.0.1", 0), max_request_body_bytes=BODY_LIMIT)
    running = await start_service(
        make_config(dimensions=["service.name", "team"], multitenancy=True, otlp_http=http)
    )
    # Built before the service is watched: the test shares the service's event loop.
    protobuf = many_spans(78_000)  # every span with a span-level value
    json_spans = many_spans(24_000)
    as_json = otlp_json(request_of(json_spans))
    for body in (protobuf, as_json):
        assert 0.85 * BODY_LIMIT < len(body) <= BODY_LIMIT, len(body)
    sends: dict[str, Callable[[], Awaitable[object]]] = {
        "protobuf": lambda: running.post(protobuf, "protobuf"),
        "gzip": lambda: running.post(gzip.compress(protobuf), "gzip", GZIP_PROTOBUF),
        "json": lambda: running.post(as_json, "json", JSON),
        "gzip-json": lambda: running.post(gzip.compress(as_json), "gzip-json", GZIP_JSON),
    }
    for name, send in sends.items():
        longest, answer = await longest_ready_wait(running, send())
        assert getattr(answer, "status", None) == 200, (name, answer)
        assert longest < 0.1, f"{name}: /ready waited {longest * 1000:.0f} ms"
    samples = await running.samples()
    assert sample_value(samples, "tempo_distributor_ingest_workers_steps_total") >= len(sends)
    # The same spans as protobuf, gzip protobuf, OTLP/JSON and gzip OTLP/JSON: identical series.
    assert (await running.post(json_spans, "json-as-protobuf")).status == 200
    by_tenant: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for labels, value in (await running.usage()).items():
        tenant = dict(labels)["tenant"]
        by_tenant.setdefault(tenant, {})[frozenset(kv for kv in labels if kv[0] != "tenant")] = value
    assert by_tenant["protobuf"] == by_tenant["gzip"]
    assert by_tenant["json"] == by_tenant["gzip-json"] == by_tenant["json-as-protobuf"]
    assert sum(by_tenant["protobuf"].values()) > len(protobuf) * 0.99


def request_of(body: bytes) -> object:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    return ExportTraceServiceRequest.FromString(body)


async def test_a_full_pool_refuses_large_requests_with_503_and_counts_nothing(
    start_service: StartService,
) -> None:
    workers = IngestWorkersConfig(workers=1, inline_max_bytes=256, max_pending_bytes=4096)
    running = await start_service(replace(make_config(), ingest_workers=workers))
    pool = running.service.ingest_workers
    body = many_spans(200, services=2)
    assert len(body) > 256 * SCAN_COST_DIVISOR  # scanned by the workers
    # The one worker is busy with a step that holds most of the pool's bytes until released.
    release = threading.Event()
    holding = asyncio.ensure_future(pool.run(4000, release.wait, 10))
    await asyncio.sleep(0)
    try:
        answer = await running.post(body)
        assert answer.status == 503 and answer.headers["Retry-After"] == "1"
        assert b"ingest workers" in answer.body
        grpc_answer = await running.export(body)
        assert grpc_answer.code == grpc.StatusCode.UNAVAILABLE
        assert "google.rpc.retryinfo-bin" in grpc_answer.trailing
        await assert_nothing_recorded(running)
        refused = sample_value(
            await running.samples(), "tempo_distributor_refused_requests_total", reason="ingest_workers_busy"
        )
        assert refused == 2
        # A small request does not need the pool: it is taken inline.
        small = request(batch({"service.name": "small"}, [span()])).SerializeToString()
        assert len(small) <= 256 * SCAN_COST_DIVISOR and (await running.post(small)).status == 200
    finally:
        release.set()
        await holding
    answer = await running.post(body)  # the pool has room again
    assert answer.status == 200, answer.body
    assert sum((await running.usage()).values()) > len(body)
