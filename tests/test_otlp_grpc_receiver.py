"""OTLP/gRPC TraceService/Export through the running service: the SDK exporter, gzip, bad input."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest

from distributor.common.endpoint import Endpoint
from distributor.receivers.config import OtlpGrpcConfig
from tests.support.metrics import labels, sample_value
from tests.support.otlp import batch, request, sample_request, span
from tests.support.raw_grpc import grpc_call_with_flag
from tests.support.service import StartService, assert_nothing_recorded, make_config


def without_tenant(
    series: dict[frozenset[tuple[str, str]], float],
) -> dict[frozenset[tuple[str, str]], float]:
    return {frozenset(kv for kv in key if kv[0] != "tenant"): value for key, value in series.items()}


async def test_sdk_grpc_and_http_exporters_give_identical_series(start_service: StartService) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    running = await start_service(make_config(multitenancy=True))
    recorded = InMemorySpanExporter()
    for service in ("checkout", "payments"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(recorded))
        tracer = provider.get_tracer("test")
        for i in range(4):
            with tracer.start_as_current_span(f"op-{i}", attributes={"team": "core" if i % 2 else ""}):
                pass
    spans = recorded.get_finished_spans()

    grpc_exporter = GrpcExporter(
        endpoint=running.grpc_target, insecure=True, headers={"x-scope-orgid": "grpc"}
    )
    http_exporter = HttpExporter(endpoint=running.traces_url, headers={"X-Scope-OrgID": "http"})
    results = await asyncio.gather(
        asyncio.to_thread(grpc_exporter.export, spans), asyncio.to_thread(http_exporter.export, spans)
    )
    assert results == [SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]
    grpc_exporter.shutdown()
    by_tenant: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for series, value in (await running.usage()).items():
        by_tenant.setdefault(dict(series)["tenant"], {})[series] = value
    assert set(by_tenant) == {"grpc", "http"}
    assert without_tenant(by_tenant["grpc"]) == without_tenant(by_tenant["http"])
    assert len(by_tenant["grpc"]) == 2


async def test_gzip_compressed_export_is_accounted_like_plain(start_service: StartService) -> None:
    running = await start_service(make_config(multitenancy=True))
    body = sample_request().SerializeToString()
    assert (await running.export(body, "plain")).code == grpc.StatusCode.OK
    assert (await running.export(body, "gzip", compression=grpc.Compression.Gzip)).code == grpc.StatusCode.OK
    by_tenant: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for series, value in (await running.usage()).items():
        by_tenant.setdefault(dict(series)["tenant"], {})[series] = value
    assert without_tenant(by_tenant["plain"]) == without_tenant(by_tenant["gzip"])
    samples = await running.samples()
    for tenant in ("plain", "gzip"):
        # grpc inflates a gzip message before the service sees it: ingress is the message size either way.
        assert sample_value(samples, "tempo_distributor_ingress_bytes_total", tenant=tenant) == len(body)


BAD = [
    ("garbage bytes", b"\xff\xff\xff\xff", "t", grpc.StatusCode.INVALID_ARGUMENT),
    ("truncated request", sample_request().SerializeToString()[:-5], "t", grpc.StatusCode.INVALID_ARGUMENT),
    ("missing tenant", sample_request().SerializeToString(), None, grpc.StatusCode.UNAUTHENTICATED),
    ("invalid tenant", sample_request().SerializeToString(), "a/b", grpc.StatusCode.INVALID_ARGUMENT),
    (
        "oversize message",
        request(batch({"service.name": "x"}, [span(pad=70_000)])).SerializeToString(),
        "t",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
]


@pytest.mark.parametrize(("name", "body", "tenant", "code"), BAD, ids=[row[0] for row in BAD])
async def test_bad_grpc_input_gets_its_status_and_records_nothing(
    start_service: StartService, name: str, body: bytes, tenant: str | None, code: grpc.StatusCode
) -> None:
    config = make_config(multitenancy=True)
    config = replace(
        config, otlp_grpc=OtlpGrpcConfig(Endpoint("127.0.0.1", 0), max_recv_msg_size_bytes=65_536)
    )
    running = await start_service(config)
    assert (await running.export(body, tenant)).code == code
    await assert_nothing_recorded(running)


async def test_grpc_series_match_the_spec_arithmetic(start_service: StartService) -> None:
    running = await start_service()
    rs = batch({"service.name": "auth-service"}, [span(), span()])
    assert (await running.export(request(rs).SerializeToString())).code == grpc.StatusCode.OK
    assert await running.usage() == {labels(service_name="auth-service"): rs.ByteSize()}


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
GOAWAY = 0x7


def grpc_config(**options: float) -> OtlpGrpcConfig:
    return replace(OtlpGrpcConfig(Endpoint("127.0.0.1", 0)), **options)


def frame_types(data: bytes) -> list[int]:
    """The types of the HTTP/2 frames in `data`."""
    types, offset = [], 0
    while offset + 9 <= len(data):
        types.append(data[offset + 3])
        offset += 9 + int.from_bytes(data[offset : offset + 3], "big")
    return types


async def test_an_idle_grpc_connection_is_sent_goaway_and_closed(start_service: StartService) -> None:
    running = await start_service(make_config(otlp_grpc=grpc_config(max_connection_idle=0.3)))
    host, port = running.grpc_target.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(HTTP2_PREFACE + EMPTY_SETTINGS_FRAME)
        received = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        assert GOAWAY in frame_types(received)
    finally:
        writer.close()


async def test_a_grpc_connection_without_a_handshake_is_closed_after_the_handshake_timeout(
    start_service: StartService,
) -> None:
    running = await start_service(make_config(otlp_grpc=grpc_config(handshake_timeout=0.2)))
    host, port = running.grpc_target.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        received = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        assert GOAWAY in frame_types(received)
    finally:
        writer.close()


async def test_a_grpc_connection_past_the_limit_is_closed_at_once(start_service: StartService) -> None:
    running = await start_service(make_config(otlp_grpc=grpc_config(max_connections=1)))
    host, port = running.grpc_target.rsplit(":", 1)
    _, held = await asyncio.open_connection(host, int(port))
    held.write(HTTP2_PREFACE + EMPTY_SETTINGS_FRAME)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(HTTP2_PREFACE + EMPTY_SETTINGS_FRAME)
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
        held.close()


@pytest.mark.parametrize("flag", [2, 3, 255])
async def test_a_message_with_a_compressed_flag_other_than_0_or_1_is_refused_and_records_nothing(
    start_service: StartService, flag: int
) -> None:
    """grpcio hands such a message to the service empty, dropping its content: answering OK would
    lose what the sender meant to send without a trace."""
    running = await start_service()
    body = sample_request().SerializeToString()
    status, message = await grpc_call_with_flag(running.grpc_target, flag, body)
    assert status == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "compressed flag" in message
    await assert_nothing_recorded(running)
    # The same message with the flag every client sends is taken.
    assert await grpc_call_with_flag(running.grpc_target, 0, body) == (grpc.StatusCode.OK.value[0], "")
    assert sum((await running.usage()).values()) == sum(b.ByteSize() for b in sample_request().resource_spans)


async def test_an_empty_export_message_is_refused_over_grpc(start_service: StartService) -> None:
    running = await start_service()
    answer = await running.export(b"")
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in answer.details
    await assert_nothing_recorded(running)
