"""OTLP/gRPC receiver: opentelemetry.proto.collector.trace.v1.TraceService/Export on grpcio's asyncio
server, in the same event loop as HTTP. Requests arrive as raw bytes (no deserializer), so they go
through exactly the same validating decode and accounting as OTLP/HTTP."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time

import grpc

from distributor.common.http_listener import GRPC_CANCEL, GRPC_ERROR, GRPC_SUCCESS, RequestMetrics
from distributor.ingest.pipeline import IngestPipeline, PushRefused
from distributor.ingest.scan import InvalidTraces
from distributor.ingest.tenant import TenantError, resolve_tenant
from distributor.ingest.workers import IngestWorkers, WorkersBusy
from distributor.overrides.tenant_ids import ORG_ID_HEADER
from distributor.receivers.config import OtlpGrpcConfig
from distributor.receivers.otlp import (
    error_answer,
    retry_info,
    scan_traces,
    status_message,
)
from distributor.receivers.rejections import RejectionLog

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = "Export"
FULL_METHOD = f"/{SERVICE}/{METHOD}"
ORG_ID_METADATA = ORG_ID_HEADER.lower()  # gRPC metadata keys are lowercase
log = logging.getLogger(__name__)
EMPTY_MESSAGE = (
    "empty ExportTraceServiceRequest: nothing was accepted (a message whose gRPC compressed flag is neither "
    "0 nor 1 arrives empty too); send at least one ResourceSpans"
)
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}  # google.rpc.Code -> grpc's


def server_options(config: OtlpGrpcConfig) -> list[tuple[str, int]]:
    """grpc's channel arguments for the receiver's server."""
    return [
        ("grpc.max_receive_message_length", config.max_recv_msg_size_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.max_connection_idle_ms", round(config.max_connection_idle * 1000)),
        ("grpc.server_handshake_timeout_ms", round(config.handshake_timeout * 1000)),
        ("grpc.max_allowed_incoming_connections", config.max_connections),
    ]


def _refuse_address_in_use(host: str, port: int) -> None:
    """Raise OSError(EADDRINUSE) when another socket holds the port. Checked before grpc binds: grpc
    reports a busy port as a RuntimeError, after writing a line of its own to stderr, so the service
    could not say it in one clean line as it does for a busy HTTP port. Other bind errors are left
    for grpc to judge (it listens if any of the resolved addresses binds)."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does
            try:
                probe.bind(address)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    problem = f"cannot listen for OTLP/gRPC on {host}:{port}: address already in use"
                    raise OSError(errno.EADDRINUSE, problem) from None


class OtlpGrpcReceiver:
    def __init__(
        self,
        config: OtlpGrpcConfig,
        pipeline: IngestPipeline,
        multitenancy_enabled: bool,
        workers: IngestWorkers,
        request_metrics: RequestMetrics | None = None,
    ) -> None:
        self.config = config
        self.workers = workers
        self.pipeline = pipeline
        self.multitenancy_enabled = multitenancy_enabled
        self._server: grpc.aio.Server | None = None
        self.rejections = RejectionLog("otlp_grpc")
        self.request_metrics = request_metrics
        self.address: tuple[str, int] | None = None  # (host, port) bound, once started

    async def start(self) -> None:
        server = grpc.aio.server(options=server_options(self.config))
        handler = grpc.unary_unary_rpc_method_handler(self._timed_export)  # bytes in, bytes out
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        endpoint = self.config.endpoint
        _refuse_address_in_use(endpoint.host, endpoint.port)
        try:
            port = server.add_insecure_port(str(endpoint))
        except RuntimeError as err:  # grpcio raises this, not OSError, when it cannot bind
            raise OSError(f"cannot listen for OTLP/gRPC on {endpoint}: {err}") from None
        if port == 0:
            raise OSError(f"cannot listen for OTLP/gRPC on {endpoint}")
        await server.start()
        self._server = server
        self.address = (endpoint.host, port)
        log.info("OTLP/gRPC listening on %s:%d", *self.address)

    async def stop(self, deadline: float) -> None:
        """Refuse new calls (UNAVAILABLE) and finish those under way until `deadline`."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(max(0.0, deadline - asyncio.get_running_loop().time()))

    async def _timed_export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if self.request_metrics is None:
            return await self.export(request, context)
        started = time.perf_counter()
        status = GRPC_ERROR  # an abort (every refusal) raises
        try:
            response = await self.export(request, context)
            status = GRPC_SUCCESS
            return response
        except asyncio.CancelledError:
            status = GRPC_CANCEL  # the client went away or the deadline passed
            raise
        finally:
            self.request_metrics.observe_grpc(FULL_METHOD, status, time.perf_counter() - started)

    async def export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        try:
            tenant = resolve_tenant(metadata.get(ORG_ID_METADATA), self.multitenancy_enabled)
        except TenantError as err:
            self.rejections.refused(err, None, _GRPC_CODES[error_answer(err).code].name)
            await context.abort(_GRPC_CODES[error_answer(err).code], str(err))
        if not request:
            # grpcio delivers a message whose compressed flag is neither 0 nor 1 as an empty message,
            # dropping what it carried; an empty message is therefore refused, so the sender learns
            # that nothing was taken (a real export always carries at least one ResourceSpans).
            self.rejections.refused(
                InvalidTraces(EMPTY_MESSAGE), tenant, grpc.StatusCode.INVALID_ARGUMENT.name
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, EMPTY_MESSAGE)
        try:
            traces = await scan_traces(self.workers, self.pipeline, tenant, request)
            # grpc has inflated a gzip request already: the message size stands for ingress bytes here.
            await self.pipeline.push(tenant, traces, ingress_bytes=len(request))
        except InvalidTraces as err:
            self.rejections.refused(err, tenant, _GRPC_CODES[error_answer(err).code].name)
            await context.abort(_GRPC_CODES[error_answer(err).code], str(err))
        except (PushRefused, WorkersBusy) as refused:
            code = error_answer(refused).code
            self.rejections.refused(refused, tenant, _GRPC_CODES[code].name)
            trailing: list[tuple[str, bytes]] = []
            if refused.retry_after is not None:
                # The OTel SDK exporters read this trailer; others read the Status details.
                trailing.append(("google.rpc.retryinfo-bin", retry_info(refused.retry_after)))
            status = status_message(code, str(refused), refused.retry_after)
            trailing.append(("grpc-status-details-bin", status.SerializeToString()))
            await context.abort(_GRPC_CODES[code], str(refused), tuple(trailing))
        return b""  # an empty ExportTraceServiceResponse: full success
