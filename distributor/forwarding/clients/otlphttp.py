"""The otlphttp backend: OTLP/HTTP protobuf, like the Collector's otlphttp exporter."""

from __future__ import annotations

import email.utils
import gzip
import ssl
import time

import aiohttp
from google.protobuf.message import DecodeError

from distributor.common.rpc_status import Status
from distributor.common.url_masking import mask_urls_in
from distributor.forwarding.clients.base import rejected_spans
from distributor.forwarding.config import ForwarderConfig
from distributor.forwarding.retry import ExportFailure
from distributor.overrides.tenant_ids import ORG_ID_HEADER

RETRYABLE_HTTP_STATUSES = frozenset({429, 502, 503, 504})


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
            # Some aiohttp errors quote the URL, credentials included: the message is logged.
            raise ExportFailure(
                "connection_error", True, mask_urls_in(str(err)) or type(err).__name__
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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
