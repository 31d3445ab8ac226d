"""OTLP/HTTP receiver: POST /v1/traces. Parses the HTTP request, hands the traces on, answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from distributor.common.http_listener import (
    ConnectionLimits,
    ConnectionMetrics,
    HttpListener,
    Middleware,
    RequestAborted,
    read_body,
)
from distributor.ingest.limits import retry_after_header
from distributor.ingest.pipeline import IngestPipeline, PushRefused
from distributor.ingest.scan import InvalidTraces
from distributor.ingest.tenant import TenantError, resolve_tenant
from distributor.ingest.workers import IngestWorkers, WorkersBusy
from distributor.overrides.tenant_ids import ORG_ID_HEADER
from distributor.receivers.config import OtlpHttpConfig
from distributor.receivers.otlp import (
    INTERNAL,
    UNAVAILABLE,
    Encoding,
    ReceiveError,
    ReceiveErrorReason,
    check_content_encoding,
    encode_status,
    encode_success,
    error_answer,
    gunzip,
    parse_content_type,
    protobuf_body,
    scan_traces,
)
from distributor.receivers.rejections import RejectionLog

TRACES_PATH = "/v1/traces"
# OTLP protobuf and JSON compress about 5 to 10 times: a gzip body counts as this many times its size
# when the ingest workers decide whether to inflate it inline. Larger ones go to a worker thread, where
# 100,000 empty members (2 MB) take 94 ms that every other client would otherwise wait; a body that
# small cannot take long (the worst, one that inflates to the 20 MiB limit, ~30 ms).
GZIP_RATIO = 8
log = logging.getLogger(__name__)


class OtlpHttpReceiver:
    def __init__(
        self,
        config: OtlpHttpConfig,
        pipeline: IngestPipeline,
        multitenancy_enabled: bool,
        request_metrics: Middleware,
        connection_metrics: ConnectionMetrics,
        shutdown_timeout: float,
        workers: IngestWorkers,
    ) -> None:
        self.config = config
        self.workers = workers
        self.pipeline = pipeline
        self.multitenancy_enabled = multitenancy_enabled
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.rejections = RejectionLog("otlp_http")
        # The receiver inflates gzip itself: it must count compressed ingress bytes and stop a gzip
        # bomb at max_request_body_bytes, which aiohttp's automatic inflation would not.
        self.listener = HttpListener(
            "otlp_http",
            config.endpoint,
            [web.route("*", TRACES_PATH, self.handle_traces)],
            request_metrics,
            shutdown_timeout,
            ConnectionLimits(
                config.idle_timeout,
                config.read_header_timeout,
                config.read_body_timeout,
                config.max_connections,
            ),
            connection_metrics,
            max_body_bytes=config.max_request_body_bytes,
            auto_decompress=False,
        )

    @property
    def address(self) -> tuple[str, int] | None:
        return self.listener.address

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self, deadline: float) -> None:
        """Stop taking requests and answer those already being handled, uploads still arriving
        included, until `deadline`: the listening socket closes, and a request arriving on a
        connection still open gets a 503 (so exporters retry elsewhere or later). Not closing
        everything at once: aiohttp would then drop the rest of a body still arriving."""
        await self.listener.stop_accepting()
        self.draining = True
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        await self.listener.stop(deadline)

    async def handle_traces(self, request: web.Request) -> web.Response:
        if self.draining:
            response = self._error(Encoding.PROTOBUF, 503, UNAVAILABLE, "shutting down: retry", 1.0)
            response.headers["Retry-After"] = "1"
            response.force_close()  # keep-alive connections must not bring more requests
            return response
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._handle_traces(request)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _handle_traces(self, request: web.Request) -> web.Response:
        encoding = Encoding.PROTOBUF  # errors found before the content type is known answer in protobuf
        tenant: str | None = None
        try:
            if request.method != "POST":
                raise ReceiveError(
                    ReceiveErrorReason.METHOD_NOT_ALLOWED, f"method {request.method} not allowed: use POST"
                )
            tenant = resolve_tenant(request.headers.get(ORG_ID_HEADER), self.multitenancy_enabled)
            encoding = parse_content_type(request.headers.get("Content-Type"))
            compressed = check_content_encoding(request.headers.get("Content-Encoding"))
            body = await self._read_body(request)
            workers = self.workers
            payload = body
            if compressed:
                limit, max_members = self.config.max_request_body_bytes, self.config.max_gzip_members
                # Sized as inflated: a small gzip body may become a large one.
                payload = await workers.run(len(body) * GZIP_RATIO, gunzip, body, limit, max_members)
            if encoding is Encoding.JSON:
                payload = await workers.run_in_process(len(payload), protobuf_body, payload, encoding)
            traces = await scan_traces(workers, self.pipeline, tenant, payload)
            await self.pipeline.push(tenant, traces, ingress_bytes=len(body))
        except (ReceiveError, InvalidTraces, TenantError) as err:
            status, code = error_answer(err)
            self.rejections.refused(err, tenant, status)
            return self._error(encoding, status, code, str(err))
        except WorkersBusy as busy:
            status, code = error_answer(busy)
            self.rejections.refused(busy, tenant, status)
            response = self._error(encoding, status, code, str(busy), busy.retry_after)
            response.headers["Retry-After"] = retry_after_header(busy.retry_after)
            return response
        except PushRefused as refused:
            status, code = error_answer(refused)
            self.rejections.refused(refused, tenant, status)
            response = self._error(encoding, status, code, str(refused), refused.retry_after)
            if refused.retry_after is not None:
                response.headers["Retry-After"] = retry_after_header(refused.retry_after)
            return response
        except RequestAborted:
            raise  # no one to answer: counted by the request metrics
        except Exception:  # a bug must still answer with a Status, and be visible in the log
            log.exception("unexpected error handling %s", TRACES_PATH)
            return self._error(encoding, 500, INTERNAL, "internal error")
        return web.Response(body=encode_success(encoding), content_type=encoding.value)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_request_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _body_too_large(limit)
        try:
            return await read_body(request)  # the app's client_max_size stops chunked bodies at the limit
        except web.HTTPRequestEntityTooLarge:
            raise _body_too_large(limit) from None

    @staticmethod
    def _error(
        encoding: Encoding, status: int, code: int, message: str, retry_after: float | None = None
    ) -> web.Response:
        headers = {"Allow": "POST"} if status == 405 else None
        return web.Response(
            status=status,
            body=encode_status(encoding, code, message, retry_after),
            content_type=encoding.value,
            headers=headers,
        )


def _body_too_large(limit: int) -> ReceiveError:
    return ReceiveError(
        ReceiveErrorReason.TOO_LARGE, f"request body is larger than the limit of {limit} bytes"
    )
