"""OTLP/gRPC receiver: opentelemetry.proto.collector.trace.v1.TraceService/Export on grpcio's asyncio
server, in the same event loop as HTTP. Requests arrive as raw bytes (no deserializer), so they go
through exactly the same validating decode and accounting as OTLP/HTTP."""

from __future__ import annotations

import asyncio
import logging

import grpc

from distributor.ingest.pipeline import IngestPipeline, PushRefused
from distributor.ingest.scan import InvalidTraces
from distributor.ingest.tenant import TenantError, resolve_tenant
from distributor.overrides.tenant_ids import ORG_ID_HEADER
from distributor.receivers.config import OtlpGrpcConfig
from distributor.receivers.otlp import (
    error_answer,
    retry_info,
    status_message,
)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = "Export"
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


class OtlpGrpcReceiver:
    def __init__(self, config: OtlpGrpcConfig, pipeline: IngestPipeline, multitenancy_enabled: bool) -> None:
        self.config = config
        self.pipeline = pipeline
        self.multitenancy_enabled = multitenancy_enabled
        self._server: grpc.aio.Server | None = None
        self.address: tuple[str, int] | None = None  # (host, port) bound, once started

    async def start(self) -> None:
        server = grpc.aio.server(options=server_options(self.config))
        handler = grpc.unary_unary_rpc_method_handler(self.export)  # bytes in, bytes out
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        endpoint = self.config.endpoint
        port = server.add_insecure_port(str(endpoint))
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

    async def export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        try:
            tenant = resolve_tenant(metadata.get(ORG_ID_METADATA), self.multitenancy_enabled)
        except TenantError as err:
            await context.abort(_GRPC_CODES[error_answer(err).code], str(err))
        if not request:
            # grpcio delivers a message whose compressed flag is neither 0 nor 1 as an empty message,
            # dropping what it carried; an empty message is therefore refused, so the sender learns
            # that nothing was taken (a real export always carries at least one ResourceSpans).
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, EMPTY_MESSAGE)
        try:
            # grpc has inflated a gzip request already: the message size stands for ingress bytes here.
            self.pipeline.push(tenant, request, ingress_bytes=len(request))
        except InvalidTraces as err:
            await context.abort(_GRPC_CODES[error_answer(err).code], str(err))
        except PushRefused as refused:
            code = error_answer(refused).code
            trailing: list[tuple[str, bytes]] = []
            if refused.retry_after is not None:
                # The OTel SDK exporters read this trailer; others read the Status details.
                trailing.append(("google.rpc.retryinfo-bin", retry_info(refused.retry_after)))
            status = status_message(code, str(refused), refused.retry_after)
            trailing.append(("grpc-status-details-bin", status.SerializeToString()))
            await context.abort(_GRPC_CODES[code], str(refused), tuple(trailing))
        return b""  # an empty ExportTraceServiceResponse: full success
