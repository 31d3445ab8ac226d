"""Background work never dies silently, through the real service on 127.0.0.1: a reload, a ledger flush
or a forwarding client that fails is logged and counted, the service keeps serving, nothing accepted
goes uncounted, and shutdown still runs every step."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from distributor.attribution.config import UsageAttributionConfig
from distributor.common.discards import DiscardReason
from distributor.common.lifecycle import StopFailed
from distributor.config import Config
from distributor.forwarding.clients import ExportClient
from distributor.ledger.config import LedgerConfig
from distributor.ledger.sqlite import SqliteLedgerStore
from distributor.overrides.config import UserConfigurableOverridesConfig
from distributor.server.config import ServerConfig
from tests.support.backends import RecordingBackend, forwarder_to
from tests.support.otlp import batch, request, span
from tests.support.polling import eventually
from tests.support.service import RunningService, StartService, make_config, with_forwarders

TASK_FAILURES = "tempo_distributor_background_task_failures_total"
INTERNAL_ERROR = DiscardReason.FORWARD_INTERNAL_ERROR
REQUEST = request(batch({"service.name": "api", "team": "core"}, [span(), span(pad=40)]))
SPANS = 2


@pytest.fixture
async def backend() -> AsyncIterator[RecordingBackend]:
    """Asked for before `start_service`, so it still answers while the service stops."""
    started = await RecordingBackend().start()
    yield started
    await started.stop()


def forwarding_config(backend: RecordingBackend, **changes: object) -> Config:
    """Multitenant, forwarding every tenant to `backend` with one worker per tenant queue."""
    server = ServerConfig("127.0.0.1", 0, graceful_shutdown_timeout=5.0)
    config = make_config(multitenancy=True, server=server, **changes)
    return with_forwarders(config, forwarder_to(backend, workers=1))


def with_overrides(config: Config, **changes: object) -> Config:
    return replace(config, overrides=replace(config.overrides, **changes))  # type: ignore[arg-type]


async def send(running: RunningService, tenant: str = "acme") -> None:
    answer = await running.post(REQUEST.SerializeToString(), tenant)
    assert answer.status == 200, answer.body


def sample(running: RunningService, name: str, **labels: str) -> float:
    return running.service.registry.get_sample_value(name, labels) or 0.0


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if text in record.getMessage()]


async def test_an_unreadable_entry_among_user_overrides_is_skipped_and_logged_once_and_reloads_go_on(
    start_service: StartService, backend: RecordingBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "user-overrides"
    config = with_overrides(
        forwarding_config(backend),
        user_configurable_overrides=UserConfigurableOverridesConfig(enabled=True, storage_path=directory),
        per_tenant_override_period=0.01,
    )
    running = await start_service(config)
    (directory / "acme.json").mkdir(parents=True)  # named like a tenant's document, not a file
    (directory / "globex.json").write_text('{"cost_attribution": {"dimensions": ["team"]}}')

    await eventually(lambda: "globex" in running.service.overrides.snapshot.user)
    await running.service.reload_overrides()
    await running.service.reload_overrides()
    assert len(logged(caplog, "acme.json")) == 1, "logged once, not at every reload"
    assert "cannot be read" in logged(caplog, "acme.json")[0]

    await send(running, "acme")
    await running.service.stop()  # does not raise, and delivers what was accepted
    assert backend.spans_delivered() == SPANS


async def test_a_per_tenant_file_reload_that_raises_is_counted_logged_once_and_later_reloads_apply(
    start_service: StartService,
    backend: RecordingBackend,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "overrides.yaml"
    path.write_text("overrides:\n  acme:\n    cost_attribution:\n      dimensions: [team]\n")
    config = with_overrides(
        forwarding_config(backend), per_tenant_override_config=path, per_tenant_override_period=0.01
    )
    running = await start_service(config)
    reloader = running.service.reloader
    assert reloader is not None

    def broken_reload() -> bool:
        raise RuntimeError("the reloader has a bug")

    monkeypatch.setattr(reloader, "reload", broken_reload)
    await eventually(lambda: sample(running, TASK_FAILURES, task="overrides_reload") >= 3)
    assert len(logged(caplog, "the reloader has a bug")) == 1
    await send(running, "acme")  # the service keeps serving meanwhile

    monkeypatch.undo()
    path.write_text("overrides:\n  acme:\n    cost_attribution:\n      dimensions: [service.name]\n")
    await eventually(
        lambda: [d.label for d in running.service.overrides.for_tenant("acme").dimensions] == ["service_name"]
    )
    assert logged(caplog, "background task overrides_reload works again")
    await send(running, "acme")
    await running.service.stop()
    assert backend.spans_delivered() == 2 * SPANS


def ledger_config(tmp_path: Path, flush_period: float) -> UsageAttributionConfig:
    return UsageAttributionConfig(
        enabled=True, ledger=LedgerConfig(sqlite_path=tmp_path / "ledger.db", flush_period=flush_period)
    )


def stored_bytes(path: Path, tenant: str) -> int:
    store = SqliteLedgerStore(path)
    try:
        return sum(row.spans_bytes for row in store.hourly([tenant], 0, 2**40, store.snapshot().seq))
    finally:
        store.close()


async def tracked_bytes(running: RunningService, tenant: str) -> float:
    return sum(value for labels, value in (await running.usage()).items() if ("tenant", tenant) in labels)


async def test_a_ledger_flush_that_raises_keeps_the_usage_counts_the_failure_and_the_next_flush_stores_it(
    start_service: StartService, backend: RecordingBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = forwarding_config(backend, usage_attribution=ledger_config(tmp_path, flush_period=0.01))
    running = await start_service(config)
    ledger = running.service.ledger
    assert ledger is not None

    def failing_write(*args: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ledger.store, "write", failing_write)
    await send(running, "acme")
    await eventually(lambda: sample(running, "tempo_usage_ledger_flushes_total", result="failure") >= 3)
    # Kept in memory (read between two flushes: a flush under way holds the batch for a moment).
    await eventually(lambda: sample(running, "tempo_usage_ledger_pending_entries") > 0)
    await send(running, "acme")  # still serving
    assert stored_bytes(tmp_path / "ledger.db", "acme") == 0

    monkeypatch.undo()
    # Not "pending is 0": the batch leaves memory before the writer thread has stored it.
    tracked = await tracked_bytes(running, "acme")
    await eventually(lambda: stored_bytes(tmp_path / "ledger.db", "acme") == tracked)
    # Pending until the flush hears back from the writer thread, a moment after the file has it.
    await eventually(lambda: sample(running, "tempo_usage_ledger_pending_entries") == 0)
    await running.service.stop()
    assert backend.spans_delivered() == 2 * SPANS


class RaisingOnce:
    """A client with a bug: its first export raises something other than ExportFailure."""

    def __init__(self, client: ExportClient) -> None:
        self.client = client
        self.raised = False

    async def start(self) -> None:
        await self.client.start()

    async def export(self, tenant: str, payload: bytes) -> int:
        if not self.raised:
            self.raised = True
            raise KeyError("a bug in the client")
        return await self.client.export(tenant, payload)

    async def close(self) -> None:
        await self.client.close()


async def test_a_client_that_raises_costs_one_request_counted_as_internal_error_and_the_queue_goes_on(
    start_service: StartService, backend: RecordingBackend
) -> None:
    running = await start_service(forwarding_config(backend))
    forwarder = running.service.forwarders["backend"]
    forwarder.client = RaisingOnce(forwarder.client)

    await send(running, "acme")
    await eventually(lambda: forwarder.dropped_requests == 1)
    assert sample(running, "tempo_discarded_spans_total", tenant="acme", reason=INTERNAL_ERROR) == SPANS
    dropped = {"forwarder": "backend", "tenant": "acme", "reason": INTERNAL_ERROR}
    assert sample(running, "tempo_distributor_forwarder_dropped_requests_total", **dropped) == 1
    assert sample(running, "tempo_distributor_forwarder_dropped_spans_total", **dropped) == SPANS
    discarded = await running.discarded()
    accepted = await tracked_bytes(running, "acme")
    assert sum(v for labels, v in discarded.items() if ("reason", INTERNAL_ERROR) in labels) == accepted

    await send(running, "acme")  # the tenant's queue is still served by its one worker
    await eventually(lambda: backend.spans_delivered() == SPANS)
    await running.service.stop()


class FailingToClose:
    """A client that delivers, then fails to close."""

    def __init__(self, client: ExportClient) -> None:
        self.client = client

    async def start(self) -> None:
        await self.client.start()

    async def export(self, tenant: str, payload: bytes) -> int:
        return await self.client.export(tenant, payload)

    async def close(self) -> None:
        await self.client.close()
        raise OSError("the channel would not close")


async def test_stop_runs_every_step_when_a_component_fails_to_stop_and_names_it(
    start_service: StartService, backend: RecordingBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = forwarding_config(backend, usage_attribution=ledger_config(tmp_path, flush_period=3600.0))
    running = await start_service(config)
    forwarder = running.service.forwarders["backend"]
    forwarder.client = FailingToClose(forwarder.client)
    backend.hold = asyncio.Event()
    await send(running, "acme")

    stopping = asyncio.create_task(running.service.stop())
    await eventually(lambda: logged(caplog, "delivering 1 queued requests"))
    backend.hold.set()
    with pytest.raises(StopFailed, match=r"forwarders.*the channel would not close"):
        await stopping

    assert backend.spans_delivered() == SPANS, "the forwarders delivered before failing to close"
    assert logged(caplog, "all queued requests delivered")
    assert stored_bytes(tmp_path / "ledger.db", "acme") > 0, "the ledger's final flush still ran"
    with pytest.raises(OSError):  # the server port closed too
        await asyncio.open_connection(*running.service.server_address or ("127.0.0.1", 0))


@pytest.fixture(autouse=True)
def _capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="distributor")
