"""Serving an aiohttp application on one TCP endpoint (the server port, the OTLP/HTTP receiver), with
the request metrics every listener keeps, and bounds on its connections: how many, and how long a
client may hold one without sending (idle, headers, body)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from distributor.common.endpoint import Endpoint

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

DEFAULT_MAX_BODY_BYTES = 1024**2  # aiohttp's own default
LISTEN_BACKLOG = 1024
# Longer than the idle timeout of Go's HTTP client (90s), which the Collector's exporters use: the client
# closes an idle connection first, so a request is never sent on one the server is closing.
IDLE_TIMEOUT_SECONDS = 120.0
# Long enough for any client on a slow link to send a few KB of headers; short enough that a
# slowloris holding connections open must keep opening new ones.
READ_HEADER_TIMEOUT_SECONDS = 10.0
# A typical export (under 1 MiB) takes well under a second; 60s lets a 20 MiB body arrive at 350 KB/s
# while an upload trickling at 200 B/s is cut after 12 KB.
READ_BODY_TIMEOUT_SECONDS = 60.0
# Open connections per OTLP/HTTP listener: far more than the exporters of a large fleet keep (each
# holds one or a few), each costing a file descriptor; the server port serves scrapers and API clients,
# far fewer. With gRPC's 10,000, the defaults hold at most 21,000 descriptors: the process's limit
# (ulimit -n) must be above that, or these lower, for the limits to act before descriptors run out.
MAX_CONNECTIONS = 10_000
MAX_SERVER_CONNECTIONS = 1_000
# Out of file descriptors, asyncio reports every failed accept with a traceback, up to the backlog's
# worth (1024) in a row each time it retries (every second): 262 MB of log in 2 minutes in an attack.
ACCEPT_FAILURE_LOG_INTERVAL_SECONDS = 60.0
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# The status an aborted request is "answered" with, as nginx logs it: the answer is never delivered.
CLIENT_CLOSED_REQUEST = 499
# What aiohttp reads of a refused body before closing (so the client sees the answer, not a reset):
# its own default, or less when bodies must arrive faster than that.
MAX_LINGERING_SECONDS = 10.0

log = logging.getLogger(__name__)
BODY_READ_TIMEOUT = web.AppKey("body_read_timeout", float)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a client may hold a connection without using it: `idle_timeout` between requests
    (before the next request's first byte), `read_header_timeout` for a request's headers (from the
    connection's opening for its first request, else from the request's first byte),
    `read_body_timeout` for its whole body (from its headers); at most `max_connections` open at once
    (past it, a new connection is closed as soon as it is accepted)."""

    idle_timeout: float
    read_header_timeout: float
    read_body_timeout: float
    max_connections: int


class ConnectionMetrics:
    """The connections of every listener, by listener name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "tempo_distributor_open_connections",
            "Connections open on a listener",
            ["listener"],
            registry=registry,
        )
        self.refused = Counter(
            "tempo_distributor_connections_refused_total",
            "Connections closed as soon as accepted because the listener had max_connections open",
            ["listener"],
            registry=registry,
        )
        self.accept_failures = Counter(
            "tempo_distributor_accept_failures_total",
            "Connections a listener could not accept for want of file descriptors or memory",
            ["listener"],
            registry=registry,
        )


class _AcceptFailureReport:
    """An event loop exception handler that takes asyncio's reports of one listening socket's failed
    accepts: counts each, logs one line (no traceback) per interval, and hands every other report to
    the handler it replaced."""

    def __init__(
        self,
        listener: str,
        sock: socket.socket,
        metrics: ConnectionMetrics,
        replaced: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
    ) -> None:
        self._listener = listener
        self._fileno = sock.fileno()
        self._failures = metrics.accept_failures.labels(listener)
        self.replaced = replaced
        self._next_log = float("-inf")
        self._unlogged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        failure, failed_socket = context.get("exception"), context.get("socket")
        if (
            isinstance(failure, OSError)
            and failure.errno in _OUT_OF_RESOURCES
            and failed_socket is not None
            and failed_socket.fileno() == self._fileno
        ):
            self._failures.inc()
            self._unlogged += 1
            if loop.time() >= self._next_log:
                log.error(
                    "%s listener cannot accept connections: %s (%d failed accepts; reported at most"
                    " every %ds, counted in tempo_distributor_accept_failures_total)",
                    self._listener,
                    failure.strerror,
                    self._unlogged,
                    ACCEPT_FAILURE_LOG_INTERVAL_SECONDS,
                )
                self._unlogged = 0
                self._next_log = loop.time() + ACCEPT_FAILURE_LOG_INTERVAL_SECONDS
            return
        if self.replaced is not None:
            self.replaced(loop, context)
        else:
            loop.default_exception_handler(context)


class _OpenConnections:
    """One listener's open connections, held under its limit."""

    def __init__(self, listener: str, limit: int, metrics: ConnectionMetrics) -> None:
        self.count = 0
        self._limit = limit
        self._gauge = metrics.open.labels(listener)
        self._refused = metrics.refused.labels(listener)

    def admit(self) -> bool:
        if self.count >= self._limit:
            self._refused.inc()
            return False
        self.count += 1
        self._gauge.inc()
        return True

    def release(self) -> None:
        self.count -= 1
        self._gauge.dec()


class RequestAborted(Exception):
    """The client closed the connection before sending its whole request: there is no one to answer."""


class BodyReadTimeout(RequestAborted):
    """The client did not send its whole body within the body read timeout: as for an abort, the
    handler has nothing to answer; the listener answers 408 and closes the connection."""


async def read_body(request: web.Request) -> bytes:
    """The whole body; RequestAborted when the client goes away before sending it all,
    BodyReadTimeout when it does not send it all in time."""
    if request.content.is_eof():
        # The whole body came with the headers (a small request): no wait, so no timer to arm and
        # cancel (~5 us of a 1-span request's ~100 us).
        return await request.read()
    try:
        async with asyncio.timeout(request.app[BODY_READ_TIMEOUT]):
            return await request.read()
    except TimeoutError:
        raise BodyReadTimeout from None
    except ConnectionError:  # aiohttp fails the body being read with the lost connection's error
        raise RequestAborted from None


class _ConnectionHandler(web.RequestHandler):
    """aiohttp's connection protocol, which bounds only the wait for a request (keepalive_timeout),
    with a deadline for each request's headers, so a client sending them byte by byte (slowloris)
    cannot hold the connection. It reads aiohttp's per-connection count of parsed requests and their
    queue to see where headers end; the connection tests fail if a new aiohttp changes them."""

    __slots__ = ("_admitted", "_connections", "_header_timeout", "_header_timer", "_last_body")

    def __init__(
        self, manager: web.Server, connections: _OpenConnections, *, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections
        self._admitted = False
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_body: StreamReader | None = None  # the body of the last request whose headers came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._admitted = self._connections.admit()
        if not self._admitted:
            transport.close()  # counted, not logged: a flood would otherwise write a line per connection
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        awaiting_headers = self._last_body is None or self._last_body.is_eof()
        if data and self._header_timer is None and awaiting_headers:  # aiohttp also feeds b"" to re-parse
            self._arm_header_timer()  # the first byte of the next request's headers
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
            self._last_body = self._messages[-1][1] if self._messages else None

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._connections.release()
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        log.debug("closing a connection that sent no complete request headers in %ss", self._header_timeout)
        self.force_close()


class _ListenerSite(web.BaseSite):
    """Serves a bound socket with a protocol factory of its own (aiohttp's SockSite takes the
    runner's, which cannot be given the header timeout)."""

    __slots__ = ("_protocol_factory", "_sock")

    def __init__(
        self, runner: web.AppRunner, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol]
    ) -> None:
        super().__init__(runner, backlog=LISTEN_BACKLOG)
        self._sock = sock
        self._protocol_factory = protocol_factory

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol_factory, sock=self._sock, backlog=self._backlog
        )


class HttpListener:
    """Binds at start(); `address` is the (host, port) bound, the real port when the endpoint asks
    for port 0. stop() waits up to `shutdown_timeout` for requests being handled."""

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        routes: list[web.AbstractRouteDef],
        middleware: Middleware,
        shutdown_timeout: float,
        limits: ConnectionLimits,
        connection_metrics: ConnectionMetrics,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        auto_decompress: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self._app = web.Application(client_max_size=max_body_bytes)
        self._app[BODY_READ_TIMEOUT] = limits.read_body_timeout
        self._limits = limits
        self._connections = _OpenConnections(name, limits.max_connections, connection_metrics)
        self._name = name
        self._connection_metrics = connection_metrics
        self._accept_failures: _AcceptFailureReport | None = None
        self._app.middlewares.append(middleware)  # type: ignore[arg-type]
        self._app.add_routes(routes)
        self._shutdown_timeout = shutdown_timeout
        self._auto_decompress = auto_decompress
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> None:
        sock = socket.create_server((self.endpoint.host, self.endpoint.port), backlog=LISTEN_BACKLOG)
        runner = web.AppRunner(
            self._app,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,  # for requests in flight
        )
        await runner.setup()
        server = runner.server
        assert server is not None
        limits, connections, loop = self._limits, self._connections, asyncio.get_running_loop()

        def connection() -> _ConnectionHandler:
            return _ConnectionHandler(
                server,
                connections,
                loop=loop,
                header_timeout=limits.read_header_timeout,
                keepalive_timeout=limits.idle_timeout,
                lingering_time=min(MAX_LINGERING_SECONDS, limits.read_body_timeout),
                access_log=None,
                auto_decompress=self._auto_decompress,
            )

        try:
            await _ListenerSite(runner, sock, connection).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._accept_failures = _AcceptFailureReport(
            self._name, sock, self._connection_metrics, loop.get_exception_handler()
        )
        loop.set_exception_handler(self._accept_failures)
        host, port = sock.getsockname()[:2]
        self.address = (str(host), int(port))

    async def stop_accepting(self) -> None:
        """Close the listening socket; connections already open stay, to finish their requests."""
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()

    async def stop(self, deadline: float) -> None:
        """Close everything, waiting for requests still being handled (up to shutdown_timeout)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        report, self._accept_failures = self._accept_failures, None
        loop = asyncio.get_running_loop()
        if report is not None and loop.get_exception_handler() is report:  # else another one came later
            loop.set_exception_handler(report.replaced)


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"})


# How gRPC calls are labelled in tempo_request_duration_seconds, as Tempo's servers (dskit) label them:
# method "gRPC", route the full method name, status_code success, cancel or error.
GRPC_METHOD_LABEL = "gRPC"
GRPC_SUCCESS, GRPC_CANCEL, GRPC_ERROR = "success", "cancel", "error"


class RequestMetrics:
    """Counts and times every request: HTTP ones by route template (not raw path, to bound
    cardinality) and status, through `middleware`; gRPC calls through `observe_grpc`. A request its
    client aborted has no status, so it is counted apart and not timed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.request_duration = Histogram(
            "tempo_request_duration_seconds",
            "Time (in seconds) spent serving HTTP requests and gRPC calls",
            ["method", "route", "status_code"],
            registry=registry,
        )
        self.requests_aborted = Counter(
            "tempo_distributor_requests_aborted",
            "Requests whose client closed the connection before sending the whole request",
            ["route"],
            registry=registry,
        )
        self.middleware: Middleware = _timing_middleware(self.request_duration, self.requests_aborted)

    def observe_grpc(self, full_method: str, status: str, seconds: float) -> None:
        """One gRPC call: `full_method` like /package.Service/Method, `status` GRPC_SUCCESS,
        GRPC_CANCEL or GRPC_ERROR."""
        self.request_duration.labels(GRPC_METHOD_LABEL, full_method, status).observe(seconds)


def request_metrics_middleware(registry: CollectorRegistry) -> Middleware:
    """The HTTP middleware of a new RequestMetrics on `registry`."""
    return RequestMetrics(registry).middleware


def _timing_middleware(request_duration: Histogram, requests_aborted: Counter) -> Middleware:
    # The histogram's child per (method, route, status): `labels()` costs a few microseconds a request.
    # Bounded: routes are templates, statuses few, and methods outside HTTP's own are labelled "other"
    # (a client may send any token as a method).
    durations: dict[tuple[str, str, int], Any] = {}

    def observe(method: str, route: str, status: int, seconds: float) -> None:
        child = durations.get((method, route, status))
        if child is None:
            child = durations[method, route, status] = request_duration.labels(method, route, str(status))
        child.observe(seconds)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "other"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as err:
            status = err.status
            raise
        except BodyReadTimeout:
            status = 408
            log.debug("%s %s: the body did not arrive in time", request.method, route)
            late = web.Response(status=status, text="the request body did not arrive in time")
            late.force_close()
            return late
        except RequestAborted:
            status = CLIENT_CLOSED_REQUEST
            requests_aborted.labels(route).inc()
            log.debug("%s %s: the client closed the connection before sending it all", request.method, route)
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        finally:
            if status != CLIENT_CLOSED_REQUEST:
                method = request.method if request.method in _HTTP_METHODS else "other"
                observe(method, route, status, time.perf_counter() - started)

    return middleware
