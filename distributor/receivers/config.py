"""`distributor.receivers.otlp` settings: the OTLP/HTTP and OTLP/gRPC listeners."""

from __future__ import annotations

from dataclasses import dataclass

from distributor.common.endpoint import Endpoint

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class OtlpHttpConfig:
    endpoint: Endpoint = Endpoint("127.0.0.1", 4318)
    max_request_body_bytes: int = 20 * MIB


@dataclass(frozen=True, slots=True)
class OtlpGrpcConfig:
    endpoint: Endpoint = Endpoint("127.0.0.1", 4317)
    max_recv_msg_size_bytes: int = 4 * MIB
