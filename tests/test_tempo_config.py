"""A whole Tempo configuration: what this service implements is read under Tempo's names (including
Tempo's legacy flat overrides), the rest is accepted with one warning each; typos stay errors."""

from __future__ import annotations

import errno
import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
import yaml

from distributor.check_config import check
from distributor.config import config_as_data, default_config, differences, load_config
from distributor.overrides import ConfigError, OverridesSnapshot
from distributor.service import Service
from tests.support.cli import run_cli
from tests.support.config_files import write_config_files
from tests.support.otlp import batch, request, span
from tests.support.senders import export_traces

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEMPO_CONFIG = "tempo.yaml"
TEMPO_OVERRIDES = "tempo-overrides.yaml"

# What a full Tempo configuration holds for components this service does not have, or settings of
# Tempo's it does not use: each one is named in a warning, none is an error.
IGNORED_IN_TEMPO_CONFIG = [
    "target",
    "stream_over_http_enabled",
    "server.grpc_listen_port",
    "server.grpc_server_max_recv_msg_size",
    "server.http_server_read_timeout",
    "usage_report",
    "distributor.log_received_spans",
    "ingester",
    "querier",
    "query_frontend",
    "compactor",
    "metrics_generator",
    "storage",
    "memberlist",
    "overrides.defaults.ingestion.max_traces_per_user",
    "overrides.defaults.metrics_generator",
    "overrides.defaults.global",
]
IGNORED_IN_TEMPO_OVERRIDES = [
    "overrides.*.max_traces_per_user",  # and in acme's entry: one note for both
    "overrides.acme.max_bytes_per_trace",
    "overrides.acme.metrics_generator_processors",
    "overrides.acme.block_retention",
    "overrides.beta.ingestion.max_traces_per_user",
]


def tempo_files(directory: Path, ephemeral_ports: bool = False) -> Path:
    """The Tempo configuration and its legacy-format per-tenant file, copied into `directory`; with
    `ephemeral_ports`, every listener on 127.0.0.1 port 0."""
    shutil.copy(FIXTURES / TEMPO_OVERRIDES, directory / TEMPO_OVERRIDES)
    text = (FIXTURES / TEMPO_CONFIG).read_text()
    if ephemeral_ports:
        text = text.replace("http_listen_port: 3200", "http_listen_port: 0")
        text = text.replace("127.0.0.1:4317", "127.0.0.1:0").replace("127.0.0.1:4318", "127.0.0.1:0")
    path = directory / TEMPO_CONFIG
    path.write_text(text)
    return path


def in_force(path: Path) -> OverridesSnapshot:
    return Service(load_config(path)).overrides.snapshot


# A full tempo.yaml


def test_a_full_tempo_configuration_loads_and_its_settings_under_tempos_names_are_honoured(
    tmp_path: Path,
) -> None:
    path = tempo_files(tmp_path)
    result = check(path, None)
    assert result.problems == []
    config = result.config
    assert config is not None
    assert config.multitenancy_enabled
    assert (config.server.log_level, config.server.log_format) == ("warn", "json")
    assert config.server.graceful_shutdown_timeout == 20.0
    assert config.otlp_http is not None and str(config.otlp_http.endpoint) == "127.0.0.1:4318"
    assert config.otlp_grpc is not None and str(config.otlp_grpc.endpoint) == "127.0.0.1:4317"
    assert (config.cost_attribution.max_cardinality, config.cost_attribution.stale_duration) == (5000, 600.0)
    assert config.overrides.per_tenant_override_config == tmp_path / TEMPO_OVERRIDES
    assert config.overrides.per_tenant_override_period == 30.0
    unlisted = in_force(path).for_tenant("someone")
    assert [d.label for d in unlisted.dimensions] == ["service"]
    # "*" sets the rate in the legacy format; the burst comes from the defaults.
    assert (unlisted.rate_limit_bytes, unlisted.burst_size_bytes) == (20_000_000, 40_000_000)


def test_every_ignored_section_and_setting_is_named_once_with_its_line(tmp_path: Path) -> None:
    path = tempo_files(tmp_path)
    result = check(path, None)
    overrides = tmp_path / TEMPO_OVERRIDES
    lines = path.read_text().splitlines()
    assert [note.key for note in result.notes if note.file == str(path)] == IGNORED_IN_TEMPO_CONFIG
    assert [note.key for note in result.notes if note.file == str(overrides)] == IGNORED_IN_TEMPO_OVERRIDES
    for note in result.notes:
        assert "ignored: " in note.text
        if note.file == str(path):
            assert note.line is not None
            assert lines[note.line - 1].lstrip().startswith(note.key.rsplit(".", 1)[-1] + ":")
    wildcard = next(note for note in result.notes if note.key == "overrides.*.max_traces_per_user")
    assert wildcard.text.endswith("(and in 1 more tenant)")
    honoured = {"server.log_level", "server.log_format", "overrides.defaults.ingestion.rate_strategy"}
    assert not honoured & {note.key for note in result.notes}


def test_check_config_takes_tempos_flag_and_lists_the_ignored_settings_as_notes(tmp_path: Path) -> None:
    path = tempo_files(tmp_path)
    result = run_cli("check-config", "-config.file", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(IGNORED_IN_TEMPO_CONFIG) + len(IGNORED_IN_TEMPO_OVERRIDES)
    assert all(line.startswith("note: ") for line in lines)
    assert f"note: {path}:5: stream_over_http_enabled: ignored: " in result.stdout
    assert f"note: {path}:11: server.grpc_listen_port: ignored: " in result.stdout
    total = len(lines)
    assert result.stderr == f"OK: {path}, {tmp_path / TEMPO_OVERRIDES} ({total} notes)\n"


def test_the_service_starts_from_a_full_tempo_configuration_warning_once_per_ignored_setting(
    tmp_path: Path,
) -> None:
    path = tempo_files(tmp_path, ephemeral_ports=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Started from another directory with a relative path: the per-tenant file is still found beside
    # the configuration, and the log says which file that is.
    process = subprocess.Popen(
        # The file says log_level: warn; the flag wins, so that the start-up summary shows.
        [
            sys.executable,
            "-m",
            "distributor",
            "-config.file",
            os.path.relpath(path, elsewhere),
            "-log.level=info",
        ],
        cwd=elsewhere,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        before_ready = []
        for line in process.stderr:
            before_ready.append(line)
            if "distributor ready" in line:
                break
        log = "".join(before_ready)
        assert "distributor ready" in log, log
        for key in IGNORED_IN_TEMPO_CONFIG + IGNORED_IN_TEMPO_OVERRIDES:
            assert sum(f": {key}: ignored: " in line for line in before_ready) == 1, key
        [overrides_line] = [line for line in before_ready if "per-tenant overrides file" in line]
        assert str(tmp_path / TEMPO_OVERRIDES) in overrides_line
        assert "config file's directory" in overrides_line
        assert "error" not in log.lower()
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


# Tempo's overrides names: the current format and the legacy flat one

LEGACY_NAMES = [
    ("ingestion_rate_limit_bytes", "rate_limit_bytes", 1234),
    ("ingestion_burst_size_bytes", "burst_size_bytes", 5678),
    ("ingestion_max_attribute_bytes", "max_attribute_bytes", 99),
]


@pytest.mark.parametrize(("legacy", "field", "value"), LEGACY_NAMES, ids=[n[0] for n in LEGACY_NAMES])
def test_a_legacy_name_in_the_main_files_flat_overrides_block_sets_the_default(
    tmp_path: Path, legacy: str, field: str, value: int
) -> None:
    path = write_config_files(
        tmp_path,
        f"overrides:\n  {legacy}: {value}\n  max_traces_per_user: 1\n  per_tenant_override_period: 5s\n",
    )
    config = load_config(path)
    assert getattr(in_force(path).for_tenant("anyone"), field) == value
    assert config.overrides.per_tenant_override_period == 5.0
    assert [note.key for note in config.notes] == ["overrides.max_traces_per_user"]


@pytest.mark.parametrize(("legacy", "field", "value"), LEGACY_NAMES, ids=[n[0] for n in LEGACY_NAMES])
def test_a_legacy_name_in_a_per_tenant_entry_sets_that_tenants_value(
    tmp_path: Path, legacy: str, field: str, value: int
) -> None:
    path = write_config_files(
        tmp_path,
        "overrides: {per_tenant_override_config: overrides.yaml}\n",
        f"overrides:\n  acme:\n    {legacy}: {value}\n",
    )
    snapshot = in_force(path)
    assert getattr(snapshot.for_tenant("acme"), field) == value
    assert getattr(snapshot.for_tenant("beta"), field) != value


def test_legacy_forwarders_cost_attribution_and_rate_strategy_are_read_flat(tmp_path: Path) -> None:
    path = write_config_files(
        tmp_path,
        """\
distributor:
  forwarders:
    - {name: backend, backend: otlpgrpc, otlpgrpc: {endpoint: "127.0.0.1:1", tls: {insecure: true}}}
overrides:
  ingestion_rate_strategy: local
  forwarders: [backend]
  cost_attribution: {dimensions: [service.name], max_cardinality: 7}
  per_tenant_override_config: overrides.yaml
""",
        "overrides:\n  acme:\n    ingestion_rate_strategy: local\n    forwarders: []\n",
    )
    snapshot = in_force(path)
    assert snapshot.for_tenant("beta").forwarders == ("backend",)
    assert snapshot.for_tenant("beta").max_cardinality == 7
    assert [d.label for d in snapshot.for_tenant("beta").dimensions] == ["service_name"]
    assert snapshot.for_tenant("acme").forwarders == ()


REFUSED = [
    (
        "unknown rate strategy, legacy name",
        "overrides:\n  ingestion_rate_strategy: shared\n",
        "overrides.ingestion_rate_strategy",
        "expected local or global, got 'shared'",
    ),
    (
        "unknown rate strategy",
        "overrides:\n  defaults:\n    ingestion: {rate_strategy: regional}\n",
        "overrides.defaults.ingestion.rate_strategy",
        "expected local or global, got 'regional'",
    ),
    (
        "a setting twice, in both formats",
        "overrides:\n  defaults:\n    ingestion: {rate_limit_bytes: 1}\n    ingestion_rate_limit_bytes: 2\n",
        "overrides.defaults.ingestion_rate_limit_bytes",
        "set twice: here and as ingestion.rate_limit_bytes",
    ),
    (
        "the legacy flat block mixed with defaults",
        "overrides:\n  defaults: {}\n  ingestion_burst_size_bytes: 2\n",
        "overrides.ingestion_burst_size_bytes",
        "cannot be mixed with `defaults`",
    ),
    ("a misspelt top-level section", "sever: {http_listen_port: 1}\n", "sever", "unknown key"),
    ("a misspelt server setting", "server: {log_levle: info}\n", "server.log_levle", "unknown key"),
    (
        "a Go-style level name",
        "server: {log_level: warning}\n",
        "server.log_level",
        "debug, info, warn, error",
    ),
    ("an unknown log format", "server: {log_format: text}\n", "server.log_format", "logfmt, json"),
    (
        "a misspelt distributor section",
        "distributor: {recievers: {}}\n",
        "distributor.recievers",
        "unknown key",
    ),
    (
        "a misspelt ingestion setting",
        "overrides:\n  defaults:\n    ingestion: {rate_limit_byte: 1}\n",
        "overrides.defaults.ingestion.rate_limit_byte",
        "unknown key",
    ),
    (
        "a misspelt legacy name",
        "overrides:\n  ingestion_rate_limit_byte: 1\n",
        "overrides.ingestion_rate_limit_byte",
        "unknown key",
    ),
    (
        "TLS on a receiver",
        "distributor:\n  receivers:\n    otlp:\n      protocols:\n        grpc: {tls: {cert_file: a.pem}}\n",
        "distributor.receivers.otlp.protocols.grpc.tls",
        "TLS is not implemented on the receivers",
    ),
    (
        "no protocol listed",
        "distributor:\n  receivers:\n    otlp:\n      protocols: {}\n",
        "distributor.receivers.otlp.protocols",
        "lists no protocol",
    ),
]


@pytest.mark.parametrize(("name", "text", "key", "problem"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_with_file_line_and_key(tmp_path: Path, name: str, text: str, key: str, problem: str) -> None:
    path = write_config_files(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:") and f": {key}: " in message and problem in message, message


def test_a_misspelt_legacy_name_in_a_per_tenant_entry_is_an_error(tmp_path: Path) -> None:
    path = write_config_files(
        tmp_path,
        "overrides: {per_tenant_override_config: overrides.yaml}\n",
        "overrides:\n  acme:\n    ingestion_burst_size: 1\n",
    )
    result = check(path, None)
    assert [str(problem) for problem in result.problems] == [
        f"{tmp_path / 'overrides.yaml'}:3: overrides.acme.ingestion_burst_size: unknown key "
        "(allowed: cost_attribution, ingestion, forwarders)"
    ]


def test_other_receivers_are_ignored_with_a_note_and_otlp_still_runs(tmp_path: Path) -> None:
    path = write_config_files(
        tmp_path,
        "distributor:\n  receivers:\n    jaeger: {protocols: {thrift_http: null}}\n    zipkin: null\n"
        "    otlp: {protocols: {http: {include_metadata: true}}}\n",
    )
    config = load_config(path)
    assert config.otlp_http is not None and config.otlp_grpc is None
    assert [(note.line, note.key) for note in config.notes] == [
        (3, "distributor.receivers.jaeger"),
        (4, "distributor.receivers.zipkin"),
        (5, "distributor.receivers.otlp.protocols.http.include_metadata"),
    ]


# Start-up


def test_start_up_prints_every_problem_in_both_files(tmp_path: Path) -> None:
    path = write_config_files(
        tmp_path,
        "sever: {}\nserver: {log_level: warning}\noverrides:\n"
        "  defaults: {ingestion: {rate_strategy: regional}}\n  per_tenant_override_config: overrides.yaml\n",
        "overrides:\n  acme: {ingestion: {burst_size_bytes: lots}}\n",
    )
    result = run_cli("--config", str(path))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(": ")[3] for line in errors] == [
        "sever",
        "server.log_level",
        "overrides.defaults.ingestion.rate_strategy",
        "overrides.acme.ingestion.burst_size_bytes",
    ]
    assert all(line.startswith("error: invalid configuration: ") for line in errors)


def test_a_busy_grpc_port_is_one_clean_error_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = write_config_files(
            tmp_path,
            "server: {http_listen_port: 0}\n"
            "distributor:\n  receivers:\n    otlp:\n      protocols:\n"
            f"        http: {{endpoint: '127.0.0.1:0'}}\n        grpc: {{endpoint: '127.0.0.1:{port}'}}\n",
        )
        result = run_cli("--config", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "add_port" not in result.stderr, result.stderr
    [error] = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert error == (
        f"error: cannot listen: [Errno {errno.EADDRINUSE}] cannot listen for OTLP/gRPC on 127.0.0.1:{port}: "
        "address already in use"
    )


# Unexpanded environment references


EXPAND_ME = """\
server: {http_listen_port: 0}
usage_attribution:
  enabled: true
  ledger: {sqlite: {path: ledger.db}}
  keys:
    - {api_key: "${DD_API_KEY:-finance-api}", app_key: "${DD_APP_KEY}", org: acme}
"""


def test_an_unexpanded_reference_is_a_note_naming_file_line_key_and_variable_but_no_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config_files(tmp_path, EXPAND_ME)
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"note: {path}:6: usage_attribution.keys[0].api_key: looks like an unexpanded reference to "
        "${DD_API_KEY}; it is taken literally (start with -config.expand-env to expand it)",
        f"note: {path}:6: usage_attribution.keys[0].app_key: looks like an unexpanded reference to "
        "${DD_APP_KEY}; it is taken literally (start with -config.expand-env to expand it)",
    ]
    assert "finance-api" not in result.stdout + result.stderr
    monkeypatch.setenv("DD_APP_KEY", "from-the-environment")
    expanded = run_cli("check-config", "-config.file", str(path), "-config.expand-env")
    assert expanded.returncode == 0 and expanded.stdout == ""


def test_an_unexpanded_reference_in_the_per_tenant_file_is_a_note_too(tmp_path: Path) -> None:
    write_config_files(
        tmp_path,
        "overrides: {per_tenant_override_config: overrides.yaml}\n",
        "overrides:\n  acme:\n    forwarders: ['${FORWARDER}']\n",
    )
    result = check(None, tmp_path / "overrides.yaml")  # alone: forwarder names are not checked
    assert result.problems == []
    [note] = result.notes
    assert (note.file, note.line, note.key) == (
        str(tmp_path / "overrides.yaml"),
        3,
        "overrides.acme.forwarders[0]",
    )
    assert "${FORWARDER}" in note.text


def test_the_service_warns_at_start_up_about_an_unexpanded_reference(tmp_path: Path) -> None:
    receivers = "distributor: {receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}}}}}\n"
    path = write_config_files(tmp_path, EXPAND_ME + receivers)
    process = subprocess.Popen(
        [sys.executable, "-m", "distributor", "--config", str(path)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "distributor ready" in line:
                break
        warned = [line for line in lines if "unexpanded reference" in line]
        assert len(warned) == 2, lines
        assert f"{path}:6: usage_attribution.keys[0].api_key: " in warned[0] and "${DD_API_KEY}" in warned[0]
        assert not any("finance-api" in line for line in lines)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


# The command line


def test_help_names_check_config_and_version_prints_the_version() -> None:
    shown = run_cli("--help")
    assert shown.returncode == 0 and "check-config" in shown.stdout
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout == f"distributor, version {importlib.metadata.version('otel-usage-distributor')}\n"


# OTLP/HTTP left off, and /status/config


GRPC_ONLY = """\
server: {http_listen_port: 0}
distributor:
  receivers:
    otlp:
      protocols:
        grpc: {endpoint: "127.0.0.1:0"}
  usage: {cost_attribution: {enabled: true}}
overrides: {defaults: {cost_attribution: {dimensions: [service.name]}}}
"""


async def test_listing_only_grpc_opens_no_otlp_http_listener(tmp_path: Path) -> None:
    config = load_config(write_config_files(tmp_path, GRPC_ONLY))
    assert config.otlp_http is None and config.otlp_grpc is not None
    service = Service(config)
    await service.start()
    try:
        assert service.otlp_http is None and service.otlp_http_address is None
        assert service.otlp_grpc_address is not None
        body = request(batch({"service.name": "api"}, [span()])).SerializeToString()
        answer = await export_traces("{}:{}".format(*service.otlp_grpc_address), body)
        assert answer.code == grpc.StatusCode.OK
        assert service.server_address is not None
        server = "http://{}:{}".format(*service.server_address)
        async with aiohttp.ClientSession() as session:
            async with session.get(server + "/usage_metrics") as response:
                assert 'service_name="api"' in await response.text()
            async with session.get(server + "/status/config") as response:
                shown = yaml.safe_load(await response.text())
            async with session.get(server + "/status/config?mode=diff") as response:
                diff = yaml.safe_load(await response.text())
            async with session.get(server + "/status/config?mode=defaults") as response:
                defaults = yaml.safe_load(await response.text())
    finally:
        await service.stop()
    assert list(shown["distributor"]["receivers"]["otlp"]["protocols"]) == ["grpc"]
    assert list(defaults["distributor"]["receivers"]["otlp"]["protocols"]) == ["http", "grpc"]
    assert defaults["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:4317"
    assert diff["distributor"]["receivers"] == {
        "otlp": {"protocols": {"http": None, "grpc": {"endpoint": "127.0.0.1:0"}}}
    }


def test_diff_shows_only_what_differs_and_nothing_of_features_left_off(tmp_path: Path) -> None:
    defaults = config_as_data(default_config())
    unchanged = load_config(
        write_config_files(
            tmp_path,
            # Every value equal to its default, a disabled feature with settings of its own, and the
            # user-configurable store under a relative path (resolved against this file).
            "server: {http_listen_port: 3200, log_level: info}\n"
            "distributor:\n  receivers:\n    otlp:\n      protocols:\n"
            "        http: {endpoint: '127.0.0.1:4318'}\n        grpc: {endpoint: '127.0.0.1:4317'}\n"
            "  usage: {cost_attribution: {enabled: false, max_cardinality: 5}}\n"
            "overrides:\n  user_configurable_overrides: {enabled: false, storage_path: elsewhere}\n"
            "usage_attribution: {enabled: false, ledger: {sqlite: {path: other.db}}}\n",
        )
    )
    assert differences(config_as_data(unchanged), defaults) == {}
    changed = load_config(
        write_config_files(
            tmp_path,
            "server: {log_format: json}\ndistributor: {usage: {cost_attribution: {enabled: true}}}\n",
        )
    )
    assert differences(config_as_data(changed), defaults) == {
        "server": {"log_format": "json"},
        "distributor": {"usage": {"cost_attribution": {"enabled": True}}},
    }
