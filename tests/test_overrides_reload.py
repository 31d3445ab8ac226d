"""Hot reload of the per-tenant overrides file through the running service, with real files."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from distributor.config import load_config
from tests.support.cli import running_cli
from tests.support.config_files import NESTED_TOO_DEEPLY, multitenant_config, write_config_files
from tests.support.metrics import labels, parse_usage, scrape
from tests.support.otlp import batch, request, span
from tests.support.senders import post_traces
from tests.support.service import RunningService, StartService

MAIN = multitenant_config()
BY_TEAM = "overrides:\n  acme:\n    cost_attribution:\n      dimensions: [team]\n"
BY_NAMESPACE = (
    "overrides:\n  acme:\n    cost_attribution:\n      dimensions: {k8s.namespace.name: namespace}\n"
)
REQUEST = request(batch({"service.name": "api", "team": "core", "k8s.namespace.name": "prod"}, [span()]))
SIZE = REQUEST.resource_spans[0].ByteSize()


async def start(start_service: StartService, tmp_path: Path, overrides: str = BY_TEAM) -> RunningService:
    return await start_service(load_config(write_config_files(tmp_path, MAIN, overrides)))


async def send(running: RunningService) -> None:
    assert (await running.post(REQUEST.SerializeToString(), "acme")).status == 200


async def reload_metrics(running: RunningService) -> tuple[float, str]:
    samples = await running.samples()
    [hash_labels] = [dict(keys) for name, keys in samples if name == "tempo_runtime_config_hash"]
    return samples[("tempo_runtime_config_last_reload_successful", frozenset())], hash_labels["sha256"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def attributed_next(running: RunningService) -> set[frozenset[tuple[str, str]]]:
    """The label sets the next request adds to (what the overrides in force say)."""
    before = await running.usage()
    await send(running)
    after = await running.usage()
    return {series for series, value in after.items() if value - before.get(series, 0) == SIZE}


async def test_edit_in_place_applies_to_the_next_request(start_service: StartService, tmp_path: Path) -> None:
    running = await start(start_service, tmp_path)
    assert await attributed_next(running) == {labels("acme", team="core")}
    (tmp_path / "overrides.yaml").write_text(BY_NAMESPACE)
    assert await running.service.reload_overrides()
    assert await attributed_next(running) == {labels("acme", namespace="prod")}
    assert await reload_metrics(running) == (1, sha256(tmp_path / "overrides.yaml"))
    assert labels("acme", team="core") in await running.usage(), "old series stay until stale"


async def test_replace_by_rename_applies(start_service: StartService, tmp_path: Path) -> None:
    running = await start(start_service, tmp_path)
    (tmp_path / "new.yaml").write_text(BY_NAMESPACE)
    os.replace(tmp_path / "new.yaml", tmp_path / "overrides.yaml")
    assert await running.service.reload_overrides()
    assert await attributed_next(running) == {labels("acme", namespace="prod")}


def _truncate_mid_edit(path: Path) -> None:
    path.write_text(BY_NAMESPACE[: BY_NAMESPACE.index("{k8s") + 5])


def _truncate_to_empty(path: Path) -> None:
    path.write_text("")


def _delete(path: Path) -> None:
    path.unlink()


def _make_unreadable(path: Path) -> None:
    path.unlink()
    path.mkdir()  # as root, permissions do not stop a read; a directory in its place does


def _invalid_yaml(path: Path) -> None:
    path.write_text("overrides:\n  acme: [unclosed\n")


def _nest_too_deeply(path: Path) -> None:
    path.write_text(f"overrides:\n  acme: {NESTED_TOO_DEEPLY}\n")


def _invalid_label(path: Path) -> None:
    path.write_text("overrides:\n  acme:\n    cost_attribution:\n      dimensions: {team: __team}\n")


def _unknown_key(path: Path) -> None:
    path.write_text("overrides:\n  acme:\n    cost_attribution:\n      dimension: [team]\n")


BAD_EDITS = [
    _truncate_mid_edit,
    _truncate_to_empty,
    _delete,
    _make_unreadable,
    _invalid_yaml,
    _nest_too_deeply,
    _invalid_label,
    _unknown_key,
]


@pytest.mark.parametrize("bad_edit", BAD_EDITS, ids=[f.__name__.strip("_") for f in BAD_EDITS])
async def test_a_bad_edit_keeps_the_last_good_overrides_until_fixed(
    start_service: StartService, tmp_path: Path, bad_edit: Callable[[Path], None]
) -> None:
    running = await start(start_service, tmp_path)
    good_hash = sha256(tmp_path / "overrides.yaml")
    bad_edit(tmp_path / "overrides.yaml")
    assert not await running.service.reload_overrides()
    assert await attributed_next(running) == {labels("acme", team="core")}
    assert await reload_metrics(running) == (0, good_hash)

    path = tmp_path / "overrides.yaml"
    if path.is_dir():
        path.rmdir()
    path.write_text(BY_NAMESPACE)
    assert await running.service.reload_overrides()
    assert await attributed_next(running) == {labels("acme", namespace="prod")}
    assert await reload_metrics(running) == (1, sha256(path))


async def test_unchanged_content_is_a_no_op_and_each_distinct_error_is_logged_once(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start(start_service, tmp_path)
    caplog.clear()  # what the start logged is not in question
    assert not await running.service.reload_overrides(), "same content, nothing to apply"
    caplog.set_level(logging.ERROR, logger="overrides.reload")
    path = tmp_path / "overrides.yaml"
    _invalid_label(path)
    for _ in range(3):
        await running.service.reload_overrides()
    _delete(path)
    for _ in range(3):
        await running.service.reload_overrides()
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 2, errors
    assert "overrides.yaml:4: overrides.acme.cost_attribution.dimensions" in errors[0]
    assert "cannot read" in errors[1]


async def test_a_deeply_nested_file_is_one_logged_validation_error_naming_the_file(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start(start_service, tmp_path)
    caplog.clear()  # what the start logged is not in question
    caplog.set_level(logging.ERROR, logger="overrides.reload")
    path = tmp_path / "overrides.yaml"
    _nest_too_deeply(path)
    for _ in range(3):
        assert not await running.service.reload_overrides()
    assert [r.getMessage() for r in caplog.records] == [
        "per-tenant overrides not reloaded, the last good ones stay in force: "
        f"{path}:2: nested too deeply (more than 100 levels)"
    ]
    assert (await reload_metrics(running))[0] == 0


async def test_lowering_max_cardinality_keeps_existing_series(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start(start_service, tmp_path, overrides="overrides: {}\n")
    for name in ("a", "b"):
        body = request(batch({"service.name": name}, [span()])).SerializeToString()
        assert (await running.post(body, "acme")).status == 200
    (tmp_path / "overrides.yaml").write_text(
        "overrides:\n  acme:\n    cost_attribution:\n      max_cardinality: 1\n"
    )
    assert await running.service.reload_overrides()
    for name in ("a", "c"):
        body = request(batch({"service.name": name}, [span()])).SerializeToString()
        assert (await running.post(body, "acme")).status == 200
    names = {dict(series)["service_name"] for series in await running.usage()}
    assert names == {"a", "b", "__overflow__"}


async def test_sighup_reloads_the_running_cli(tmp_path: Path) -> None:
    config = write_config_files(tmp_path, MAIN + "  per_tenant_override_period: 1h\n", BY_TEAM)
    async with aiohttp.ClientSession() as session:
        with running_cli(config) as cli:

            async def send_and_read() -> set[str]:
                answer = await post_traces(session, cli.traces_url, REQUEST.SerializeToString(), "acme")
                assert answer.status == 200
                usage = parse_usage(await scrape(session, cli.server_url + "/usage_metrics"))
                return {name for series in usage for name, _ in series}

            assert "team" in await send_and_read()
            (tmp_path / "overrides.yaml").write_text(BY_NAMESPACE)
            cli.process.send_signal(signal.SIGHUP)
            assert await asyncio.to_thread(cli.next_log_line_containing, "per-tenant overrides reloaded")
            assert "namespace" in await send_and_read()
            assert cli.terminate() == 0


async def test_status_overrides_lists_tenants_and_explains_each_value(
    start_service: StartService, tmp_path: Path
) -> None:
    import yaml

    running = await start(start_service, tmp_path)
    async with running.session.get(running.server_url + "/status/overrides") as response:
        assert yaml.safe_load(await response.text()) == {"tenants": ["acme"]}
    async with running.session.get(running.server_url + "/status/overrides/acme") as response:
        assert yaml.safe_load(await response.text()) == {
            "tenant": "acme",
            "cost_attribution": {
                "dimensions": {"value": {"team": "team"}, "source": "runtime_file"},
                "max_cardinality": {"value": 0, "source": "defaults"},
                "distinct_counts": {
                    kind: {
                        "enabled": {"value": False, "source": "defaults"},
                        "attributes": {"value": attributes, "source": "defaults"},
                    }
                    for kind, attributes in (
                        ("sessions", ["session.id", "session_id", "splunk.rumSessionId"]),
                        ("hosts", ["host.name", "host.id"]),
                    )
                },
            },
            "ingestion": {
                "rate_strategy": {"value": "local", "source": "defaults"},
                "rate_limit_bytes": {"value": 15_000_000, "source": "defaults"},
                "burst_size_bytes": {"value": 20_000_000, "source": "defaults"},
                "max_attribute_bytes": {"value": 2048, "source": "defaults"},
            },
            "forwarders": {"value": [], "source": "defaults"},
        }
    async with running.session.get(running.server_url + "/status/overrides/someone") as response:
        described = yaml.safe_load(await response.text())
        assert described["cost_attribution"]["dimensions"] == {
            "value": {"service.name": "service_name"},
            "source": "defaults",
        }
    async with running.session.get(running.server_url + "/status/overrides/bad*tenant'") as response:
        assert response.status == 200  # those characters are allowed
    async with running.session.get(running.server_url + "/status/overrides/t%20x") as response:
        assert response.status == 400


async def test_status_runtime_config_shows_the_file_in_force_with_hash_and_time(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start(start_service, tmp_path)
    path = tmp_path / "overrides.yaml"
    good_hash = sha256(path)
    _invalid_label(path)
    await running.service.reload_overrides()
    async with running.session.get(running.server_url + "/status/runtime_config") as response:
        text = await response.text()
    assert f"# sha256: {good_hash}\n" in text
    assert "# last successful reload: " in text and "the last reload failed" in text
    assert text.endswith(BY_TEAM), "the content in force, not the broken file"


async def test_status_config_shows_effective_defaults_and_diff(
    start_service: StartService, tmp_path: Path
) -> None:
    import yaml

    running = await start(start_service, tmp_path)

    async def get(query: str) -> tuple[int, object]:
        async with running.session.get(running.server_url + "/status/config" + query) as response:
            return response.status, yaml.safe_load(await response.text())

    status, effective = await get("")
    assert status == 200 and isinstance(effective, dict)
    assert effective["multitenancy_enabled"] is True
    assert effective["distributor"]["usage"]["cost_attribution"]["stale_duration"] == "15m0s"
    assert effective["overrides"]["per_tenant_override_config"] == str(tmp_path / "overrides.yaml")
    status, defaults = await get("?mode=defaults")
    assert isinstance(defaults, dict) and defaults["server"]["http_listen_port"] == 3200
    assert defaults["distributor"]["usage"]["cost_attribution"]["enabled"] is False
    status, diff = await get("?mode=diff")
    assert diff == {
        "multitenancy_enabled": True,
        "server": {"http_listen_port": 0},
        "distributor": {
            # Only HTTP is listed, so gRPC, which the defaults run, is off.
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}, "grpc": None}}},
            "usage": {"cost_attribution": {"enabled": True}},
        },
        # Nothing of the features left off (user-configurable overrides, usage attribution), although
        # their relative paths, resolved against the config file, differ from the bare defaults.
        "overrides": {
            "defaults": {"cost_attribution": {"dimensions": {"service.name": "service_name"}}},
            "per_tenant_override_config": str(tmp_path / "overrides.yaml"),
        },
    }
    status, _ = await get("?mode=everything")
    assert status == 400


async def test_expand_env_applies_to_the_overrides_file_too(
    start_service: StartService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OWNER_LABEL", "owner")
    config = write_config_files(
        tmp_path,
        MAIN,
        "overrides:\n  acme:\n    cost_attribution:\n      dimensions: {team: ${OWNER_LABEL}}\n",
    )
    running = await start_service(load_config(config, expand_env=True))
    assert await attributed_next(running) == {labels("acme", owner="core")}
    monkeypatch.setenv("OWNER_LABEL", "squad")
    (tmp_path / "overrides.yaml").write_text(
        "overrides:\n  acme:\n    cost_attribution:\n      dimensions: {team: ${OWNER_LABEL}}  # edited\n"
    )
    assert await running.service.reload_overrides()
    assert await attributed_next(running) == {labels("acme", squad="core")}
