"""A gRPC call written frame by frame over HTTP/2 (with h2), to send what no gRPC client sends: a
message whose compressed flag is neither 0 nor 1."""

from __future__ import annotations

import asyncio
import socket
import struct

import h2.config
import h2.connection
import h2.events

from tests.support.senders import EXPORT_PATH


def _call(host: str, port: int, flag: int, message: bytes, tenant: str | None) -> dict[bytes, bytes]:
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection((host, port), timeout=10) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", EXPORT_PATH),
            (":authority", f"{host}:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if tenant is not None:
            headers.append(("x-scope-orgid", tenant))
        connection.send_headers(stream, headers)
        # The gRPC message frame: 1 byte compressed flag, 4 bytes big-endian length, the message.
        frame = bytes([flag]) + struct.pack(">I", len(message)) + message
        size = connection.max_outbound_frame_size  # within the initial flow-control window of 64 KiB
        for start in range(0, len(frame), size):
            end = start + size
            connection.send_data(stream, frame[start:end], end_stream=end >= len(frame))
        sock.sendall(connection.data_to_send())
        answer: dict[bytes, bytes] = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return answer
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    answer.update((bytes(k), bytes(v)) for k, v in event.headers)
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return answer
            sock.sendall(connection.data_to_send())


async def grpc_call_with_flag(
    target: str, flag: int, message: bytes, tenant: str | None = None
) -> tuple[int, str]:
    """(grpc-status, grpc-message) of an Export call whose message frame carries `flag`."""
    host, port = target.rsplit(":", 1)
    answer = await asyncio.to_thread(_call, host, int(port), flag, message, tenant)
    return int(answer[b"grpc-status"]), answer.get(b"grpc-message", b"").decode()
