"""POST /v1/traces through the real server: encodings, the bad-input table, tenancy, the SDK exporter."""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
import json
import logging
import random
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from distributor.common.endpoint import Endpoint
from distributor.common.rpc_status import Status
from distributor.ingest.wire import LazyResourceSpans, LazyScopeSpans, LazyTracesRequest
from distributor.receivers.config import OtlpHttpConfig
from tests.support.metrics import labels, sample_value, total
from tests.support.otlp import batch, otlp_json, request, sample_request, span, split_expectation
from tests.support.polling import eventually
from tests.support.raw_http import abort_upload, exchange, raw_request
from tests.support.senders import JSON, PROTOBUF
from tests.support.service import StartService, assert_nothing_recorded, make_config


async def test_protobuf_gzip_and_json_encodings_give_identical_series(start_service: StartService) -> None:
    running = await start_service(make_config(multitenancy=True))
    req = sample_request()
    raw, as_json = req.SerializeToString(), otlp_json(req)
    bodies = {
        "protobuf": (raw, PROTOBUF),
        "protobuf-gzip": (gzip.compress(raw), {**PROTOBUF, "Content-Encoding": "gzip"}),
        "json": (as_json, JSON),
        "json-gzip": (gzip.compress(as_json), {**JSON, "Content-Encoding": "gzip"}),
    }
    for tenant, (body, headers) in bodies.items():
        answer = await running.post(body, tenant, headers)
        assert answer.status == 200, tenant

    by_tenant: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for series, value in (await running.usage()).items():
        tenant = dict(series)["tenant"]
        by_tenant.setdefault(tenant, {})[frozenset(kv for kv in series if kv[0] != "tenant")] = value
    assert set(by_tenant) == set(bodies)
    first, second = req.resource_spans
    expected_second = split_expectation(second, ["cart-service", "shop-backend"])
    expected = {
        labels("protobuf", service_name="auth-service"): first.ByteSize(),
        labels("protobuf", service_name="cart-service"): expected_second["cart-service"],
        labels("protobuf", service_name="shop-backend"): expected_second["shop-backend"],
    }
    expected_without_tenant = {frozenset(kv for kv in k if kv[0] != "tenant"): v for k, v in expected.items()}
    for tenant in bodies:
        assert by_tenant[tenant] == expected_without_tenant, tenant


async def test_response_is_an_export_response_in_the_request_encoding(start_service: StartService) -> None:
    running = await start_service()
    answer = await running.post(sample_request().SerializeToString())
    assert (answer.status, answer.content_type) == (200, "application/x-protobuf")
    assert ExportTraceServiceResponse.FromString(answer.body) == ExportTraceServiceResponse()
    answer = await running.post(otlp_json(sample_request()), headers=JSON)
    assert (answer.status, answer.content_type, json.loads(answer.body)) == (200, "application/json", {})


def _truncated() -> bytes:
    return sample_request().SerializeToString()[:-7]


def _invalid_utf8() -> bytes:
    return (
        request(batch({"service.name": "api"}, [span(name="MARKER")]))
        .SerializeToString()
        .replace(b"MARKER", b"\xff\xfeRKER")
    )


def _malformed_span() -> bytes:
    """A well-formed request around one span whose own bytes do not decode."""
    good = request(batch({"service.name": "api"}, [span()])).SerializeToString()
    lazy_batch = LazyResourceSpans.FromString(LazyTracesRequest.FromString(good).resource_spans[0])
    lazy_scope = LazyScopeSpans.FromString(lazy_batch.scope_spans[0])
    lazy_scope.spans.append(b"\x2a\x20too short for its length")
    lazy_batch.scope_spans[0] = lazy_scope.SerializeToString()
    return bytes(LazyTracesRequest(resource_spans=[lazy_batch.SerializeToString()]).SerializeToString())


def _gzip_bomb() -> bytes:
    return gzip.compress(b"\x00" * 5_000_000)


BAD_INPUT = [
    ("undecodable protobuf", b"\xff\xff\xff\xff", PROTOBUF, 400),
    ("truncated body", _truncated(), PROTOBUF, 400),
    ("invalid UTF-8 in a string field", _invalid_utf8(), PROTOBUF, 400),
    ("malformed span in a valid request", _malformed_span(), PROTOBUF, 400),
    ("invalid JSON", b'{"resourceSpans": [', JSON, 400),
    ("JSON that is not OTLP", b'{"resourceSpans": 5}', JSON, 400),
    ("JSON array", b"[1, 2]", JSON, 400),
    ("other content type", b"hello", {"Content-Type": "text/plain"}, 415),
    ("no content type", b"hello", {}, 415),
    ("unknown content encoding", b"hello", {**PROTOBUF, "Content-Encoding": "br"}, 415),
    ("corrupt gzip", b"\x1f\x8b\x08\x00garbage", {**PROTOBUF, "Content-Encoding": "gzip"}, 400),
    ("truncated gzip", gzip.compress(b"x" * 1000)[:-12], {**PROTOBUF, "Content-Encoding": "gzip"}, 400),
    ("body over the limit", b"\x00" * 70_000, PROTOBUF, 413),
    ("gzip bomb over the limit once inflated", _gzip_bomb(), {**PROTOBUF, "Content-Encoding": "gzip"}, 413),
]


@pytest.mark.parametrize(("name", "body", "headers", "status"), BAD_INPUT, ids=[row[0] for row in BAD_INPUT])
async def test_bad_input_is_refused_whole_with_a_status_body(
    start_service: StartService, name: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    running = await start_service(
        make_config(otlp_http=OtlpHttpConfig(Endpoint("127.0.0.1", 0), max_request_body_bytes=65_536))
    )
    answer = await running.post(body, headers=headers)
    assert answer.status == status, answer.body
    if answer.content_type == "application/json":
        message = json.loads(answer.body)["message"]
    else:
        message = Status.FromString(answer.body).message
    assert message, "the error says what is wrong"
    await assert_nothing_recorded(running)


async def test_chunked_body_over_the_limit_is_refused(start_service: StartService) -> None:
    running = await start_service(
        make_config(otlp_http=OtlpHttpConfig(Endpoint("127.0.0.1", 0), max_request_body_bytes=65_536))
    )

    async def chunks() -> Any:
        for _ in range(20):
            yield b"\x00" * 10_000

    async with running.session.post(running.traces_url, data=chunks(), headers=PROTOBUF) as response:
        assert response.status == 413
    await assert_nothing_recorded(running)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_methods_other_than_post_get_405(start_service: StartService, method: str) -> None:
    running = await start_service()
    async with running.session.request(method, running.traces_url) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    await assert_nothing_recorded(running)


async def test_methods_that_are_not_http_methods_share_one_request_metric_label(
    start_service: StartService,
) -> None:
    running = await start_service()
    for method in ("PROPFIND", "MKCOL", "LOCK"):
        async with running.session.request(method, running.traces_url) as response:
            assert response.status == 405
    samples = await running.samples()
    methods = {
        dict(labels)["method"]
        for name, labels in samples
        if name == "tempo_request_duration_seconds_count" and dict(labels).get("route") == "/v1/traces"
    }
    assert methods == {"other"}


async def test_request_without_spans_is_accepted_and_records_nothing(start_service: StartService) -> None:
    running = await start_service()
    empty = request(batch({"service.name": "idle"}), batch({"service.name": "idle"}, []))
    for body, headers in ((empty.SerializeToString(), PROTOBUF), (b"{}", JSON), (b"", PROTOBUF)):
        assert (await running.post(body, headers=headers)).status == 200
    await assert_nothing_recorded(running)


TENANT_CASES = [
    ("missing header", None, 401),
    ("empty header", "", 401),
    ("longer than 150 bytes", "t" * 151, 400),
    ("character outside the allowed set", "team/a", 400),
    ("non-ASCII character", "tëam", 400),
    ("single dot", ".", 400),
    ("double dot", "..", 400),
]


@pytest.mark.parametrize(("name", "org_id", "status"), TENANT_CASES, ids=[c[0] for c in TENANT_CASES])
async def test_tenant_header_is_required_and_validated_with_multitenancy(
    start_service: StartService, name: str, org_id: str | None, status: int
) -> None:
    running = await start_service(make_config(multitenancy=True))
    answer = await running.post(sample_request().SerializeToString(), org_id)
    assert answer.status == status
    await assert_nothing_recorded(running)


async def test_tenant_ids_at_the_limits_are_accepted(start_service: StartService) -> None:
    running = await start_service(make_config(multitenancy=True))
    for tenant in ("t" * 150, "a-Z_0.9!*'()"):
        assert (await running.post(sample_request().SerializeToString(), tenant)).status == 200
    tenants = {dict(series)["tenant"] for series in await running.usage()}
    assert tenants == {"t" * 150, "a-Z_0.9!*'()"}


async def test_without_multitenancy_every_request_is_single_tenant(start_service: StartService) -> None:
    running = await start_service()
    await running.post(sample_request().SerializeToString(), "ignored")
    assert {dict(series)["tenant"] for series in await running.usage()} == {"single-tenant"}


async def test_process_metrics_count_spans_bytes_and_requests(start_service: StartService) -> None:
    running = await start_service()
    req = sample_request()
    body = gzip.compress(req.SerializeToString())
    await running.post(body, headers={**PROTOBUF, "Content-Encoding": "gzip"})
    await running.post(b"garbage")
    samples = await running.samples()
    tenant = {"tenant": "single-tenant"}
    assert sample_value(samples, "tempo_distributor_spans_received_total", **tenant) == 5
    assert sample_value(samples, "tempo_distributor_bytes_received_total", **tenant) == req.ByteSize()
    assert sample_value(samples, "tempo_distributor_ingress_bytes_total", **tenant) == len(body)
    assert sample_value(samples, "tempo_discarded_spans_total", reason="no_forwarder", **tenant) == 5
    route = {"method": "POST", "route": "/v1/traces"}
    assert sample_value(samples, "tempo_request_duration_seconds_count", status_code="200", **route) == 1
    assert sample_value(samples, "tempo_request_duration_seconds_count", status_code="400", **route) == 1
    assert sample_value(samples, "tempo_usage_tracker_active_series", **tenant) == 3
    assert ("process_cpu_seconds_total", frozenset()) in samples


async def test_opentelemetry_sdk_http_exporter_bytes_show_up_in_usage_metrics(
    start_service: StartService,
) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    running = await start_service()
    sent = InMemorySpanExporter()

    def emit() -> None:
        for service in ("checkout", "payments"):
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(sent))
            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=running.traces_url)))
            tracer = provider.get_tracer("test")
            for i in range(3):
                with tracer.start_as_current_span(f"op-{i}", attributes={"i": i}):
                    pass
            provider.force_flush()

    await asyncio.to_thread(emit)  # the exporter is synchronous; the server runs on this loop
    expected: dict[frozenset[tuple[str, str]], float] = {}
    for finished in sent.get_finished_spans():
        # SimpleSpanProcessor exports each span as its own request: one batch each.
        [rs] = encode_spans([finished]).resource_spans
        key = labels(service_name=finished.resource.attributes["service.name"])
        expected[key] = expected.get(key, 0) + rs.ByteSize()
    assert await running.usage() == expected
    assert len(expected) == 2


EMPTY_GZIP_MEMBER = gzip.compress(b"")
GZIP = {**PROTOBUF, "Content-Encoding": "gzip"}


async def test_gzip_body_with_more_members_than_the_limit_is_refused_quickly(
    start_service: StartService,
) -> None:
    running = await start_service()
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await running.post(EMPTY_GZIP_MEMBER * 20_000, headers=GZIP)
    elapsed = loop.time() - started
    assert answer.status == 400
    assert "more than 100 members" in Status.FromString(answer.body).message
    assert elapsed < 0.5, f"refusing 20,000 gzip members took {elapsed:.2f} s"
    await assert_nothing_recorded(running)
    answer = await running.post(
        gzip.compress(sample_request().SerializeToString()) + EMPTY_GZIP_MEMBER * 99, headers=GZIP
    )
    assert answer.status == 200, "100 members are within the default limit"


async def test_a_body_split_across_gzip_members_counts_as_the_whole(start_service: StartService) -> None:
    running = await start_service(make_config(multitenancy=True))
    noise = random.Random(7)
    incompressible = {f"blob{i}": base64.b64encode(noise.randbytes(1500)).decode() for i in range(20)}
    raw = request(batch({"service.name": "api"}, [span(incompressible)])).SerializeToString()
    third = len(raw) // 3
    members = [gzip.compress(raw[start : start + third]) for start in range(0, len(raw), third)]
    assert len(members) >= 3 and min(len(member) for member in members[:-1]) > 8 * 1024
    assert (await running.post(gzip.compress(raw), "whole", GZIP)).status == 200
    assert (await running.post(b"".join(members), "split", GZIP)).status == 200
    usage = await running.usage()
    assert usage[labels("split", service_name="api")] == usage[labels("whole", service_name="api")] > 40_000


async def test_ready_answers_promptly_while_a_large_gzip_body_is_inflated(
    start_service: StartService,
) -> None:
    running = await start_service(
        make_config(otlp_http=OtlpHttpConfig(endpoint=Endpoint("127.0.0.1", 0), max_gzip_members=200_000))
    )
    body = gzip.compress(sample_request().SerializeToString()) + EMPTY_GZIP_MEMBER * 100_000
    # What earlier tests in this process left behind must not be collected in the middle of this one:
    # a full collection of it stops the loop for as long as the test's bound.
    gc.collect()
    gc.freeze()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        upload = asyncio.create_task(running.post(body, headers=GZIP))
        ready_latencies: list[float] = []
        while not upload.done():
            asked = loop.time()
            async with running.session.get(running.server_url + "/ready") as response:
                assert response.status == 200
            ready_latencies.append(loop.time() - asked)
        answer = await upload
        elapsed = loop.time() - started
    finally:
        gc.unfreeze()  # else what stays frozen is never freed, and extension modules report leaks at exit
    assert answer.status == 200, answer.body
    # Inflating member by member in quadratic time took minutes; linear takes ~1-4 s on the shared VM.
    assert elapsed < 10.0, f"100,000 gzip members took {elapsed:.2f} s"
    assert len(ready_latencies) > 1
    assert max(ready_latencies) < 0.1, f"/ready waited {max(ready_latencies) * 1000:.0f} ms"


async def test_tenant_header_that_is_not_utf8_is_refused_as_invalid(start_service: StartService) -> None:
    running = await start_service(make_config(multitenancy=True))
    assert running.service.otlp_http_address is not None
    body = sample_request().SerializeToString()
    headers = {"Content-Type": b"application/x-protobuf", "X-Scope-OrgID": b"ac\xffme"}
    status, _, answer = await exchange(
        running.service.otlp_http_address, raw_request("POST", "/v1/traces", headers, body)
    )
    assert status == 400
    assert Status.FromString(answer).message == "tenant id is not valid UTF-8"
    await assert_nothing_recorded(running)
    assert (
        sample_value(
            await running.samples(),
            "tempo_request_duration_seconds_count",
            method="POST",
            route="/v1/traces",
            status_code="400",
        )
        == 1
    )


async def test_an_upload_the_client_aborts_is_counted_once_as_aborted_not_as_an_error(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_service(make_config(multitenancy=True))
    caplog.clear()  # what the start logged is not in question
    assert running.service.otlp_http_address is not None
    body = sample_request().SerializeToString()
    headers = {"Content-Type": b"application/x-protobuf", "X-Scope-OrgID": b"acme"}
    for _ in range(3):
        await abort_upload(
            running.service.otlp_http_address, raw_request("POST", "/v1/traces", headers, body)
        )

    async def aborted() -> bool:
        samples = await running.samples()
        return total(samples, "tempo_distributor_requests_aborted_total", route="/v1/traces") == 3

    await eventually(aborted, "three aborted uploads counted", timeout=5)
    samples = await running.samples()
    assert total(samples, "tempo_request_duration_seconds_count", route="/v1/traces") == 0
    assert [record for record in caplog.records if record.levelno > logging.DEBUG] == []
    await assert_nothing_recorded(running)
