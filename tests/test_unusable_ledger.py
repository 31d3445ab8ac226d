"""A ledger file that is not (or no longer) a usable SQLite database: the service keeps ingesting, says
so loudly, counts what it cannot record, leaves the file in place, and the Usage Attribution API
answers 503 instead of 500 (or of refusing to start)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from distributor.ledger.ledger import BYTES_USAGE
from tests.support.attribution import RunningAttribution, attribution_service, spans_request, write_config
from tests.support.cli import running_cli
from tests.support.metrics import sample_value
from tests.support.senders import post_traces

HOURLY_PATH = "/api/v1/usage/hourly-attribution"
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"
GARBAGE = bytes(range(256)) * 64  # 16 KiB without SQLite's header: "file is not a database"
KEY_HEADERS = {"DD-API-KEY": "acme-api", "DD-APPLICATION-KEY": "acme-app"}
HOURLY_PARAMS = {"start_hr": "2026-11-22T10", "usage_type": BYTES_USAGE}


def garbage_ledger(directory: Path) -> Path:
    """The ledger path of write_config(directory), filled with garbage before the service starts."""
    path = directory / "data" / "ledger.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(GARBAGE)
    return path


def unavailable_answer(path: Path, problem: str) -> dict[str, Any]:
    return {"errors": [f"usage ledger unavailable: {path}: {problem}"]}


async def api_get(running: RunningAttribution, path: str, params: dict[str, str]) -> tuple[int, Any]:
    status, body, _ = await running.get(path, params, key="acme")
    return status, body


async def test_a_corrupted_ledger_file_at_start_leaves_ingest_running_counts_usage_as_unrecorded_and_503s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path)
    ledger = garbage_ledger(tmp_path)
    caplog.set_level(logging.ERROR, logger="distributor")
    async with attribution_service(config) as running:
        async with running.session.get(running.server_url + "/ready") as ready:
            assert ready.status == 200
        await running.send("acme", spans_request("checkout", 3, team="payments"))
        await running.send("acme", spans_request("search", 2, team="discovery"))
        tracked = await running.tenant_usage("acme")
        assert tracked > 0  # /usage_metrics counts as if the ledger were there

        samples = await running.samples()
        assert sample_value(samples, "tempo_usage_ledger_available") == 0
        assert (
            sample_value(
                samples,
                "tempo_usage_ledger_unrecorded_bytes_total",
                tenant="acme",
                reason="ledger_unavailable",
            )
            == tracked
        )
        assert (
            sample_value(
                samples,
                "tempo_usage_ledger_unrecorded_spans_total",
                tenant="acme",
                reason="ledger_unavailable",
            )
            == 5
        )
        assert sample_value(samples, "tempo_usage_ledger_flushes_total", result="failure") == 0

        expected = unavailable_answer(ledger, "file is not a database")
        assert await api_get(running, HOURLY_PATH, HOURLY_PARAMS) == (503, expected)
        assert await api_get(running, MONTHLY_PATH, {"start_month": "2026-11", "fields": "*"}) == (
            503,
            expected,
        )
        # The key is checked first: a caller without one learns nothing about the ledger.
        status, _, _ = await running.get(HOURLY_PATH, HOURLY_PARAMS, key="")
        assert status == 403

    (record,) = [record for record in caplog.records if "usage ledger unavailable" in record.getMessage()]
    assert record.levelno == logging.ERROR
    assert f"{ledger}: file is not a database" in record.getMessage()
    assert "WITHOUT the usage ledger" in record.getMessage()
    assert ledger.read_bytes() == GARBAGE  # left in place for the operator, untouched by the stop


async def test_the_process_starts_on_a_corrupted_ledger_file_answers_ready_accepts_traces_and_503s(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, flush_period="1s")
    ledger = garbage_ledger(tmp_path)
    async with aiohttp.ClientSession() as session:
        with running_cli(config) as cli:
            async with session.get(cli.server_url + "/ready") as ready:
                assert ready.status == 200
            answer = await post_traces(
                session, cli.traces_url, spans_request("checkout", 2, team="payments"), "acme"
            )
            assert answer.status == 200, answer.body
            async with session.get(
                cli.server_url + HOURLY_PATH, params=HOURLY_PARAMS, headers=KEY_HEADERS
            ) as response:
                assert response.status == 503
                assert await response.json() == unavailable_answer(ledger, "file is not a database")
            async with session.get(cli.server_url + "/metrics") as metrics:
                text = await metrics.text()
            assert "tempo_usage_ledger_available 0.0" in text
            assert (
                'tempo_usage_ledger_unrecorded_spans_total{reason="ledger_unavailable",tenant="acme"} 2.0'
                in text
            )
            assert cli.terminate() == 0
    assert ledger.read_bytes() == GARBAGE


async def test_a_ledger_file_that_becomes_unreadable_makes_the_api_answer_503_not_500(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    ledger = tmp_path / "data" / "ledger.db"
    async with attribution_service(config) as running:
        await running.send("acme", spans_request("checkout", 1, team="payments"))
        await running.flush()
        # The file and its write-ahead log overwritten under the running service (a disk fault, a bad
        # copy): the reader's first query opens it and finds no database.
        for part in (ledger, ledger.with_name(ledger.name + "-wal")):
            size = part.stat().st_size
            part.write_bytes((GARBAGE * (size // len(GARBAGE) + 1))[:size])
        status, body = await api_get(running, HOURLY_PATH, HOURLY_PARAMS)
        assert status == 503
        (message,) = body["errors"]
        assert message.startswith(f"usage ledger unavailable: {ledger}: ")
        samples = await running.samples()
        assert sample_value(samples, "tempo_usage_ledger_available") == 1  # it was opened; reads fail
