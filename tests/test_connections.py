"""How long a client may hold a connection of the server port or the OTLP/HTTP receiver without
using it (idle between requests, sending headers, sending a body), and how many it may open.
Raw sockets, short timeouts, small limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource

import pytest

from distributor.common.endpoint import Endpoint
from distributor.config import Config
from distributor.receivers.config import OtlpHttpConfig
from distributor.server.config import ServerConfig
from tests.support.metrics import sample_value, total
from tests.support.otlp import sample_request
from tests.support.polling import eventually
from tests.support.raw_http import raw_request, read_response
from tests.support.service import RunningService, StartService, assert_nothing_recorded, make_config

LISTENERS = ("server", "otlp_http")
PARTIAL_HEADERS = b"POST /v1/traces HTTP/1.1\r\nHost: distributor\r\nContent-Type: application/x-"


def with_timeouts(
    idle: float = 5.0, header: float = 5.0, body: float = 5.0, max_connections: int = 100
) -> Config:
    """Both HTTP listeners with these timeouts and this connection limit."""
    return make_config(
        server=ServerConfig(
            "127.0.0.1",
            0,
            http_server_idle_timeout=idle,
            http_server_read_header_timeout=header,
            http_server_read_body_timeout=body,
            http_listen_conn_limit=max_connections,
        ),
        otlp_http=OtlpHttpConfig(
            endpoint=Endpoint("127.0.0.1", 0),
            idle_timeout=idle,
            read_header_timeout=header,
            read_body_timeout=body,
            max_connections=max_connections,
        ),
    )


def address(running: RunningService, listener: str) -> tuple[str, int]:
    found = running.service.server_address if listener == "server" else running.service.otlp_http_address
    assert found is not None
    return found


def valid_request(listener: str) -> bytes:
    if listener == "server":
        return raw_request("GET", "/ready", {})
    body = sample_request().SerializeToString()
    return raw_request("POST", "/v1/traces", {"Content-Type": b"application/x-protobuf"}, body)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes the connection (bounded, so a connection left open fails)."""
    return await asyncio.wait_for(reader.read(), 10) == b""


@pytest.mark.parametrize("listener", LISTENERS)
async def test_a_connection_sending_nothing_is_closed_after_the_header_timeout(
    start_service: StartService, listener: str
) -> None:
    running = await start_service(with_timeouts(idle=5.0, header=0.2))
    loop = asyncio.get_running_loop()
    opened = loop.time()
    reader, writer = await asyncio.open_connection(*address(running, listener))
    try:
        assert await closed_by_server(reader)
        assert 0.2 <= loop.time() - opened < 2.5, "closed by the header timeout, not the idle one"
    finally:
        writer.close()


@pytest.mark.parametrize("listener", LISTENERS)
async def test_a_connection_trickling_its_headers_is_closed_after_the_header_timeout(
    start_service: StartService, listener: str
) -> None:
    running = await start_service(with_timeouts(idle=5.0, header=0.2))
    loop = asyncio.get_running_loop()
    opened = loop.time()
    reader, writer = await asyncio.open_connection(*address(running, listener))
    try:
        with contextlib.suppress(ConnectionError):
            for byte in PARTIAL_HEADERS:  # slowloris: a byte every 50 ms, never the end of the headers
                if reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        assert await closed_by_server(reader)
        assert loop.time() - opened < 2.5, "closed by the header timeout, not the idle one"
    finally:
        writer.close()


@pytest.mark.parametrize("listener", LISTENERS)
async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    start_service: StartService, listener: str
) -> None:
    running = await start_service(with_timeouts(idle=0.3))
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(*address(running, listener))
    try:
        writer.write(valid_request(listener))
        status, headers, _ = await read_response(reader)
        answered = loop.time()
        assert status == 200 and headers.get("connection", "").lower() != "close"
        assert await closed_by_server(reader)
        assert loop.time() - answered >= 0.3
    finally:
        writer.close()


@pytest.mark.parametrize("listener", LISTENERS)
async def test_the_header_timeout_counts_from_the_next_requests_first_byte_not_from_the_last_answer(
    start_service: StartService, listener: str
) -> None:
    running = await start_service(with_timeouts(idle=5.0, header=0.2))
    reader, writer = await asyncio.open_connection(*address(running, listener))
    try:
        writer.write(valid_request(listener))
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(0.3)  # idle past the header timeout, well within the idle timeout
        writer.write(valid_request(listener))
        assert (await read_response(reader))[0] == 200
    finally:
        writer.close()


async def test_a_body_arriving_slower_than_the_body_timeout_is_answered_408_and_the_connection_closed(
    start_service: StartService,
) -> None:
    running = await start_service(with_timeouts(body=0.2))
    body = sample_request().SerializeToString()
    request = raw_request("POST", "/v1/traces", {"Content-Type": b"application/x-protobuf"}, body)
    reader, writer = await asyncio.open_connection(*address(running, "otlp_http"))
    try:
        writer.write(request[: request.index(b"\r\n\r\n") + 4 + 10])  # the headers and 10 bytes of body
        status, headers, _ = await read_response(reader)
        assert (status, headers["connection"].lower()) == (408, "close")
        assert await closed_by_server(reader)
    finally:
        writer.close()
    await assert_nothing_recorded(running)
    samples = await running.samples()
    assert total(samples, "tempo_request_duration_seconds_count", route="/v1/traces", status_code="408") == 1


async def served(address: tuple[str, int], listener: str) -> asyncio.StreamWriter:
    """A new connection that has been answered once (so the listener has admitted it), left open."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(valid_request(listener))
    assert (await read_response(reader))[0] == 200
    return writer


@pytest.mark.parametrize("listener", LISTENERS)
async def test_a_connection_past_the_listeners_limit_is_closed_at_once_until_one_closes(
    start_service: StartService, listener: str
) -> None:
    running = await start_service(with_timeouts(max_connections=2))
    listening = address(running, listener)
    held = [await served(listening, listener), await served(listening, listener)]
    reader, writer = await asyncio.open_connection(*listening)
    try:
        assert await closed_by_server(reader)
    finally:
        writer.close()
    held.pop().close()

    async def a_new_connection_is_served() -> bool:
        reader, writer = await asyncio.open_connection(*listening)
        try:
            writer.write(valid_request(listener))
            return bool(await reader.read(12) == b"HTTP/1.1 200")
        finally:
            writer.close()

    await eventually(a_new_connection_is_served, "a connection served once one closed", timeout=5)
    held[0].close()


async def test_open_and_refused_connections_are_counted_per_listener(start_service: StartService) -> None:
    config = with_timeouts(max_connections=1)
    running = await start_service(
        make_config(server=ServerConfig("127.0.0.1", 0), otlp_http=config.otlp_http)
    )
    listening = address(running, "otlp_http")
    held = await served(listening, "otlp_http")
    for _ in range(3):
        reader, writer = await asyncio.open_connection(*listening)
        assert await closed_by_server(reader)
        writer.close()
    samples = await running.samples()
    assert sample_value(samples, "tempo_distributor_open_connections", listener="otlp_http") == 1
    assert sample_value(samples, "tempo_distributor_connections_refused_total", listener="otlp_http") == 3
    held.close()

    async def none_open() -> bool:
        samples = await running.samples()
        return sample_value(samples, "tempo_distributor_open_connections", listener="otlp_http") == 0

    await eventually(none_open, "the closed connection no longer counted as open", timeout=5)


async def test_accepts_failing_for_want_of_file_descriptors_are_counted_and_logged_once_without_traceback(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_service(with_timeouts())
    listening = address(running, "otlp_http")

    def accept_failures() -> float:
        found = running.service.registry.get_sample_value(
            "tempo_distributor_accept_failures_total", {"listener": "otlp_http"}
        )
        return found or 0.0

    clients: list[asyncio.StreamWriter] = []
    fillers: list[int] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # A few descriptors above the highest open one, so that there are always some to take and give back.
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))) + 9, hard))
    try:
        with contextlib.suppress(OSError):
            while True:  # take every free descriptor below the limit...
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        for _ in range(4):  # ...but a few: each connection takes one for the client, one accepted
            os.close(fillers.pop())
        for _ in range(50):
            try:
                clients.append((await asyncio.open_connection(*listening))[1])
            except OSError:  # the client got the last descriptor: free one for the next to take
                clients.pop().close()
            for _ in range(5):
                await asyncio.sleep(0)  # the listener's accept
            if accept_failures():
                break
        # asyncio tries the rest of the backlog, and again every second while descriptors stay exhausted.
        await eventually(lambda: accept_failures() >= 2, "failed accepts counted", timeout=5)
    finally:
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    reports = [record for record in caplog.records if "cannot accept connections" in record.getMessage()]
    assert len(reports) == 1 and "Too many open files" in reports[0].getMessage()
    assert [record for record in caplog.records if record.exc_info] == []
    for writer in clients:
        writer.close()
    (await served(listening, "otlp_http")).close()  # accepting again once descriptors are free
