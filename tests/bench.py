"""`make bench`: throughput and scrape figures, printed as ratios taken in one run.

(a) generated ExportTraceServiceRequest.FromString only (the floor a naive receiver pays)
(b) the receiver's accounting path (validating decode + observe), resource-level dimensions
(c) the same with a span-level dimension present on every span
(d) end to end: a load-generator process POSTing to a running server process over loopback
(e) one /usage_metrics render of 100,000 series vs prometheus_client.generate_latest over the same
and memory per usage series. Rounds of a/b/c are interleaved and the median taken, because this
machine is shared and noisy: compare the ratios, not one absolute time.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import CollectorRegistry, Counter, generate_latest

from distributor.config import CostAttributionConfig
from distributor.receivers.otlp import Encoding, decode_traces
from distributor.usage.exposition import render_counter
from distributor.usage.tracker import UsageTracker
from overrides import TenantLimits, parse_dimensions

SPANS_PER_REQUEST = 1000
PAYLOADS = 8
ROUNDS = 9


def _kv(key: str, value: str | int) -> KeyValue:
    any_value = AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value)
    return KeyValue(key=key, value=any_value)


def make_payloads(span_team: bool, seed: int = 1) -> list[bytes]:
    """~1000 spans of ~300 bytes per request: 10 services x 100 spans, realistic attributes."""
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
                span.attributes.extend(attributes)
                span.status.code = 1
        payloads.append(req.SerializeToString())
    return payloads


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
    trackers = [UsageTracker(config) for _ in range(3)]

    def path(tracker: UsageTracker, limits: TenantLimits) -> Callable[[bytes], None]:
        def run(body: bytes) -> None:
            tracker.observe("bench", decode_traces(body, Encoding.PROTOBUF), limits)

        return run

    paths: dict[str, tuple[Callable[[bytes], object], list[bytes]]] = {
        "a": (ExportTraceServiceRequest.FromString, plain),
        "b": (path(trackers[0], resource_dims), plain),
        "b_resource_scoped": (path(trackers[1], resource_scoped), plain),
        "c": (path(trackers[2], span_dims), with_team),
    }
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(ROUNDS):
        for name, (fn, payloads) in paths.items():
            samples[name].append(_per_round(fn, payloads))
    mb = sum(len(p) for p in plain) / 1e6
    result = {name: spans / statistics.median(times) for name, times in samples.items()}
    result["payload_mb"] = mb
    result["bytes_per_span"] = sum(len(p) for p in plain) / spans
    return result


# (d) ---------------------------------------------------------------------------------------------


def _load_generator(url: str, requests: int, concurrency: int) -> None:
    """Runs in its own process: POST the payloads as fast as the server answers."""
    import aiohttp

    payloads = make_payloads(span_team=False)

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            queue = list(range(requests))

            async def worker() -> None:
                while queue:
                    index = queue.pop()
                    async with session.post(
                        url,
                        data=payloads[index % len(payloads)],
                        headers={"Content-Type": "application/x-protobuf"},
                    ) as response:
                        assert response.status == 200, response.status
                        await response.read()

            await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up connections
            queue.extend(range(requests))
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        print(json.dumps({"spans_per_second": requests * SPANS_PER_REQUEST / elapsed}))

    asyncio.run(run())


def measure_end_to_end(requests: int = 200, concurrency: int = 4) -> float:
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "bench.yaml"
        config.write_text(
            "server: {http_listen_port: 0}\n"
            "distributor:\n  receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}}}}\n"
            "  usage: {cost_attribution: {enabled: true}}\n"
            "overrides: {defaults: {cost_attribution: {dimensions: {service.name: ''}}}}\n"
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "distributor", "--config", str(config)], stderr=subprocess.PIPE, text=True
        )
        try:
            assert server.stderr is not None
            url = None
            for line in server.stderr:
                found = re.search(r"OTLP/HTTP (http://\S+/v1/traces)", line)
                if found:
                    url = found.group(1)
                    break
            if url is None:
                raise RuntimeError("the server did not start")
            result = subprocess.run(
                [sys.executable, "-m", "tests.bench", "--loadgen", url, str(requests), str(concurrency)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            return float(json.loads(result.stdout.strip().splitlines()[-1])["spans_per_second"])
        finally:
            server.terminate()
            server.wait(timeout=30)


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
            tracker.observe(
                f"tenant-{tenant:02d}", decode_traces(req.SerializeToString(), Encoding.PROTOBUF), limits
            )


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


def main() -> None:
    print(
        f"benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}; medians of interleaved rounds"
    )
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
    d = measure_end_to_end()
    rows.append(("(d) end to end over loopback", d))
    for name, spans_per_second in rows:
        print(f"{name:52s} {spans_per_second:12,.0f} spans/s {spans_per_second * mb_per_span:8.1f} MB/s")
    scrape = measure_scrape()
    print(
        f"(e) scrape of {scrape['series']:,.0f} series: ours {scrape['ours_s'] * 1e3:.1f} ms, "
        f"prometheus_client.generate_latest {scrape['theirs_s'] * 1e3:.1f} ms"
    )
    print(f"memory per usage series: {scrape['bytes_per_series']:.0f} bytes")
    print()
    checks = [
        ("b/a", b / a, 2.0),
        ("c/a", c / a, 1.0),
        ("d/a", d / a, 0.5),
        ("e generate_latest/ours", scrape["theirs_s"] / scrape["ours_s"], 5.0),
    ]
    for name, ratio, target in checks:
        print(f"{name:24s} {ratio:6.2f}  target >= {target:<4}  {'met' if ratio >= target else 'NOT met'}")
    per_series = scrape["bytes_per_series"]
    verdict = "met" if per_series <= 500 else "NOT met"
    print(f"{'bytes per series':24s} {per_series:6.0f}  target <= 500   {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--loadgen", nargs=3, metavar=("URL", "REQUESTS", "CONCURRENCY"))
    args = parser.parse_args()
    if args.loadgen:
        _load_generator(args.loadgen[0], int(args.loadgen[1]), int(args.loadgen[2]))
    else:
        main()
