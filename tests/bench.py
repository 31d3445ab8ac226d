"""`make bench`: throughput and scrape figures, printed as ratios taken in one run.

(a) generated ExportTraceServiceRequest.FromString only (the floor a naive receiver pays)
(b) the receiver's accounting path (validating decode, attribute, record_received), resource-level
    dimensions
(c) the same with a span-level dimension present on every span
(d) end to end: a load-generator process POSTing to a running server process over loopback, each of
    3 rounds divided by an (a) measured right after it (the VM's speed drifts), median of the ratios;
(d') the same with a span-level dimension (team) on every span; and 1-span requests/s against a bare
    aiohttp handler that only reads the body, with the same load generator
(f) end to end with one forwarder (otlpgrpc) to a local sink process, ingest over HTTP and over gRPC,
    each against the same ingest without a forwarder: the cost of forwarding
(e) one /usage_metrics render of 100,000 series vs prometheus_client.generate_latest over the same
(g) the usage ledger's cost: the accounting path with and without recording into the ledger, and end
    to end (HTTP ingest, ledger flushing every second) with and without the ledger
(h) the monthly Usage Attribution API over a ledger of 12 months x 100 tenants x 1,000 tag sets
(i) the usage ledger's flush of 200,000 series into a fresh SQLite ledger: new series, then the same
    series again after a restart (their ids read back from the file), then once more (ids cached)
(j) /usage_metrics scrapes of 100,000 series in a server process while ingestion runs: the longest
    OTLP/HTTP request that overlapped a scrape
(k) end to end (HTTP ingest, one otlpgrpc forwarder to a sink process, until the sink has the last
    request) for each forwarder delivery mode: queued, synchronous, persistent; and the persistent
    queue's requests and seconds per fsync
(l) the PostgreSQL ledger: a flush of 10,000 series against SQLite's, and end to end ingest with each
    ledger (flushing every second) against none (skipped with the reason when PostgreSQL is unreachable)
(m) distinct counts: end to end ingest counting distinct sessions and hosts against not counting them
    (the same requests, a session on every span); memory per series with 10 sessions and 1 host; the
    monthly and hourly API over a month of hourly session counts of 100 tag sets
OTLP/JSON ingest end to end on 50-span and 5-span requests against protobuf ingest of the same requests,
and the longest /ready answer while one 12 MB OTLP/JSON request is converted and scanned;
and memory per usage series (short labels; 3 labels of 22-35 bytes, with and without the ledger).
Rounds of a/b/c are interleaved and the median taken, because this machine is shared and noisy:
compare the ratios, not one absolute time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import CollectorRegistry, Counter, generate_latest

from distributor.ingest.traces import ReceivedTraces
from distributor.ledger.ledger import HOUR, LedgerEntry, LedgerStore, add_months, hour_of, month_of
from distributor.ledger.sqlite import SqliteLedgerStore
from distributor.overrides import TenantLimits, parse_dimensions
from distributor.usage.config import CostAttributionConfig
from distributor.usage.exposition import render_counter
from distributor.usage.tracker import UsageTracker
from tests.support.cli import ready_listeners
from tests.support.ledger import standalone_ledger

SPANS_PER_REQUEST = 1000
PAYLOADS = 8
ROUNDS = 9
FORWARDING_ROUNDS = 3
LEDGER_ROUNDS = 5


def _kv(key: str, value: str | int) -> KeyValue:
    any_value = AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value)
    return KeyValue(key=key, value=any_value)


def make_payloads(span_team: bool, seed: int = 1, sessions: bool = False) -> list[bytes]:
    """~1000 spans of ~300 bytes per request: 10 services x 100 spans, realistic attributes; with
    `sessions`, each batch's spans carry one `session.id` (ten browsers' spans batched by a Collector)."""
    rng = random.Random(seed)
    payloads = []
    for p in range(PAYLOADS):
        req = ExportTraceServiceRequest()
        for service in range(SPANS_PER_REQUEST // 100):
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(
                [
                    _kv("service.name", f"service-{(p + service) % 12}"),
                    _kv("k8s.namespace.name", "production"),
                    _kv("host.name", f"ip-10-0-{service}-{p}.ec2.internal"),
                    _kv("telemetry.sdk.language", "python"),
                ]
            )
            scope = rs.scope_spans.add()
            scope.scope.name, scope.scope.version = "opentelemetry.instrumentation.flask", "0.48b0"
            for i in range(100):
                span = scope.spans.add()
                span.trace_id, span.span_id = rng.randbytes(16), rng.randbytes(8)
                span.parent_span_id = rng.randbytes(8)
                span.name, span.kind = f"GET /api/v1/items/{{id}}/{i % 7}", 2
                span.start_time_unix_nano = 1_700_000_000_000_000_000 + i * 1_000_000
                span.end_time_unix_nano = span.start_time_unix_nano + rng.randint(1_000, 90_000_000)
                attributes = [
                    _kv("http.method", "GET"),
                    _kv("http.route", "/api/v1/items/{id}"),
                    _kv("http.status_code", 200),
                    _kv("net.peer.name", "10.0.12.7"),
                    _kv("http.user_agent", "Mozilla/5.0 (X11; Linux x86_64)"),
                    _kv("thread.name", f"worker-{i % 8}"),
                ]
                if span_team:
                    attributes.append(_kv("team", f"team-{i % 5}"))
                if sessions:
                    attributes.append(
                        _kv("session.id", f"{seed:04x}{p:04x}{service:04x}-5f2c-4d7e-9a61-3b8e")
                    )
                span.attributes.extend(attributes)
                span.status.code = 1
        payloads.append(req.SerializeToString())
    return payloads


def one_span_payloads() -> list[bytes]:
    """Requests of one span each (the bench payload's first span, its resource and scope)."""
    payloads = []
    for body in make_payloads(span_team=False):
        req = ExportTraceServiceRequest.FromString(body)
        batch = req.resource_spans[0]
        del req.resource_spans[1:]
        del batch.scope_spans[0].spans[1:]
        payloads.append(req.SerializeToString())
    return payloads


def small_payloads(spans: int) -> list[bytes]:
    """Requests of `spans` spans each (one batch of the bench payload), like a browser's."""
    payloads = []
    for body in make_payloads(span_team=False):
        req = ExportTraceServiceRequest.FromString(body)
        del req.resource_spans[1:]
        del req.resource_spans[0].scope_spans[0].spans[spans:]
        payloads.append(req.SerializeToString())
    return payloads


def as_json(payloads: list[bytes]) -> list[bytes]:
    from tests.support.otlp import otlp_json

    return [otlp_json(ExportTraceServiceRequest.FromString(body)) for body in payloads]


PAYLOAD_KINDS: dict[str, Callable[[], list[bytes]]] = {
    "plain": lambda: make_payloads(span_team=False),
    "team": lambda: make_payloads(span_team=True),
    "sessions": lambda: make_payloads(span_team=True, sessions=True),
    "one-span": one_span_payloads,
    "proto-50": lambda: small_payloads(50),
    "json-50": lambda: as_json(small_payloads(50)),
    "proto-5": lambda: small_payloads(5),
    "json-5": lambda: as_json(small_payloads(5)),
}


def _per_round(fn: Callable[[bytes], object], payloads: list[bytes]) -> float:
    started = time.perf_counter()
    for body in payloads:
        fn(body)
    return time.perf_counter() - started


def measure_decode_paths() -> dict[str, float]:
    plain, with_team = make_payloads(span_team=False), make_payloads(span_team=True)
    spans = SPANS_PER_REQUEST * PAYLOADS
    config = CostAttributionConfig(enabled=True)
    resource_dims = TenantLimits(parse_dimensions({"service.name": "", "k8s.namespace.name": "namespace"}), 0)
    resource_scoped = TenantLimits(parse_dimensions({"resource.service.name": ""}), 0)
    span_dims = TenantLimits(parse_dimensions({"service.name": "", "team": ""}), 0)
    trackers = [UsageTracker(config) for _ in range(5)]
    ledger_directory = tempfile.TemporaryDirectory()
    ledger = standalone_ledger(SqliteLedgerStore(Path(ledger_directory.name) / "ledger.db"), time.time)

    def path(tracker: UsageTracker, limits: TenantLimits) -> Callable[[bytes], None]:
        def run(body: bytes) -> None:
            traces = ReceivedTraces(body, tracker.scan_plan(limits), limits.max_attribute_bytes)
            attribution = tracker.attribute(traces, limits)
            assert attribution is not None
            tracker.record_received("bench", attribution)

        return run

    def recorded_path(
        tracker: UsageTracker, limits: TenantLimits, into_ledger: bool
    ) -> Callable[[bytes], None]:
        """What the pipeline does per accepted request, with or without the ledger's share."""

        def run(body: bytes) -> None:
            traces = ReceivedTraces(body, tracker.scan_plan(limits), limits.max_attribute_bytes)
            attribution = tracker.attribute(traces, limits)
            assert attribution is not None
            overflowed = tracker.record_received("bench", attribution)
            if into_ledger:
                ledger.record("bench", attribution.labels, attribution.usage, overflowed)

        return run

    paths: dict[str, tuple[Callable[[bytes], object], list[bytes]]] = {
        "a": (ExportTraceServiceRequest.FromString, plain),
        "b": (path(trackers[0], resource_dims), plain),
        "b_resource_scoped": (path(trackers[1], resource_scoped), plain),
        "c": (path(trackers[2], span_dims), with_team),
        "g_without": (recorded_path(trackers[3], span_dims, False), with_team),
        "g_ledger": (recorded_path(trackers[4], span_dims, True), with_team),
    }
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(ROUNDS):
        for name, (fn, payloads) in paths.items():
            samples[name].append(_per_round(fn, payloads))
    mb = sum(len(p) for p in plain) / 1e6
    result = {name: spans / statistics.median(times) for name, times in samples.items()}
    result["payload_mb"] = mb
    result["bytes_per_span"] = sum(len(p) for p in plain) / spans
    ledger_directory.cleanup()
    return result


def measure_end_to_end_rounds() -> tuple[float, float, float, float]:
    """(d) and (d') in spans/s, and each over (a): the VM's speed drifts by tens of percent within
    minutes, so each end-to-end round is divided by an (a) measured right after it, and the median of
    those ratios is taken."""
    end_to_end: dict[str, list[float]] = {"d": [], "d_team": []}
    over_a: dict[str, list[float]] = {"d": [], "d_team": []}
    shapes = {"d": ("{service.name: ''}", "plain"), "d_team": ("{service.name: '', team: ''}", "team")}
    for _ in range(FORWARDING_ROUNDS):
        for name, (dimensions, kind) in shapes.items():
            rate = measure_end_to_end(dimensions=dimensions, kind=kind)
            end_to_end[name].append(rate)
            over_a[name].append(rate / measure_from_string())
    return (
        statistics.median(end_to_end["d"]),
        statistics.median(end_to_end["d_team"]),
        statistics.median(over_a["d"]),
        statistics.median(over_a["d_team"]),
    )


def measure_from_string() -> float:
    """(a) alone, for a ratio with an end-to-end round taken just before it: spans/s, median."""
    plain = make_payloads(span_team=False)
    times = [_per_round(ExportTraceServiceRequest.FromString, plain) for _ in range(ROUNDS)]
    return SPANS_PER_REQUEST * PAYLOADS / statistics.median(times)


# (d) ---------------------------------------------------------------------------------------------


EXPORT_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _load_generator(target: str, requests: int, concurrency: int, kind: str = "plain") -> None:
    """Runs in its own process: send the payloads of `kind` as fast as the server answers, over
    OTLP/HTTP when `target` is a URL, else over OTLP/gRPC to host:port."""
    import aiohttp
    import grpc

    payloads = PAYLOAD_KINDS[kind]()
    content_type = "application/json" if kind.startswith("json") else "application/x-protobuf"
    protobuf = PAYLOAD_KINDS[kind.replace("json", "proto")]()[0] if kind.startswith("json") else payloads[0]
    spans_per_request = sum(
        len(scope.spans)
        for batch in ExportTraceServiceRequest.FromString(protobuf).resource_spans
        for scope in batch.scope_spans
    )

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        channel = grpc.aio.insecure_channel(target) if not target.startswith("http") else None
        export = channel.unary_unary(EXPORT_PATH) if channel is not None else None
        async with aiohttp.ClientSession(connector=connector) as session:
            queue = list(range(requests))

            async def send(body: bytes) -> None:
                if export is not None:
                    await export(body)
                    return
                async with session.post(
                    target, data=body, headers={"Content-Type": content_type}
                ) as response:
                    assert response.status == 200, response.status
                    await response.read()

            async def worker() -> None:
                while queue:
                    index = queue.pop()
                    await send(payloads[index % len(payloads)])

            await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up connections
            queue.extend(range(requests))
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        if channel is not None:
            await channel.close()
        print(
            json.dumps(
                {
                    "spans_per_second": requests * spans_per_request / elapsed,
                    "requests_per_second": requests / elapsed,
                }
            )
        )

    asyncio.run(run())


def _sink() -> None:
    """Runs in its own process: an OTLP/gRPC backend that takes every request and counts its bytes,
    answering GET /count on HTTP so the benchmark can check nothing forwarded was lost."""
    import grpc
    from aiohttp import web

    received = {"requests": 0, "bytes": 0}

    async def export(body: bytes, context: object) -> bytes:
        received["requests"] += 1
        received["bytes"] += len(body)
        return b""

    async def count(request: web.Request) -> web.Response:
        return web.json_response(received)

    async def otlp_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A minimal HTTP/1.1 keep-alive OTLP receiver: the sink must cost the shared CPU little, or
        the figure would measure the sink rather than the forwarder."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                body = await reader.readexactly(length)
                received["requests"] += 1
                received["bytes"] += len(body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        handler = grpc.unary_unary_rpc_method_handler(export)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(EXPORT_PATH.split("/")[1], {"Export": handler}),)
        )
        grpc_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        app = web.Application()
        app.router.add_get("/count", count)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        http_port = runner.addresses[0][1]
        otlp_server = await asyncio.start_server(otlp_http, "127.0.0.1", 0)
        otlp_port = otlp_server.sockets[0].getsockname()[1]
        print(
            json.dumps(
                {
                    "grpc": f"127.0.0.1:{grpc_port}",
                    "http": f"http://127.0.0.1:{http_port}",
                    "otlphttp": f"http://127.0.0.1:{otlp_port}",
                }
            )
        )
        sys.stdout.flush()
        await asyncio.Event().wait()

    asyncio.run(run())


def _bare_server() -> None:
    """Runs in its own process: an aiohttp server whose OTLP/HTTP handler only reads the body and
    answers an empty success, the ceiling any Python receiver on aiohttp can reach."""
    from aiohttp import web

    async def traces(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def run() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", traces)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(json.dumps({"url": f"http://127.0.0.1:{runner.addresses[0][1]}/v1/traces"}))
        sys.stdout.flush()
        await asyncio.Event().wait()

    asyncio.run(run())


def measure_bare(requests: int, concurrency: int, kind: str) -> float:
    """Requests/s of the load generator against the bare aiohttp handler."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.bench", "--bare-server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = json.loads(server.stdout.readline())["url"]
        result = subprocess.run(
            [sys.executable, "-m", "tests.bench", "--loadgen", url, str(requests), str(concurrency), kind],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        return float(json.loads(result.stdout.strip().splitlines()[-1])["requests_per_second"])
    finally:
        server.terminate()
        server.wait(timeout=30)


ONE_SPAN_REQUESTS = 4000
JSON_REQUESTS = 1000


def measure_json_ingest() -> dict[str, float]:
    """Spans/s of OTLP/JSON ingest end to end against protobuf ingest of the same requests, for
    50-span and 5-span requests; medians of interleaved runs."""
    runs: dict[str, list[float]] = {kind: [] for kind in ("proto-50", "json-50", "proto-5", "json-5")}
    for _ in range(FORWARDING_ROUNDS):
        for kind in runs:
            runs[kind].append(measure_end_to_end(requests=JSON_REQUESTS, concurrency=8, kind=kind))
    return {kind: statistics.median(values) for kind, values in runs.items()}


def measure_json_stall(megabytes: int = 12) -> dict[str, float]:
    """The longest /ready answer while a server process converts and scans one OTLP/JSON request of
    about `megabytes` MB (span-level dimension on every span), and how long that request took."""
    spans = make_payloads(span_team=True)
    req = ExportTraceServiceRequest()
    while req.ByteSize() * 2.6 < megabytes * 1e6:  # OTLP/JSON is about 2.6 times protobuf's size here
        req.MergeFromString(spans[len(req.resource_spans) // 10 % len(spans)])
    body = as_json([req.SerializeToString()])[0]
    config = (
        "server: {http_listen_port: 0}\n"
        "distributor:\n"
        "  receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}}}}\n"
        "  usage: {cost_attribution: {enabled: true}}\n"
        "overrides:\n  defaults:\n    cost_attribution: {dimensions: {service.name: '', team: ''}}\n"
        "    ingestion: {rate_limit_bytes: 0}\n"
    )
    with tempfile.TemporaryDirectory() as directory, bench_server(config, Path(directory)) as listeners:
        stall = asyncio.run(_stall_during(listeners["server"], listeners["otlp_http"], body))
    return stall | {"megabytes": len(body) / 1e6}


async def _stall_during(server_url: str, traces_url: str, body: bytes) -> dict[str, float]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        loop = asyncio.get_running_loop()

        async def post() -> float:
            started = loop.time()
            async with session.post(
                traces_url, data=body, headers={"Content-Type": "application/json"}
            ) as answer:
                assert answer.status == 200, await answer.text()
            return loop.time() - started

        task = asyncio.ensure_future(post())
        waits: list[float] = []
        while not task.done():
            asked = loop.time()
            async with session.get(server_url + "/ready") as response:
                await response.read()
            waits.append(loop.time() - asked)
        return {"worst_ready_s": max(waits), "request_s": task.result()}


def measure_one_span_requests() -> tuple[float, float]:
    """(ours, bare) requests/s for 1-span requests, medians of interleaved runs."""
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(FORWARDING_ROUNDS):
        ours.append(
            measure_end_to_end(
                requests=ONE_SPAN_REQUESTS, concurrency=8, kind="one-span", per="requests_per_second"
            )
        )
        bare.append(measure_bare(ONE_SPAN_REQUESTS, 8, "one-span"))
    return statistics.median(ours), statistics.median(bare)


def _start_sink() -> tuple[subprocess.Popen[str], dict[str, str]]:
    sink = subprocess.Popen(
        [sys.executable, "-m", "tests.bench", "--sink"], stdout=subprocess.PIPE, text=True
    )
    assert sink.stdout is not None
    return sink, json.loads(sink.stdout.readline())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sink_count(sink_http: str) -> dict[str, int]:
    import urllib.request

    with urllib.request.urlopen(sink_http + "/count", timeout=10) as response:
        return dict(json.loads(response.read()))


@contextlib.contextmanager
def bench_server(config_text: str, directory: Path, stop_timeout: float = 60) -> Iterator[dict[str, str]]:
    """A server process started from `config_text`, until the block ends: its listeners as the ready line
    names them (`server`, `otlp_http`, `otlp_grpc`)."""
    config = directory / "bench.yaml"
    config.write_text(config_text)
    server = subprocess.Popen(
        [sys.executable, "-m", "distributor", "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        for line in server.stderr:
            if "distributor ready" in line:
                listeners = ready_listeners(line)
                break
        else:
            raise RuntimeError("the server did not start")
        listeners["pid"] = str(server.pid)
        yield listeners
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=stop_timeout)


def _backlog_seconds(sink_http: str, delivered: int, started: float) -> float:
    """Seconds from now until the sink has `delivered` requests. Forwarding is asynchronous: a run ends
    when the sink has the last request (warm-up and measured rounds each send theirs), so a backlog in
    the queues cannot flatter it."""
    loadgen_done = time.perf_counter()
    while _sink_count(sink_http)["requests"] < delivered:
        if time.perf_counter() - started > 120:
            raise RuntimeError("forwarded requests did not all reach the sink")
        time.sleep(0.002)
    return time.perf_counter() - loadgen_done


def measure_end_to_end(
    requests: int = 200,
    concurrency: int = 4,
    ingest: str = "http",
    forward_to: str | None = None,
    sink_http: str = "",
    cpu_per_request: list[float] | None = None,
    ledger: bool = False,
    dimensions: str = "{service.name: ''}",
    kind: str = "plain",
    per: str = "spans_per_second",
    ledger_backend: str = "sqlite: {path: ledger.db}",
    distinct: bool = False,
) -> float:
    """Spans/s through a server process (counting distinct sessions and hosts when `distinct`);
    with `forward_to` (a sink's OTLP/gRPC host:port or OTLP/HTTP
    URL) every request is also forwarded, and the run only ends once the sink has the last of them.
    The server process's CPU seconds per request (all its threads, warm-up included) are appended to
    `cpu_per_request`: unlike wall-clock throughput, they barely move when the machine is busy."""
    if cpu_per_request is None:
        cpu_per_request = []
    forwarding = ""
    if forward_to is not None:
        backend = "otlphttp" if forward_to.startswith("http") else "otlpgrpc"
        forwarding = (
            "  forwarders:\n"
            f"    - {{name: sink, backend: {backend}, queue_size: 1000, workers: 4,\n"
            f"       {backend}: {{endpoint: '{forward_to}', tls: {{insecure: true}}}}}}\n"
        )
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "bench.yaml"
        config.write_text(
            "server: {http_listen_port: 0}\n"
            "distributor:\n"
            "  receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'},\n"
            "    grpc: {endpoint: '127.0.0.1:0', max_recv_msg_size_bytes: 67108864}}}}\n"
            "  usage: {cost_attribution: {enabled: true}}\n"
            f"{forwarding}"
            f"overrides:\n  defaults:\n    cost_attribution: {{dimensions: {dimensions}"
            + (", distinct_counts: {sessions: {enabled: true}, hosts: {enabled: true}}" if distinct else "")
            + "}\n"
            "    ingestion: {rate_limit_bytes: 0}\n"  # the benchmark measures throughput, not limits
            f"    forwarders: {'[sink]' if forward_to else '[]'}\n"
        )
        if ledger:  # flushing every second, so each run includes several flushes
            with config.open("a") as file:
                file.write(
                    f"usage_attribution:\n  enabled: true\n  ledger: {{{ledger_backend}, flush_period: 1s}}\n"
                )
        server = subprocess.Popen(
            [sys.executable, "-m", "distributor", "--config", str(config)], stderr=subprocess.PIPE, text=True
        )
        try:
            assert server.stderr is not None
            url = grpc_target = None
            for line in server.stderr:
                if "distributor ready" in line:
                    found = re.search(r" otlp_http=(\S+)", line)
                    url = found.group(1) if found else None
                    found = re.search(r" otlp_grpc=(\S+)", line)
                    grpc_target = found.group(1) if found else None
                    break
            if url is None or grpc_target is None:
                raise RuntimeError("the server did not start")
            before = _sink_count(sink_http)["requests"] if forward_to else 0
            cpu_before = _cpu_seconds(server.pid)
            started = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable, "-m", "tests.bench", "--loadgen",
                    url if ingest == "http" else grpc_target, str(requests), str(concurrency), kind,
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )  # fmt: skip
            measured_rate = json.loads(result.stdout.strip().splitlines()[-1])
            if per != "spans_per_second":
                return float(measured_rate[per])
            spans_per_second = float(measured_rate["spans_per_second"])
            if forward_to is None:
                cpu_per_request.append((_cpu_seconds(server.pid) - cpu_before) / (2 * requests))
                return spans_per_second
            backlog_seconds = _backlog_seconds(sink_http, before + 2 * requests, started)
            cpu_per_request.append((_cpu_seconds(server.pid) - cpu_before) / (2 * requests))
            measured = requests * SPANS_PER_REQUEST / spans_per_second
            return requests * SPANS_PER_REQUEST / (measured + backlog_seconds)
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=120)


DELIVERY_MODES = ("queued", "synchronous", "persistent")
FSYNC_BATCH_FAMILY = "tempo_distributor_forwarder_persistent_queue_fsync_batch_requests"
FSYNC_SECONDS_FAMILY = "tempo_distributor_forwarder_persistent_queue_fsync_duration_seconds"


def _ready(server_url: str, timeout: float = 60) -> None:
    """Wait until /ready answers 200 (a persistent queue is opened and checked before it does)."""
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(server_url + "/ready", timeout=10) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError:
            pass
        if time.perf_counter() - started > timeout:
            raise RuntimeError("the server did not become ready")
        time.sleep(0.01)


def _fsync_totals(server_url: str) -> dict[str, float]:
    """What the forwarder `sink`'s persistent queue reports at /metrics: requests made durable
    (`requests`), group commits (`fsyncs`) and the seconds they took (`seconds`)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = {
        FSYNC_BATCH_FAMILY + "_sum": "requests",
        FSYNC_BATCH_FAMILY + "_count": "fsyncs",
        FSYNC_SECONDS_FAMILY + "_sum": "seconds",
    }
    totals = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and sample.labels.get("forwarder") == "sink":
                totals[wanted[sample.name]] += sample.value
    return totals


def _delivery_run(
    mode: str, sink_target: str, sink_http: str, requests: int, concurrency: int
) -> tuple[float, dict[str, float]]:
    """One end-to-end run (HTTP ingest, one otlpgrpc forwarder to the sink) with this delivery mode:
    spans/s until the sink has the last request, and the persistent queue's fsync totals."""
    with tempfile.TemporaryDirectory() as directory:
        persistent = f", persistent_queue: {{path: '{directory}/queue'}}" if mode == "persistent" else ""
        config = (
            "server: {http_listen_port: 0}\n"
            "distributor:\n"
            "  receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}}}}\n"
            "  usage: {cost_attribution: {enabled: true}}\n"
            "  forwarders:\n"
            f"    - {{name: sink, backend: otlpgrpc, delivery: {mode}, queue_size: 1000, workers: 4,\n"
            # Room for every request of a run in each mode, so that no mode is measured by its refusals
            "       queue_size_bytes: 536870912, total_queue_size_bytes: 1073741824,\n"
            f"       otlpgrpc: {{endpoint: '{sink_target}', tls: {{insecure: true}}}}{persistent}}}\n"
            "overrides:\n  defaults:\n    cost_attribution: {dimensions: {service.name: ''}}\n"
            "    ingestion: {rate_limit_bytes: 0}\n    forwarders: [sink]\n"
        )
        with bench_server(config, Path(directory)) as listeners:
            _ready(listeners["server"])
            before = _sink_count(sink_http)["requests"]
            started = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable, "-m", "tests.bench", "--loadgen",
                    listeners["otlp_http"], str(requests), str(concurrency),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )  # fmt: skip
            spans_per_second = float(json.loads(result.stdout.strip().splitlines()[-1])["spans_per_second"])
            backlog_seconds = _backlog_seconds(sink_http, before + 2 * requests, started)
            fsyncs = _fsync_totals(listeners["server"]) if mode == "persistent" else {}
    measured = requests * SPANS_PER_REQUEST / spans_per_second
    return requests * SPANS_PER_REQUEST / (measured + backlog_seconds), fsyncs


# Clients sending at once: 4 as in every other end-to-end row, and 16, a fleet of exporters (one
# Collector's otlp exporter alone sends with 10 consumers). A group commit makes durable what arrived
# during the previous fsync, so the persistent queue's cost depends on it.
DELIVERY_CONCURRENCIES = (4, 16)


def measure_delivery_modes(requests: int = 200) -> dict[int, dict[str, float]]:
    """By number of clients: spans/s end to end through one forwarder to a sink process for each
    delivery mode (queued, synchronous, persistent with its queue in a temporary directory), medians
    of interleaved rounds; with the persistent queue's group commits over all its runs: `fsyncs`,
    requests per fsync (`fsync_batch`) and seconds per fsync (`fsync_seconds`)."""
    sink, sink_addresses = _start_sink()
    measured: dict[int, dict[str, float]] = {}
    try:
        for concurrency in DELIVERY_CONCURRENCIES:
            runs: dict[str, list[float]] = {mode: [] for mode in DELIVERY_MODES}
            fsyncs = {"requests": 0.0, "fsyncs": 0.0, "seconds": 0.0}
            for _ in range(FORWARDING_ROUNDS):
                for mode in DELIVERY_MODES:
                    rate, run_fsyncs = _delivery_run(
                        mode, sink_addresses["grpc"], sink_addresses["http"], requests, concurrency
                    )
                    runs[mode].append(rate)
                    for key, value in run_fsyncs.items():
                        fsyncs[key] += value
            count = fsyncs["fsyncs"] or 1.0
            measured[concurrency] = {mode: statistics.median(rates) for mode, rates in runs.items()} | {
                "fsyncs": fsyncs["fsyncs"],
                "fsync_batch": fsyncs["requests"] / count,
                "fsync_seconds": fsyncs["seconds"] / count,
            }
    finally:
        sink.terminate()
        sink.wait(timeout=30)
    return measured


def print_delivery_modes(delivery: dict[int, dict[str, float]]) -> None:
    for concurrency, measured in delivery.items():
        for mode in DELIVERY_MODES:
            label = f"(k) end to end, {concurrency} clients, delivery {mode}"
            print(f"{label:52s} {measured[mode]:12,.0f} spans/s")
        print(
            f"(k) {concurrency} clients: the persistent queue made {measured['fsync_batch']:.2f} requests "
            f"durable per fsync, {measured['fsync_seconds'] * 1e3:.1f} ms each ({measured['fsyncs']:.0f} "
            f"fsyncs); synchronous/queued {measured['synchronous'] / measured['queued']:.2f} (no target)"
        )


def delivery_checks(delivery: dict[int, dict[str, float]]) -> list[tuple[str, float, float]]:
    return [
        (f"k persistent/queued, {concurrency:2d}", measured["persistent"] / measured["queued"], 0.7)
        for concurrency, measured in delivery.items()
    ]


# (e) ---------------------------------------------------------------------------------------------


def populate(tracker: UsageTracker, tenants: int = 10, per_tenant: int = 10_000) -> None:
    limits = TenantLimits(parse_dimensions({"service.name": ""}), 0)
    for tenant in range(tenants):
        for chunk in range(0, per_tenant, 1000):
            req = ExportTraceServiceRequest()
            for i in range(chunk, chunk + 1000):
                rs = req.resource_spans.add()
                rs.resource.attributes.append(_kv("service.name", f"service-{tenant}-{i:05d}"))
                rs.scope_spans.add().spans.add(name="op")
            attribution = tracker.attribute(ReceivedTraces(req.SerializeToString()), limits)
            assert attribution is not None
            tracker.record_received(f"tenant-{tenant:02d}", attribution)


def measure_scrape() -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracker = UsageTracker(CostAttributionConfig(enabled=True))
    populate(tracker)
    gc.collect()
    series = sum(s.active_series for s in tracker.stats())
    ours_bytes = (tracemalloc.get_traced_memory()[0] - before) / series
    tracemalloc.stop()

    registry = CollectorRegistry(auto_describe=False)
    counter = Counter(
        "tempo_usage_tracker_bytes_received",
        "bytes total received with these attributes",
        ["service_name", "tenant", "tracker"],
        registry=registry,
    )
    for labels, value in tracker.series():
        parsed = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        counter.labels(parsed["service_name"], parsed["tenant"], parsed["tracker"]).inc(value)

    ours, theirs = [], []
    for _ in range(5):
        started = time.perf_counter()
        body = render_counter(tracker.series(), openmetrics=False)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        reference = generate_latest(registry)
        theirs.append(time.perf_counter() - started)
    sample = b"\ntempo_usage_tracker_bytes_received_total{"
    assert body.count(sample) == reference.count(sample) == series, "both render the same series"
    return {
        "series": series,
        "ours_s": statistics.median(ours),
        "theirs_s": statistics.median(theirs),
        "bytes_per_series": ours_bytes,
    }


def realistic_label_requests(tenant: int, per_tenant: int = 10_000) -> list[bytes]:
    """One tenant's series with 3 labels of 22 to 35 bytes (service, namespace, team), 1000 a request."""
    bodies = []
    for chunk in range(0, per_tenant, 1000):
        req = ExportTraceServiceRequest()
        for i in range(chunk, chunk + 1000):
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(
                [
                    _kv("service.name", f"checkout-service-{tenant}-{i:05d}-eu-west-1"),
                    _kv("k8s.namespace.name", f"payments-production-{i % 37:02d}"),
                    _kv("team", f"platform-observability-team-{i % 11:02d}"),
                ]
            )
            rs.scope_spans.add().spans.add(name="op")
        bodies.append(req.SerializeToString())
    return bodies


def measure_memory_with_realistic_labels(tenants: int = 10) -> dict[str, float]:
    """Bytes per series for 100,000 series of 3 realistic labels: the tracker's, and the tracker's plus
    the ledger's after a flush (what a running service keeps)."""
    limits = TenantLimits(
        parse_dimensions({"service.name": "", "k8s.namespace.name": "namespace", "team": ""}), 0
    )
    bodies = [(f"tenant-{t:02d}", body) for t in range(tenants) for body in realistic_label_requests(t)]
    result: dict[str, float] = {}
    for with_ledger in (False, True):
        directory = tempfile.TemporaryDirectory()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracker = UsageTracker(CostAttributionConfig(enabled=True))
        store = SqliteLedgerStore(Path(directory.name) / "ledger.db")
        ledger = standalone_ledger(store, time.time) if with_ledger else None
        for tenant, body in bodies:
            traces = ReceivedTraces(body, tracker.scan_plan(limits), limits.max_attribute_bytes)
            attribution = tracker.attribute(traces, limits)
            assert attribution is not None
            overflowed = tracker.record_received(tenant, attribution)
            if ledger is not None:
                ledger.record(tenant, attribution.labels, attribution.usage, overflowed)
        del attribution
        if ledger is not None:
            assert asyncio.run(ledger.flush())
        gc.collect()
        series = sum(s.active_series for s in tracker.stats())
        result["with_ledger" if with_ledger else "tracker"] = (
            tracemalloc.get_traced_memory()[0] - before
        ) / series
        tracemalloc.stop()
        store.close()
        directory.cleanup()
    return result


# (m) ---------------------------------------------------------------------------------------------

DISTINCT_ROUNDS = 3
DISTINCT_SERIES = 20_000
DISTINCT_TAG_SETS = 100
DISTINCT_SESSIONS_PER_HOUR = 10


def measure_distinct_ingest() -> float:
    """End to end (HTTP ingest, ledger flushing every second) of the same requests, each span with a
    team and a session: counting distinct sessions and hosts / not counting them, each round's ratio
    to the run just before it, median."""
    dimensions = "{service.name: '', team: ''}"
    ratios = []
    for _ in range(DISTINCT_ROUNDS):
        off = measure_end_to_end(ledger=True, dimensions=dimensions, kind="sessions")
        on = measure_end_to_end(ledger=True, dimensions=dimensions, kind="sessions", distinct=True)
        ratios.append(on / off)
    return statistics.median(ratios)


def measure_distinct_memory() -> dict[str, float]:
    """Bytes per series of the tracker alone, and with distinct counts of 10 sessions and 1 host per
    series (the current hour's counts the tracker keeps for /usage_metrics; the ledger's pending counts
    are the same size until they are flushed)."""
    from distributor.overrides.model import DEFAULT_HOST_ATTRIBUTES, DEFAULT_SESSION_ATTRIBUTES

    plain = TenantLimits(parse_dimensions({"service.name": "", "team": ""}), 0)
    counting = dataclasses.replace(
        plain, session_attributes=DEFAULT_SESSION_ATTRIBUTES, host_attributes=DEFAULT_HOST_ATTRIBUTES
    )
    bodies = []
    for chunk in range(0, DISTINCT_SERIES, 500):
        req = ExportTraceServiceRequest()
        for i in range(chunk, chunk + 500):
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(
                [
                    _kv("service.name", f"checkout-service-{i:05d}"),
                    _kv("team", f"team-{i % 11:02d}"),
                    _kv("host.name", f"ip-10-0-{i % 250}-{i // 250}.ec2.internal"),
                ]
            )
            scope = rs.scope_spans.add()
            for session in range(DISTINCT_SESSIONS_PER_HOUR):
                span = scope.spans.add(name="op")
                span.attributes.append(_kv("session.id", f"{i:08x}-{session:04x}-4d7e-9a61-3b8e5f2c"))
        bodies.append(req.SerializeToString())
    result: dict[str, float] = {}
    for name, limits in (("tracker", plain), ("distinct", counting)):
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracker = UsageTracker(CostAttributionConfig(enabled=True, max_cardinality=DISTINCT_SERIES))
        for body in bodies:
            traces = ReceivedTraces(body, tracker.scan_plan(limits), limits.max_attribute_bytes)
            attribution = tracker.attribute(traces, limits)
            assert attribution is not None
            tracker.record_received("acme", attribution)
        del attribution, traces
        gc.collect()
        series = sum(stats.active_series for stats in tracker.stats())
        assert series == DISTINCT_SERIES
        result[name] = (tracemalloc.get_traced_memory()[0] - before) / series
        tracemalloc.stop()
        del tracker
    return result


def measure_distinct_monthly_api(repeats: int = 5) -> dict[str, float]:
    """Median seconds of GET monthly-attribution of distinct sessions by a tag, and of one day's hourly
    sessions, over a SQLite ledger of one org with DISTINCT_TAG_SETS tag sets each with
    DISTINCT_SESSIONS_PER_HOUR sessions in every hour of the month so far (a sketch per tag set and
    hour): the month merges and estimates every one of them."""
    import aiohttp

    from distributor.common.distinct import DistinctCount
    from distributor.config import load_config
    from distributor.service import Service

    now = time.time()
    month = month_of(now)
    hours = range(month, hour_of(now) + HOUR, HOUR)
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteLedgerStore(Path(directory) / "ledger.db")
        started = time.perf_counter()
        for hour in hours:
            entries = []
            for tag_set in range(DISTINCT_TAG_SETS):
                count = DistinctCount()
                for session in range(DISTINCT_SESSIONS_PER_HOUR):
                    count.add(f"{hour}-{tag_set}-{session}")
                entries.append(
                    LedgerEntry(
                        "acme", hour, (("department", f"department-{tag_set:03d}"),), 1000, 10,
                        (("sessions", count.to_bytes()),),
                    )
                )  # fmt: skip
            store.write(entries, now)
        store.close()
        build_seconds = time.perf_counter() - started
        config = Path(directory) / "api.yaml"
        config.write_text(
            "server: {http_listen_port: 0}\n"
            "distributor:\n  receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}}}}\n"
            "  usage: {cost_attribution: {enabled: true}}\n"
            "overrides: {defaults: {cost_attribution: {dimensions: {department: ''}}}}\n"
            "usage_attribution:\n  enabled: true\n  ledger: {sqlite: {path: ledger.db}}\n"
            "  api: {page_size: 500, rate_limit: {requests: 0}}\n"
            "  keys:\n    - {api_key: acme-api, app_key: acme-app, org: acme}\n"
        )

        async def run() -> dict[str, float]:
            service = Service(load_config(config))
            await service.start()
            assert service.server_address is not None
            base = "http://{}:{}/api/v1/usage/".format(*service.server_address)
            headers = {"DD-API-KEY": "acme-api", "DD-APPLICATION-KEY": "acme-app"}
            day = datetime.fromtimestamp(hour_of(now) - 23 * HOUR, UTC).strftime("%Y-%m-%dT%H")
            cases = {
                "monthly": (
                    "monthly-attribution",
                    {
                        "start_month": datetime.fromtimestamp(month, UTC).strftime("%Y-%m"),
                        "fields": "rum_browser_mobile_sessions_usage,rum_browser_mobile_sessions_percentage",
                        "tag_breakdown_keys": "department",
                    },
                ),
                "hourly_day": (
                    "hourly-attribution",
                    {
                        "start_hr": day,
                        "usage_type": "rum_browser_mobile_sessions_usage",
                        "tag_breakdown_keys": "department",
                    },
                ),
            }
            results: dict[str, float] = {}
            api = service.attribution_http.api
            assert api is not None
            try:
                async with aiohttp.ClientSession() as session:
                    for name, (path, params) in cases.items():
                        samples = []
                        for _ in range(repeats):
                            api._results.clear()
                            began = time.perf_counter()
                            async with session.get(base + path, params=params, headers=headers) as response:
                                assert response.status == 200, await response.text()
                                await response.read()
                            samples.append(time.perf_counter() - began)
                        results[name] = statistics.median(samples)
            finally:
                await service.stop()
            return results

        return asyncio.run(run()) | {"build_s": build_seconds, "hours": float(len(hours))}


def print_distinct(ingest: float | None, memory: dict[str, float], monthly: dict[str, float]) -> None:
    if ingest is not None:
        print(f"(m) ingest counting distinct sessions and hosts / not counting, end to end: {ingest:.2f}")
    print(
        f"(m) memory per series, {DISTINCT_SESSIONS_PER_HOUR} sessions and 1 host each: "
        f"{memory['distinct']:.0f} bytes (without distinct counts {memory['tracker']:.0f})"
    )
    print(
        f"(m) {DISTINCT_TAG_SETS} tag sets x {monthly['hours']:.0f} hours of session counts "
        f"(built in {monthly['build_s']:.1f} s): monthly sessions by tag {monthly['monthly'] * 1e3:.0f} ms, "
        f"a day's hourly sessions by tag {monthly['hourly_day'] * 1e3:.0f} ms"
    )


# (j) ---------------------------------------------------------------------------------------------

SCRAPED_SERIES = 100_000
SCRAPES = 5


def measure_scrape_during_ingestion() -> dict[str, float]:
    """A server process holding SCRAPED_SERIES usage series is scraped SCRAPES times while two senders
    keep POSTing 1000-span requests: the longest an OTLP/HTTP request overlapping a scrape took, against
    the longest one took with no scrape running."""
    config = (
        "server: {http_listen_port: 0}\n"
        "distributor:\n"
        "  receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}}}}\n"
        f"  usage: {{cost_attribution: {{enabled: true, max_cardinality: {SCRAPED_SERIES}}}}}\n"
        "overrides:\n  defaults:\n    cost_attribution: {dimensions: {service.name: ''}}\n"
        "    ingestion: {rate_limit_bytes: 0}\n"
    )
    with tempfile.TemporaryDirectory() as directory, bench_server(config, Path(directory), 120) as listeners:
        return asyncio.run(_scrape_during_ingestion(listeners["server"], listeners["otlp_http"]))


async def _scrape_during_ingestion(server_url: str, traces_url: str) -> dict[str, float]:
    import aiohttp

    headers = {"Content-Type": "application/x-protobuf"}
    payloads = make_payloads(span_team=False)
    async with aiohttp.ClientSession() as session:
        for chunk in range(0, SCRAPED_SERIES, 1000):  # 1000 new series per request
            req = ExportTraceServiceRequest()
            for i in range(chunk, chunk + 1000):
                rs = req.resource_spans.add()
                rs.resource.attributes.append(_kv("service.name", f"service-{i:06d}"))
                rs.scope_spans.add().spans.add(name="op")
            async with session.post(traces_url, data=req.SerializeToString(), headers=headers) as answer:
                assert answer.status == 200, answer.status
        requests: list[tuple[float, float]] = []
        scrapes: list[tuple[float, float]] = []
        sending = True

        async def sender() -> None:
            index = 0
            while sending:
                started = time.perf_counter()
                async with session.post(
                    traces_url, data=payloads[index % PAYLOADS], headers=headers
                ) as answer:
                    assert answer.status == 200, answer.status
                requests.append((started, time.perf_counter()))
                index += 1

        senders = [asyncio.create_task(sender()) for _ in range(2)]
        await asyncio.sleep(1)  # requests with no scrape running
        for _ in range(SCRAPES):
            started = time.perf_counter()
            async with session.get(server_url + "/usage_metrics") as answer:
                body = await answer.read()
            scrapes.append((started, time.perf_counter()))
            await asyncio.sleep(0.3)
        sending = False
        await asyncio.gather(*senders)
    assert body.count(b"\ntempo_usage_tracker_bytes_received_total{") >= SCRAPED_SERIES
    during = [end - start for start, end in requests if any(s < end and start < e for s, e in scrapes)]
    outside = [end - start for start, end in requests if not any(s < end and start < e for s, e in scrapes)]
    return {
        "scrape_s": statistics.median(end - start for start, end in scrapes),
        "scrape_mb": len(body) / 1e6,
        "worst_during_s": max(during),
        "worst_outside_s": max(outside),
        "requests_during": len(during),
    }


# (h) ---------------------------------------------------------------------------------------------

LEDGER_MONTHS, LEDGER_TENANTS, LEDGER_TAG_SETS = 12, 100, 1000


def build_ledger(store: LedgerStore, now: float) -> None:
    """12 months x 100 tenants x 1,000 tag sets (service_name x team), one flush per month."""
    rng = random.Random(7)
    for back in range(LEDGER_MONTHS):
        hour = add_months(month_of(now), -back) + 3600
        entries = [
            LedgerEntry(
                f"t{tenant:03d}",
                hour,
                (("service_name", f"svc-{tag_set % 100}"), ("team", f"team-{tag_set // 100}")),
                rng.randrange(1, 10**9),
                rng.randrange(1, 10**6),
            )
            for tenant in range(LEDGER_TENANTS)
            for tag_set in range(LEDGER_TAG_SETS)
        ]
        store.write(entries, now)
    store.close()


# (i) ---------------------------------------------------------------------------------------------

FLUSH_SERIES = 200_000


def flush_entries(now: float) -> list[LedgerEntry]:
    """One flush of FLUSH_SERIES series: 20 tenants x 10,000 (service_name, team) tag sets, one hour."""
    hour = int(now // 3600) * 3600
    return [
        LedgerEntry(
            f"tenant-{tenant:02d}",
            hour,
            (("service_name", f"checkout-service-{tag_set % 1000}"), ("team", f"team-{tag_set // 1000}")),
            1000 + tag_set,
            1 + tag_set % 7,
        )
        for tenant in range(20)
        for tag_set in range(FLUSH_SERIES // 20)
    ]


def measure_ledger_flush() -> dict[str, float]:
    """Seconds per SqliteLedgerStore.write of FLUSH_SERIES entries: every series new (a fresh ledger),
    every series known to the file but not to the process (the first flush after a restart), and every
    series known to both (steady state)."""
    now = time.time()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        return _timed_flushes(lambda: SqliteLedgerStore(path), flush_entries(now), now)


# (l) ---------------------------------------------------------------------------------------------

POSTGRES_DSN = os.environ.get("DISTRIBUTOR_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SHARED_LEDGER_SERIES = 10_000


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A connection string into a fresh schema of the bench database, dropped afterwards."""
    import secrets

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    schema = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=5) as db:
        db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield make_conninfo(POSTGRES_DSN, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as db:
            db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _timed_flushes(
    open_store: Callable[[], LedgerStore], entries: list[LedgerEntry], now: float
) -> dict[str, float]:
    """Seconds per write: every series new, known to the database only (a new process), then to both."""
    timings: dict[str, float] = {}
    store = open_store()
    started = time.perf_counter()
    store.write(entries, now)
    timings["new"] = time.perf_counter() - started
    store.close()
    store = open_store()
    for name in ("after_restart", "cached"):
        started = time.perf_counter()
        store.write(entries, now)
        timings[name] = time.perf_counter() - started
    store.close()
    return timings


def measure_postgres_ledger() -> dict[str, float] | str:
    """The PostgreSQL ledger against SQLite: one flush of 10,000 series (new, after a restart, cached)
    into each, and end to end ingest (HTTP, flushing every second) with each ledger and without one,
    interleaved rounds, medians, and the median of each round's ratio to the run without a ledger
    before it. A reason instead when PostgreSQL cannot be reached."""
    from distributor.ledger.postgresql import PostgresLedgerStore

    now = time.time()
    entries = flush_entries(now)[:SHARED_LEDGER_SERIES]
    try:
        with postgres_schema() as dsn:
            result = {
                f"pg_{k}": v
                for k, v in _timed_flushes(lambda: PostgresLedgerStore(dsn), entries, now).items()
            }
    except Exception as err:  # the database is optional for the benchmark
        return f"PostgreSQL at {POSTGRES_DSN} unreachable: {err}"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        result |= {
            f"sqlite_{k}": v for k, v in _timed_flushes(lambda: SqliteLedgerStore(path), entries, now).items()
        }
    runs: dict[str, list[float]] = {"none": [], "sqlite": [], "postgresql": []}
    with postgres_schema() as dsn:
        backends = {
            "sqlite": "sqlite: {path: ledger.db}",
            "postgresql": f"backend: postgresql, postgresql: {{dsn: '{dsn}'}}",
        }
        for _ in range(LEDGER_ROUNDS):
            runs["none"].append(measure_end_to_end())
            for name, backend in backends.items():
                runs[name].append(measure_end_to_end(ledger=True, ledger_backend=backend))
    # Each round's ratio to the run without a ledger just before it: the VM's speed drifts between rounds
    # more than the cost measured.
    ratios = {
        f"ratio_{name}": statistics.median(
            rate / none for rate, none in zip(runs[name], runs["none"], strict=True)
        )
        for name in backends
    }
    return result | ratios | {f"ingest_{name}": statistics.median(rates) for name, rates in runs.items()}


def print_postgres_ledger(measured: dict[str, float] | str) -> None:
    if isinstance(measured, str):
        print(f"(l) PostgreSQL ledger: skipped, {measured}")
        return
    print(
        f"(l) ledger flush of {SHARED_LEDGER_SERIES:,} series, PostgreSQL / SQLite: new "
        f"{measured['pg_new']:.3f} / {measured['sqlite_new']:.3f} s, after a restart "
        f"{measured['pg_after_restart']:.3f} / {measured['sqlite_after_restart']:.3f} s, cached "
        f"{measured['pg_cached']:.3f} / {measured['sqlite_cached']:.3f} s"
    )
    for name in ("none", "sqlite", "postgresql"):
        label = (
            f"(l) end to end, ledger {name}, flushing every 1s"
            if name != "none"
            else "(l) end to end, no ledger"
        )
        print(f"{label:52s} {measured['ingest_' + name]:12,.0f} spans/s")


def print_ledger_flush(flush: dict[str, float]) -> None:
    print(
        f"(i) ledger flush of {FLUSH_SERIES:,} series: new {flush['new']:.2f} s, existing after a restart "
        f"{flush['after_restart']:.2f} s, existing and cached {flush['cached']:.2f} s"
    )


def measure_monthly_api(repeats: int = 5, postgresql_dsn: str = "") -> dict[str, float]:
    """Median seconds per GET /api/v1/usage/monthly-attribution through a running service (HTTP
    included): one org's month broken down by its tags (1,000 records, page 1 and page 2 of 500), the
    parent of all 100 orgs broken down (100,000 records, page 1 of 500), and the parent without breakdown.
    First pages are measured cold (the result computed from the ledger); a next page reads the result
    its first page computed."""
    import aiohttp

    from distributor.config import load_config
    from distributor.service import Service

    now = time.time()
    month = datetime.fromtimestamp(month_of(now), UTC).strftime("%Y-%m")
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        if postgresql_dsn:
            from distributor.ledger.postgresql import PostgresLedgerStore

            build_ledger(PostgresLedgerStore(postgresql_dsn), now)
            analyze(postgresql_dsn)
            ledger = f"{{backend: postgresql, postgresql: {{dsn: '{postgresql_dsn}'}}}}"
        else:
            build_ledger(SqliteLedgerStore(Path(directory) / "ledger.db"), now)
            ledger = "{sqlite: {path: ledger.db}}"
        build_seconds = time.perf_counter() - started
        orgs = "".join(f"    t{t:03d}: {{parent: holding}}\n" for t in range(LEDGER_TENANTS))
        config = Path(directory) / "api.yaml"
        config.write_text(
            "server: {http_listen_port: 0}\n"
            "distributor:\n  receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}}}}\n"
            "  usage: {cost_attribution: {enabled: true}}\n"
            "overrides: {defaults: {cost_attribution: {dimensions: {service.name: '', team: ''}}}}\n"
            f"usage_attribution:\n  enabled: true\n  ledger: {ledger}\n"
            "  api: {page_size: 500, rate_limit: {requests: 0}}\n"
            f"  orgs:\n{orgs}"
            "  keys:\n"
            "    - {api_key: org-api, app_key: org-app, org: t042}\n"
            "    - {api_key: parent-api, app_key: parent-app, org: holding}\n"
        )

        async def run() -> dict[str, float]:
            service = Service(load_config(config))
            await service.start()
            assert service.server_address is not None
            url = "http://{}:{}/api/v1/usage/monthly-attribution".format(*service.server_address)
            results: dict[str, float] = {}
            try:
                async with aiohttp.ClientSession() as session:

                    async def timed(key: str, params: dict[str, str]) -> tuple[float, dict[str, object]]:
                        headers = {"DD-API-KEY": f"{key}-api", "DD-APPLICATION-KEY": f"{key}-app"}
                        began = time.perf_counter()
                        async with session.get(url, params=params, headers=headers) as response:
                            assert response.status == 200, await response.text()
                            body = await response.json()
                        return time.perf_counter() - began, body

                    query = {"start_month": month, "end_month": month, "fields": "*"}
                    cases = {
                        "org_page1": ("org", {**query, "tag_breakdown_keys": "service_name,team"}),
                        "parent_page1": ("parent", {**query, "tag_breakdown_keys": "service_name,team"}),
                        "parent_no_breakdown": ("parent", query),
                    }
                    api = service.attribution_http.api
                    assert api is not None
                    for name, (key, params) in cases.items():
                        samples = []
                        for _ in range(repeats):
                            api._results.clear()  # cold: a first page computes the whole result
                            seconds, body = await timed(key, params)
                            samples.append(seconds)
                        results[name] = statistics.median(samples)
                        results[name + "_records"] = len(body["usage"])  # type: ignore[arg-type]
                        if name == "org_page1":
                            cursor = body["metadata"]["pagination"]["next_record_id"]  # type: ignore[index]
                            page2 = []
                            for _ in range(repeats):
                                seconds, _ = await timed(key, {**params, "next_record_id": cursor})
                                page2.append(seconds)
                            results["org_page2"] = statistics.median(page2)
                        if name == "parent_page1":
                            cursor = body["metadata"]["pagination"]["next_record_id"]  # type: ignore[index]
                            page2 = []
                            for _ in range(repeats):
                                seconds, _ = await timed(key, {**params, "next_record_id": cursor})
                                page2.append(seconds)
                            results["parent_page2"] = statistics.median(page2)
            finally:
                await service.stop()
            return results

        results = asyncio.run(run())
        results["build_s"] = build_seconds
        return results


def analyze(dsn: str) -> None:
    """What autovacuum does to a ledger that took months to fill, and to this one only after a minute:
    the planner's statistics of its tables."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("ANALYZE")


def measure_monthly_api_postgresql() -> dict[str, float] | str:
    """(h) with the ledger in PostgreSQL; a reason instead when it cannot be reached."""
    try:
        with postgres_schema() as dsn:
            return measure_monthly_api(postgresql_dsn=dsn)
    except Exception as err:  # the database is optional for the benchmark
        if "unreachable" not in str(err) and not type(err).__module__.startswith("psycopg"):
            raise
        return f"PostgreSQL at {POSTGRES_DSN} unreachable: {err}"


def print_monthly_api(monthly: dict[str, float], backend: str) -> None:
    print(
        f"(h) {backend} ledger of {LEDGER_MONTHS} months x {LEDGER_TENANTS} tenants x {LEDGER_TAG_SETS} "
        f"tag sets built in {monthly['build_s']:.1f} s; GET monthly-attribution, one month, medians:"
    )
    print(
        f"    one org by 2 tags ({monthly['org_page1_records']:.0f} of 1,000 records): page 1 "
        f"{monthly['org_page1'] * 1e3:.0f} ms, page 2 {monthly['org_page2'] * 1e3:.0f} ms"
    )
    print(
        f"    parent of 100 orgs by 2 tags ({monthly['parent_page1_records']:.0f} of 100,000 records): "
        f"page 1 {monthly['parent_page1'] * 1e3:.0f} ms, page 2 {monthly['parent_page2'] * 1e3:.0f} ms"
    )
    print(
        f"    parent of 100 orgs, no breakdown ({monthly['parent_no_breakdown_records']:.0f} records): "
        f"{monthly['parent_no_breakdown'] * 1e3:.0f} ms"
    )


def print_scrape_during_ingestion(scraped: dict[str, float]) -> None:
    print(
        f"(j) /usage_metrics of {SCRAPED_SERIES:,} series ({scraped['scrape_mb']:.1f} MB, "
        f"{scraped['scrape_s'] * 1e3:.0f} ms a scrape) while ingesting: the longest OTLP/HTTP request "
        f"overlapping a scrape {scraped['worst_during_s'] * 1e3:.0f} ms ({scraped['requests_during']:.0f} "
        f"requests), with no scrape {scraped['worst_outside_s'] * 1e3:.0f} ms"
    )


def print_json_ingest(runs: dict[str, float]) -> None:
    for spans in (50, 5):
        proto, json_rate = runs[f"proto-{spans}"], runs[f"json-{spans}"]
        print(
            f"OTLP/JSON ingest, {spans}-span requests: {json_rate:,.0f} spans/s, protobuf {proto:,.0f} "
            f"spans/s, json/protobuf {json_rate / proto:.2f}"
        )


def print_json_stall(stall: dict[str, float]) -> None:
    print(
        f"one {stall['megabytes']:.1f} MB OTLP/JSON request: answered in {stall['request_s']:.2f} s, "
        f"longest /ready answer meanwhile {stall['worst_ready_s'] * 1e3:.0f} ms"
    )


def print_core_status() -> None:
    from distributor.ingest.scan import CORE

    if CORE is None:
        print("compiled ingest core: NOT loaded (the reference path scans every request)")
    else:
        print(f"compiled ingest core: loaded ({CORE.__file__})")


def print_decode_paths() -> None:
    """Rows (a) to (c) alone: the accounting path against FromString."""
    print_core_status()
    decode = measure_decode_paths()
    a = decode["a"]
    for name in ("a", "b", "b_resource_scoped", "c"):
        print(f"({name}) {decode[name]:12,.0f} spans/s   /a {decode[name] / a:5.2f}")


def main() -> None:
    print(
        f"benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}; medians of interleaved rounds"
    )
    print_core_status()
    decode = measure_decode_paths()
    a, b, c = decode["a"], decode["b"], decode["c"]
    mb_per_span = decode["bytes_per_span"] / 1e6
    print(
        f"payload: {PAYLOADS} requests x {SPANS_PER_REQUEST} spans, {decode['bytes_per_span']:.0f} bytes/span"
    )
    rows = [
        ("(a) FromString only", a),
        ("(b) accounting path, resource-level dims", b),
        ("    same, dims scoped resource.*", decode["b_resource_scoped"]),
        ("(c) accounting path, span-level dim on every span", c),
    ]
    d, d_team, d_over_a, d_team_over_a = measure_end_to_end_rounds()
    rows.append(("(d) end to end over loopback", d))
    rows.append(("(d') end to end, span-level dim (team) on every span", d_team))
    rows.append(("(g) accounting path, span-level dim, no ledger", decode["g_without"]))
    rows.append(("(g) same, recorded into the ledger", decode["g_ledger"]))
    ledger_runs: tuple[list[float], list[float]] = ([], [])
    ledger_cpu: tuple[list[float], list[float]] = ([], [])
    for _ in range(FORWARDING_ROUNDS):
        for index, enabled in enumerate((False, True)):
            ledger_runs[index].append(measure_end_to_end(cpu_per_request=ledger_cpu[index], ledger=enabled))
    without_ledger, with_ledger = (statistics.median(runs) for runs in ledger_runs)
    cpu_without_ledger, cpu_with_ledger = (statistics.median(cpu) for cpu in ledger_cpu)
    rows.append(("(g) end to end, no ledger", without_ledger))
    rows.append(("(g) end to end, ledger flushing every 1s", with_ledger))
    sink, sink_addresses = _start_sink()
    sink_http = sink_addresses["http"]
    try:
        # End-to-end runs swing by +-20% on a shared machine: each pair (no forwarder, forwarded)
        # runs back to back, FORWARDING_ROUNDS times, and the medians are compared.
        paths = (("http", "otlphttp"), ("http", "otlpgrpc"), ("grpc", "otlpgrpc"))
        runs: dict[tuple[str, str], tuple[list[float], list[float]]] = {path: ([], []) for path in paths}
        cpu: dict[tuple[str, str], tuple[list[float], list[float]]] = {path: ([], []) for path in paths}
        for _ in range(FORWARDING_ROUNDS):
            for ingest, backend in paths:
                sink_target = sink_addresses["otlphttp" if backend == "otlphttp" else "grpc"]
                without_runs, forwarded_runs = runs[(ingest, backend)]
                without_cpu, forwarded_cpu = cpu[(ingest, backend)]
                without_runs.append(measure_end_to_end(ingest=ingest, cpu_per_request=without_cpu))
                forwarded_runs.append(
                    measure_end_to_end(
                        ingest=ingest,
                        forward_to=sink_target,
                        sink_http=sink_http,
                        cpu_per_request=forwarded_cpu,
                    )
                )
        forwarding: dict[str, tuple[float, float]] = {}
        forwarding_cpu: dict[str, tuple[float, float]] = {}
        for (ingest, backend), (without_runs, forwarded_runs) in runs.items():
            without, forwarded = statistics.median(without_runs), statistics.median(forwarded_runs)
            forwarding[f"{ingest}->{backend}"] = (without, forwarded)
            without_cpu, forwarded_cpu = cpu[(ingest, backend)]
            forwarding_cpu[f"{ingest}->{backend}"] = (
                statistics.median(without_cpu),
                statistics.median(forwarded_cpu),
            )
            rows.append((f"(f) {ingest} ingest, no forwarder", without))
            rows.append((f"(f) {ingest} ingest, forwarded over {backend}", forwarded))
        delivered = _sink_count(sink_http)
    finally:
        sink.terminate()
        sink.wait(timeout=30)
    # Each forwarded run sends 200 warm-up + 200 measured requests; the sink must have all of them.
    expected_requests = FORWARDING_ROUNDS * len(forwarding) * 2 * 200
    lost = expected_requests - delivered["requests"]
    for name, spans_per_second in rows:
        print(f"{name:52s} {spans_per_second:12,.0f} spans/s {spans_per_second * mb_per_span:8.1f} MB/s")
    scrape = measure_scrape()
    print(
        f"(e) scrape of {scrape['series']:,.0f} series: ours {scrape['ours_s'] * 1e3:.1f} ms, "
        f"prometheus_client.generate_latest {scrape['theirs_s'] * 1e3:.1f} ms"
    )
    print(f"memory per usage series: {scrape['bytes_per_series']:.0f} bytes")
    realistic = measure_memory_with_realistic_labels()
    print(
        f"memory per usage series, 3 labels of 22-35 bytes: {realistic['tracker']:.0f} bytes in the tracker, "
        f"{realistic['with_ledger']:.0f} with the ledger's after a flush"
    )
    print(f"forwarded requests delivered to the sink: {delivered['requests']} of {expected_requests}")
    print(
        f"(g) server CPU per request {cpu_without_ledger * 1e3:.2f} ms without the ledger, "
        f"{cpu_with_ledger * 1e3:.2f} ms with it"
    )
    monthly = measure_monthly_api()
    print_monthly_api(monthly, "SQLite")
    monthly_postgresql = measure_monthly_api_postgresql()
    if isinstance(monthly_postgresql, str):
        print(f"(h) PostgreSQL: skipped, {monthly_postgresql}")
    else:
        print_monthly_api(monthly_postgresql, "PostgreSQL")
    flush = measure_ledger_flush()
    print_ledger_flush(flush)
    scraped = measure_scrape_during_ingestion()
    print_scrape_during_ingestion(scraped)
    print()
    one_span, bare = measure_one_span_requests()
    print(f"1-span requests/s: ours {one_span:,.0f}, bare aiohttp handler {bare:,.0f}")
    json_ingest = measure_json_ingest()
    print_json_ingest(json_ingest)
    stall = measure_json_stall()
    print_json_stall(stall)
    delivery = measure_delivery_modes()
    print_delivery_modes(delivery)
    distinct_ingest = measure_distinct_ingest()
    distinct_memory = measure_distinct_memory()
    distinct_monthly = measure_distinct_monthly_api()
    print_distinct(distinct_ingest, distinct_memory, distinct_monthly)
    shared_ledger = measure_postgres_ledger()
    print_postgres_ledger(shared_ledger)
    checks: list[tuple[str, float, float]] = [
        ("b/a", b / a, 2.5),
        ("c/a", c / a, 1.5),
        ("d/a", d_over_a, 0.75),
        ("d'/a", d_team_over_a, 0.6),
        ("1-span ours/bare", one_span / bare, 0.6),
        ("json/protobuf, 50 spans", json_ingest["json-50"] / json_ingest["proto-50"], 0.3),
        ("e generate_latest/ours", scrape["theirs_s"] / scrape["ours_s"], 5.0),
    ]
    for path, (without, forwarded) in forwarding.items():
        cpu_without, cpu_forwarded = forwarding_cpu[path]
        print(
            f"(f) {path}: forwarded/a {forwarded / a:.2f}, no-forwarder/a {without / a:.2f}; server CPU "
            f"per request {cpu_without * 1e3:.2f} ms without, {cpu_forwarded * 1e3:.2f} ms forwarded"
        )
        checks.append((f"f {path} fwd/no", forwarded / without, 0.75))
        # The same question asked of CPU: the throughput a CPU-bound server keeps when forwarding.
        checks.append((f"f {path} by CPU", cpu_without / cpu_forwarded, 0.75))
    checks.append(("g ledger/no, in process", decode["g_ledger"] / decode["g_without"], 0.9))
    checks.append(("g ledger/no, end to end", with_ledger / without_ledger, 0.9))
    checks.append(("g ledger/no, by CPU", cpu_without_ledger / cpu_with_ledger, 0.9))
    checks += delivery_checks(delivery)
    if not isinstance(shared_ledger, str):
        checks.append(("l postgres ledger/no", shared_ledger["ratio_postgresql"], 0.9))
    checks.append(("m distinct counting/not", distinct_ingest, 0.85))
    for name, ratio, target in checks:
        print(f"{name:24s} {ratio:6.2f}  target >= {target:<4}  {'met' if ratio >= target else 'NOT met'}")
    per_series = scrape["bytes_per_series"]
    verdict = "met" if per_series <= 500 else "NOT met"
    print(f"{'bytes per series':24s} {per_series:6.0f}  target <= 500   {verdict}")
    per_series = realistic["tracker"]
    verdict = "met" if per_series <= 500 else "NOT met"
    print(f"{'bytes per series, 3 labels':24s} {per_series:6.0f}  target <= 500   {verdict}")
    print(f"{'forwarded requests lost':24s} {lost:6d}  target == 0     {'met' if lost == 0 else 'NOT met'}")
    backends = {"": monthly} | ({} if isinstance(monthly_postgresql, str) else {"pg ": monthly_postgresql})
    for prefix, measured in backends.items():
        for name in ("org_page1", "org_page2", "parent_page1", "parent_page2"):
            ms = measured[name] * 1e3
            label = f"h {prefix}monthly {name} ms"
            print(f"{label:24s} {ms:6.0f}  target < 200    {'met' if ms < 200 else 'NOT met'}")
    for name in ("new", "after_restart"):
        seconds = flush[name]
        verdict = "met" if seconds < 1 else "NOT met"
        print(f"{'i flush ' + name + ' s':24s} {seconds:6.2f}  target < 1      {verdict}")
    worst_ms = scraped["worst_during_s"] * 1e3
    verdict = "met" if worst_ms < 100 else "NOT met"
    print(f"{'j request during scrape':24s} {worst_ms:6.0f}  target < 100 ms {verdict}")
    worst_ms = stall["worst_ready_s"] * 1e3
    verdict = "met" if worst_ms < 100 else "NOT met"
    print(f"{'loop stall, 12 MB JSON':24s} {worst_ms:6.0f}  target < 100 ms {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--loadgen", nargs="+", metavar="TARGET REQUESTS CONCURRENCY [KIND]")
    parser.add_argument("--bare-server", action="store_true")
    parser.add_argument("--decode-paths", action="store_true", help="only the rows (a) to (c)")
    parser.add_argument("--one-span", action="store_true", help="only the 1-span requests/s comparison")
    parser.add_argument("--json", action="store_true", help="only the OTLP/JSON rows")
    parser.add_argument("--sink", action="store_true")
    parser.add_argument("--ledger-flush", action="store_true", help="only the ledger flush row (i)")
    parser.add_argument("--scrape-during-ingestion", action="store_true", help="only the row (j)")
    parser.add_argument("--delivery-modes", action="store_true", help="only the rows (k)")
    parser.add_argument("--end-to-end", action="store_true", help="only the rows (d) and (d')")
    parser.add_argument("--postgres-ledger", action="store_true", help="only the rows (l)")
    parser.add_argument("--monthly-api", action="store_true", help="only the rows (h), both ledgers")
    parser.add_argument(
        "--distinct", action="store_true", help="only the rows (m); --no-ingest skips its first"
    )
    parser.add_argument("--no-ingest", action="store_true")
    args = parser.parse_args()
    if args.loadgen:
        _load_generator(args.loadgen[0], int(args.loadgen[1]), int(args.loadgen[2]), *args.loadgen[3:])
    elif args.bare_server:
        _bare_server()
    elif args.decode_paths:
        print_decode_paths()
    elif args.json:
        print_json_ingest(measure_json_ingest())
        print_json_stall(measure_json_stall())
    elif args.one_span:
        ours, bare = measure_one_span_requests()
        print(
            f"1-span requests/s: ours {ours:,.0f}, bare aiohttp handler {bare:,.0f}, ratio {ours / bare:.2f}"
        )
    elif args.sink:
        _sink()
    elif args.ledger_flush:
        print_ledger_flush(measure_ledger_flush())
    elif args.scrape_during_ingestion:
        print_scrape_during_ingestion(measure_scrape_during_ingestion())
    elif args.distinct:
        ingest = None if args.no_ingest else measure_distinct_ingest()
        print_distinct(ingest, measure_distinct_memory(), measure_distinct_monthly_api())
        if ingest is not None:
            print(f"(m) target >= 0.85: {'met' if ingest >= 0.85 else 'NOT met'}")
    elif args.monthly_api:
        print_monthly_api(measure_monthly_api(), "SQLite")
        measured = measure_monthly_api_postgresql()
        print(f"(h) PostgreSQL: skipped, {measured}") if isinstance(measured, str) else print_monthly_api(
            measured, "PostgreSQL"
        )
    elif args.postgres_ledger:
        shared_ledger = measure_postgres_ledger()
        print_postgres_ledger(shared_ledger)
        if not isinstance(shared_ledger, str):
            print(
                "(l) ledger / no ledger, median of paired rounds: postgresql "
                f"{shared_ledger['ratio_postgresql']:.2f} (target >= 0.9), "
                f"sqlite {shared_ledger['ratio_sqlite']:.2f}"
            )
    elif args.end_to_end:
        d, d_team, d_over_a, d_team_over_a = measure_end_to_end_rounds()
        print(f"(d) {d:,.0f} spans/s, d/a {d_over_a:.2f} (target >= 0.75)")
        print(f"(d') {d_team:,.0f} spans/s, d'/a {d_team_over_a:.2f} (target >= 0.6)")
    elif args.delivery_modes:
        delivery = measure_delivery_modes()
        print_delivery_modes(delivery)
        for name, ratio, target in delivery_checks(delivery):
            print(f"{name:24s} {ratio:6.2f}  target >= {target}")
    else:
        main()
