"""HTTP/1.1 written and read by hand on a socket, for what a client library will not send: header
bytes that are not UTF-8, a body that stops short."""

from __future__ import annotations

import asyncio


def raw_request(method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    """The request's bytes, header values exactly as given, with a Content-Length for the whole `body`."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: distributor"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: its status, headers (lower-case names) and body."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return int(status_line.split()[1]), headers, body


async def exchange(address: tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request on a new connection and read its response."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def abort_upload(address: tuple[str, int], request: bytes) -> None:
    """Send the request's headers and the first half of its body, then close the connection."""
    head_end = request.index(b"\r\n\r\n") + 4
    _, writer = await asyncio.open_connection(*address)
    writer.write(request[: head_end + (len(request) - head_end) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
