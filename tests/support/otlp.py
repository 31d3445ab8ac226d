"""Builders for OTLP requests, a manual clock, and readers for exposed usage series."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributor.overrides import TenantLimits, parse_dimensions
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span
from prometheus_client.parser import text_string_to_metric_families

from distributor.ingest.traces import ReceivedTraces
from distributor.usage.exposition import render_counter
from distributor.usage.tracker import UsageTracker

Labels = frozenset[tuple[str, str]]


class ManualClock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def any_value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def attributes(attrs: Mapping[str, object] | Iterable[tuple[str, object]]) -> list[KeyValue]:
    items = attrs.items() if isinstance(attrs, Mapping) else attrs
    return [KeyValue(key=k, value=any_value(v)) for k, v in items]


def span(
    attrs: Mapping[str, object] | Iterable[tuple[str, object]] = (),
    name: str = "op",
    pad: int = 0,
    events: Iterable[Mapping[str, object]] = (),
) -> Span:
    """A span; `pad` adds that many bytes to its name, to reach a chosen encoded size."""
    result = Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name=name + "x" * pad,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_100_000_000,
        attributes=attributes(attrs),
    )
    for event_attrs in events:
        result.events.add(name="event", attributes=attributes(event_attrs))
    return result


def batch(
    resource: Mapping[str, object] | Iterable[tuple[str, object]] = (), *scopes: list[Span]
) -> ResourceSpans:
    result = ResourceSpans()
    result.resource.attributes.extend(attributes(resource))
    for spans in scopes:
        scope = result.scope_spans.add()
        scope.scope.name = "instrumentation"
        scope.spans.extend(spans)
    return result


def request(*batches: ResourceSpans) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=list(batches))


def received(req: ExportTraceServiceRequest) -> ReceivedTraces:
    return ReceivedTraces(request=req, protobuf=req.SerializeToString())


def limits(dimensions: object, max_cardinality: int = 0) -> TenantLimits:
    return TenantLimits(parse_dimensions(dimensions), max_cardinality)


def parse_usage(text: str, family_name: str = "tempo_usage_tracker_bytes_received") -> dict[Labels, float]:
    """One family of usage series as prometheus_client's parser reads them: {labels: bytes}."""
    series: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            series[frozenset(sample.labels.items())] = sample.value
    return series


def parse_discarded(text: str) -> dict[Labels, float]:
    """The discarded-bytes series (labels include `reason`)."""
    return parse_usage(text, "tempo_usage_tracker_bytes_discarded")


def usage(tracker: UsageTracker) -> dict[Labels, float]:
    return parse_usage(render_counter(tracker.series(), openmetrics=False).decode())


def labels(tenant: str = "single-tenant", **values: str) -> Labels:
    return frozenset({**values, "tenant": tenant, "tracker": "cost-attribution"}.items())


def framed(message: Any) -> int:
    """Encoded size of a message as a length-delimited field: tag + varint length + body."""
    size = message.ByteSize()
    varint = 1
    while size >> (7 * varint):
        varint += 1
    return 1 + varint + size


def split_expectation(rs: ResourceSpans, series_of_span: list[str]) -> dict[str, int]:
    """The spec's arithmetic for one batch: span bytes + an even share of the rest, the rounding
    remainder on the first span. `series_of_span` names each span's series, in order."""
    spans = [s for scope in rs.scope_spans for s in scope.spans]
    assert len(spans) == len(series_of_span)
    span_bytes = [framed(s) for s in spans]
    shared = rs.ByteSize() - sum(span_bytes)
    portion = round(shared / len(spans))  # Python rounds half to even, as the spec says
    expected: dict[str, int] = {}
    for index, (name, size) in enumerate(zip(series_of_span, span_bytes, strict=True)):
        extra = shared - portion * len(spans) if index == 0 else 0
        expected[name] = expected.get(name, 0) + size + portion + extra
    return expected


def multitenant_config(user_configurable: bool = False) -> str:
    """A service config on ephemeral ports with `overrides.yaml` beside it as the per-tenant file."""
    text = """\
multitenancy_enabled: true
server: {http_listen_port: 0}
distributor:
  receivers: {otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}}
  usage: {cost_attribution: {enabled: true}}
overrides:
  defaults: {cost_attribution: {dimensions: [service.name]}}
  per_tenant_override_config: overrides.yaml
"""
    if user_configurable:
        text += "  user_configurable_overrides: {enabled: true, storage_path: user-overrides}\n"
    return text


@dataclass
class RunningCli:
    process: subprocess.Popen[str]
    server_url: str
    traces_url: str
    grpc_target: str = ""  # host:port, when the OTLP/gRPC receiver is enabled

    def next_log_line_containing(self, text: str) -> str:
        assert self.process.stderr is not None
        return next(line for line in self.process.stderr if text in line)


@contextlib.contextmanager
def running_cli(config: Path) -> Iterator[RunningCli]:
    """`python -m distributor --config FILE` as a real process, until it logs that it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "distributor", "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        cli = RunningCli(process, "", "")
        assert process.stderr is not None
        for line in process.stderr:
            if "OTLP/gRPC listening on" in line:
                cli.grpc_target = line.rsplit(" ", 1)[1].strip()
            if "distributor ready" in line:
                break
        found = re.search(r"server (http://\S+), OTLP/HTTP (http://\S+)", line)
        assert found, "the ready line names both listeners"
        cli.server_url, cli.traces_url = found.group(1), found.group(2)
        yield cli
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
