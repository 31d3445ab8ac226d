"""Overrides files that could freeze or bloat the service (alias bombs, huge files, FIFOs, many tenants)
are read off the event loop and refused, while the last good overrides stay in force."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from distributor.config import load_config
from tests.support.config_files import alias_bomb, multitenant_config, write_config_files
from tests.support.metrics import labels
from tests.support.polling import eventually
from tests.support.service import RunningService, StartService
from tests.test_overrides_reload import BY_NAMESPACE, BY_TEAM, attributed_next, reload_metrics, sha256


def by_namespace_and_many_tenants(count: int) -> str:
    """BY_NAMESPACE plus `count` more tenants: a valid file whose parsing takes a visible time."""
    entry = "  tenant-{0}:\n    cost_attribution:\n      dimensions: {{team: owner, app: service}}\n"
    return BY_NAMESPACE + "".join(entry.format(index) for index in range(count))


async def start(start_service: StartService, tmp_path: Path, extra: str = "") -> RunningService:
    config = write_config_files(tmp_path, multitenant_config() + extra, BY_TEAM)
    return await start_service(load_config(config))


async def ready_status(running: RunningService) -> int:
    async with running.session.get(running.server_url + "/ready") as response:
        return response.status


async def reload_failed(running: RunningService) -> bool:
    return (await reload_metrics(running))[0] == 0


async def reload_succeeded(running: RunningService) -> bool:
    return (await reload_metrics(running))[0] == 1


@contextlib.contextmanager
def fifo_released_after(path: Path, seconds: float) -> Iterator[None]:
    """A safety net should a reader ever block on the FIFO: after `seconds`, a writer opens it (only
    if a reader is waiting, so it never blocks itself) and writes a valid file, which unblocks it."""

    def release() -> None:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO when nobody reads it
            with os.fdopen(fd, "w") as writer:
                writer.write(BY_NAMESPACE)

    timer = threading.Timer(seconds, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()


async def test_an_alias_bomb_is_refused_and_the_last_good_overrides_stay(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start(start_service, tmp_path)
    caplog.clear()  # what the start logged is not in question
    good_hash = sha256(tmp_path / "overrides.yaml")
    caplog.set_level(logging.ERROR, logger="overrides.reload")
    bomb = "overrides: {}\n" + alias_bomb()
    assert len(bomb) < 400
    (tmp_path / "overrides.yaml").write_text(bomb)
    running.service.reload_overrides_soon()
    assert await ready_status(running) == 200
    await eventually(lambda: reload_failed(running), "the reload fails")
    assert [r.getMessage() for r in caplog.records] == [
        "per-tenant overrides not reloaded, the last good ones stay in force: "
        f"{tmp_path / 'overrides.yaml'}:8: too many nodes (more than 1000000 once aliases are expanded)"
    ]
    assert await attributed_next(running) == {labels("acme", team="core")}
    assert await reload_metrics(running) == (0, good_hash)


async def test_a_file_over_the_size_limit_is_refused_naming_the_file_and_the_limit(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start(start_service, tmp_path, "  per_tenant_override_max_bytes: 1000\n")
    caplog.clear()  # what the start logged is not in question
    good_hash = sha256(tmp_path / "overrides.yaml")
    caplog.set_level(logging.ERROR, logger="overrides.reload")
    path = tmp_path / "overrides.yaml"
    path.write_text(BY_NAMESPACE + "#" * 2000 + "\n")
    assert not await running.service.reload_overrides()
    assert [r.getMessage() for r in caplog.records] == [
        "per-tenant overrides not reloaded, the last good ones stay in force: "
        f"{path}: is {path.stat().st_size} bytes, over the limit of 1000 bytes "
        "(overrides.per_tenant_override_max_bytes)"
    ]
    assert await attributed_next(running) == {labels("acme", team="core")}
    assert await reload_metrics(running) == (0, good_hash)

    path.write_text(BY_NAMESPACE)
    assert await running.service.reload_overrides()
    assert await attributed_next(running) == {labels("acme", namespace="prod")}


async def test_a_fifo_at_the_path_is_refused_without_blocking_and_a_file_put_back_applies(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start(start_service, tmp_path)
    caplog.clear()  # what the start logged is not in question
    caplog.set_level(logging.ERROR, logger="overrides.reload")
    path = tmp_path / "overrides.yaml"
    path.unlink()
    os.mkfifo(path)
    with fifo_released_after(path, 5.0):
        running.service.reload_overrides_soon()
        assert await ready_status(running) == 200
        await eventually(lambda: reload_failed(running), "the reload fails", timeout=4.0)
    assert [r.getMessage() for r in caplog.records] == [
        f"per-tenant overrides not reloaded, the last good ones stay in force: {path}: "
        "not a regular file (a FIFO)"
    ]
    assert await attributed_next(running) == {labels("acme", team="core")}

    path.unlink()
    path.write_text(BY_NAMESPACE)
    running.service.reload_overrides_soon()
    await eventually(lambda: reload_succeeded(running), "the reload succeeds")
    assert await reload_metrics(running) == (1, sha256(path))
    assert await attributed_next(running) == {labels("acme", namespace="prod")}


async def test_requests_are_answered_while_a_large_file_is_parsed(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start(start_service, tmp_path)
    path = tmp_path / "overrides.yaml"
    path.write_text(by_namespace_and_many_tenants(3000))
    running.service.reload_overrides_soon()
    assert await ready_status(running) == 200
    assert running.service.overrides.snapshot.per_tenant.get("tenant-0") is None, "answered mid-parse"
    await eventually(lambda: running.service.overrides.snapshot.per_tenant.get("tenant-0"), "applied")
    assert await attributed_next(running) == {labels("acme", namespace="prod")}


async def test_a_fifo_among_user_overrides_is_skipped_without_blocking(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config_files(tmp_path, multitenant_config(user_configurable=True), BY_TEAM)
    running = await start_service(load_config(config))
    caplog.clear()  # what the start logged is not in question
    caplog.set_level(logging.ERROR, logger="overrides.user_configurable")
    directory = tmp_path / "user-overrides"
    directory.mkdir(exist_ok=True)
    os.mkfifo(directory / "acme.json")
    (directory / "globex.json").write_text('{"cost_attribution": {"dimensions": ["team"]}}')
    with fifo_released_after(directory / "acme.json", 5.0):
        running.service.reload_overrides_soon()
        assert await ready_status(running) == 200
        await eventually(lambda: "globex" in running.service.overrides.snapshot.user, timeout=4.0)
    assert [r.getMessage() for r in caplog.records] == [
        f"ignoring {directory / 'acme.json'}, it cannot be read: not a regular file (a FIFO)"
    ]
