"""Forwarding through the running service to scriptable OTLP backends on real sockets: exact bodies and
tenants, transient failures retried (Retry-After / RetryInfo honoured), permanent rejections, exhausted
retries, full queues refusing requests with nothing accounted, attribute truncation, several forwarders.

No test sleeps for time: conditions are polled with `eventually`, and the forwarders retry every 10 to
50 ms (`forwarder_to`)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.common.rpc_status import RETRY_INFO_TYPE_URL, RetryInfo, Status
from distributor.config import Config
from distributor.forwarding.config import ForwarderConfig, RetryConfig
from distributor.server.config import ServerConfig
from tests.support.backends import Answer, RecordingBackend, forwarder_to
from tests.support.metrics import Labels, Samples, labels, sample_value, total, with_reason
from tests.support.otlp import attributes, batch, otlp_json, request, sdk_spans, span, span_count
from tests.support.polling import eventually
from tests.support.senders import JSON
from tests.support.service import RunningService, StartService, make_config, with_forwarders

StartBackend = Callable[..., Awaitable[RecordingBackend]]

TENANT = "single-tenant"
TRANSPORTS = ["http", "grpc"]
# What the forwarder's clients call a backend's 503 / UNAVAILABLE (the send_failures and retries label).
UNAVAILABLE_REASON = {"http": "http_503", "grpc": "unavailable"}
REJECTED_REASON = {"http": "http_400", "grpc": "invalid_argument"}
# /metrics sample names.
SENT_REQUESTS = "tempo_distributor_forwarder_sent_requests_total"
SENT_SPANS = "tempo_distributor_forwarder_sent_spans_total"
SENT_BYTES = "tempo_distributor_forwarder_sent_bytes_total"
SEND_FAILURES = "tempo_distributor_forwarder_send_failures_total"
RETRIES = "tempo_distributor_forwarder_retries_total"
DROPPED_REQUESTS = "tempo_distributor_forwarder_dropped_requests_total"
DROPPED_SPANS = "tempo_distributor_forwarder_dropped_spans_total"
DISCARDED_SPANS = "tempo_discarded_spans_total"
SPANS_RECEIVED = "tempo_distributor_spans_received_total"
BYTES_RECEIVED = "tempo_distributor_bytes_received_total"
TRUNCATED = "tempo_distributor_attributes_truncated_total"
QUEUED_BYTES = "tempo_distributor_forwarder_queued_bytes"
QUEUE_LENGTH = "tempo_distributor_forwarder_queue_length"


# --- helpers -----------------------------------------------------------------------------------------


@pytest.fixture
async def start_backend() -> AsyncIterator[StartBackend]:
    """RecordingBackends stopped at teardown. Tests ask for this fixture before `start_service`, so
    the service (and its forwarders' drain) stops first, while the backends still answer."""
    started: list[RecordingBackend] = []

    async def start(http_port: int = 0, **fields: Any) -> RecordingBackend:
        backend = await RecordingBackend(**fields).start(http_port=http_port)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.stop()


def config_for(*forwarders: ForwarderConfig, multitenancy: bool = False, **ingestion: int) -> Config:
    """A service forwarding every tenant's traces to these forwarders. A short graceful shutdown keeps
    the teardown of a failed test (requests still queued for a failing backend) short."""
    server = ServerConfig("127.0.0.1", 0, graceful_shutdown_timeout=3.0)
    return with_forwarders(make_config(multitenancy=multitenancy, server=server), *forwarders, **ingestion)


def idle(running: RunningService) -> bool:
    """No forwarder holds anything: every accepted request was delivered or dropped (and counted)."""
    return all(forwarder.pending() == 0 for forwarder in running.service.forwarders.values())


def service_bytes(*reqs: ExportTraceServiceRequest) -> dict[Labels, float]:
    """The received series of requests whose batches each hold one service (named by its resource):
    every batch's encoded size goes to its service."""
    expected: dict[Labels, float] = {}
    for req in reqs:
        for rs in req.resource_spans:
            [name] = [kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"]
            key = labels(service_name=name)
            expected[key] = expected.get(key, 0) + rs.ByteSize()
    return expected


def free_port() -> int:
    """A port nothing listens on (bound then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sdk_request_body(spans: list[Any]) -> bytes:
    """The ExportTraceServiceRequest the SDK exporters send for these spans."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return bytes(encode_spans(spans).SerializePartialToString())


# --- delivery ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_tenants_requests_arrive_once_byte_identical_with_their_tenant(
    start_backend: StartBackend, start_service: StartService, transport: str
) -> None:
    backend = await start_backend()
    running = await start_service(config_for(forwarder_to(backend, transport), multitenancy=True))
    sent: list[tuple[str, bytes]] = []
    for tenant in ("team-a", "team-b"):
        for i in range(3):
            spans = [span({"i": i, "tenant": tenant}, name=f"{tenant}-op-{i}-{k}") for k in range(i + 1)]
            body = request(batch({"service.name": f"{tenant}-svc"}, spans)).SerializeToString()
            assert (await running.post(body, tenant)).status == 200
            sent.append((tenant, body))
        # The same protobuf body again: it must arrive twice, not be merged or lost.
        assert (await running.post(sent[-1][1], tenant)).status == 200
        sent.append(sent[-1])
    json_req = request(
        batch({"service.name": "json-svc", "host.id": 7}, [span({"via": "json"}, name="from-json")] * 2)
    )
    for tenant in ("team-a", "team-b"):
        assert (await running.post(otlp_json(json_req), tenant, JSON)).status == 200

    await eventually(lambda: len(backend.deliveries) >= len(sent) + 2 and idle(running))

    assert {delivery.transport for delivery in backend.deliveries} == {transport}
    json_arrived = [d for d in backend.deliveries if ExportTraceServiceRequest.FromString(d.body) == json_req]
    assert sorted(d.tenant or "" for d in json_arrived) == ["team-a", "team-b"]
    # JSON arrives as its protobuf equivalent, so every body is what the protobuf encoding would send.
    expected = Counter(sent) + Counter({("team-a", json_req.SerializeToString()): 1})
    expected[("team-b", json_req.SerializeToString())] += 1
    assert Counter((d.tenant, d.body) for d in backend.deliveries) == expected

    samples = await running.samples()
    for tenant in ("team-a", "team-b"):
        bodies = [body for owner, body in expected.elements() if owner == tenant]
        spans_sent = sum(span_count(ExportTraceServiceRequest.FromString(body)) for body in bodies)
        forwarder = {"forwarder": "backend", "tenant": tenant}
        assert total(samples, SENT_REQUESTS, **forwarder) == len(bodies)
        assert total(samples, SENT_SPANS, **forwarder) == spans_sent
        assert total(samples, SENT_BYTES, **forwarder) == sum(map(len, bodies))
        assert total(samples, SPANS_RECEIVED, tenant=tenant) == spans_sent
    assert not [key for key in samples if key[0] == DISCARDED_SPANS], "nothing discarded"
    assert total(samples, SEND_FAILURES) == 0


async def test_sdk_grpc_exporter_spans_are_forwarded_over_http(
    start_backend: StartBackend, start_service: StartService
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    backend = await start_backend()
    running = await start_service(config_for(forwarder_to(backend, "http")))
    spans = sdk_spans()
    exporter = OTLPSpanExporter(endpoint=running.grpc_target, insecure=True)
    try:
        result = await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()
    assert result == SpanExportResult.SUCCESS

    await eventually(lambda: backend.spans_delivered() >= len(spans) and idle(running))
    assert [(d.transport, d.tenant) for d in backend.deliveries] == [("http", TENANT)]
    arrived = [
        (s.name, s.span_id)
        for rs in ExportTraceServiceRequest.FromString(backend.deliveries[0].body).resource_spans
        for scope in rs.scope_spans
        for s in scope.spans
    ]
    assert sorted(arrived) == sorted((s.name, s.context.span_id.to_bytes(8, "big")) for s in spans)
    assert backend.deliveries[0].body == sdk_request_body(spans)


async def test_every_forwarder_of_the_tenant_gets_every_request_once(
    start_backend: StartBackend, start_service: StartService
) -> None:
    http_backend, grpc_backend = await start_backend(), await start_backend()
    running = await start_service(
        config_for(
            forwarder_to(http_backend, "http", name="via-http"),
            forwarder_to(grpc_backend, "grpc", name="via-grpc"),
        )
    )
    bodies = [
        request(batch({"service.name": f"svc-{i}"}, [span(name=f"op-{i}")] * (i + 1))).SerializeToString()
        for i in range(4)
    ]
    for body in bodies[:2]:
        assert (await running.post(body)).status == 200
    for body in bodies[2:]:
        assert (await running.export(body)).code == grpc.StatusCode.OK

    def both_done() -> bool:
        return len(http_backend.deliveries) >= len(bodies) and len(grpc_backend.deliveries) >= len(bodies)

    await eventually(lambda: both_done() and idle(running))
    for backend, transport in ((http_backend, "http"), (grpc_backend, "grpc")):
        assert Counter(backend.bodies()) == Counter(bodies), transport
        assert {(d.transport, d.tenant) for d in backend.deliveries} == {(transport, TENANT)}
    samples = await running.samples()
    for name in ("via-http", "via-grpc"):
        assert total(samples, SENT_REQUESTS, forwarder=name) == 4
        assert total(samples, SENT_SPANS, forwarder=name) == 10
    assert total(samples, SPANS_RECEIVED) == 10  # counted once, not per forwarder


# --- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unavailable_backend_is_retried_until_every_span_is_delivered_once(
    start_backend: StartBackend, start_service: StartService, transport: str
) -> None:
    failures = 3
    backend = await start_backend(script=[Answer()] * failures)
    running = await start_service(config_for(forwarder_to(backend, transport)))
    reqs = [request(batch({"service.name": f"svc-{i}"}, [span(name=f"op-{i}")] * (i + 1))) for i in range(2)]
    for req in reqs:
        assert (await running.post(req.SerializeToString())).status == 200

    await eventually(lambda: len(backend.deliveries) >= len(reqs) and idle(running))
    assert Counter(backend.bodies()) == Counter(req.SerializeToString() for req in reqs)
    assert backend.spans_delivered() == 3
    assert backend.attempts == len(reqs) + failures

    samples = await running.samples()
    reason = UNAVAILABLE_REASON[transport]
    assert total(samples, RETRIES) == failures
    assert total(samples, RETRIES, forwarder="backend", reason=reason) == failures
    assert total(samples, SEND_FAILURES) == failures
    assert total(samples, SEND_FAILURES, reason=reason) == failures
    assert total(samples, SENT_REQUESTS) == len(reqs)
    assert total(samples, SENT_SPANS) == 3
    assert total(samples, DROPPED_SPANS) == 0
    assert total(samples, DISCARDED_SPANS) == 0
    assert await running.discarded() == {}
    assert await running.usage() == service_bytes(*reqs)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retry_delay_asked_by_the_backend_is_honoured(
    start_backend: StartBackend, start_service: StartService, transport: str
) -> None:
    asked = 0.3  # Retry-After: 0.3 over HTTP, a RetryInfo of 300 ms over gRPC
    backend = await start_backend(script=[Answer(retry_after=asked)])
    running = await start_service(config_for(forwarder_to(backend, transport)))  # own backoff: 10-50 ms
    body = request(batch({"service.name": "svc"}, [span()])).SerializeToString()

    started = time.monotonic()
    assert (await running.post(body)).status == 200
    await eventually(lambda: len(backend.deliveries) == 1)
    waited = time.monotonic() - started

    assert backend.attempts == 2
    assert waited >= asked, f"retried after {waited:.3f}s, before the {asked}s the backend asked for"
    assert waited < asked + 5
    samples = await running.samples()
    assert total(samples, RETRIES, reason=UNAVAILABLE_REASON[transport]) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_permanent_rejection_is_tried_once_and_attributed_as_discarded(
    start_backend: StartBackend, start_service: StartService, transport: str
) -> None:
    backend = await start_backend(always=Answer(http_status=400, grpc_code=grpc.StatusCode.INVALID_ARGUMENT))
    running = await start_service(config_for(forwarder_to(backend, transport)))
    reqs = [
        request(
            batch({"service.name": "auth"}, [span(), span({"user": "x"})]),
            batch({"service.name": "cart"}, [span(pad=100)]),
        ),
        request(batch({"service.name": "auth"}, [span(name="login")])),
        request(batch({"service.name": "search"}, [span(name="query")] * 3)),
    ]
    spans = sum(map(span_count, reqs))
    for req in reqs:
        assert (
            await running.post(req.SerializeToString())
        ).status == 200  # accepted, then refused downstream

    await eventually(lambda: backend.attempts >= len(reqs) and idle(running))
    assert backend.attempts == len(reqs), "one attempt per request: a permanent failure is not retried"
    assert backend.deliveries == []

    samples = await running.samples()
    assert total(samples, RETRIES) == 0
    assert total(samples, SEND_FAILURES) == len(reqs)
    assert total(samples, SEND_FAILURES, reason=REJECTED_REASON[transport]) == len(reqs)
    dropped = {"forwarder": "backend", "tenant": TENANT, "reason": "forward_rejected"}
    assert total(samples, DROPPED_SPANS, **dropped) == spans
    assert total(samples, DROPPED_REQUESTS, **dropped) == len(reqs)
    assert total(samples, DISCARDED_SPANS, tenant=TENANT, reason="forward_rejected") == spans
    assert total(samples, DISCARDED_SPANS) == spans
    assert total(samples, SPANS_RECEIVED, tenant=TENANT) == spans

    received = service_bytes(*reqs)
    assert await running.usage() == received  # accepted, so still counted as received
    assert await running.discarded() == with_reason(received, "forward_rejected")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exhausted_retries_drop_the_request_counted_and_attributed(
    start_backend: StartBackend, start_service: StartService, transport: str
) -> None:
    backend = await start_backend(always=Answer())
    retry = RetryConfig(initial_interval=0.01, max_interval=0.02, max_elapsed_time=0.2)
    running = await start_service(config_for(forwarder_to(backend, transport, retry=retry)))
    req = request(
        batch({"service.name": "auth"}, [span(), span()]), batch({"service.name": "cart"}, [span(pad=50)])
    )
    assert (await running.post(req.SerializeToString())).status == 200

    await eventually(lambda: idle(running))
    assert backend.deliveries == []
    assert backend.attempts >= 2, "retried before giving up"

    samples = await running.samples()
    reason = UNAVAILABLE_REASON[transport]
    assert total(samples, SEND_FAILURES, reason=reason) == backend.attempts
    assert total(samples, RETRIES, reason=reason) == backend.attempts - 1
    dropped = {"forwarder": "backend", "tenant": TENANT, "reason": "forward_retries_exhausted"}
    assert total(samples, DROPPED_SPANS, **dropped) == 3
    assert total(samples, DROPPED_REQUESTS, **dropped) == 1
    assert total(samples, DISCARDED_SPANS, tenant=TENANT, reason="forward_retries_exhausted") == 3
    assert total(samples, DISCARDED_SPANS) == 3
    received = service_bytes(req)
    assert await running.usage() == received
    assert await running.discarded() == with_reason(received, "forward_retries_exhausted")


async def test_full_queue_refuses_unaccounted_then_everything_lands_after_recovery(
    start_backend: StartBackend, start_service: StartService
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    port = free_port()
    retry = RetryConfig(initial_interval=0.01, max_interval=0.05, max_elapsed_time=300.0)
    fwd = forwarder_to(f"http://127.0.0.1:{port}", "http", queue_size=1, workers=1, retry=retry)
    running = await start_service(config_for(fwd))
    forwarder = running.service.forwarders["backend"]
    reqs = {
        name: request(batch({"service.name": name}, [span(name=f"{name}-op")] * spans))
        for name, spans in (("first", 1), ("second", 2), ("third", 3), ("fourth", 4))
    }
    body = {name: req.SerializeToString() for name, req in reqs.items()}

    assert (await running.post(body["first"])).status == 200
    # The only worker takes it and keeps retrying the closed port.
    await eventually(lambda: forwarder.pending() == 1 and dict(forwarder.queue_lengths()) == {TENANT: 0})
    assert (await running.post(body["second"])).status == 200  # waits in the queue, which is now full

    answer = await running.post(body["third"])
    assert answer.status == 503
    assert answer.headers.get("Retry-After") == "1"
    assert answer.content_type.startswith("application/x-protobuf")
    refusal = Status.FromString(answer.body)
    assert refusal.code == 14  # UNAVAILABLE
    assert "queue full" in refusal.message
    [detail] = refusal.details
    assert detail.type_url == RETRY_INFO_TYPE_URL
    assert RetryInfo.FromString(detail.value).retry_delay.ToNanoseconds() == 1_000_000_000
    assert (await running.export(body["fourth"])).code == grpc.StatusCode.UNAVAILABLE

    samples = await running.samples()
    accepted, refused = ("first", "second"), ("third", "fourth")
    accepted_spans = sum(span_count(reqs[name]) for name in accepted)
    refused_spans = sum(span_count(reqs[name]) for name in refused)
    assert total(samples, SPANS_RECEIVED, tenant=TENANT) == accepted_spans
    assert total(samples, BYTES_RECEIVED, tenant=TENANT) == sum(len(body[name]) for name in accepted)
    assert total(samples, DISCARDED_SPANS, tenant=TENANT, reason="queue_full") == refused_spans
    assert total(samples, DISCARDED_SPANS) == refused_spans
    queue = {"forwarder": "backend", "tenant": TENANT}
    assert samples[("tempo_distributor_forwarder_queue_length", frozenset(queue.items()))] == 1
    assert samples[("tempo_distributor_forwarder_queue_capacity", frozenset({("forwarder", "backend")}))] == 1
    assert total(samples, SEND_FAILURES, reason="connection_error") >= 1
    assert await running.usage() == service_bytes(*(reqs[name] for name in accepted))
    discarded = await running.discarded()
    assert discarded == with_reason(service_bytes(*(reqs[name] for name in refused)), "queue_full")

    # An SDK exporter that meets the full queue gets 503 + Retry-After and tries again later.
    spans = sdk_spans(("sdk-service",), per_service=2)
    exporter = OTLPSpanExporter(endpoint=running.traces_url)
    registry = running.service.registry

    def queue_full_spans() -> float:
        return registry.get_sample_value(DISCARDED_SPANS, {"tenant": TENANT, "reason": "queue_full"}) or 0.0

    export = asyncio.ensure_future(asyncio.to_thread(exporter.export, spans))
    try:
        await eventually(lambda: queue_full_spans() >= refused_spans + len(spans))  # the SDK was refused
        assert not export.done()
        backend = await start_backend(http_port=port)
        assert await export == SpanExportResult.SUCCESS
        await eventually(lambda: len(backend.deliveries) >= 3 and idle(running))
        assert Counter(backend.bodies()) == Counter([body["first"], body["second"], sdk_request_body(spans)])
        assert {d.tenant for d in backend.deliveries} == {TENANT}
        samples = await running.samples()
        assert total(samples, SENT_REQUESTS) == 3
        assert total(samples, DROPPED_REQUESTS) == 0
        assert total(samples, SPANS_RECEIVED) == accepted_spans + len(spans)
    finally:
        await asyncio.wait_for(asyncio.shield(export), 30)  # a failed test must not leave the thread behind
        exporter.shutdown()


async def test_queued_bytes_bounds_refuse_tenants_against_a_hanging_backend_then_everything_accepted_lands(
    start_backend: StartBackend, start_service: StartService
) -> None:
    hold = asyncio.Event()
    backend = await start_backend(hold=hold)  # takes requests and answers none until released
    body = request(batch({"service.name": "svc"}, [span(pad=10_000)])).SerializeToString()
    per_tenant, all_tenants = 4 * len(body), 10 * len(body)
    fwd = forwarder_to(
        backend,
        "http",
        workers=1,
        timeout=60.0,
        queue_size_bytes=per_tenant,
        total_queue_size_bytes=all_tenants,
    )
    running = await start_service(config_for(fwd, multitenancy=True))
    forwarder = running.service.forwarders["backend"]
    try:
        accepted: Counter[str] = Counter()
        refusals = 0

        async def send_until_refused(tenant: str) -> None:
            nonlocal refusals
            while (answer := await running.post(body, tenant)).status == 200:
                accepted[tenant] += 1
            assert answer.status == 503 and answer.headers.get("Retry-After") == "1"
            assert "queue full" in Status.FromString(answer.body).message
            refusals += 1

        # One tenant reaches its own bound (one request in the worker's hands, three waiting)...
        await send_until_refused("heavy")
        assert accepted["heavy"] == 4 and forwarder.queued_bytes("heavy") == per_tenant
        # ...while the others still have room, until all of them together reach the forwarder's bound.
        others = ("t1", "t2", "t3", "t4")
        for tenant in others:
            await send_until_refused(tenant)
        assert [accepted[tenant] for tenant in others] == [4, 2, 0, 0]
        for tenant in ("heavy", *others):  # and it holds however long they keep sending
            for _ in range(5):
                assert (await running.post(body, tenant)).status == 503
                refusals += 1
        answer = await running.export(body, "t4")
        assert answer.code == grpc.StatusCode.UNAVAILABLE
        refusals += 1

        samples = await running.samples()
        assert total(samples, QUEUED_BYTES, forwarder="backend") == all_tenants == forwarder.queued_bytes()
        # Refused by bytes: no queue came near its 1000 requests.
        assert max(value for (name, _), value in samples.items() if name == QUEUE_LENGTH) == 3
        assert total(samples, SPANS_RECEIVED) == sum(accepted.values())
        assert total(samples, DISCARDED_SPANS, reason="queue_full") == refusals
        assert total(samples, DISCARDED_SPANS) == refusals

        hold.set()  # the backend recovers
        await eventually(lambda: len(backend.deliveries) >= sum(accepted.values()) and idle(running))
        assert Counter(delivery.tenant for delivery in backend.deliveries) == accepted
        assert set(backend.bodies()) == {body}
        samples = await running.samples()
        assert total(samples, QUEUED_BYTES, forwarder="backend") == 0
        assert total(samples, DROPPED_REQUESTS) == 0
        assert (await running.post(body, "t4")).status == 200, "room again once delivered"
    finally:
        hold.set()  # a failed test must not leave the backend holding requests for its teardown


# --- attribute truncation ----------------------------------------------------------------------------


def long_attributes_request() -> ExportTraceServiceRequest:
    """A resource attribute with a 40-byte key and a span attribute with a 40-byte string value."""
    return request(
        batch({"service.name": "svc", "k" * 40: "short"}, [span({"long": "v" * 40, "n": 12345678901234567})])
    )


async def test_long_attributes_are_truncated_on_the_way_to_the_backend_but_counted_whole(
    start_backend: StartBackend, start_service: StartService
) -> None:
    backend = await start_backend()
    running = await start_service(config_for(forwarder_to(backend, "http"), max_attribute_bytes=16))
    req = long_attributes_request()
    body = req.SerializeToString()
    assert (await running.post(body)).status == 200

    await eventually(lambda: len(backend.deliveries) >= 1 and idle(running))
    [delivery] = backend.deliveries
    forwarded = ExportTraceServiceRequest.FromString(delivery.body)
    expected = ExportTraceServiceRequest()
    expected.CopyFrom(req)
    rs = expected.resource_spans[0]
    del rs.resource.attributes[:]
    rs.resource.attributes.extend(attributes({"service.name": "svc", "k" * 16: "short"}))
    forwarded_span = rs.scope_spans[0].spans[0]
    del forwarded_span.attributes[:]
    forwarded_span.attributes.extend(attributes({"long": "v" * 16, "n": 12345678901234567}))
    assert forwarded == expected

    samples = await running.samples()
    assert total(samples, TRUNCATED, tenant=TENANT, scope="span") == 1
    assert total(samples, TRUNCATED, tenant=TENANT, scope="resource") == 1
    assert total(samples, TRUNCATED) == 2
    assert total(samples, BYTES_RECEIVED, tenant=TENANT) == len(body)
    assert total(samples, SENT_BYTES) == len(delivery.body)
    assert await running.usage() == {labels(service_name="svc"): req.resource_spans[0].ByteSize()}


async def test_without_an_attribute_limit_the_body_is_forwarded_byte_identical(
    start_backend: StartBackend, start_service: StartService
) -> None:
    backend = await start_backend()
    running = await start_service(config_for(forwarder_to(backend, "grpc"), max_attribute_bytes=0))
    body = long_attributes_request().SerializeToString()
    assert (await running.post(body)).status == 200

    await eventually(lambda: len(backend.deliveries) >= 1 and idle(running))
    assert list(backend.bodies()) == [body]
    samples = await running.samples()
    assert total(samples, TRUNCATED) == 0


def tenant_metrics(samples: Samples, tenant: str) -> set[str]:
    """The names of the /metrics samples labelled with this tenant (usage series aside)."""
    return {
        name
        for name, keys in samples
        if ("tenant", tenant) in keys and not name.startswith("tempo_usage_tracker_")
    }


async def test_an_idle_tenants_metric_series_are_released_while_an_active_tenants_stay(
    start_backend: StartBackend, start_service: StartService
) -> None:
    backend = await start_backend()
    config = config_for(forwarder_to(backend, "http"), multitenancy=True, max_attribute_bytes=4)
    running = await start_service(config)
    body = request(batch({"service.name": "authentication"}, [span()])).SerializeToString()
    for tenant in ("gone", "staying"):
        assert (await running.post(body, tenant=tenant)).status == 200
    await eventually(lambda: idle(running))
    every_series = {
        "tempo_distributor_spans_received_total",
        "tempo_distributor_bytes_received_total",
        "tempo_distributor_ingress_bytes_total",
        "tempo_distributor_attributes_truncated_total",
        SENT_REQUESTS,
        "tempo_distributor_forwarder_sent_spans_total",
        "tempo_distributor_forwarder_sent_bytes_total",
        "tempo_distributor_forwarder_queue_length",
    }
    assert every_series <= tenant_metrics(await running.samples(), "gone")

    running.clock.advance(14 * 60)
    assert (await running.post(body, tenant="staying")).status == 200
    await eventually(lambda: idle(running))
    running.clock.advance(60)
    assert running.service.tenant_activity.release_idle() == 1  # what the once-a-minute task runs

    samples = await running.samples()
    assert tenant_metrics(samples, "gone") <= {"tempo_distributor_forwarder_queue_length"}
    assert every_series <= tenant_metrics(samples, "staying")
    assert sample_value(samples, SENT_REQUESTS, forwarder="backend", tenant="staying") == 2
    assert (await running.post(body, tenant="gone")).status == 200
    await eventually(lambda: idle(running))
    samples = await running.samples()
    assert sample_value(samples, SENT_REQUESTS, forwarder="backend", tenant="gone") == 1  # a reset
    assert sample_value(samples, "tempo_distributor_spans_received_total", tenant="gone") == 1
    assert sample_value(samples, "tempo_distributor_ingress_bytes_total", tenant="gone") == len(body)


async def test_a_tenant_whose_requests_a_forwarder_still_holds_is_not_released(
    start_backend: StartBackend, start_service: StartService
) -> None:
    backend = await start_backend(always=Answer())
    retry = RetryConfig(initial_interval=0.01, max_interval=0.02, max_elapsed_time=0)
    running = await start_service(config_for(forwarder_to(backend, "http", retry=retry)))
    body = request(batch({"service.name": "auth"}, [span()])).SerializeToString()
    assert (await running.post(body)).status == 200
    running.clock.advance(3600)
    assert running.service.tenant_activity.release_idle() == 0
    samples = await running.samples()
    assert sample_value(samples, "tempo_distributor_spans_received_total", tenant=TENANT) == 1
