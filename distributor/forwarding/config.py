"""`distributor.forwarders` settings: where accepted traces go, and how they are queued and retried."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from distributor.common.config_fields import (
    SECRET,
    read_settings,
    render_settings,
    setting,
    setting_keys,
    settings,
)
from distributor.common.config_reader import Section, read_entries
from distributor.common.url_masking import mask_url

FORWARDER_BACKENDS = ("otlpgrpc", "otlphttp")
# What a 200 means for a forwarder: queued in memory; delivered; or written to its on-disk queue.
QUEUED, SYNCHRONOUS, PERSISTENT = "queued", "synchronous", "persistent"
DELIVERY_MODES = (QUEUED, SYNCHRONOUS, PERSISTENT)
COMPRESSIONS = ("none", "gzip")
# The client settings of a forwarder sit in a sub-section named after its backend.
CLIENT = "client"
MIB = 1024 * 1024


def _file_or_blank(path: Path | None) -> str:
    return str(path or "")


@settings
class TlsConfig:
    """Client TLS, named as in the Collector's exporters. For otlpgrpc, `insecure: true` means plaintext;
    for otlphttp the URL's scheme decides."""

    insecure: bool = setting(default=False)
    insecure_skip_verify: bool = setting(default=False)
    ca_file: Path | None = setting(default=None, blank_is_default=True, render=_file_or_blank)
    cert_file: Path | None = setting(default=None, blank_is_default=True, render=_file_or_blank)
    key_file: Path | None = setting(default=None, blank_is_default=True, render=_file_or_blank)
    server_name_override: str = setting(default="")


@settings
class RetryConfig:
    """The Collector's retry_on_failure: exponential backoff (x1.5, +-50% jitter) between attempts."""

    enabled: bool = setting(default=True)
    initial_interval: float = setting(default=5.0, positive=True)
    max_interval: float = setting(default=30.0)
    max_elapsed_time: float = setting(default=300.0)  # 0 = retry until delivered (or shutdown)


@settings
class PersistentQueueConfig:
    """The on-disk queue of a forwarder with `delivery: persistent`: one directory per forwarder."""

    # Default: data/forwarder-queues/<forwarder name>, relative to the config file.
    path: Path | None = setting(default=None, blank_is_default=True, render=_file_or_blank)
    max_size_bytes: int = setting(default=1024 * MIB, positive=True)  # segments on disk, all tenants
    segment_size_bytes: int = setting(default=64 * MIB, positive=True)


def _read_headers(client: Section, key: str) -> tuple[tuple[str, str], ...]:
    section = client.section(key, None)
    headers: list[tuple[str, str]] = []
    for name, value in section.items():
        if not isinstance(value.value, str):
            section.fail_at(value, f"expected a string header value, got {value.value!r}")
        elif name.lower() == "x-scope-orgid":
            section.fail_at(value, "the tenant header is set from each request's tenant")
        else:
            headers.append((name, value.value))
    return tuple(headers)


def _masked_headers(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    # Header values are often credentials.
    return {name: SECRET for name, _ in headers}


@settings
class ForwarderConfig:
    name: str = setting()
    backend: str = setting()  # one of FORWARDER_BACKENDS
    # otlpgrpc: host:port; otlphttp: base URL, /v1/traces appended. URLs may carry credentials.
    endpoint: str = setting(within=CLIENT, render=mask_url)
    # otlphttp only: the full URL, used as is
    traces_endpoint: str = setting(default="", within=CLIENT, render=mask_url)
    tls: TlsConfig = setting(default_factory=TlsConfig, within=CLIENT)
    headers: tuple[tuple[str, str], ...] = setting(
        default=(), within=CLIENT, read=_read_headers, render=_masked_headers
    )
    compression: str = setting(default="none", within=CLIENT, choices=COMPRESSIONS)
    timeout: float = setting(default=5.0, within=CLIENT, positive=True)
    queue_size: int = setting(default=1000, positive=True)  # requests, per tenant
    # Payload bytes waiting or being sent, per tenant and over all tenants: what bounds memory.
    queue_size_bytes: int = setting(default=64 * MIB, positive=True)
    total_queue_size_bytes: int = setting(default=256 * MIB, positive=True)
    workers: int = setting(default=4, positive=True)  # concurrent sends, per tenant
    # A tenant's queue and workers are released once it has had nothing queued or being sent for
    # this long; its next request makes them anew.
    idle_tenant_timeout: float = setting(default=300.0, positive=True)
    retry: RetryConfig = setting(default_factory=RetryConfig)
    delivery: str = setting(default=QUEUED, choices=DELIVERY_MODES)
    persistent_queue: PersistentQueueConfig = setting(default_factory=PersistentQueueConfig)


DEFAULT_QUEUE_DIRECTORY = Path("data/forwarder-queues")


def parse_forwarders(distributor: Section) -> tuple[ForwarderConfig, ...]:
    """`distributor.forwarders`: a list of forwarders, each named once (overrides refer to the names)."""
    forwarders = read_entries(
        distributor,
        "forwarders",
        setting_keys(ForwarderConfig, groups={CLIENT: FORWARDER_BACKENDS}),
        "expected a list of forwarders",
        _forwarder,
        unique_by=lambda forwarder: forwarder.name,
        duplicate=("name", lambda forwarder: f"forwarder name {forwarder.name!r} is used twice"),
    )
    queue_paths: dict[Path, str] = {}
    for forwarder in forwarders:
        if forwarder.delivery != PERSISTENT:
            continue
        path = queue_path(forwarder)
        if path in queue_paths:
            distributor.fail(
                "forwarders",
                f"forwarders {queue_paths[path]!r} and {forwarder.name!r} share the persistent queue "
                f"directory {path}: each needs its own",
            )
        queue_paths[path] = forwarder.name
    return forwarders


def queue_path(forwarder: ForwarderConfig) -> Path:
    """The directory of a persistent forwarder's on-disk queue (set when the forwarder is read)."""
    path = forwarder.persistent_queue.path
    return path if path is not None else (DEFAULT_QUEUE_DIRECTORY / forwarder.name).resolve()


def _forwarder(entry: Section) -> ForwarderConfig | None:
    name = entry.string("name", "")
    if not name:
        entry.fail("name", "every forwarder needs a name (overrides refer to it)")
        return None
    backend = _backend(entry)
    if backend is None:
        return None
    forwarder = read_settings(
        entry, ForwarderConfig, given={"name": name, "backend": backend}, groups={CLIENT: backend}
    )
    client = entry.reopened(backend)
    _check_endpoints(client, forwarder)
    _check_tls(client.reopened("tls"), forwarder.tls)
    _check_retry(entry.reopened("retry"), forwarder.retry)
    _check_queue_bytes(entry, forwarder)
    if entry.has("persistent_queue") and forwarder.delivery != PERSISTENT:
        entry.fail("persistent_queue", "only for `delivery: persistent`")
    if forwarder.delivery == PERSISTENT and forwarder.persistent_queue.path is None:
        # Like every relative path of the file, relative to the file's folder.
        path = (Path(entry.file).parent / DEFAULT_QUEUE_DIRECTORY / name).resolve()
        queue = dataclasses.replace(forwarder.persistent_queue, path=path)
        forwarder = dataclasses.replace(forwarder, persistent_queue=queue)
    return forwarder


def _backend(entry: Section) -> str | None:
    backend = entry.string("backend", "")
    if backend not in FORWARDER_BACKENDS:
        entry.fail("backend", f"expected one of {', '.join(FORWARDER_BACKENDS)}, got {backend!r}")
        return None
    for other in FORWARDER_BACKENDS:
        if other != backend and entry.has(other):
            entry.fail(other, f"this forwarder's backend is {backend}: configure it under `{backend}`")
    return backend


def _check_endpoints(client: Section, forwarder: ForwarderConfig) -> None:
    if forwarder.backend == "otlphttp":
        for key in ("endpoint", "traces_endpoint"):
            url = getattr(forwarder, key)
            if url and not url.startswith(("http://", "https://")):
                client.fail(key, f"expected an http:// or https:// URL, got {mask_url(url)!r}")
        if not forwarder.endpoint and not forwarder.traces_endpoint:
            client.fail("endpoint", "the backend's URL is required, e.g. http://127.0.0.1:4318")
        return
    if forwarder.traces_endpoint:
        client.fail("traces_endpoint", "only for otlphttp")
    if not forwarder.endpoint.removeprefix("http://").removeprefix("https://"):
        client.fail("endpoint", "the backend's host:port is required, e.g. 127.0.0.1:4317")


def _check_tls(section: Section, tls: TlsConfig) -> None:
    if (tls.cert_file is None) != (tls.key_file is None):
        section.fail("cert_file", "cert_file and key_file go together")


def _check_retry(section: Section, retry: RetryConfig) -> None:
    if retry.max_interval < retry.initial_interval:
        section.fail("max_interval", "must be at least initial_interval")


def _check_queue_bytes(entry: Section, forwarder: ForwarderConfig) -> None:
    if forwarder.total_queue_size_bytes < forwarder.queue_size_bytes:
        entry.fail("total_queue_size_bytes", "must be at least queue_size_bytes")


def forwarder_as_data(forwarder: ForwarderConfig) -> dict[str, Any]:
    data = render_settings(forwarder, groups={CLIENT: forwarder.backend})
    if forwarder.delivery == PERSISTENT:
        data["persistent_queue"]["path"] = str(queue_path(forwarder))
    else:
        del data["persistent_queue"]
    if not forwarder.traces_endpoint:
        del data[forwarder.backend]["traces_endpoint"]  # otlphttp's alternative to endpoint, when used
    return data
