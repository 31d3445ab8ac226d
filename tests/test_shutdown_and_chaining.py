"""Graceful shutdown with queued forwarding work, and one distributor forwarding into another.

The CLI tests run real `python -m distributor` processes. A RecordingBackend lives in the test's own
event loop, so waiting for a process goes through a thread (`asyncio.to_thread`) to keep it serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import generate_latest

from distributor.common.discards import DiscardReason
from distributor.common.rpc_status import Status
from distributor.receivers.otlp import UNAVAILABLE
from distributor.usage.exposition import DISCARDED_METRIC, render_counter
from tests.support.backends import Answer, RecordingBackend, forwarder_to
from tests.support.cli import RunningCli, running_cli
from tests.support.config_files import write_config_files
from tests.support.metrics import Labels, parse_discarded, parse_usage, per_tenant, scrape, usage, with_reason
from tests.support.otlp import batch, otlp_json, request, span, span_count
from tests.support.polling import eventually
from tests.support.raw_http import read_response
from tests.support.senders import JSON, export_traces, post_traces
from tests.support.service import RunningService, StartService, make_config, with_forwarders

SHUTDOWN = DiscardReason.FORWARD_UNDELIVERED_AT_SHUTDOWN
TRANSPORTS = ["otlphttp", "otlpgrpc"]


# --- configuration ----------------------------------------------------------------------------------

RECEIVERS = """\
multitenancy_enabled: true
server: {{http_listen_port: 0, graceful_shutdown_timeout: {shutdown}}}
distributor:
  receivers:
    otlp:
      protocols:
        http: {{endpoint: "127.0.0.1:0"}}
        grpc: {{endpoint: "127.0.0.1:0"}}
  usage: {{cost_attribution: {{enabled: true}}}}
"""
FORWARDER = """\
  forwarders:
    - name: downstream
      backend: {backend}
      {backend}: {{endpoint: "{endpoint}", tls: {{insecure: true}}, timeout: 60s}}
      queue_size: 100
      workers: {workers}
      retry: {{initial_interval: 10ms, max_interval: 100ms, max_elapsed_time: 5m}}
"""
OVERRIDES = """\
overrides:
  defaults:
    cost_attribution: {{dimensions: [service.name]}}
    forwarders: [{forwarders}]
"""


def write_config(
    tmp_path: Path,
    name: str,
    backend: str = "",
    endpoint: str = "",
    workers: int = 1,
    shutdown: str = "30s",
) -> Path:
    """A multitenant distributor on ephemeral ports attributing by service.name; with `backend`, every
    tenant forwards to one forwarder `downstream` at `endpoint`."""
    text = RECEIVERS.format(shutdown=shutdown)
    if backend:
        text += FORWARDER.format(backend=backend, endpoint=endpoint, workers=workers)
    text += OVERRIDES.format(forwarders="downstream" if backend else "")
    return write_config_files(tmp_path, text, name=f"{name}.yaml")


def endpoint_of(backend: RecordingBackend, transport: str) -> str:
    return backend.http_url if transport == "otlphttp" else backend.grpc_target


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port that refuses connections (bound, never listening) for as long as the block runs: a
    backend that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def down_endpoint(port: int, transport: str) -> str:
    return f"http://127.0.0.1:{port}" if transport == "otlphttp" else f"127.0.0.1:{port}"


# --- traffic ----------------------------------------------------------------------------------------


def numbered(tenant: str, index: int, spans: int = 1) -> ExportTraceServiceRequest:
    """A request whose bytes are unique to (tenant, index), so deliveries can be told apart."""
    return request(
        batch(
            {"service.name": f"{tenant}-svc-{index % 3}"},
            [span({"index": index}, name=f"{tenant}-op-{index}-{n}") for n in range(spans)],
        )
    )


async def send(
    session: aiohttp.ClientSession, target: RunningCli | RunningService, tenant: str, how: str, req: bytes
) -> None:
    """One request accepted (200 / OK) by the service, encoded `how`."""
    if how == "grpc":
        assert (await export_traces(target.grpc_target, req, tenant)).code == grpc.StatusCode.OK
    elif how == "json":
        json_body = otlp_json(ExportTraceServiceRequest.FromString(req))
        assert (await post_traces(session, target.traces_url, json_body, tenant, JSON)).status == 200
    else:
        answer = await post_traces(session, target.traces_url, req, tenant, gzipped=how == "gzip")
        assert answer.status == 200


# --- reading the services ---------------------------------------------------------------------------


async def ready_status(session: aiohttp.ClientSession, server_url: str) -> int:
    async with session.get(server_url + "/ready") as response:
        return response.status


# --- 1. chaining into a second distributor process ---------------------------------------------------

CHAIN_TRAFFIC: list[tuple[str, str, ExportTraceServiceRequest]] = [
    (
        "acme",
        "protobuf",
        request(
            batch({"service.name": "checkout"}, [span({"http.route": "/pay"}), span(pad=200)]),
            batch({"service.name": "cart"}, [span({"service.name": "cart-override"})]),
        ),
    ),
    ("acme", "gzip", request(batch({"service.name": "checkout"}, [span(name="zipped", pad=500)]))),
    ("acme", "json", request(batch({"service.name": "search"}, [span(name="json-1"), span(name="json-2")]))),
    ("acme", "grpc", request(batch({"service.name": "checkout"}, [span(name="grpc", pad=64)] * 3))),
    ("globex", "protobuf", request(batch({"service.name": "billing"}, [span(), span(pad=1000)]))),
    ("globex", "json", request(batch({"service.name": "ledger"}, [span({"amount": 12.5})]))),
    (
        "globex",
        "grpc",
        request(
            batch({"service.name": "billing"}, [span()]), batch({"service.name": "ledger"}, [span()] * 4)
        ),
    ),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chained_into_a_second_distributor_process_usage_is_identical(
    tmp_path: Path, transport: str
) -> None:
    expected_spans: dict[str, float] = {}
    for tenant, _, req in CHAIN_TRAFFIC:
        expected_spans[tenant] = expected_spans.get(tenant, 0) + span_count(req)
    async with aiohttp.ClientSession() as session:
        with running_cli(write_config(tmp_path, "backend")) as backend:
            assert backend.grpc_target, "the backend's gRPC receiver is listening"
            endpoint = (
                backend.grpc_target
                if transport == "otlpgrpc"
                else backend.traces_url.removesuffix("/v1/traces")
            )
            front_config = write_config(tmp_path, "front", transport, endpoint, workers=4)
            with running_cli(front_config) as front:
                for tenant, how, req in CHAIN_TRAFFIC:
                    await send(session, front, tenant, how, req.SerializeToString())

                front_usage = parse_usage(await scrape(session, front.server_url + "/usage_metrics"))
                front_total = sum(front_usage.values())
                assert {dict(labels)["tenant"] for labels in front_usage} == {"acme", "globex"}

                async def all_arrived() -> bool:
                    backend_usage = parse_usage(await scrape(session, backend.server_url + "/usage_metrics"))
                    front_metrics = await scrape(session, front.server_url + "/metrics")
                    sent = per_tenant(front_metrics, "tempo_distributor_forwarder_sent_spans")
                    return sum(backend_usage.values()) >= front_total and sent == expected_spans

                await eventually(all_arrived, "the backend has every byte and the front counted it sent")

                backend_usage = parse_usage(await scrape(session, backend.server_url + "/usage_metrics"))
                assert backend_usage == front_usage  # exactly once, byte for byte, under the same tenant
                front_metrics = await scrape(session, front.server_url + "/metrics")
                backend_metrics = await scrape(session, backend.server_url + "/metrics")
                received = "tempo_distributor_spans_received"
                assert per_tenant(front_metrics, received) == expected_spans
                assert per_tenant(backend_metrics, received) == expected_spans
                assert (
                    per_tenant(
                        front_metrics, "tempo_distributor_forwarder_sent_spans", forwarder="downstream"
                    )
                    == expected_spans
                )
                assert per_tenant(front_metrics, "tempo_discarded_spans") == {}

                front.process.send_signal(signal.SIGTERM)
                assert await front.exit_code() == 0

            # Nothing more arrived while the front shut down (no late duplicate).
            after = parse_usage(await scrape(session, backend.server_url + "/usage_metrics"))
            assert after == front_usage
            backend.process.send_signal(signal.SIGTERM)
            assert await backend.exit_code() == 0


# --- 2. SIGTERM with queued data and a live (slow) backend ------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sigterm_delivers_everything_queued_to_a_slow_backend_then_exits_zero(
    tmp_path: Path, transport: str
) -> None:
    hold = asyncio.Event()
    backend = await RecordingBackend(hold=hold).start()
    sent: list[tuple[str | None, bytes]] = []
    try:
        config = write_config(tmp_path, "front", transport, endpoint_of(backend, transport), workers=1)
        async with aiohttp.ClientSession() as session:
            with running_cli(config) as cli:
                for index in range(20):
                    tenant = ("acme", "globex")[index % 2]
                    body = numbered(tenant, index).SerializeToString()
                    assert (await post_traces(session, cli.traces_url, body, tenant)).status == 200  # queued
                    sent.append((tenant, body))
                cli.process.send_signal(signal.SIGTERM)

                async def not_ready() -> bool:
                    return await ready_status(session, cli.server_url) == 503

                await eventually(not_ready, "/ready answers 503 during the drain")

                probes = 0

                async def otlp_refused() -> bool:
                    """A new request is refused; one accepted before the receiver closed is still owed."""
                    nonlocal probes
                    probes += 1
                    body = numbered("late", probes).SerializeToString()
                    try:
                        status = (await post_traces(session, cli.traces_url, body, "late")).status
                    except aiohttp.ClientConnectionError:
                        return True
                    if status == 200:
                        sent.append(("late", body))
                    return status != 200

                await eventually(otlp_refused, "new OTLP/HTTP requests are refused during the drain")
                with pytest.raises(aiohttp.ClientConnectionError):
                    await post_traces(
                        session, cli.traces_url, numbered("late", 0).SerializeToString(), "late"
                    )
                refused = await export_traces(
                    cli.grpc_target, numbered("late", 0).SerializeToString(), "late", timeout=5
                )
                assert refused.code != grpc.StatusCode.OK

                # The receivers are closed and the drain has begun: every accepted request is owed.
                line = await asyncio.wait_for(
                    asyncio.to_thread(cli.next_log_line_containing, "queued requests before exit"), 40
                )
                assert f"delivering {len(sent)} queued requests before exit" in line
                # Still draining: the backend has answered nothing, the process waits for it.
                assert await ready_status(session, cli.server_url) == 503
                assert cli.process.poll() is None
                assert backend.deliveries == [] and backend.attempts == 0

                hold.set()
                assert await cli.exit_code() == 0
                log = cli.log_after_exit()
        delivered = sorted((delivery.tenant, delivery.body) for delivery in backend.deliveries)
        assert delivered == sorted(sent)  # every accepted request, exactly once, byte for byte
        assert "all queued requests delivered" in log
        assert "undelivered" not in log
    finally:
        hold.set()
        await backend.stop()


# --- 3. SIGTERM with the backend down ---------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sigterm_with_the_backend_down_exits_zero_after_the_timeout_naming_what_was_lost(
    tmp_path: Path, transport: str
) -> None:
    traffic = [("acme", numbered("acme", i, spans=2)) for i in range(3)]
    traffic += [("globex", numbered("globex", i, spans=5)) for i in range(2)]
    with refusing_port() as port:
        config = write_config(tmp_path, "front", transport, down_endpoint(port, transport), shutdown="1s")
        async with aiohttp.ClientSession() as session:
            with running_cli(config) as cli:
                for tenant, req in traffic:
                    answer = await post_traces(session, cli.traces_url, req.SerializeToString(), tenant)
                    assert answer.status == 200
                started = time.monotonic()
                cli.process.send_signal(signal.SIGTERM)
                assert await cli.exit_code(timeout=10) == 0
                elapsed = time.monotonic() - started
                log = cli.log_after_exit()
    assert 0.9 <= elapsed < 5, f"exited {elapsed:.2f}s after SIGTERM (graceful_shutdown_timeout: 1s)"
    [line] = [line for line in log.splitlines() if "undelivered" in line]
    assert "forwarder downstream" in line
    assert "5 requests (16 spans) undelivered" in line
    assert "tenant acme: 3 requests, 6 spans" in line and "tenant globex: 2 requests, 10 spans" in line
    assert "all queued requests delivered" not in log


# --- 4. the same, in process -----------------------------------------------------------------------


def transport_of(name: str) -> str:
    return "http" if name == "otlphttp" else "grpc"


def forwarding_counters(running: RunningService) -> dict[str, dict[str, float]]:
    """The service's forwarding and discard counters by tenant, read from its registry (the server port
    is closed once stop() returns)."""
    metrics = generate_latest(running.service.registry).decode()
    families = {
        "sent_requests": "tempo_distributor_forwarder_sent_requests",
        "sent_spans": "tempo_distributor_forwarder_sent_spans",
        "dropped_requests": "tempo_distributor_forwarder_dropped_requests",
        "dropped_spans": "tempo_distributor_forwarder_dropped_spans",
        "discarded_spans": "tempo_discarded_spans",
    }
    counters = {key: per_tenant(metrics, family) for key, family in families.items()}
    counters["undelivered_spans"] = per_tenant(metrics, "tempo_discarded_spans", reason=SHUTDOWN)
    return counters


def discarded_usage(running: RunningService) -> dict[Labels, float]:
    rendered = render_counter(running.service.tracker.discarded_series(), False, DISCARDED_METRIC)
    return parse_discarded(rendered.decode())


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


async def stop_while_held(
    running: RunningService,
    backend: RecordingBackend,
    hold: asyncio.Event,
    caplog: pytest.LogCaptureFixture,
    queued: int,
) -> None:
    """stop() with the backend holding every request: /ready must answer 503, the drain must begin
    owing all `queued` requests, and stop() must still be waiting before the hold is released (from a
    task); then stop() must finish."""
    caplog.set_level(logging.INFO, logger="distributor")
    stopping = asyncio.create_task(running.service.stop())

    async def not_ready() -> bool:
        return await ready_status(running.session, running.server_url) == 503

    await eventually(not_ready, "/ready answers 503 during stop")
    await eventually(lambda: any("queued requests before exit" in m for m in messages(caplog)))
    assert f"delivering {queued} queued requests before exit" in messages(caplog)
    assert await ready_status(running.session, running.server_url) == 503
    assert not stopping.done() and backend.deliveries == [] and backend.attempts == 0

    async def release() -> None:
        hold.set()

    await asyncio.gather(release(), asyncio.wait_for(stopping, 30))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stop_in_process_delivers_what_is_queued_once_the_backend_answers(
    start_service: StartService, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    hold = asyncio.Event()
    backend = await RecordingBackend(hold=hold).start()
    try:
        forwarder = forwarder_to(backend, transport_of(transport), workers=1, queue_size=100, timeout=60.0)
        running = await start_service(with_forwarders(make_config(multitenancy=True), forwarder))
        sent: list[tuple[str | None, bytes]] = []
        for index in range(20):
            tenant = ("acme", "globex")[index % 2]
            body = numbered(tenant, index).SerializeToString()
            await send(running.session, running, tenant, "grpc" if index % 4 == 3 else "protobuf", body)
            sent.append((tenant, body))
        received_usage = await running.usage()

        await stop_while_held(running, backend, hold, caplog, queued=20)

        assert "all queued requests delivered" in messages(caplog)
        delivered = sorted((delivery.tenant, delivery.body) for delivery in backend.deliveries)
        assert delivered == sorted(sent)  # all of them, exactly once, byte for byte
        counters = forwarding_counters(running)
        ten = {"acme": 10.0, "globex": 10.0}
        assert counters == {
            "sent_requests": ten,
            "sent_spans": ten,
            "dropped_requests": {},
            "dropped_spans": {},
            "discarded_spans": {},
            "undelivered_spans": {},
        }
        assert discarded_usage(running) == {}
        with pytest.raises(aiohttp.ClientConnectionError):
            await running.post(sent[0][1], "acme")

        # stop() again (the fixture does too) is a no-op.
        await asyncio.wait_for(running.service.stop(), 5)
        assert forwarding_counters(running) == counters
        assert discarded_usage(running) == {}
        assert len(backend.deliveries) == len(sent)
        assert usage(running.service.tracker) == received_usage
    finally:
        hold.set()
        await backend.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stop_in_process_with_the_backend_down_counts_the_undelivered_as_discarded(
    start_service: StartService, transport: str
) -> None:
    with refusing_port() as port:
        forwarder = forwarder_to(down_endpoint(port, transport), transport_of(transport), name="downstream")
        config = with_forwarders(make_config(multitenancy=True), forwarder)
        config = replace(config, server=replace(config.server, graceful_shutdown_timeout=0.3))
        running = await start_service(config)
        traffic = [("acme", numbered("acme", i, spans=2)) for i in range(3)]
        traffic += [("globex", numbered("globex", i, spans=5)) for i in range(2)]
        for index, (tenant, req) in enumerate(traffic):
            how = "grpc" if index % 2 else "protobuf"
            await send(running.session, running, tenant, how, req.SerializeToString())
        received_usage = await running.usage()

        started = time.monotonic()
        await asyncio.wait_for(running.service.stop(), 10)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 3, f"stop took {elapsed:.2f}s (graceful_shutdown_timeout: 0.3s)"

        spans = {"acme": 6.0, "globex": 10.0}
        counters = forwarding_counters(running)
        assert counters == {
            "sent_requests": {},
            "sent_spans": {},
            "dropped_requests": {"acme": 3.0, "globex": 2.0},
            "dropped_spans": spans,
            "discarded_spans": spans,  # every reason: only forward_undelivered_at_shutdown
            "undelivered_spans": spans,
        }
        # Every byte received is attributed as discarded at shutdown, series by series.
        assert discarded_usage(running) == with_reason(received_usage, SHUTDOWN)
        assert usage(running.service.tracker) == received_usage

        # stop() again (the fixture does too) counts nothing twice.
        await asyncio.wait_for(running.service.stop(), 5)
        assert forwarding_counters(running) == counters
        assert discarded_usage(running) == with_reason(received_usage, SHUTDOWN)


async def test_stop_does_not_claim_all_delivered_when_the_backend_refused_some_during_the_drain(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    hold = asyncio.Event()
    refused = Answer(http_status=400, grpc_code=grpc.StatusCode.INVALID_ARGUMENT)
    backend = await RecordingBackend(script=[refused], hold=hold).start()
    try:
        forwarder = forwarder_to(backend, "http", workers=1, queue_size=100, timeout=60.0)
        running = await start_service(with_forwarders(make_config(multitenancy=True), forwarder))
        for index in range(5):
            await send(
                running.session, running, "acme", "protobuf", numbered("acme", index).SerializeToString()
            )

        await stop_while_held(running, backend, hold, caplog, queued=5)

        assert len(backend.deliveries) == 4 and backend.attempts == 5
        counters = forwarding_counters(running)
        assert counters["sent_requests"] == {"acme": 4.0}
        assert per_tenant(
            generate_latest(running.service.registry).decode(),
            "tempo_discarded_spans",
            reason="forward_rejected",
        ) == {"acme": 1.0}
        assert "all queued requests delivered" not in messages(caplog), "one was refused, not delivered"
        assert "1 of 5 queued requests were not delivered (see above)" in messages(caplog)
    finally:
        hold.set()
        await backend.stop()


async def test_stop_accounts_only_for_the_requests_queued_at_stop_not_those_dropped_before(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    refused = Answer(http_status=400, grpc_code=grpc.StatusCode.INVALID_ARGUMENT)
    backend = await RecordingBackend(script=[refused]).start()
    hold = asyncio.Event()
    try:
        forwarder = forwarder_to(backend, "http", workers=1, queue_size=100, timeout=60.0)
        running = await start_service(with_forwarders(make_config(multitenancy=True), forwarder))
        await send(running.session, running, "acme", "protobuf", numbered("acme", 0).SerializeToString())

        def refused_and_dropped() -> bool:
            return forwarding_counters(running)["dropped_requests"] == {"acme": 1.0}

        await eventually(refused_and_dropped, "the backend's refusal of the first request")
        backend.hold = hold  # from here on, the backend is slow: the next requests are still queued at stop
        for index in range(1, 4):
            await send(
                running.session, running, "acme", "protobuf", numbered("acme", index).SerializeToString()
            )

        caplog.set_level(logging.INFO, logger="distributor")
        stopping = asyncio.create_task(running.service.stop())
        await eventually(lambda: any("queued requests before exit" in m for m in messages(caplog)))
        assert "delivering 3 queued requests before exit" in messages(caplog)
        hold.set()
        await asyncio.wait_for(stopping, 30)

        assert len(backend.deliveries) == 3
        assert "all queued requests delivered" in messages(caplog)
        assert not any("were not delivered" in message for message in messages(caplog))
    finally:
        hold.set()
        await backend.stop()


def traces_post(body: bytes) -> bytes:
    """A raw OTLP/HTTP request of tenant acme, to write on a socket by hand."""
    head = (
        "POST /v1/traces HTTP/1.1\r\nHost: distributor\r\nContent-Type: application/x-protobuf\r\n"
        f"X-Scope-OrgID: acme\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def listener_closed(host: str, port: int) -> bool:
    try:
        _, probe = await asyncio.open_connection(host, port)
    except OSError:
        return True
    probe.close()
    return False


async def test_stop_finishes_an_upload_in_flight_and_forwards_it(start_service: StartService) -> None:
    backend = await RecordingBackend().start()
    try:
        config = with_forwarders(make_config(multitenancy=True), forwarder_to(backend))
        config = replace(config, server=replace(config.server, graceful_shutdown_timeout=2.0))
        running = await start_service(config)
        assert running.service.otlp_http_address is not None
        host, port = running.service.otlp_http_address
        slow = numbered("acme", 1).SerializeToString()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(traces_post(slow)[: 10 - len(slow)])
        await writer.drain()
        # A complete request on another connection, answered: by then the service has read the slow
        # request's headers (they were readable first), so its handler is running, reading the body.
        other = numbered("acme", 2).SerializeToString()
        await send(running.session, running, "acme", "protobuf", other)

        stopping = asyncio.create_task(running.service.stop())

        await eventually(lambda: listener_closed(host, port), "the OTLP/HTTP listener closes")
        writer.write(slow[10:])  # the rest of the body, well within graceful_shutdown_timeout
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(1024), 10)
        writer.close()
        await asyncio.wait_for(stopping, 10)
        assert answer.startswith(b"HTTP/1.1 200"), f"the request in flight was answered {answer[:40]!r}"
        assert sorted(backend.bodies()) == sorted([slow, other])
    finally:
        await backend.stop()


async def test_a_request_on_a_kept_alive_connection_during_the_drain_gets_503_retry_after_and_a_close(
    start_service: StartService,
) -> None:
    config = make_config(multitenancy=True)
    config = replace(config, server=replace(config.server, graceful_shutdown_timeout=5.0))
    running = await start_service(config)
    assert running.service.otlp_http_address is not None
    host, port = running.service.otlp_http_address
    # An upload in flight keeps the receiver draining until its body has arrived.
    slow = numbered("acme", 1).SerializeToString()
    slow_reader, slow_writer = await asyncio.open_connection(host, port)
    slow_writer.write(traces_post(slow)[:-10])
    await slow_writer.drain()
    # A kept-alive connection, answered once: by then the slow request's handler is running.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(traces_post(numbered("acme", 2).SerializeToString()))
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers.get("connection", "").lower() != "close"

    stopping = asyncio.create_task(running.service.stop())

    await eventually(lambda: listener_closed(host, port), "the OTLP/HTTP listener closes")
    writer.write(traces_post(numbered("acme", 3).SerializeToString()))
    status, headers, body = await read_response(reader)
    writer.close()
    assert status == 503
    assert headers["retry-after"] == "1"
    assert headers["connection"].lower() == "close"  # the exporter reconnects, to another replica
    assert Status.FromString(body).code == UNAVAILABLE

    slow_writer.write(traces_post(slow)[-10:])
    await slow_writer.drain()
    status, _, _ = await read_response(slow_reader)
    slow_writer.close()
    assert status == 200
    await asyncio.wait_for(stopping, 10)
