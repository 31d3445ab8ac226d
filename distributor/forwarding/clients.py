"""OTLP export clients: send one encoded ExportTraceServiceRequest as it is, with the tenant header.

The payload is bytes from end to end (the receiver's own encoding unless attributes were truncated),
so forwarding costs a socket write, not a re-encode.
"""

from __future__ import annotations

import email.utils
import gzip
import ssl
import time
from pathlib import Path
from typing import Protocol

import aiohttp
import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from distributor.common.rpc_status import RETRY_INFO_TYPE_URL, RetryInfo, Status
from distributor.forwarding.config import ForwarderConfig
from distributor.forwarding.retry import ExportFailure
from distributor.ingest.tenant import ORG_ID_HEADER

RETRYABLE_HTTP_STATUSES = frozenset({429, 502, 503, 504})
# The OTLP specification's retryable codes (a superset of UNAVAILABLE, RESOURCE_EXHAUSTED and
# DEADLINE_EXCEEDED).
RETRYABLE_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
EXPORT_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class ExportClient(Protocol):
    async def start(self) -> None: ...

    async def export(self, tenant: str, payload: bytes) -> int:
        """Deliver; returns the spans the backend reported rejecting in a partial success (usually 0).
        Raises ExportFailure."""
        ...

    async def close(self) -> None: ...


def create_client(config: ForwarderConfig) -> ExportClient:
    if config.backend == "otlphttp":
        return OtlpHttpClient(config)
    return OtlpGrpcClient(config)


def rejected_spans(response: bytes) -> int:
    try:
        return int(ExportTraceServiceResponse.FromString(response).partial_success.rejected_spans)
    except DecodeError:
        return 0  # a success whose body is not OTLP (some proxies): nothing was reported rejected


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_message(body: bytes, content_type: str) -> str:
    if content_type.startswith("application/x-protobuf"):
        try:
            return str(Status.FromString(body).message)
        except DecodeError:
            pass
    return body[:200].decode("utf-8", "replace").strip()


def _client_ssl_context(config: ForwarderConfig) -> ssl.SSLContext:
    tls = config.tls
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class OtlpHttpClient:
    """OTLP/HTTP protobuf, like the Collector's otlphttp exporter: `endpoint` + /v1/traces."""

    def __init__(self, config: ForwarderConfig) -> None:
        self.config = config
        self.url = config.traces_endpoint or config.endpoint.rstrip("/") + "/v1/traces"
        self._session: aiohttp.ClientSession | None = None
        self._headers = {key: value for key, value in config.headers}
        self._headers["Content-Type"] = "application/x-protobuf"
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"

    async def start(self) -> None:
        ssl_context = _client_ssl_context(self.config) if self.url.startswith("https://") else None
        connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context if ssl_context is not None else True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.config.timeout)
        )

    async def export(self, tenant: str, payload: bytes) -> int:
        assert self._session is not None, "start() first"
        body = gzip.compress(payload, compresslevel=6) if self.config.compression == "gzip" else payload
        headers = {**self._headers, ORG_ID_HEADER: tenant}
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                content = await response.read()
                if 200 <= response.status < 300:
                    return rejected_spans(content)
                raise ExportFailure(
                    f"http_{response.status}",
                    response.status in RETRYABLE_HTTP_STATUSES,
                    _status_message(content, response.headers.get("Content-Type", "")),
                    parse_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            raise ExportFailure("timeout", True, f"no answer within {self.config.timeout}s") from None
        except aiohttp.ClientError as err:
            raise ExportFailure("connection_error", True, str(err) or type(err).__name__) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class OtlpGrpcClient:
    """OTLP/gRPC TraceService/Export on one grpc.aio channel (HTTP/2 multiplexes the workers' calls)."""

    def __init__(self, config: ForwarderConfig) -> None:
        self.config = config
        endpoint = config.endpoint
        self.target = endpoint.removeprefix("http://").removeprefix("https://")
        # As in the Collector: an https:// endpoint means TLS, http:// or tls.insecure plaintext.
        self.plaintext = endpoint.startswith("http://") or (
            config.tls.insecure and not endpoint.startswith("https://")
        )
        self._channel: grpc.aio.Channel | None = None
        self._export: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] | None = None
        self._metadata = tuple((key.lower(), value) for key, value in config.headers)
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else None

    async def start(self) -> None:
        options: list[tuple[str, str | int]] = [("grpc.max_send_message_length", -1)]
        if self.plaintext:
            channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            tls = self.config.tls
            if tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", tls.server_name_override))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.ca_file),
                private_key=_read(tls.key_file),
                certificate_chain=_read(tls.cert_file),
            )
            channel = grpc.aio.secure_channel(self.target, credentials, options=options)
        self._channel = channel
        self._export = channel.unary_unary(EXPORT_PATH)  # no serializers: bytes in, bytes out

    async def export(self, tenant: str, payload: bytes) -> int:
        assert self._export is not None, "start() first"
        try:
            response = await self._export(
                payload,
                metadata=((ORG_ID_HEADER.lower(), tenant), *self._metadata),
                timeout=self.config.timeout,
                compression=self._compression,
            )
        except grpc.aio.AioRpcError as err:
            code = err.code()
            raise ExportFailure(
                code.name.lower(),
                code in RETRYABLE_GRPC_CODES,
                err.details() or "",
                _retry_delay(err.trailing_metadata()),
            ) from None
        return rejected_spans(response)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _retry_delay(trailing: grpc.aio.Metadata | None) -> float | None:
    """google.rpc.RetryInfo, from its own trailer or inside the grpc-status-details-bin Status."""
    if not trailing:
        return None
    for key, value in trailing:
        try:
            if key == "google.rpc.retryinfo-bin" and isinstance(value, bytes):
                return float(RetryInfo.FromString(value).retry_delay.ToNanoseconds()) / 1e9
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                for detail in Status.FromString(value).details:
                    if detail.type_url == RETRY_INFO_TYPE_URL:
                        return float(RetryInfo.FromString(detail.value).retry_delay.ToNanoseconds()) / 1e9
        except DecodeError:
            continue
    return None


__all__ = ["ExportClient", "OtlpGrpcClient", "OtlpHttpClient", "create_client"]
