"""The configuration contract: Tempo-shaped YAML, strict validation, one clear line per problem."""

from __future__ import annotations

import os
import re
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from distributor.config import Config, load_config
from distributor.overrides import ConfigError, OverridesSnapshot, Scope
from distributor.service import Service
from tests.support.cli import run_cli, running_cli
from tests.support.config_files import NESTED_TOO_DEEPLY, alias_bomb, write_config_files

ISSUE_EXAMPLE = """\
multitenancy_enabled: false
server:
  http_listen_address: 127.0.0.1
  http_listen_port: 3200
distributor:
  receivers:
    otlp:
      protocols:
        http:
          endpoint: 127.0.0.1:4318
          max_request_body_bytes: 20971520
  usage:
    cost_attribution:
      enabled: true
      max_cardinality: 10000
      stale_duration: 15m
overrides:
  defaults:
    cost_attribution:
      dimensions: {service.name: ""}
      max_cardinality: 0
  per_tenant_override_config: overrides.yaml
  per_tenant_override_period: 10s
"""

OVERRIDES = """\
overrides:
  "*":
    cost_attribution:
      dimensions: [service.name, resource.k8s.namespace.name]
  acme:
    cost_attribution:
      dimensions:
        span.team: ""
        service.name: service
        app: service
      max_cardinality: 50
  beta:
    cost_attribution:
      max_cardinality: 5
"""


def overrides_in_force(config: Config) -> OverridesSnapshot:
    """What the service puts in force at start-up (raises ConfigError as it would)."""
    return Service(config).overrides.snapshot


def test_the_documented_example_loads_with_its_values(tmp_path: Path) -> None:
    config = load_config(write_config_files(tmp_path, ISSUE_EXAMPLE, OVERRIDES))
    assert config.server.endpoint.port == 3200
    assert str(config.otlp_http.endpoint) == "127.0.0.1:4318"
    assert config.otlp_http.max_request_body_bytes == 20 * 1024 * 1024
    assert (config.cost_attribution.enabled, config.cost_attribution.max_cardinality) == (True, 10_000)
    assert config.cost_attribution.stale_duration == 900
    assert config.overrides.per_tenant_override_config == tmp_path / "overrides.yaml"
    assert config.overrides.per_tenant_override_period == 10


def test_each_field_resolves_tenant_entry_then_wildcard_then_defaults(tmp_path: Path) -> None:
    snapshot = overrides_in_force(load_config(write_config_files(tmp_path, ISSUE_EXAMPLE, OVERRIDES)))
    acme = snapshot.for_tenant("acme")
    assert [(d.attribute, d.scope, d.label) for d in acme.dimensions] == [
        ("team", Scope.SPAN, "team"),
        ("service.name", Scope.ANY, "service"),
        ("app", Scope.ANY, "service"),
    ]
    assert acme.max_cardinality == 50
    beta = snapshot.for_tenant("beta")
    assert [d.label for d in beta.dimensions] == ["service_name", "k8s_namespace_name"], "unset: from *"
    assert beta.max_cardinality == 5
    other = snapshot.for_tenant("anyone-else")
    assert [d.label for d in other.dimensions] == ["service_name", "k8s_namespace_name"]


def test_an_empty_file_means_all_defaults(tmp_path: Path) -> None:
    config = load_config(write_config_files(tmp_path, "", OVERRIDES))
    assert config.server.endpoint.port == 3200 and config.overrides.per_tenant_override_config is None
    assert overrides_in_force(config).for_tenant("x").dimensions == ()


def test_durations_and_listen_addresses_in_their_accepted_forms(tmp_path: Path) -> None:
    text = ISSUE_EXAMPLE.replace("stale_duration: 15m", "stale_duration: 1h30m").replace(
        "127.0.0.1:4318", "'[::1]:0'"
    )
    config = load_config(write_config_files(tmp_path, text, OVERRIDES))
    assert config.cost_attribution.stale_duration == 5400
    assert (config.otlp_http.endpoint.host, config.otlp_http.endpoint.port) == ("::1", 0)


BAD_CONFIGS = [
    (
        "unknown top-level key",
        ("multitenancy_enabled: false", "multitenancy: false"),
        "multitenancy",
        "unknown key",
    ),
    (
        "unknown nested key",
        ("max_cardinality: 10000", "max_cardinalty: 10000"),
        "distributor.usage.cost_attribution.max_cardinalty",
        "unknown key",
    ),
    (
        "wrong type",
        ("http_listen_port: 3200", "http_listen_port: http"),
        "server.http_listen_port",
        "expected an integer",
    ),
    (
        "port out of range",
        ("http_listen_port: 3200", "http_listen_port: 70000"),
        "server.http_listen_port",
        "at most 65535",
    ),
    (
        "boolean expected",
        ("enabled: true", "enabled: sometimes"),
        "distributor.usage.cost_attribution.enabled",
        "expected true or false",
    ),
    (
        "bad duration",
        ("stale_duration: 15m", "stale_duration: 15 minutes"),
        "distributor.usage.cost_attribution.stale_duration",
        "invalid duration",
    ),
    (
        "duration without unit",
        ("per_tenant_override_period: 10s", "per_tenant_override_period: 10"),
        "overrides.per_tenant_override_period",
        "needs a unit",
    ),
    (
        "listen address without port",
        ("endpoint: 127.0.0.1:4318", "endpoint: 127.0.0.1"),
        "distributor.receivers.otlp.protocols.http.endpoint",
        "expected host:port",
    ),
    (
        "listen port out of range",
        ("endpoint: 127.0.0.1:4318", "endpoint: 127.0.0.1:99999"),
        "distributor.receivers.otlp.protocols.http.endpoint",
        "invalid port",
    ),
    (
        "unbracketed IPv6 listen address",
        ("endpoint: 127.0.0.1:4318", "endpoint: ::1:4318"),
        "distributor.receivers.otlp.protocols.http.endpoint",
        "IPv6",
    ),
    (
        "label starting with __",
        ('{service.name: ""}', "{service.name: __name}"),
        "overrides.defaults.cost_attribution.dimensions",
        "starts with '__'",
    ),
    (
        "label tenant",
        ('{service.name: ""}', "{service.name: tenant}"),
        "overrides.defaults.cost_attribution.dimensions",
        "reserved",
    ),
    (
        "derived label tracker",
        ('{service.name: ""}', '{resource.tracker: ""}'),
        "overrides.defaults.cost_attribution.dimensions",
        "'resource.tracker'",
    ),
    (
        "empty attribute",
        ('{service.name: ""}', '{"span.": ""}'),
        "overrides.defaults.cost_attribution.dimensions",
        "empty",
    ),
    (
        "dimensions of the wrong type",
        ('{service.name: ""}', "42"),
        "overrides.defaults.cost_attribution.dimensions",
        "mapping or a list",
    ),
    (
        "duplicate key",
        ("max_cardinality: 0", "max_cardinality: 0\n      max_cardinality: 1"),
        "overrides.defaults.cost_attribution.max_cardinality",
        "duplicate key",
    ),
    ("invalid YAML", ("server:", "server: [unclosed"), "", "invalid YAML"),
    ("nested too deeply", ("server:", f"deep: {NESTED_TOO_DEEPLY}\nserver:"), "", "nested too deeply"),
]


@pytest.mark.parametrize(("name", "edit", "key", "problem"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configuration_is_refused_naming_file_line_and_key(
    tmp_path: Path, name: str, edit: tuple[str, str], key: str, problem: str
) -> None:
    assert edit[0] in ISSUE_EXAMPLE
    path = write_config_files(tmp_path, ISSUE_EXAMPLE.replace(edit[0], edit[1], 1), OVERRIDES)
    with pytest.raises(ConfigError) as caught:
        overrides_in_force(load_config(path))
    message = str(caught.value)
    assert message.startswith(f"{path}:"), message
    assert re.match(rf"{re.escape(str(path))}:\d+: ", message), "the line is named"
    assert key in message and problem in message, message
    assert "\n" not in message


BAD_OVERRIDES = [
    (
        "unknown key in a tenant",
        "overrides:\n  acme:\n    cost_attribution:\n      dimension: [a]\n",
        "overrides.acme.cost_attribution.dimension",
        "unknown key",
    ),
    (
        "invalid tenant id",
        "overrides:\n  'bad/tenant':\n    cost_attribution: {}\n",
        "overrides.bad/tenant",
        "outside",
    ),
    (
        "invalid label",
        "overrides:\n  acme:\n    cost_attribution:\n      dimensions: {x: __y}\n",
        "overrides.acme.cost_attribution.dimensions",
        "'__y'",
    ),
    (
        "negative max_cardinality",
        "overrides:\n  acme:\n    cost_attribution:\n      max_cardinality: -3\n",
        "overrides.acme.cost_attribution.max_cardinality",
        "at least 0",
    ),
    ("unknown top-level key", "limits: {}\n", "limits", "unknown key"),
    ("nested too deeply", f"overrides:\n  acme: {NESTED_TOO_DEEPLY}\n", "", "nested too deeply"),
    ("alias bomb", "overrides: {}\n" + alias_bomb(), "", "too many nodes (more than 1000000"),
    ("alias cycle", "overrides:\n  acme: &a [*a]\n", "", "nested too deeply"),
    (
        "too many aliases",
        "overrides: {}\na: &a 1\nb: [" + ",".join(["*a"] * 101) + "]\n",
        "",
        "too many aliases",
    ),
]


@pytest.mark.parametrize(("name", "text", "key", "problem"), BAD_OVERRIDES, ids=[c[0] for c in BAD_OVERRIDES])
def test_bad_per_tenant_file_is_refused_naming_its_own_file(
    tmp_path: Path, name: str, text: str, key: str, problem: str
) -> None:
    config = load_config(write_config_files(tmp_path, ISSUE_EXAMPLE, overrides=text))
    with pytest.raises(ConfigError) as caught:
        overrides_in_force(config)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'overrides.yaml'}:"), message
    assert key in message and problem in message, message


@pytest.mark.parametrize(("make", "kind"), [(os.mkfifo, "a FIFO"), (os.mkdir, "a directory")])
def test_a_per_tenant_path_that_is_not_a_regular_file_is_refused_at_start_up(
    tmp_path: Path, make: Callable[[Path], None], kind: str
) -> None:
    config = load_config(write_config_files(tmp_path, ISSUE_EXAMPLE))
    make(tmp_path / "overrides.yaml")
    with pytest.raises(ConfigError) as caught:
        overrides_in_force(config)
    assert str(caught.value) == f"{tmp_path / 'overrides.yaml'}: not a regular file ({kind})"


def test_a_per_tenant_file_over_its_size_limit_is_refused_at_start_up(tmp_path: Path) -> None:
    config = ISSUE_EXAMPLE.replace(
        "per_tenant_override_period: 10s",
        "per_tenant_override_period: 10s\n  per_tenant_override_max_bytes: 100",
    )
    path = write_config_files(tmp_path, config, OVERRIDES + "#" * 100 + "\n")
    size = (tmp_path / "overrides.yaml").stat().st_size
    with pytest.raises(ConfigError) as caught:
        overrides_in_force(load_config(path))
    assert str(caught.value) == (
        f"{tmp_path / 'overrides.yaml'}: is {size} bytes, over the limit of 100 bytes "
        "(overrides.per_tenant_override_max_bytes)"
    )


def test_a_config_file_over_10_mib_is_refused(tmp_path: Path) -> None:
    path = write_config_files(tmp_path, ISSUE_EXAMPLE + "#" * (10 * 1024 * 1024) + "\n", OVERRIDES)
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}: is \d+ bytes, over the limit of 10485760 bytes$"
    ):
        load_config(path)


def test_missing_per_tenant_file_is_refused(tmp_path: Path) -> None:
    path = write_config_files(tmp_path, ISSUE_EXAMPLE, OVERRIDES)
    (tmp_path / "overrides.yaml").unlink()
    with pytest.raises(ConfigError, match=r"overrides\.yaml: cannot read"):
        overrides_in_force(load_config(path))


def test_cli_refuses_a_bad_config_with_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    path = write_config_files(
        tmp_path, ISSUE_EXAMPLE.replace("stale_duration: 15m", "stale_duration: soon"), OVERRIDES
    )
    result = run_cli("--config", str(path))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and "distributor.usage.cost_attribution.stale_duration" in line


def test_cli_refuses_a_bad_per_tenant_file(tmp_path: Path) -> None:
    path = write_config_files(
        tmp_path, ISSUE_EXAMPLE, overrides="overrides:\n  acme:\n    cost_attribution:\n      x: 1\n"
    )
    result = run_cli("--config", str(path))
    assert result.returncode == 1 and "overrides.yaml" in result.stderr and "overrides.acme" in result.stderr


def test_cli_refuses_a_deeply_nested_config_with_one_line(tmp_path: Path) -> None:
    path = write_config_files(tmp_path, f"deep: {NESTED_TOO_DEEPLY}\n")
    result = run_cli("--config", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: invalid configuration: {path}:1: nested too deeply (more than 100 levels)"
    ]


def test_cli_refuses_an_alias_bomb_config_with_one_line(tmp_path: Path) -> None:
    path = write_config_files(tmp_path, alias_bomb())
    result = run_cli("--config", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: invalid configuration: {path}:7: "
        "too many nodes (more than 1000000 once aliases are expanded)"
    ]


def test_cli_refuses_a_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "nope.yaml: cannot read" in result.stderr


def test_cli_serves_until_sigterm_and_exits_zero(tmp_path: Path) -> None:
    config = ISSUE_EXAMPLE.replace("http_listen_port: 3200", "http_listen_port: 0").replace(
        "127.0.0.1:4318", "127.0.0.1:0"
    )
    with running_cli(write_config_files(tmp_path, config, OVERRIDES)) as cli:
        with urllib.request.urlopen(cli.server_url + "/ready", timeout=10) as response:
            assert response.status == 200
        assert cli.terminate() == 0


def test_yaml_of_the_default_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `make run` serves (with -config.expand-env): usage tracked by service, the ledger and its API
    on, with a key pair for this machine unless the environment gives one; sessions and hosts counted."""
    monkeypatch.delenv("DISTRIBUTOR_API_KEY", raising=False)
    monkeypatch.setenv("DISTRIBUTOR_APP_KEY", "from-the-environment")
    root = Path(__file__).resolve().parent.parent
    config = load_config(root / "config" / "distributor.yaml", expand_env=True)
    assert config.cost_attribution.enabled
    limits = overrides_in_force(config).for_tenant("single-tenant")
    assert [d.label for d in limits.dimensions] == ["service_name"]
    assert (limits.session_attributes, limits.host_attributes) != ((), ())
    assert config.usage_attribution.enabled
    (key,) = config.usage_attribution.keys
    assert (key.api_key, key.app_key, key.org) == ("local-api-key", "from-the-environment", "single-tenant")
    assert (
        "run: $(VENV)/.installed\n\t$(BIN)/distributor --config $(CONFIG) --config.expand-env"
        in (root / "Makefile").read_text()
    )


def test_expand_env_substitutes_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT_FOR_TEST", "4999")
    path = write_config_files(
        tmp_path,
        textwrap.dedent("""\
        server:
          http_listen_port: ${PORT_FOR_TEST}
          http_listen_address: ${UNSET_FOR_TEST:-127.0.0.2}
        """),
        OVERRIDES,
    )
    config = load_config(path, expand_env=True)
    assert (config.server.http_listen_port, config.server.http_listen_address) == (4999, "127.0.0.2")


def test_listed_protocols_are_enabled_and_none_listed_means_both(tmp_path: Path) -> None:
    only_http = load_config(write_config_files(tmp_path, ISSUE_EXAMPLE, OVERRIDES))
    assert only_http.otlp_grpc is None
    bare_grpc = load_config(
        write_config_files(
            tmp_path, ISSUE_EXAMPLE.replace("        http:\n", "        grpc:\n        http:\n"), OVERRIDES
        )
    )
    assert bare_grpc.otlp_grpc is not None and str(bare_grpc.otlp_grpc.endpoint) == "127.0.0.1:4317"
    assert bare_grpc.otlp_grpc.max_recv_msg_size_bytes == 4 * 1024 * 1024
    tuned = load_config(
        write_config_files(
            tmp_path,
            ISSUE_EXAMPLE.replace(
                "        http:\n",
                "        grpc: {endpoint: '0.0.0.0:14317', max_recv_msg_size_bytes: 1024}\n        http:\n",
            ),
            OVERRIDES,
        )
    )
    assert tuned.otlp_grpc is not None and (
        tuned.otlp_grpc.endpoint.port,
        tuned.otlp_grpc.max_recv_msg_size_bytes,
    ) == (14317, 1024)
    nothing_listed = load_config(
        write_config_files(tmp_path, "distributor: {usage: {cost_attribution: {enabled: true}}}\n", OVERRIDES)
    )
    assert nothing_listed.otlp_grpc is not None and nothing_listed.otlp_http.endpoint.port == 4318
    with pytest.raises(ConfigError, match=r"protocols\.grpc\.endpoint: invalid port"):
        load_config(
            write_config_files(
                tmp_path,
                ISSUE_EXAMPLE.replace("        http:\n", "        grpc: {endpoint: ':x'}\n        http:\n"),
                OVERRIDES,
            )
        )
