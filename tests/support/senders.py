"""One sender per OTLP transport: POST /v1/traces over HTTP, TraceService/Export over gRPC. Both send
the exact bytes given (no client library re-encodes them) and return the whole answer."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

import aiohttp
import grpc
from multidict import CIMultiDict

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
EXPORT_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


@dataclass(frozen=True)
class GrpcAnswer:
    code: grpc.StatusCode
    details: str = ""
    trailing: dict[str, str | bytes] = field(default_factory=dict)


async def post_traces(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    tenant: str | None = None,
    headers: dict[str, str] = PROTOBUF,
    gzipped: bool = False,
) -> HttpAnswer:
    """`body` to an OTLP/HTTP traces URL with these headers (and X-Scope-OrgID when `tenant` is given);
    `gzipped` compresses it and says so in Content-Encoding."""
    sent = dict(headers)
    if tenant is not None:
        sent["X-Scope-OrgID"] = tenant
    if gzipped:
        body, sent["Content-Encoding"] = gzip.compress(body), "gzip"
    async with session.post(url, data=body, headers=sent) as response:
        return HttpAnswer(response.status, CIMultiDict(response.headers), await response.read())


async def export_traces(
    target: str,
    body: bytes,
    tenant: str | None = None,
    compression: grpc.Compression | None = None,
    timeout: float = 10.0,
) -> GrpcAnswer:
    """A raw Export call to host:port (bytes in, bytes out), so tests can send bytes no client would."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(EXPORT_PATH)  # no serializers: the exact bytes go on the wire
        metadata = (("x-scope-orgid", tenant),) if tenant is not None else None
        try:
            response = await call(body, metadata=metadata, compression=compression, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            trailing = {key: value for key, value in (err.trailing_metadata() or ())}
            return GrpcAnswer(err.code(), err.details() or "", trailing)
        assert response == b"", "success is an empty ExportTraceServiceResponse"
        return GrpcAnswer(grpc.StatusCode.OK)
