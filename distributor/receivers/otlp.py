"""OTLP trace export requests: content negotiation, decompression, validating decode, responses.

Shared by the transports; nothing here knows about HTTP frameworks. This is where the errors of a
request (its tenant, its body, the pipeline's refusals) become the HTTP status and google.rpc code that
OTLP exporters act on; the domain errors themselves carry only what went wrong.
"""

from __future__ import annotations

import json
import zlib
from enum import Enum
from typing import Any, NamedTuple

from distributor.common.errors import DistributorError
from distributor.common.rpc_status import RETRY_INFO_TYPE_URL, RetryInfo, Status
from distributor.ingest import scan
from distributor.ingest.pipeline import IngestPipeline, PushRefused, Refusal
from distributor.ingest.scan import InvalidTraces
from distributor.ingest.tenant import TenantError, TenantErrorReason
from distributor.ingest.traces import ReceivedTraces
from distributor.ingest.workers import IngestWorkers, WorkersBusy
from distributor.receivers.otlp_json import OtlpJsonError, export_response_json, otlp_json_to_protobuf

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"

# google.rpc.Code values used in Status bodies.
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16


class Encoding(Enum):
    PROTOBUF = PROTOBUF_CONTENT_TYPE
    JSON = JSON_CONTENT_TYPE


class ReceiveErrorReason(Enum):
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    TOO_LARGE = "too_large"  # the body as sent, or once decompressed
    INVALID_BODY = "invalid_body"  # corrupt gzip, invalid protobuf or OTLP/JSON


class ReceiveError(DistributorError):
    """A request refused as a whole: nothing of it is accounted."""

    def __init__(self, reason: ReceiveErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_content_type(header: str | None) -> Encoding:
    media_type = (header or "").split(";", 1)[0].strip().lower()
    if media_type == PROTOBUF_CONTENT_TYPE:
        return Encoding.PROTOBUF
    if media_type == JSON_CONTENT_TYPE:
        return Encoding.JSON
    raise ReceiveError(
        ReceiveErrorReason.UNSUPPORTED_CONTENT_TYPE,
        f"unsupported content type {header!r}: use {PROTOBUF_CONTENT_TYPE} or {JSON_CONTENT_TYPE}",
    )


def check_content_encoding(header: str | None) -> bool:
    """True when the body is gzip-compressed; refused for any encoding but gzip or none."""
    encoding = (header or "").strip().lower()
    if encoding in ("", "identity"):
        return False
    if encoding in ("gzip", "x-gzip"):
        return True
    raise ReceiveError(
        ReceiveErrorReason.UNSUPPORTED_ENCODING, f"unsupported content encoding {header!r}: use gzip or none"
    )


# The first piece of a member handed to zlib; doubled while the member goes on. zlib copies the input
# after a member's end into `unused_data`, so feeding the whole rest of the body would copy it once per
# member (quadratic: 100,000 empty members took 6.9 s, 94 ms this way); pieces that grow with the
# member keep that copy under twice the member's own size plus this.
_FIRST_PIECE_BYTES = 1024


def gunzip(body: bytes, limit: int, max_members: int) -> bytes:
    """Inflate gzip (at most `max_members` members, concatenated) without ever producing more than
    `limit` bytes; time is linear in the size of the body."""
    output = bytearray()
    view = memoryview(body)
    offset = members = 0
    while offset < len(view):
        members += 1
        if members > max_members:
            raise ReceiveError(
                ReceiveErrorReason.INVALID_BODY,
                f"gzip body has more than {max_members} members (max_gzip_members)",
            )
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        piece = _FIRST_PIECE_BYTES
        while not inflater.eof:
            if offset >= len(view):
                raise ReceiveError(ReceiveErrorReason.INVALID_BODY, "corrupt gzip body: truncated")
            chunk = view[offset : offset + piece]
            offset += len(chunk)
            piece *= 2
            try:
                # Past `limit` only by one byte, so a bomb stops here; below it zlib consumes the chunk.
                output += inflater.decompress(chunk, limit + 1 - len(output))
            except zlib.error as err:
                raise ReceiveError(ReceiveErrorReason.INVALID_BODY, f"corrupt gzip body: {err}") from None
            if len(output) > limit:
                raise ReceiveError(
                    ReceiveErrorReason.TOO_LARGE,
                    f"decompressed body is larger than the limit of {limit} bytes",
                )
        offset -= len(inflater.unused_data)
    return bytes(output)


def protobuf_body(payload: bytes, encoding: Encoding) -> bytes:
    """The request as protobuf: OTLP/JSON is converted to its protobuf equivalent, so both encodings
    are validated and measured alike (the pipeline's scan refuses an invalid protobuf body)."""
    if encoding is Encoding.JSON:
        try:
            return otlp_json_to_protobuf(payload)
        except OtlpJsonError as err:
            raise ReceiveError(ReceiveErrorReason.INVALID_BODY, f"invalid OTLP/JSON: {err}") from None
    return payload


SCAN_COST_DIVISOR = 16


async def scan_traces(
    workers: IngestWorkers, pipeline: IngestPipeline, tenant: str, protobuf: bytes
) -> ReceivedTraces:
    """The request validated and attributed for `tenant`: inline when small, on a worker thread when
    large; raises InvalidTraces, or WorkersBusy when the workers hold too much already."""
    plan, max_attribute_bytes = pipeline.scan_plan(tenant)
    # The workers' inline bound is set for the costliest step, a JSON conversion (~25 MB/s). The
    # compiled core scans ~2 GB/s, so a body counts for 1/SCAN_COST_DIVISOR of its size: a 287 KB
    # request (the bench's) is scanned inline in ~0.1 ms instead of paying a thread hand-over, and the
    # largest one that stays inline (4 MiB) holds the loop ~2 ms.
    cost = len(protobuf) if scan.CORE is None else len(protobuf) // SCAN_COST_DIVISOR
    return await workers.run(cost, ReceivedTraces, protobuf, plan, max_attribute_bytes)


def encode_success(encoding: Encoding) -> bytes:
    # An empty ExportTraceServiceResponse (full success) encodes to no bytes in protobuf.
    return export_response_json() if encoding is Encoding.JSON else b""


def encode_status(encoding: Encoding, code: int, message: str, retry_after: float | None = None) -> bytes:
    if encoding is Encoding.JSON:
        return json.dumps({"code": code, "message": message}).encode("utf-8")
    return bytes(status_message(code, message, retry_after).SerializeToString())


def retry_info(seconds: float) -> bytes:
    info = RetryInfo()
    info.retry_delay.FromNanoseconds(round(seconds * 1e9))
    return bytes(info.SerializeToString())


def status_message(code: int, message: str, retry_after: float | None = None) -> Any:
    """google.rpc.Status, carrying a google.rpc.RetryInfo detail when the client should wait."""
    status = Status(code=code, message=message)
    if retry_after is not None:
        detail = status.details.add()
        detail.type_url = RETRY_INFO_TYPE_URL  # set by hand: Any.Pack would use our own type name
        detail.value = retry_info(retry_after)
    return status


class ErrorAnswer(NamedTuple):
    """How both transports answer an error; the two say alike whether an exporter retries."""

    http_status: int
    code: int  # google.rpc.Code


_RECEIVE_ANSWERS = {
    ReceiveErrorReason.METHOD_NOT_ALLOWED: ErrorAnswer(405, UNIMPLEMENTED),
    ReceiveErrorReason.UNSUPPORTED_CONTENT_TYPE: ErrorAnswer(415, INVALID_ARGUMENT),
    ReceiveErrorReason.UNSUPPORTED_ENCODING: ErrorAnswer(415, INVALID_ARGUMENT),
    ReceiveErrorReason.TOO_LARGE: ErrorAnswer(413, INVALID_ARGUMENT),
    ReceiveErrorReason.INVALID_BODY: ErrorAnswer(400, INVALID_ARGUMENT),
}
_TENANT_ANSWERS = {
    TenantErrorReason.MISSING: ErrorAnswer(401, UNAUTHENTICATED),
    TenantErrorReason.INVALID: ErrorAnswer(400, INVALID_ARGUMENT),
}
_REFUSAL_ANSWERS = {
    Refusal.RATE_LIMITED: ErrorAnswer(429, RESOURCE_EXHAUSTED),  # with Retry-After and RetryInfo
    # No retry can help: 413 and no RetryInfo tell exporters so.
    Refusal.LARGER_THAN_BURST: ErrorAnswer(413, RESOURCE_EXHAUSTED),
    Refusal.QUEUE_FULL: ErrorAnswer(503, UNAVAILABLE),
    Refusal.TOO_MANY_ACTIVE_TENANTS: ErrorAnswer(429, RESOURCE_EXHAUSTED),
    # A synchronous forwarder's backend: unavailable is retried by the exporter (the retry is the retry);
    # a refusal for good is the client's error, with the backend's message.
    Refusal.BACKEND_UNAVAILABLE: ErrorAnswer(503, UNAVAILABLE),
    Refusal.BACKEND_REJECTED: ErrorAnswer(400, INVALID_ARGUMENT),
}


def error_answer(
    error: ReceiveError | InvalidTraces | WorkersBusy | TenantError | PushRefused,
) -> ErrorAnswer:
    if isinstance(error, ReceiveError):
        return _RECEIVE_ANSWERS[error.reason]
    if isinstance(error, WorkersBusy):
        return ErrorAnswer(503, UNAVAILABLE)
    if isinstance(error, InvalidTraces):
        return _RECEIVE_ANSWERS[ReceiveErrorReason.INVALID_BODY]
    if isinstance(error, TenantError):
        return _TENANT_ANSWERS[error.reason]
    return _REFUSAL_ANSWERS[error.reason]
