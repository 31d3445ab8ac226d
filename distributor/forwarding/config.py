"""`distributor.forwarders` settings: where accepted traces go, and how they are queued and retried."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FORWARDER_BACKENDS = ("otlpgrpc", "otlphttp")
COMPRESSIONS = ("none", "gzip")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Client TLS, named as in the Collector's exporters. For otlpgrpc, `insecure: true` means plaintext;
    for otlphttp the URL's scheme decides."""

    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name_override: str = ""


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """The Collector's retry_on_failure: exponential backoff (x1.5, +-50% jitter) between attempts."""

    enabled: bool = True
    initial_interval: float = 5.0
    max_interval: float = 30.0
    max_elapsed_time: float = 300.0  # 0 = retry until delivered (or shutdown)


@dataclass(frozen=True, slots=True)
class ForwarderConfig:
    name: str
    backend: str  # one of FORWARDER_BACKENDS
    endpoint: str  # otlpgrpc: host:port; otlphttp: base URL, /v1/traces appended
    traces_endpoint: str = ""  # otlphttp only: the full URL, used as is
    tls: TlsConfig = field(default_factory=TlsConfig)
    headers: tuple[tuple[str, str], ...] = ()
    compression: str = "none"
    timeout: float = 5.0
    queue_size: int = 1000  # requests, per tenant
    workers: int = 4  # concurrent sends, per tenant
    retry: RetryConfig = field(default_factory=RetryConfig)
