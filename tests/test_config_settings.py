"""Settings declared on their dataclass fields: what /status/config shows loads back as the same
configuration, every "must be positive" key refuses 0 alike, paths follow the config file, secrets stay
masked, and each mistake is reported once."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from distributor.check_config import check_files
from distributor.common.config_fields import (
    read_settings,
    render_settings,
    setting,
    setting_keys,
    settings,
)
from distributor.common.config_reader import Section, parse_yaml_text, read_entries
from distributor.config import Config, config_as_data, load_config
from distributor.forwarding.config import CLIENT, FORWARDER_BACKENDS, ForwarderConfig
from distributor.overrides import ConfigError
from tests.support.config_files import write_config_files

EVERY_KEY: dict[str, Any] = {
    "multitenancy_enabled": True,
    "server": {
        "http_listen_address": "0.0.0.0",
        "http_listen_port": 3201,
        "graceful_shutdown_timeout": "45s",
        "http_server_idle_timeout": "90s",
        "http_server_read_header_timeout": "5s",
        "http_server_read_body_timeout": "30s",
        "http_listen_conn_limit": 50,
        "log_level": "warn",
        "log_format": "json",
    },
    "distributor": {
        "receivers": {
            "otlp": {
                "protocols": {
                    "http": {
                        "endpoint": "127.0.0.1:4319",
                        "max_request_body_bytes": 1000,
                        "idle_timeout": "1m",
                        "read_header_timeout": "2s",
                        "read_body_timeout": "20s",
                        "max_connections": 60,
                    },
                    "grpc": {
                        "endpoint": "[::1]:4317",
                        "max_recv_msg_size_bytes": 2000,
                        "max_connection_idle": "3m",
                        "handshake_timeout": "3s",
                        "max_connections": 70,
                    },
                }
            }
        },
        "usage": {"cost_attribution": {"enabled": True, "max_cardinality": 5, "stale_duration": "1h30m"}},
        "forwarders": [
            {
                "name": "backend",
                "backend": "otlpgrpc",
                "otlpgrpc": {
                    "endpoint": "127.0.0.1:14317",
                    "tls": {
                        "insecure": True,
                        "insecure_skip_verify": True,
                        "ca_file": "ca.pem",
                        "cert_file": "cert.pem",
                        "key_file": "key.pem",
                        "server_name_override": "backend.internal",
                    },
                    "compression": "gzip",
                    "timeout": "500ms",
                },
                "queue_size": 3,
                "workers": 2,
                "retry": {
                    "enabled": False,
                    "initial_interval": "1s",
                    "max_interval": "2s",
                    "max_elapsed_time": "0s",
                },
            },
            {
                "name": "archive",
                "backend": "otlphttp",
                "otlphttp": {
                    "endpoint": "http://archive:4318",
                    "traces_endpoint": "https://archive/v1/traces",
                },
                "delivery": "persistent",
                "persistent_queue": {
                    "path": "queues/archive",
                    "max_size_bytes": 1048576,
                    "segment_size_bytes": 65536,
                },
            },
        ],
    },
    "overrides": {
        "defaults": {
            "cost_attribution": {"dimensions": {"service.name": "service"}, "max_cardinality": 7},
            "ingestion": {"rate_limit_bytes": 1, "burst_size_bytes": 2, "max_attribute_bytes": 3},
            "forwarders": ["backend"],
        },
        "per_tenant_override_config": "overrides.yaml",
        "per_tenant_override_period": "1m",
        "user_configurable_overrides": {"enabled": True, "storage_path": "user-overrides"},
    },
    "usage_attribution": {
        "enabled": True,
        "region": "eu",
        "ledger": {
            "backend": "sqlite",
            "sqlite": {"path": "ledger.db"},
            "postgresql": {
                "dsn": "postgresql://distributor:pg-pw-7c1@db:5432/usage?sslmode=require",
                "pool": {"min_size": 2, "max_size": 8, "timeout": "3s"},
            },
            "flush_period": "2s",
            "max_pending_entries": 500000,
        },
        "api": {
            "page_size": 10,
            "rate_limit": {"requests": 0, "period": "1s"},
            "auth_failure_limit": {"failures": 3, "period": "30s"},
            "cursor_ttl": "5m",
        },
        "orgs": {"acme": {"name": "Acme", "public_id": "acme0001", "parent": "holding"}, "holding": {}},
        "keys": [{"api_key": "api-1", "app_key": "app-1", "org": "acme", "scopes": ["usage_read"]}],
    },
}


def without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    edited = copy.deepcopy(document)
    parent = edited
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return edited


ROUND_TRIPS = {
    "defaults": {},
    "every key set": EVERY_KEY,
    "grpc not listed, so off": without(EVERY_KEY, "distributor", "receivers", "otlp", "protocols", "grpc"),
    "no forwarders": without(without(EVERY_KEY, "distributor", "forwarders"), "overrides", "defaults"),
}


@pytest.mark.parametrize("document", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_what_status_config_shows_loads_back_as_the_same_configuration(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    shown = config_as_data(load_config(write_config_files(tmp_path, document)))
    (tmp_path / "again").mkdir()
    again = config_as_data(load_config(write_config_files(tmp_path / "again", shown)))
    assert again == shown


def test_every_written_key_shows_with_its_value(tmp_path: Path) -> None:
    shown = config_as_data(load_config(write_config_files(tmp_path, EVERY_KEY)))
    assert shown["server"] == {
        "http_listen_address": "0.0.0.0",
        "http_listen_port": 3201,
        "graceful_shutdown_timeout": "45s",
        "http_server_idle_timeout": "1m30s",
        "http_server_read_header_timeout": "5s",
        "http_server_read_body_timeout": "30s",
        "http_listen_conn_limit": 50,
        "log_level": "warn",
        "log_format": "json",
    }
    http = shown["distributor"]["receivers"]["otlp"]["protocols"]["http"]
    assert (http["idle_timeout"], http["read_header_timeout"], http["read_body_timeout"]) == (
        "1m0s",
        "2s",
        "20s",
    )
    backend, archive = shown["distributor"]["forwarders"]
    assert backend["otlpgrpc"]["tls"]["ca_file"] == str(tmp_path / "ca.pem")
    assert (backend["otlpgrpc"]["timeout"], backend["retry"]["max_elapsed_time"]) == ("0.5s", "0s")
    assert "traces_endpoint" not in backend["otlpgrpc"], "shown only when set"
    assert archive["otlphttp"]["traces_endpoint"] == "https://archive/v1/traces"
    assert archive["otlphttp"]["tls"]["ca_file"] == "", "no file configured"
    assert (backend["delivery"], "persistent_queue" in backend) == ("queued", False), "only when persistent"
    assert archive["persistent_queue"] == {
        "path": str(tmp_path / "queues" / "archive"),
        "max_size_bytes": 1048576,
        "segment_size_bytes": 65536,
    }
    assert shown["usage_attribution"]["ledger"] == {
        "backend": "sqlite",
        "sqlite": {"path": str(tmp_path / "ledger.db")},
        "postgresql": {
            "dsn": "postgresql://<secret>@db:5432/usage?sslmode=require",
            "pool": {"min_size": 2, "max_size": 8, "timeout": "3s"},
        },
        "flush_period": "2s",
        "max_pending_entries": 500_000,
        "retention_months": 15,
    }
    assert shown["usage_attribution"]["orgs"]["acme"] == {
        "name": "Acme",
        "public_id": "acme0001",
        "parent": "holding",
    }


def test_the_default_configuration_shows_the_dataclass_defaults() -> None:
    shown = config_as_data(Config())
    assert shown["distributor"]["receivers"]["otlp"]["protocols"] == {
        "http": {
            "endpoint": "127.0.0.1:4318",
            "max_request_body_bytes": 20 * 1024 * 1024,
            "max_gzip_members": 100,
            "idle_timeout": "2m0s",
            "read_header_timeout": "10s",
            "read_body_timeout": "1m0s",
            "max_connections": 10_000,
        }
    }
    assert shown["usage_attribution"]["api"] == {
        "page_size": 500,
        "rate_limit": {"requests": 60, "period": "1m0s"},
        "auth_failure_limit": {"failures": 10, "period": "1m0s"},
        "cursor_ttl": "1h0m0s",
    }
    assert shown["overrides"]["user_configurable_overrides"]["storage_path"] == "data/user-overrides"


def test_secrets_show_masked(tmp_path: Path) -> None:
    document = copy.deepcopy(EVERY_KEY)
    document["distributor"]["forwarders"][0]["otlpgrpc"]["headers"] = {"Authorization": "Bearer t0ken"}
    text = yaml.safe_dump(config_as_data(load_config(write_config_files(tmp_path, document))))
    shown = yaml.safe_load(text)
    assert shown["distributor"]["forwarders"][0]["otlpgrpc"]["headers"] == {"Authorization": "<secret>"}
    assert shown["usage_attribution"]["keys"] == [
        {"api_key": "<secret>", "app_key": "<secret>", "org": "acme", "scopes": ["usage_read"]}
    ]
    assert shown["usage_attribution"]["ledger"]["postgresql"]["dsn"] == (
        "postgresql://<secret>@db:5432/usage?sslmode=require"
    )
    assert all(secret not in text for secret in ("t0ken", "api-1", "app-1", "pg-pw-7c1"))


PATHS = {
    "per-tenant overrides file": (("overrides", "per_tenant_override_config"), "overrides.yaml"),
    "user-configurable overrides": (
        ("overrides", "user_configurable_overrides", "storage_path"),
        "user-overrides",
    ),
    "ledger database": (("usage_attribution", "ledger", "sqlite", "path"), "ledger.db"),
    "forwarder CA": (("distributor", "forwarders", 0, "otlpgrpc", "tls", "ca_file"), "ca.pem"),
    "persistent queue": (("distributor", "forwarders", 1, "persistent_queue", "path"), "queues/archive"),
}


@pytest.mark.parametrize(("shown_at", "written"), PATHS.values(), ids=PATHS.keys())
def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, shown_at: tuple[str | int, ...], written: str
) -> None:
    (tmp_path / "conf").mkdir()
    value: Any = config_as_data(load_config(write_config_files(tmp_path / "conf", EVERY_KEY)))
    for key in shown_at:
        value = value[key]
    assert value == str(tmp_path / "conf" / written)


def set_key(document: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    edited = copy.deepcopy(document)
    parent: Any = edited
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return edited


POSITIVE_DURATIONS = {
    "tracker stale_duration": ("distributor", "usage", "cost_attribution", "stale_duration"),
    "overrides reload period": ("overrides", "per_tenant_override_period"),
    "forwarder timeout": ("distributor", "forwarders", 0, "otlpgrpc", "timeout"),
    "retry initial_interval": ("distributor", "forwarders", 0, "retry", "initial_interval"),
    "ledger flush_period": ("usage_attribution", "ledger", "flush_period"),
    "API rate-limit period": ("usage_attribution", "api", "rate_limit", "period"),
    "API cursor_ttl": ("usage_attribution", "api", "cursor_ttl"),
}


def key_name(path: tuple[str | int, ...]) -> str:
    return re.sub(r"\.(\d+)\.", r"[\1].", ".".join(str(key) for key in path))


def line_of(path: Path, text: str) -> int:
    return path.read_text().splitlines().index(text) + 1


@pytest.mark.parametrize("zero", [0, "0s"])
@pytest.mark.parametrize("key", POSITIVE_DURATIONS.values(), ids=POSITIVE_DURATIONS.keys())
def test_every_positive_duration_refuses_zero_alike(
    tmp_path: Path, key: tuple[str | int, ...], zero: object
) -> None:
    path = write_config_files(tmp_path, set_key(EVERY_KEY, key, zero))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    written = next(line for line in path.read_text().splitlines() if line.strip().startswith(f"{key[-1]}: "))
    assert str(raised.value) == f"{path}:{line_of(path, written)}: {key_name(key)}: must be greater than 0"


POSITIVE_INTEGERS = {
    "HTTP body size": ("distributor", "receivers", "otlp", "protocols", "http", "max_request_body_bytes"),
    "gRPC message size": ("distributor", "receivers", "otlp", "protocols", "grpc", "max_recv_msg_size_bytes"),
    "tracker max_cardinality": ("distributor", "usage", "cost_attribution", "max_cardinality"),
    "forwarder queue_size": ("distributor", "forwarders", 0, "queue_size"),
    "forwarder workers": ("distributor", "forwarders", 0, "workers"),
    "persistent queue size": ("distributor", "forwarders", 1, "persistent_queue", "max_size_bytes"),
    "ledger retention_months": ("usage_attribution", "ledger", "retention_months"),
    "ledger pool max_size": ("usage_attribution", "ledger", "postgresql", "pool", "max_size"),
    "API page_size": ("usage_attribution", "api", "page_size"),
}


@pytest.mark.parametrize("key", POSITIVE_INTEGERS.values(), ids=POSITIVE_INTEGERS.keys())
def test_every_positive_integer_refuses_zero_alike(tmp_path: Path, key: tuple[str | int, ...]) -> None:
    path = write_config_files(tmp_path, set_key(EVERY_KEY, key, 0))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert re.fullmatch(
        rf"{re.escape(str(path))}:\d+: {re.escape(key_name(key))}: must be at least 1, got 0",
        str(raised.value),
    )


ONE_MISTAKE = {
    "unknown delivery": (
        ("distributor", "forwarders", 0, "delivery"),
        "eventually",
        "distributor.forwarders[0].delivery: expected one of queued, synchronous, persistent, "
        "got 'eventually'",
    ),
    "persistent_queue of a queued forwarder": (
        ("distributor", "forwarders", 0, "persistent_queue"),
        {"max_size_bytes": 1024},
        "distributor.forwarders[0].persistent_queue: only for `delivery: persistent`",
    ),
    "tls not a mapping": (
        ("distributor", "forwarders", 0, "otlpgrpc", "tls"),
        5,
        "distributor.forwarders[0].otlpgrpc.tls: expected a mapping, got 5",
    ),
    "retry not a mapping": (
        ("distributor", "forwarders", 0, "retry"),
        "soon",
        "distributor.forwarders[0].retry: expected a mapping, got the string 'soon'",
    ),
    "initial_interval 0 (max_interval is not compared with it)": (
        ("distributor", "forwarders", 0, "retry", "initial_interval"),
        "0s",
        "distributor.forwarders[0].retry.initial_interval: must be greater than 0",
    ),
    "org not a mapping": (
        ("usage_attribution", "orgs", "acme"),
        [],
        "usage_attribution.orgs.acme: expected a mapping, got a list",
    ),
}


@pytest.mark.parametrize(("key", "value", "problem"), ONE_MISTAKE.values(), ids=ONE_MISTAKE.keys())
def test_check_config_reports_each_mistake_once(
    tmp_path: Path, key: tuple[str | int, ...], value: object, problem: str
) -> None:
    config = write_config_files(tmp_path, set_key(EVERY_KEY, key, value), overrides="overrides: {}\n")
    problems, _ = check_files(config, None)
    assert [str(p).split(": ", 1)[1] for p in problems] == [problem]


def test_a_forwarder_allows_its_own_keys_and_one_section_per_backend() -> None:
    assert setting_keys(ForwarderConfig, groups={CLIENT: FORWARDER_BACKENDS}) == (
        "name",
        "backend",
        "otlpgrpc",
        "otlphttp",
        "queue_size",
        "queue_size_bytes",
        "total_queue_size_bytes",
        "workers",
        "idle_tenant_timeout",
        "retry",
        "delivery",
        "persistent_queue",
    )
    assert setting_keys(ForwarderConfig, within=CLIENT) == (
        "endpoint",
        "traces_endpoint",
        "tls",
        "headers",
        "compression",
        "timeout",
    )


@settings
class Example:
    label: str = setting(default="plain")
    colour: str = setting(default="red", choices=("red", "blue"))
    file: Path = setting(default=Path("data.db"), key="path", within="storage")
    size: int = setting(default=2, positive=True, maximum=10)
    token: str = setting(default="", secret=True)


def section_of(text: str, problems: list[ConfigError] | None = None) -> Section:
    return Section(
        parse_yaml_text(text, "/etc/example.yaml"), "", "/etc/example.yaml", setting_keys(Example), problems
    )


def test_a_settings_class_is_read_from_its_fields() -> None:
    read = read_settings(section_of("colour: blue\nstorage: {path: state.db}\ntoken: t\n"), Example)
    assert read == Example(colour="blue", file=Path("/etc/state.db"), token="t")
    assert render_settings(read) == {
        "label": "plain",
        "colour": "blue",
        "storage": {"path": "/etc/state.db"},
        "size": 2,
        "token": "<secret>",
    }


READ_PROBLEMS = {
    "unknown key": (
        "colur: blue\n",
        "/etc/example.yaml:1: colur: unknown key (allowed: label, colour, storage, size, token)",
    ),
    "unknown key in a sub-section": (
        "storage: {file: x}\n",
        "/etc/example.yaml:1: storage.file: unknown key (allowed: path)",
    ),
    "not a choice": (
        "colour: green\n",
        "/etc/example.yaml:1: colour: expected one of red, blue, got 'green'",
    ),
    "blank path": (
        "storage:\n  path: ''\n",
        "/etc/example.yaml:2: storage.path: must be a file path",
    ),
    "zero size": ("size: 0\n", "/etc/example.yaml:1: size: must be at least 1, got 0"),
    "size above its maximum": ("size: 11\n", "/etc/example.yaml:1: size: must be at most 10, got 11"),
}


@pytest.mark.parametrize(("text", "problem"), READ_PROBLEMS.values(), ids=READ_PROBLEMS.keys())
def test_a_wrong_setting_is_reported_and_the_default_kept_when_collecting(text: str, problem: str) -> None:
    problems: list[ConfigError] = []
    read = read_settings(section_of(text, problems), Example)
    assert [str(p) for p in problems] == [problem]
    assert read == Example(file=Path("/etc/data.db"))


def test_a_list_of_named_entries_reports_a_repeated_name_at_the_entry() -> None:
    text = "items:\n  - {name: a}\n  - {name: b}\n  - {name: a}\n  - {}\n"
    problems: list[ConfigError] = []
    top = Section(parse_yaml_text(text, "f.yaml"), "", "f.yaml", ("items",), problems)

    def named(entry: Section) -> str | None:
        name = entry.string("name", "")
        if not name:
            entry.fail("name", "required")
            return None
        return name

    names = read_entries(
        top,
        "items",
        ("name",),
        "expected a list",
        named,
        unique_by=str,
        duplicate=("name", lambda n: f"{n!r} twice"),
    )
    assert names == ("a", "b")
    assert [str(p) for p in problems] == [
        "f.yaml:4: items[2].name: 'a' twice",
        "f.yaml:5: items[3].name: required",
    ]


def test_a_list_of_entries_that_is_not_a_list_is_reported() -> None:
    problems: list[ConfigError] = []
    top = Section(parse_yaml_text("items: {a: 1}\n", "f.yaml"), "", "f.yaml", ("items",), problems)
    entries = read_entries(
        top,
        "items",
        ("name",),
        "expected a list of items",
        lambda e: e,
        unique_by=id,
        duplicate=("name", str),
    )
    assert entries == ()
    assert [str(p) for p in problems] == ["f.yaml:1: items: expected a list of items"]


def test_a_postgresql_ledger_needs_a_dsn_and_a_pool_whose_minimum_is_not_above_its_maximum(
    tmp_path: Path,
) -> None:
    config = write_config_files(
        tmp_path,
        {
            "usage_attribution": {
                "enabled": True,
                "ledger": {"backend": "postgresql", "postgresql": {"pool": {"min_size": 5, "max_size": 2}}},
            }
        },
        overrides="overrides: {}\n",
    )
    problems, _ = check_files(config, None)
    assert [str(problem).split(": ", 1)[1] for problem in problems] == [
        "usage_attribution.ledger.postgresql.dsn: the PostgreSQL connection string is required for "
        "backend postgresql",
        "usage_attribution.ledger.postgresql.pool.min_size: must be at most max_size",
    ]
