"""A scriptable OTLP backend on real sockets (HTTP and gRPC), for forwarding tests: it records what
arrives (tenant header and exact body) and answers each request as the test scripts it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.forwarding.config import ForwarderConfig, RetryConfig, TlsConfig
from distributor.receivers.otlp import retry_info
from tests.support.otlp import span_count

EXPORT_METHOD = "Export"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@dataclass(frozen=True)
class Answer:
    """One scripted failure: an HTTP status (with Retry-After seconds) or a gRPC code (with RetryInfo)."""

    http_status: int = 503
    grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    retry_after: float | None = None


@dataclass(frozen=True)
class Delivery:
    transport: str  # "http" or "grpc"
    tenant: str | None
    body: bytes

    @property
    def span_count(self) -> int:
        return span_count(ExportTraceServiceRequest.FromString(self.body))


@dataclass
class RecordingBackend:
    script: list[Answer] = field(default_factory=list)  # answers for the next requests, then success
    always: Answer | None = None  # answer every request with this (a permanently failing backend)
    deliveries: list[Delivery] = field(default_factory=list)  # successful requests, in order
    attempts: int = 0  # every request that arrived, failed or not
    arrived: int = 0  # requests that arrived, counted before `hold` (attempts count after it)
    hold: asyncio.Event | None = None  # when set, requests wait for it before answering (a slow backend)
    http_url: str = ""
    grpc_target: str = ""
    _runner: web.AppRunner | None = None
    _grpc: grpc.aio.Server | None = None

    async def start(self, http_port: int = 0, grpc_port: int = 0) -> RecordingBackend:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._http)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.SockSite(self._runner, socket.create_server(("127.0.0.1", http_port)))
        await site.start()
        host, port = site._sock.getsockname()[:2]
        self.http_url = f"http://{host}:{port}"
        self._grpc = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        self._grpc.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(TRACE_SERVICE, {EXPORT_METHOD: handler}),)
        )
        bound = self._grpc.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await self._grpc.start()
        self.grpc_target = f"127.0.0.1:{bound}"
        return self

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(None)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _next_answer(self) -> Answer | None:
        self.attempts += 1
        if self.always is not None:
            return self.always
        return self.script.pop(0) if self.script else None

    async def _http(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived += 1
        if self.hold is not None:
            await self.hold.wait()
        answer = self._next_answer()
        if answer is not None:
            headers = {"Retry-After": f"{answer.retry_after:g}"} if answer.retry_after is not None else None
            return web.Response(status=answer.http_status, text="scripted failure", headers=headers)
        self.deliveries.append(Delivery("http", request.headers.get("X-Scope-OrgID"), body))
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def _export(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.arrived += 1
        if self.hold is not None:
            await self.hold.wait()
        answer = self._next_answer()
        if answer is not None:
            trailing = (
                (("google.rpc.retryinfo-bin", retry_info(answer.retry_after)),)
                if answer.retry_after is not None
                else ()
            )
            await context.abort(answer.grpc_code, "scripted failure", trailing)
        metadata = dict(context.invocation_metadata() or ())
        tenant = metadata.get("x-scope-orgid")
        self.deliveries.append(Delivery("grpc", tenant if isinstance(tenant, str) else None, body))
        return b""

    def spans_delivered(self) -> int:
        return sum(delivery.span_count for delivery in self.deliveries)

    def bodies(self) -> Iterator[bytes]:
        return (delivery.body for delivery in self.deliveries)


def forwarder_to(
    backend: RecordingBackend | str,
    transport: str = "http",
    name: str = "backend",
    **changes: object,
) -> ForwarderConfig:
    """A forwarder config for tests: fast retries (10 ms .. 50 ms) so no test waits on backoff."""
    if isinstance(backend, RecordingBackend):
        endpoint = backend.http_url if transport == "http" else backend.grpc_target
    else:
        endpoint = backend
    config = ForwarderConfig(
        name=name,
        backend="otlphttp" if transport == "http" else "otlpgrpc",
        endpoint=endpoint,
        tls=TlsConfig(insecure=True),
        retry=RetryConfig(initial_interval=0.01, max_interval=0.05, max_elapsed_time=30.0),
    )
    return replace(config, **changes)  # type: ignore[arg-type]
