"""Serving an aiohttp application on one TCP endpoint (the server port, the OTLP/HTTP receiver), with
the request metrics every listener keeps."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from distributor.common.endpoint import Endpoint

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

DEFAULT_MAX_BODY_BYTES = 1024**2  # aiohttp's own default
# The status an aborted request is "answered" with, as nginx logs it: the answer is never delivered.
CLIENT_CLOSED_REQUEST = 499

log = logging.getLogger(__name__)


class RequestAborted(Exception):
    """The client closed the connection before sending its whole request: there is no one to answer."""


async def read_body(request: web.Request) -> bytes:
    """The whole body; RequestAborted when the client goes away before sending it all."""
    try:
        return await request.read()
    except ConnectionError:  # aiohttp fails the body being read with the lost connection's error
        raise RequestAborted from None


class HttpListener:
    """Binds at start(); `address` is the (host, port) bound, the real port when the endpoint asks
    for port 0. stop() waits up to `shutdown_timeout` for requests being handled."""

    def __init__(
        self,
        endpoint: Endpoint,
        routes: list[web.AbstractRouteDef],
        middleware: Middleware,
        shutdown_timeout: float,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        auto_decompress: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self._app = web.Application(client_max_size=max_body_bytes)
        self._app.middlewares.append(middleware)  # type: ignore[arg-type]
        self._app.add_routes(routes)
        self._shutdown_timeout = shutdown_timeout
        self._auto_decompress = auto_decompress
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> None:
        sock = socket.create_server((self.endpoint.host, self.endpoint.port), backlog=1024)
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            auto_decompress=self._auto_decompress,
            shutdown_timeout=self._shutdown_timeout,  # for requests in flight
        )
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
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


def request_metrics_middleware(registry: CollectorRegistry) -> Middleware:
    """Counts and times every request by route template (not raw path, to bound cardinality); a
    request its client aborted has no status, so it is counted apart and not timed."""
    request_duration = Histogram(
        "tempo_request_duration_seconds",
        "Time (in seconds) spent serving HTTP requests",
        ["method", "route", "status_code"],
        registry=registry,
    )
    requests_aborted = Counter(
        "tempo_distributor_requests_aborted",
        "Requests whose client closed the connection before sending the whole request",
        ["route"],
        registry=registry,
    )

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
        except RequestAborted:
            status = CLIENT_CLOSED_REQUEST
            requests_aborted.labels(route).inc()
            log.debug("%s %s: the client closed the connection before sending it all", request.method, route)
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        finally:
            if status != CLIENT_CLOSED_REQUEST:
                request_duration.labels(request.method, route, str(status)).observe(
                    time.perf_counter() - started
                )

    return middleware
