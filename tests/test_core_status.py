"""Whether the compiled ingest core scans requests is visible: a /metrics gauge, and a start-up warning
when it is missing."""

from __future__ import annotations

import logging

import pytest

from distributor.ingest import scan
from tests.support.metrics import sample_value
from tests.support.service import StartService


async def test_the_gauge_says_whether_the_core_is_loaded(start_service: StartService) -> None:
    running = await start_service()
    loaded = sample_value(await running.samples(), "tempo_distributor_ingest_core_loaded")
    assert loaded == (1.0 if scan.CORE is not None else 0.0)


async def test_a_service_without_the_core_warns_and_says_so_in_the_gauge(
    start_service: StartService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(scan, "CORE", None)
    with caplog.at_level(logging.WARNING):
        running = await start_service()
    assert sample_value(await running.samples(), "tempo_distributor_ingest_core_loaded") == 0.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("compiled ingest core is not loaded" in message for message in warnings)
