"""Configuring forwarders and ingestion limits: the YAML, defaults, and one clear line per mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from distributor.check_config import check_files
from distributor.config import config_as_data, load_config
from distributor.forwarding.clients import CLIENTS
from distributor.forwarding.config import FORWARDER_BACKENDS, ForwarderConfig, RetryConfig, TlsConfig
from distributor.overrides import ConfigError
from tests.support.config_files import write_config_files

ISSUE_EXAMPLE = """\
server:
  http_listen_port: 0
  graceful_shutdown_timeout: 45s
distributor:
  forwarders:
    - name: backend
      backend: otlpgrpc            # or otlphttp
      otlpgrpc: {endpoint: 127.0.0.1:14317, tls: {insecure: true}, headers: {}}
      queue_size: 1000             # requests
      workers: 4
      retry: {initial_interval: 1s, max_interval: 30s, max_elapsed_time: 5m}
    - name: archive
      backend: otlphttp
      otlphttp:
        endpoint: https://traces.example.com:4318
        headers: {Authorization: Bearer s3cret}
        compression: gzip
        timeout: 10s
        tls: {ca_file: ca.pem, insecure_skip_verify: false}
overrides:
  defaults:
    forwarders: [backend]          # per tenant, like Tempo
    ingestion: {rate_limit_bytes: 1000000, burst_size_bytes: 2000000, max_attribute_bytes: 512}
"""


def test_the_issue_example_loads_with_its_values(tmp_path: Path) -> None:
    config = load_config(write_config_files(tmp_path, ISSUE_EXAMPLE))
    assert config.server.graceful_shutdown_timeout == 45.0
    backend, archive = config.forwarders
    assert backend == ForwarderConfig(
        name="backend",
        backend="otlpgrpc",
        endpoint="127.0.0.1:14317",
        tls=TlsConfig(insecure=True),
        queue_size=1000,
        workers=4,
        retry=RetryConfig(initial_interval=1.0, max_interval=30.0, max_elapsed_time=300.0),
    )
    assert archive.backend == "otlphttp"
    assert archive.headers == (("Authorization", "Bearer s3cret"),)
    assert (archive.compression, archive.timeout) == ("gzip", 10.0)
    assert archive.tls.ca_file == (tmp_path / "ca.pem").resolve(), "relative to the config file"
    defaults = config.overrides.defaults
    assert defaults.forwarders == ("backend",)
    assert (
        defaults.ingestion.rate_limit_bytes,
        defaults.ingestion.burst_size_bytes,
        defaults.ingestion.max_attribute_bytes,
    ) == (1_000_000, 2_000_000, 512)


def test_defaults_follow_tempo_and_the_collector(tmp_path: Path) -> None:
    config = load_config(write_config_files(tmp_path, "server: {http_listen_port: 0}\n"))
    assert config.forwarders == ()
    assert config.server.graceful_shutdown_timeout == 30.0
    data = config_as_data(config)
    assert data["overrides"]["defaults"]["ingestion"] == {
        "rate_strategy": "local",
        "rate_limit_bytes": 15_000_000,
        "burst_size_bytes": 20_000_000,
        "max_attribute_bytes": 2048,
    }
    assert data["overrides"]["defaults"]["forwarders"] == []
    retry = RetryConfig()
    assert (retry.enabled, retry.initial_interval, retry.max_interval, retry.max_elapsed_time) == (
        True,
        5.0,
        30.0,
        300.0,
    )


def test_queued_bytes_are_bounded_by_default_and_shown_in_status_config(tmp_path: Path) -> None:
    edited = ISSUE_EXAMPLE.replace(
        "queue_size: 1000",
        "queue_size: 1000\n      queue_size_bytes: 1000000\n      total_queue_size_bytes: 3000000",
    )
    config = load_config(write_config_files(tmp_path, edited))
    backend, archive = config.forwarders
    assert (backend.queue_size_bytes, backend.total_queue_size_bytes) == (1_000_000, 3_000_000)
    assert (archive.queue_size_bytes, archive.total_queue_size_bytes) == (64 * 1024 * 1024, 256 * 1024 * 1024)
    shown_backend, shown_archive = config_as_data(config)["distributor"]["forwarders"]
    assert (shown_backend["queue_size_bytes"], shown_backend["total_queue_size_bytes"]) == (
        1_000_000,
        3_000_000,
    )
    assert shown_archive["queue_size_bytes"] == 64 * 1024 * 1024
    assert shown_archive["total_queue_size_bytes"] == 256 * 1024 * 1024


def test_status_config_masks_forwarder_headers(tmp_path: Path) -> None:
    data = config_as_data(load_config(write_config_files(tmp_path, ISSUE_EXAMPLE)))
    archive = data["distributor"]["forwarders"][1]
    assert archive["otlphttp"]["headers"] == {"Authorization": "<secret>"}
    assert "s3cret" not in yaml.safe_dump(data)
    assert data["server"]["graceful_shutdown_timeout"] == "45s"


BAD_FORWARDERS = [
    ("no name", ("- name: backend\n", "- name: ''\n"), "distributor.forwarders[0].name", "needs a name"),
    ("unknown backend", ("backend: otlpgrpc ", "backend: kafka "), "backend", "expected one of otlpgrpc"),
    (
        "settings under the other backend",
        ("otlpgrpc: {endpoint", "otlphttp: {endpoint"),
        "distributor.forwarders[0].otlphttp",
        "configure it under `otlpgrpc`",
    ),
    ("no endpoint", ("endpoint: 127.0.0.1:14317, ", ""), "otlpgrpc.endpoint", "host:port is required"),
    (
        "otlphttp without a scheme",
        ("https://traces.example.com:4318", "traces.example.com:4318"),
        "otlphttp.endpoint",
        "http:// or https:// URL",
    ),
    ("duplicate name", ("- name: archive", "- name: backend"), "forwarders[1].name", "used twice"),
    ("zero queue", ("queue_size: 1000", "queue_size: 0"), "queue_size", "at least 1"),
    ("zero workers", ("workers: 4", "workers: 0"), "workers", "at least 1"),
    (
        "zero queued bytes",
        ("queue_size: 1000", "queue_size: 1000\n      queue_size_bytes: 0"),
        "queue_size_bytes",
        "at least 1",
    ),
    (
        "queued bytes of all tenants below one tenant's",
        (
            "queue_size: 1000",
            "queue_size: 1000\n      queue_size_bytes: 2000\n      total_queue_size_bytes: 1999",
        ),
        "distributor.forwarders[0].total_queue_size_bytes",
        "at least queue_size_bytes",
    ),
    ("bad compression", ("compression: gzip", "compression: zstd"), "compression", "expected one of"),
    (
        "tenant header set by hand",
        ("headers: {Authorization", "headers: {X-Scope-OrgID: x, Authorization"),
        "headers",
        "tenant header",
    ),
    (
        "max_interval below initial_interval",
        ("max_interval: 30s", "max_interval: 500ms"),
        "retry.max_interval",
        "at least initial_interval",
    ),
    ("unknown retry key", ("max_elapsed_time: 5m", "max_elapsed: 5m"), "retry.max_elapsed", "unknown key"),
    (
        "unknown forwarder in the defaults",
        ("forwarders: [backend]", "forwarders: [backend, nope]"),
        "overrides.defaults.forwarders",
        "unknown forwarder 'nope'",
    ),
    (
        "negative rate limit",
        ("rate_limit_bytes: 1000000", "rate_limit_bytes: -1"),
        "ingestion.rate_limit_bytes",
        "at least 0",
    ),
    (
        "unknown ingestion key",
        ("max_attribute_bytes: 512", "max_attr_bytes: 512"),
        "ingestion.max_attr_bytes",
        "unknown key",
    ),
    (
        "bad shutdown timeout",
        ("graceful_shutdown_timeout: 45s", "graceful_shutdown_timeout: soon"),
        "server.graceful_shutdown_timeout",
        "invalid duration",
    ),
]


@pytest.mark.parametrize(
    ("name", "edit", "key", "problem"), BAD_FORWARDERS, ids=[c[0] for c in BAD_FORWARDERS]
)
def test_bad_forwarder_configuration_is_refused_naming_line_and_key(
    tmp_path: Path, name: str, edit: tuple[str, str], key: str, problem: str
) -> None:
    assert edit[0] in ISSUE_EXAMPLE
    path = write_config_files(tmp_path, ISSUE_EXAMPLE.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert re.match(rf"{re.escape(str(path))}:\d+: ", message), message
    assert key in message and problem in message, message


def test_per_tenant_file_may_only_name_configured_forwarders(tmp_path: Path) -> None:
    config = write_config_files(
        tmp_path,
        ISSUE_EXAMPLE + "  per_tenant_override_config: overrides.yaml\n",
        "overrides:\n  acme:\n    forwarders: [archive]\n  beta:\n    forwarders: [backend, elsewhere]\n",
    )
    problems, _ = check_files(config, None)
    assert [str(problem) for problem in problems] == [
        f"{tmp_path / 'overrides.yaml'}:5: overrides.beta.forwarders[1]: unknown forwarder 'elsewhere' "
        "(distributor.forwarders: archive, backend)"
    ]


def test_a_tenant_may_forward_nowhere(tmp_path: Path) -> None:
    """`forwarders: []` in a tenant's entry overrides the defaults: measured, not forwarded."""
    from distributor.overrides.loading import parse_per_tenant_file

    config = load_config(write_config_files(tmp_path, ISSUE_EXAMPLE))
    snapshot = parse_per_tenant_file(
        b"overrides:\n  acme:\n    forwarders: []\n",
        "overrides.yaml",
        config.overrides.defaults,
        forwarder_names=["backend", "archive"],
    )
    assert snapshot.for_tenant("acme").forwarders == ()
    assert snapshot.for_tenant("other").forwarders == ("backend",)
    assert snapshot.for_tenant("acme").rate_limit_bytes == 1_000_000, "other fields still inherit"


def test_every_configurable_backend_has_a_client() -> None:
    assert set(CLIENTS) == set(FORWARDER_BACKENDS)


PERSISTENT = """\
distributor:
  forwarders:
    - {name: backend, backend: otlpgrpc, otlpgrpc: {endpoint: '127.0.0.1:1'}, delivery: persistent}
    - name: archive
      backend: otlphttp
      otlphttp: {endpoint: 'http://127.0.0.1:1'}
      delivery: persistent
      persistent_queue: {path: QUEUE}
"""


def test_a_persistent_queue_defaults_to_a_directory_per_forwarder_beside_the_config_file(
    tmp_path: Path,
) -> None:
    config = load_config(write_config_files(tmp_path, PERSISTENT.replace("QUEUE", "queues/archive")))
    backend, archive = config.forwarders
    assert backend.persistent_queue.path == tmp_path / "data" / "forwarder-queues" / "backend"
    assert archive.persistent_queue.path == tmp_path / "queues" / "archive"
    assert (backend.persistent_queue.max_size_bytes, backend.persistent_queue.segment_size_bytes) == (
        1024 * 1024 * 1024,
        64 * 1024 * 1024,
    )


def test_two_persistent_forwarders_may_not_share_a_queue_directory(tmp_path: Path) -> None:
    shared = PERSISTENT.replace("QUEUE", "data/forwarder-queues/backend")
    with pytest.raises(ConfigError, match="forwarders 'backend' and 'archive' share the persistent queue"):
        load_config(write_config_files(tmp_path, shared))
