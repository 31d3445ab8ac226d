"""The otlpgrpc backend: OTLP/gRPC TraceService/Export, like the Collector's otlp exporter."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from distributor.common.rpc_status import RETRY_INFO_TYPE_URL, RetryInfo, Status
from distributor.common.url_masking import mask_url
from distributor.forwarding.clients.base import rejected_spans
from distributor.forwarding.config import ForwarderConfig
from distributor.forwarding.retry import ExportFailure
from distributor.overrides.tenant_ids import ORG_ID_HEADER

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
                # gRPC quotes a target it cannot resolve, credentials included: the message is logged.
                (err.details() or "").replace(self.target, mask_url(self.target)),
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
