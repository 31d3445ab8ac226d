"""Per-tenant ingestion rate limits, through the running service over real sockets (OTLP/HTTP, OTLP/gRPC,
the OpenTelemetry SDK exporters, the overrides file), and the token bucket on its own.

The service's ManualClock (`running.clock`) drives the token buckets: time passes for them only when a
test advances it, so every expected number of tokens and every Retry-After below is exact. Sizes and
clock steps are chosen to be exact in binary floating point (halves, whole seconds).
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import grpc
import pytest
import yaml
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.config import Config, load_config
from distributor.ingest.limits import IngestionRateLimiter, retry_after_header
from tests.support.clock import ManualClock
from tests.support.config_files import multitenant_config, write_config_files
from tests.support.metrics import Labels, labels, sample_value
from tests.support.otlp import batch, otlp_json, request, span
from tests.support.polling import eventually
from tests.support.senders import JSON, GrpcAnswer, HttpAnswer
from tests.support.service import RunningService, StartService, make_config, with_forwarders

RESOURCE_EXHAUSTED = 8  # google.rpc.Code
RATE_LIMITED = "rate_limited"
TRANSPORTS = ["http", "grpc"]


# --- building requests and reading answers --------------------------------------------------------------


def sized(size: int, service: str = "api", spans: int = 1) -> ExportTraceServiceRequest:
    """A one-batch request whose protobuf encoding is exactly `size` bytes (the first span is padded)."""

    def build(pad: int) -> ExportTraceServiceRequest:
        return request(batch({"service.name": service}, [span(pad=pad)] + [span()] * (spans - 1)))

    pad = max(0, size - build(0).ByteSize() - 6)  # each length prefix grows by at most 2 bytes here
    while (candidate := build(pad)).ByteSize() < size:
        pad += 1
    assert candidate.ByteSize() == size, f"no padding gives exactly {size} bytes"
    return candidate


def attributed(req: ExportTraceServiceRequest) -> int:
    """The bytes the usage tracker attributes to a request: its batches' sizes (without their framing)."""
    return sum(rs.ByteSize() for rs in req.resource_spans)


def rate_limited_message(rate: int, burst: int, size: int, tenant: str) -> str:
    """Tempo's wording (distributor.checkForRateLimits, local strategy: the global limit is 0)."""
    return (
        f"RATE_LIMITED: ingestion rate limit (local: {rate} bytes/s, global: 0 bytes/s, burst: {burst} "
        f"bytes) exceeded while adding {size} bytes for user {tenant}. consider increasing the limit or "
        "reducing ingestion rate."
    )


def larger_than_burst_message(rate: int, burst: int, size: int, tenant: str) -> str:
    return (
        f"RATE_LIMITED: batch size ({size} bytes) exceeds ingestion limit (local: {rate} bytes/s, global: "
        f"0 bytes/s, burst: {burst} bytes) while adding {size} bytes for user {tenant}. consider reducing "
        "batch size or increasing rate limit."
    )


def limited(rate: int, burst: int) -> Config:
    """A multitenant config (HTTP and gRPC receivers, no forwarders) whose defaults set these limits."""
    return with_forwarders(make_config(multitenancy=True), rate_limit_bytes=rate, burst_size_bytes=burst)


async def post(
    running: RunningService, req: ExportTraceServiceRequest, tenant: str, as_json: bool = False
) -> HttpAnswer:
    """`req` over OTLP/HTTP as protobuf, or as OTLP/JSON with ids in hex as an SDK writes them."""
    if as_json:
        return await running.post(otlp_json(req), tenant, JSON)
    return await running.post(req.SerializeToString(), tenant)


async def export(running: RunningService, req: ExportTraceServiceRequest, tenant: str) -> GrpcAnswer:
    return await running.export(req.SerializeToString(), tenant)


async def send(running: RunningService, transport: str, req: ExportTraceServiceRequest, tenant: str) -> bool:
    """True when the request was accepted; any answer but success or a rate limit fails the test."""
    if transport == "http":
        answer = await post(running, req, tenant)
        assert answer.status in (200, 429), answer
        return answer.status == 200
    grpc_answer = await export(running, req, tenant)
    assert grpc_answer.code in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED), grpc_answer
    return grpc_answer.code == grpc.StatusCode.OK


def retry_delays(status: Status) -> list[float]:
    """The delays of every google.rpc.RetryInfo detail in a Status."""
    delays = []
    for detail in status.details:
        if detail.Is(RetryInfo.DESCRIPTOR):
            info = RetryInfo()
            assert detail.Unpack(info)
            delays.append(info.retry_delay.ToNanoseconds() / 1e9)
    return delays


def assert_rate_limited_http(answer: HttpAnswer, message: str, missing: float, rate: int) -> None:
    """429, Retry-After in whole seconds (ceil, at least 1), a Status body with a RetryInfo detail."""
    assert answer.status == 429, answer
    assert answer.headers["Retry-After"] == str(max(1, math.ceil(missing / rate)))
    assert answer.headers["Content-Type"].startswith("application/x-protobuf")
    status = Status.FromString(answer.body)
    assert status.code == RESOURCE_EXHAUSTED
    assert status.message == message
    assert retry_delays(status) == [missing / rate]


def assert_rate_limited_grpc(answer: GrpcAnswer, message: str, delay: float) -> None:
    """RESOURCE_EXHAUSTED with Tempo's wording, RetryInfo as the SDK's trailer and in the Status details."""
    assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED, answer
    assert answer.details == message
    raw = answer.trailing["google.rpc.retryinfo-bin"]
    assert isinstance(raw, bytes)
    assert RetryInfo.FromString(raw).retry_delay.ToNanoseconds() / 1e9 == delay
    raw = answer.trailing["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    status = Status.FromString(raw)
    assert (status.code, status.message) == (RESOURCE_EXHAUSTED, message)
    assert retry_delays(status) == [delay]


async def metric(running: RunningService, name: str, **wanted: str) -> float:
    """One sample of /metrics (0 when it is not exposed yet)."""
    return sample_value(await running.samples(), name, **wanted)


async def discarded_spans(running: RunningService, tenant: str, reason: str = RATE_LIMITED) -> float:
    return await metric(running, "tempo_discarded_spans_total", tenant=tenant, reason=reason)


async def spans_received(running: RunningService, tenant: str) -> float:
    return await metric(running, "tempo_distributor_spans_received_total", tenant=tenant)


def gained(before: dict[Labels, float], after: dict[Labels, float]) -> dict[Labels, float]:
    return {key: value - before.get(key, 0) for key, value in after.items() if value != before.get(key, 0)}


# --- 1. burst, then the rate: OTLP/HTTP -------------------------------------------------------------------


async def test_http_burst_passes_at_once_then_429_with_retry_after_until_refilled(
    start_service: StartService,
) -> None:
    running = await start_service(limited(rate=100, burst=2050))
    req = sized(1000)
    assert (await post(running, req, "acme")).status == 200
    assert (await post(running, req, "acme")).status == 200  # 2000 of the 2050-byte burst, at once

    refused = await post(running, req, "acme")  # 50 tokens left: 950 missing, 9.5 s at 100 bytes/s
    message = rate_limited_message(100, 2050, 1000, "acme")
    assert_rate_limited_http(refused, message, missing=950, rate=100)
    assert refused.headers["Retry-After"] == "10"  # ceil(9.5)

    running.clock.advance(9.0)  # 950 tokens: still 50 short, 0.5 s, which Retry-After rounds up to 1
    refused = await post(running, req, "acme")
    assert_rate_limited_http(refused, message, missing=50, rate=100)
    assert refused.headers["Retry-After"] == "1"

    running.clock.advance(0.5)  # exactly 1000 tokens
    assert (await post(running, req, "acme")).status == 200
    assert_rate_limited_http(await post(running, req, "acme"), message, missing=1000, rate=100)


async def test_http_exactly_the_burst_passes_and_a_short_wait_is_one_second(
    start_service: StartService,
) -> None:
    running = await start_service(limited(rate=1000, burst=2000))
    for _ in range(2):
        assert (await post(running, sized(1000), "acme")).status == 200
    refused = await post(running, sized(200), "acme")  # 0.2 s away: Retry-After is never 0
    assert_rate_limited_http(refused, rate_limited_message(1000, 2000, 200, "acme"), missing=200, rate=1000)
    assert refused.headers["Retry-After"] == "1"
    running.clock.advance(0.25)  # 250 tokens
    assert (await post(running, sized(200), "acme")).status == 200


async def test_http_json_request_is_rate_limited_with_retry_after_and_a_json_status(
    start_service: StartService,
) -> None:
    running = await start_service(limited(rate=100, burst=1500))
    req = sized(1000)  # JSON is accounted (and limited) as its protobuf equivalent
    assert (await post(running, req, "acme", as_json=True)).status == 200
    refused = await post(running, req, "acme", as_json=True)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "5"
    assert refused.headers["Content-Type"].startswith("application/json")
    body = json.loads(refused.body)
    assert body["code"] == RESOURCE_EXHAUSTED
    assert body["message"] == rate_limited_message(100, 1500, 1000, "acme")


# --- 2. the same over OTLP/gRPC ---------------------------------------------------------------------------


async def test_grpc_burst_then_resource_exhausted_with_retry_info_until_refilled(
    start_service: StartService,
) -> None:
    running = await start_service(limited(rate=100, burst=2050))
    req = sized(1000)
    for _ in range(2):
        assert (await export(running, req, "acme")).code == grpc.StatusCode.OK
    message = rate_limited_message(100, 2050, 1000, "acme")
    assert_rate_limited_grpc(await export(running, req, "acme"), message, delay=9.5)
    running.clock.advance(9.0)
    assert_rate_limited_grpc(await export(running, req, "acme"), message, delay=0.5)
    running.clock.advance(0.5)
    assert (await export(running, req, "acme")).code == grpc.StatusCode.OK
    assert_rate_limited_grpc(await export(running, req, "acme"), message, delay=10.0)


async def test_http_and_grpc_share_the_tenants_bucket(start_service: StartService) -> None:
    running = await start_service(limited(rate=100, burst=1500))
    assert (await post(running, sized(1000), "acme")).status == 200
    message = rate_limited_message(100, 1500, 1000, "acme")
    assert_rate_limited_grpc(await export(running, sized(1000), "acme"), message, delay=5.0)


# --- 3. a refusal changes nothing but the discard counters ------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_refused_request_is_counted_only_as_discarded(
    start_service: StartService, transport: str
) -> None:
    running = await start_service(limited(rate=100, burst=3000))
    first = sized(2000, service="api")
    refused = request(
        batch({"service.name": "web"}, [span(pad=900), span(), span()]),
        batch({"service.name": "db"}, [span(pad=100)]),
    )
    assert refused.ByteSize() > 1000  # more than the 1000 tokens left after `first`
    assert await send(running, transport, first, "acme")

    usage_before = await running.usage()
    discarded_before = await running.discarded()
    received_spans_before = await spans_received(running, "acme")
    received_bytes_before = await metric(running, "tempo_distributor_bytes_received_total", tenant="acme")
    assert await discarded_spans(running, "acme") == 0

    assert not await send(running, transport, refused, "acme")

    assert await running.usage() == usage_before
    assert gained(discarded_before, await running.discarded()) == {
        labels("acme", service_name="web", reason=RATE_LIMITED): refused.resource_spans[0].ByteSize(),
        labels("acme", service_name="db", reason=RATE_LIMITED): refused.resource_spans[1].ByteSize(),
    }
    assert await discarded_spans(running, "acme") == 4
    assert await spans_received(running, "acme") == received_spans_before
    assert await metric(running, "tempo_distributor_bytes_received_total", tenant="acme") == (
        received_bytes_before
    )

    # Once accepted, the same request adds to the same series, by the same bytes, as were discarded.
    running.clock.advance(30.0)
    discarded_before = await running.discarded()
    assert await send(running, transport, refused, "acme")
    assert await running.discarded() == discarded_before, "an accepted request discards nothing"
    received = gained(usage_before, await running.usage())
    assert received == {
        labels("acme", service_name="web"): refused.resource_spans[0].ByteSize(),
        labels("acme", service_name="db"): refused.resource_spans[1].ByteSize(),
    }
    assert sum(received.values()) == attributed(refused)
    assert await spans_received(running, "acme") == received_spans_before + 4


# --- 4. tenants are isolated -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_one_tenant_exhausted_does_not_limit_another(
    start_service: StartService, transport: str
) -> None:
    running = await start_service(limited(rate=100, burst=1500))
    req = sized(1000)
    assert await send(running, transport, req, "acme")
    assert not await send(running, transport, req, "acme")
    assert await send(running, transport, req, "globex"), "globex has a bucket of its own"
    assert not await send(running, transport, req, "globex")
    assert not await send(running, transport, req, "acme")
    assert await discarded_spans(running, "acme") == 2
    assert await discarded_spans(running, "globex") == 1
    assert await spans_received(running, "globex") == 1


# --- 5. a request larger than the burst can never pass ----------------------------------------------------


async def test_request_larger_than_the_burst_is_413_without_retry_over_http(
    start_service: StartService,
) -> None:
    running = await start_service(limited(rate=100, burst=500))
    req = sized(1000, spans=2)
    answer = await post(running, req, "acme")
    assert answer.status == 413
    assert "Retry-After" not in answer.headers
    status = Status.FromString(answer.body)
    assert status.code == RESOURCE_EXHAUSTED
    assert status.message == larger_than_burst_message(100, 500, 1000, "acme")
    assert retry_delays(status) == []
    running.clock.advance(3600.0)  # no wait helps
    assert (await post(running, req, "acme")).status == 413
    assert await discarded_spans(running, "acme") == 4
    assert await spans_received(running, "acme") == 0
    assert (await post(running, sized(500), "acme")).status == 200, "the bucket was not touched"


async def test_request_larger_than_the_burst_is_resource_exhausted_without_retry_info_over_grpc(
    start_service: StartService,
) -> None:
    running = await start_service(limited(rate=100, burst=500))
    answer = await export(running, sized(1000), "acme")
    assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answer.details == larger_than_burst_message(100, 500, 1000, "acme")
    assert "google.rpc.retryinfo-bin" not in answer.trailing
    raw = answer.trailing.get("grpc-status-details-bin")
    if raw is not None:
        assert isinstance(raw, bytes)
        assert retry_delays(Status.FromString(raw)) == []
    assert await discarded_spans(running, "acme") == 1


# --- 6. a rate limit of 0 is no limit ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rate_limit_zero_means_no_limit(start_service: StartService, transport: str) -> None:
    running = await start_service(limited(rate=0, burst=100))
    huge = request(batch({"service.name": "api"}, [span(pad=1_000_000)]))
    for _ in range(3):
        assert await send(running, transport, huge, "acme")
    assert await spans_received(running, "acme") == 3
    assert await discarded_spans(running, "acme") == 0


# --- 7. limits from the per-tenant overrides file, reloaded ----------------------------------------------


def ingestion_overrides(rate: int, burst: int, extra: str = "") -> str:
    return (
        "overrides:\n  acme:\n"
        f"    ingestion: {{rate_limit_bytes: {rate}, burst_size_bytes: {burst}}}\n" + extra
    )


async def test_overrides_file_limits_are_enforced_and_reloads_apply_to_the_next_request(
    start_service: StartService, tmp_path: Path
) -> None:
    config = write_config_files(tmp_path, multitenant_config(), ingestion_overrides(100, 1500))
    overrides = tmp_path / "overrides.yaml"
    running = await start_service(load_config(config))

    async with running.session.get(running.server_url + "/status/overrides/acme") as response:
        ingestion = yaml.safe_load(await response.text())["ingestion"]
    assert ingestion["rate_limit_bytes"] == {"value": 100, "source": "runtime_file"}
    assert ingestion["burst_size_bytes"] == {"value": 1500, "source": "runtime_file"}

    assert (await post(running, sized(1000), "acme")).status == 200  # 500 tokens left
    refused = await post(running, sized(1000), "acme")
    assert_rate_limited_http(refused, rate_limited_message(100, 1500, 1000, "acme"), missing=500, rate=100)
    assert (await post(running, sized(1000), "other")).status == 200, "the file limits acme only"
    assert (await post(running, sized(1000), "other")).status == 200, "others have Tempo's defaults"

    # A file naming an unknown forwarder is refused as a whole: acme stays limited as before (the bad
    # file would have lifted the limit).
    overrides.write_text(ingestion_overrides(0, 1500, extra="    forwarders: [nope]\n"))
    assert not await running.service.reload_overrides()
    refused = await post(running, sized(1000), "acme")
    assert_rate_limited_http(refused, rate_limited_message(100, 1500, 1000, "acme"), missing=500, rate=100)
    assert await metric(running, "tempo_runtime_config_last_reload_successful") == 0

    # Burst raised: a 2000-byte request, larger than the old burst (413 before), passes once the bucket
    # holds 2000 tokens, which the old burst of 1500 would have capped.
    overrides.write_text(ingestion_overrides(100, 5000))
    assert await running.service.reload_overrides()
    running.clock.advance(20.0)
    assert (await post(running, sized(2000), "acme")).status == 200  # 500 tokens left

    # Rate raised: the next request is limited at the new rate (0.5 s for the missing 500 bytes, not 5 s).
    overrides.write_text(ingestion_overrides(1000, 5000))
    assert await running.service.reload_overrides()
    refused = await post(running, sized(1000), "acme")
    assert_rate_limited_http(refused, rate_limited_message(1000, 5000, 1000, "acme"), missing=500, rate=1000)
    running.clock.advance(0.5)
    assert (await post(running, sized(1000), "acme")).status == 200  # the bucket is empty now
    async with running.session.get(running.server_url + "/status/overrides/acme") as response:
        ingestion = yaml.safe_load(await response.text())["ingestion"]
    assert ingestion["rate_limit_bytes"] == {"value": 1000, "source": "runtime_file"}

    # Lowered again: 3800 saved tokens are capped at the new burst of 1500 on the next request.
    running.clock.advance(4.0)
    assert (await post(running, sized(200), "acme")).status == 200  # 4000 tokens at the raised rate, less 200
    overrides.write_text(ingestion_overrides(100, 1500))
    assert await running.service.reload_overrides()
    answer = await post(running, sized(2000), "acme")
    assert answer.status == 413
    assert Status.FromString(answer.body).message == larger_than_burst_message(100, 1500, 2000, "acme")
    assert (await post(running, sized(1000), "acme")).status == 200
    refused = await post(running, sized(1000), "acme")  # 500 tokens left, not 2800
    assert_rate_limited_http(refused, rate_limited_message(100, 1500, 1000, "acme"), missing=500, rate=100)


# --- 8. the OpenTelemetry SDK exporters wait out a rate limit and deliver once -----------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sdk_exporter_retries_after_the_rate_limit_and_every_span_is_received_once(
    start_service: StartService, transport: str
) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("test")
    for i in range(5):
        with tracer.start_as_current_span(f"op-{i}", attributes={"team": "core"}):
            pass
    spans = recorded.get_finished_spans()
    size = len(encode_spans(spans).SerializeToString())
    # The first export leaves half a request of tokens; the second waits half a second for the rest
    # (Retry-After rounds that up to 1 s).
    running = await start_service(limited(rate=size, burst=size + size // 2))
    if transport == "http":
        exporter: HttpExporter | GrpcExporter = HttpExporter(
            endpoint=running.traces_url, headers={"X-Scope-OrgID": "acme"}
        )
    else:
        exporter = GrpcExporter(
            endpoint=running.grpc_target, insecure=True, headers={"x-scope-orgid": "acme"}
        )
    try:
        assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
        second = asyncio.ensure_future(asyncio.to_thread(exporter.export, spans))

        async def second_export_refused() -> bool:
            if await discarded_spans(running, "acme") > 0:
                return True
            assert not second.done(), f"the second export ended without being limited: {second.result()}"
            return False

        await eventually(second_export_refused, "the second export is rate limited once", timeout=10)
        assert not second.done(), "the exporter waits and retries"
        running.clock.advance(1.0)
        assert await asyncio.wait_for(second, 15) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert await spans_received(running, "acme") == 2 * len(spans)
    assert await discarded_spans(running, "acme") == len(spans)
    usage = await running.usage()
    batch_size = encode_spans(spans).resource_spans[0].ByteSize()
    assert usage == {labels("acme", service_name="checkout"): 2 * batch_size}


# --- 9. the token bucket on its own ------------------------------------------------------------------------


def test_a_new_tenant_has_a_full_burst_and_refills_at_the_rate() -> None:
    clock = ManualClock()
    limiter = IngestionRateLimiter(clock)
    assert limiter.take("t", 600, 100, 1000).allowed
    assert limiter.take("t", 400, 100, 1000).allowed  # exactly the burst
    decision = limiter.take("t", 1, 100, 1000)
    assert (decision.allowed, decision.never) == (False, False)
    assert decision.retry_after == pytest.approx(0.01)
    clock.advance(2.5)  # 250 tokens
    decision = limiter.take("t", 300, 100, 1000)
    assert not decision.allowed and decision.retry_after == 0.5
    assert limiter.take("t", 250, 100, 1000).allowed, "a refusal takes nothing"
    assert not limiter.take("t", 1, 100, 1000).allowed
    clock.advance(0.5)
    assert limiter.take("t", 50, 100, 1000).allowed
    assert not limiter.take("t", 1, 100, 1000).allowed


def test_tokens_never_exceed_the_burst() -> None:
    clock = ManualClock()
    limiter = IngestionRateLimiter(clock)
    assert limiter.take("t", 1000, 100, 1000).allowed
    clock.advance(3600.0)  # 360000 bytes' worth of time
    assert limiter.take("t", 1000, 100, 1000).allowed
    decision = limiter.take("t", 1, 100, 1000)
    assert not decision.allowed and decision.retry_after == pytest.approx(0.01)


def test_larger_than_the_burst_is_never_and_takes_nothing() -> None:
    limiter = IngestionRateLimiter(ManualClock())
    decision = limiter.take("t", 1001, 100, 1000)
    assert (decision.allowed, decision.never) == (False, True)
    assert limiter.take("t", 1000, 100, 1000).allowed


def test_rate_zero_allows_anything_and_keeps_no_bucket() -> None:
    limiter = IngestionRateLimiter(ManualClock())
    for _ in range(3):
        assert limiter.take("t", 10**9, 0, 1).allowed
    assert limiter.forget_full_buckets() == 0
    assert not limiter._buckets


def test_give_back_returns_tokens_up_to_the_burst() -> None:
    clock = ManualClock()
    limiter = IngestionRateLimiter(clock)
    assert limiter.take("t", 600, 100, 1000).allowed  # 400 left
    limiter.give_back("t", 300)
    assert limiter.take("t", 700, 100, 1000).allowed
    assert not limiter.take("t", 1, 100, 1000).allowed

    assert limiter.take("u", 100, 100, 1000).allowed
    limiter.give_back("u", 5000)  # capped at the burst
    assert limiter._buckets["u"].tokens == 1000
    assert limiter.take("u", 1000, 100, 1000).allowed
    assert not limiter.take("u", 1, 100, 1000).allowed

    limiter.give_back("nobody", 100)  # no bucket: nothing to return to, and none is made
    assert "nobody" not in limiter._buckets


def test_a_parameter_change_keeps_the_saved_tokens_capped_at_the_new_burst() -> None:
    clock = ManualClock()
    limiter = IngestionRateLimiter(clock)
    assert limiter.take("t", 100, 100, 1000).allowed  # 900 saved
    assert limiter.take("t", 200, 100, 300).allowed  # capped at 300, then 100 left
    decision = limiter.take("t", 101, 100, 300)
    assert not decision.allowed and decision.retry_after == pytest.approx(0.01)
    # Raising the burst again gives no tokens back: 100 saved, 100 missing at 100 bytes/s.
    decision = limiter.take("t", 200, 100, 1000)
    assert not decision.allowed and decision.retry_after == 1.0
    # A new rate counts from the request that saw it: 100 + 1 s at 1000 bytes/s.
    decision = limiter.take("t", 1200, 1000, 2000)
    assert not decision.allowed and decision.retry_after == 1.1
    clock.advance(1.0)
    assert limiter.take("t", 1100, 1000, 2000).allowed
    assert not limiter.take("t", 1, 1000, 2000).allowed


def test_time_before_a_new_rate_is_seen_accrues_at_the_old_rate() -> None:
    """As in Tempo (dskit's RateLimiter calls x/time/rate's SetLimitAt(now, limit), which first advances
    the bucket at the old limit): the new rate counts from the first request that sees it."""
    clock = ManualClock()
    limiter = IngestionRateLimiter(clock)
    assert limiter.take("t", 1000, 100, 1000).allowed
    clock.advance(2.0)  # 200 tokens at 100 bytes/s
    decision = limiter.take("t", 400, 1000, 1000)
    assert not decision.allowed and decision.retry_after == 0.2
    clock.advance(0.25)  # 200 + 250 at the new rate
    assert limiter.take("t", 450, 1000, 1000).allowed
    assert not limiter.take("t", 1, 1000, 1000).allowed


def test_forget_full_buckets_drops_only_buckets_that_have_refilled() -> None:
    clock = ManualClock()
    limiter = IngestionRateLimiter(clock)
    assert limiter.take("drained", 1000, 100, 1000).allowed
    assert limiter.take("half", 500, 100, 1000).allowed
    assert limiter.take("sip", 10, 100, 1000).allowed
    assert limiter.forget_full_buckets() == 0
    clock.advance(5.0)  # half and sip are full again (exactly, and capped); drained holds 500
    assert limiter.forget_full_buckets() == 2
    assert set(limiter._buckets) == {"drained"}
    decision = limiter.take("drained", 1000, 100, 1000)
    assert not decision.allowed and decision.retry_after == 5.0, "a kept bucket keeps its state"
    assert limiter.take("half", 1000, 100, 1000).allowed, "a forgotten bucket starts full, as it was"
    clock.advance(5.0)
    assert limiter.forget_full_buckets() == 1  # drained is full now; half spent its burst again
    assert set(limiter._buckets) == {"half"}


def test_retry_after_header_is_whole_seconds_and_never_zero() -> None:
    assert [retry_after_header(s) for s in (0.0, 0.001, 0.5, 1.0, 1.001, 9.5, 10.0)] == [
        "1",
        "1",
        "1",
        "1",
        "2",
        "10",
        "10",
    ]
