"""The log an operator reads: logfmt like Tempo (or JSON), Tempo's level names, a start-up summary, and
refused requests and forward retries logged at a bounded rate."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from distributor.common.logging_setup import (
    LIBRARY_LOGGERS,
    LimitedLog,
    configure_logging,
    fields,
    parse_log_level,
)
from distributor.ingest.pipeline import PushRefused, Refusal
from distributor.ingest.scan import InvalidTraces
from distributor.receivers.otlp import ReceiveError, ReceiveErrorReason
from distributor.receivers.rejections import RejectionLog, rejection_level
from tests.support.backends import Answer, forwarder_to
from tests.support.cli import run_cli, running_cli
from tests.support.clock import ManualClock
from tests.support.otlp import sample_request
from tests.support.polling import eventually
from tests.support.service import StartService, make_config, with_forwarders
from tests.test_forwarding import StartBackend, config_for, start_backend

__all__ = ["start_backend"]  # a fixture

LOGFMT_LINE = re.compile(
    r"^level=(debug|info|warn|error) ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    r' caller=[\w.]+\.py:\d+ msg=("[^"]*"|\S+)'
)
RECEIVERS = (
    "  receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}, grpc: {endpoint: '127.0.0.1:0'}}}}\n"
)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The process's log configured into a string; restored to pytest's capture afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("debug", "logfmt", stream)
    yield stream
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


# --- the formats --------------------------------------------------------------------------------------


def test_logfmt_line_has_tempos_keys_in_order_then_the_fields_quoted_where_needed() -> None:
    stream = io.StringIO()
    configure_logging("info", "logfmt", stream)
    try:
        logging.getLogger("distributor.example").warning(
            "refused %s", "a request", extra=fields(tenant='ac me"x', status=429, empty="", ok=True)
        )
    finally:
        configure_logging("info", "logfmt", io.StringIO())
    (line,) = lines_of(stream)
    assert LOGFMT_LINE.match(line), line
    assert line.startswith("level=warn ts=")
    assert " caller=test_logs.py:" in line
    assert line.endswith(' msg="refused a request" tenant="ac me\\"x" status=429 empty= ok=true')


def test_json_line_carries_the_same_keys() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        logging.getLogger("distributor.example").info("ready", extra=fields(server="http://127.0.0.1:1"))
    finally:
        configure_logging("info", "logfmt", io.StringIO())
    document = json.loads(stream.getvalue())
    assert list(document) == ["level", "ts", "caller", "msg", "server"]
    assert document["level"] == "info" and document["msg"] == "ready"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["ts"])


def test_an_exception_is_one_line_with_its_traceback_escaped() -> None:
    stream = io.StringIO()
    configure_logging("info", "logfmt", stream)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("distributor.example").exception("failed")
    finally:
        configure_logging("info", "logfmt", io.StringIO())
    (line,) = lines_of(stream)
    assert line.startswith("level=error ") and 'err="Traceback' in line and "RuntimeError: boom" in line


@pytest.mark.parametrize(
    ("name", "level"),
    [("debug", logging.DEBUG), ("info", logging.INFO), ("warn", logging.WARNING), ("WARNING", 30)],
)
def test_tempos_level_names_are_accepted(name: str, level: int) -> None:
    assert parse_log_level(name) == level


def test_debug_shows_our_lines_and_keeps_the_libraries_at_warn(log_output: io.StringIO) -> None:
    logging.getLogger("distributor.example").debug("our own detail")
    logging.getLogger("asyncio").debug("Using selector: EpollSelector")
    logging.getLogger("grpc._cython").info("polling")
    logging.getLogger("asyncio").warning("a library's warning")
    text = log_output.getvalue()
    assert "our own detail" in text
    assert "EpollSelector" not in text and "polling" not in text
    assert 'msg="a library\'s warning" logger=asyncio' in text


# --- the command line ---------------------------------------------------------------------------------


def write_config(tmp_path: Path, server_extra: str = "") -> Path:
    config = tmp_path / "distributor.yaml"
    config.write_text("server: {http_listen_port: 0" + server_extra + "}\ndistributor:\n" + RECEIVERS)
    return config


def test_log_flags_take_tempos_names_and_refuse_others(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    refused = run_cli("--config", str(config), "--log.level", "verbose")
    assert refused.returncode == 2
    assert "unknown log level 'verbose'" in refused.stderr
    refused = run_cli("--config", str(config), "-log.format", "xml")
    assert refused.returncode == 2 and "unknown log format 'xml'" in refused.stderr


def test_server_log_format_json_from_the_configuration(tmp_path: Path) -> None:
    config = write_config(tmp_path, ", log_format: json, log_level: info")
    with running_cli(config) as cli:
        assert cli.terminate() == 0
        text = cli.startup_log + cli.log_after_exit()
    lines = [json.loads(line) for line in text.splitlines()]
    assert {"level", "ts", "caller", "msg"} <= set(lines[0])
    assert any(line["msg"] == "distributor ready" for line in lines)


def test_the_command_line_wins_over_the_configuration(tmp_path: Path) -> None:
    config = write_config(tmp_path, ", log_format: json")
    with running_cli(config, "--log.format", "logfmt") as cli:
        assert LOGFMT_LINE.match(cli.ready_line), cli.ready_line


def test_warn_hides_info_lines() -> None:
    stream = io.StringIO()
    configure_logging("warn", "logfmt", stream)
    try:
        logging.getLogger("distributor.example").info("routine")
        logging.getLogger("distributor.example").warning("notable")
    finally:
        configure_logging("info", "logfmt", io.StringIO())
    assert [line.split("msg=")[1] for line in lines_of(stream)] == ["notable"]


def test_start_up_summary_names_forwarders_masked_ledger_overrides_and_listeners(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("overrides:\n  acme: {}\n  globex: {}\n")
    config = tmp_path / "distributor.yaml"
    config.write_text(
        "server: {http_listen_port: 0}\n"
        "distributor:\n" + RECEIVERS + "  forwarders:\n"
        "    - name: vendor\n"
        "      backend: otlphttp\n"
        "      otlphttp: {endpoint: 'https://user:hunter2@vendor.example/otlp?api_key=s3cret'}\n"
        "usage_attribution:\n"
        "  enabled: true\n"
        "  ledger: {sqlite: {path: ledger.db}}\n"
        "overrides:\n"
        "  per_tenant_override_config: overrides.yaml\n"
    )
    with running_cli(config) as cli:
        ready = cli.ready_line
        assert cli.terminate() == 0
        text = cli.startup_log + cli.log_after_exit()
    assert "hunter2" not in text and "s3cret" not in text
    forwarder = next(line for line in text.splitlines() if "forwarder=vendor" in line)
    assert "backend=otlphttp" in forwarder
    assert "vendor.example/otlp?api_key=" in forwarder
    ledger = next(line for line in text.splitlines() if 'msg="usage ledger: sqlite' in line)
    assert "ledger.db" in ledger
    tenants = next(line for line in text.splitlines() if "per-tenant overrides" in line)
    assert "tenants=2" in tenants and "overrides.yaml" in tenants
    assert re.search(r"core_loaded=(true|false)", text)
    assert LOGFMT_LINE.match(ready)
    assert re.search(r" server=http://127\.0\.0\.1:\d+ otlp_http=http://127\.0\.0\.1:\d+/v1/traces", ready)
    assert re.search(r" otlp_grpc=127\.0\.0\.1:\d+", ready)


# --- rate-limited lines -------------------------------------------------------------------------------


def test_each_reason_gets_its_limit_of_lines_per_window_then_one_line_counts_the_rest(
    log_output: io.StringIO,
) -> None:
    clock = ManualClock()
    limited = LimitedLog(logging.getLogger("distributor.example"), limit=3, window=60.0, clock=clock)
    for i in range(1000):
        limited.log(logging.INFO, "flood", "line %d", i)
    limited.log(logging.INFO, "other", "another reason")
    assert [line.split("msg=")[1] for line in lines_of(log_output)] == [
        '"line 0" reason=flood',
        '"line 1" reason=flood',
        '"line 2" reason=flood',
        '"another reason" reason=other',
    ]
    clock.advance(59.0)
    limited.log(logging.INFO, "flood", "still the same window")
    assert len(lines_of(log_output)) == 4
    clock.advance(1.0)
    limited.log(logging.INFO, "flood", "a new window")
    assert len(lines_of(log_output)) == 6
    assert "998 more lines of reason flood were left out in the previous 60s" in lines_of(log_output)[4]
    assert "suppressed=998" in lines_of(log_output)[4]
    assert 'msg="a new window" reason=flood' in lines_of(log_output)[5]


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (ReceiveError(ReceiveErrorReason.UNSUPPORTED_CONTENT_TYPE, "x"), logging.INFO),
        (ReceiveError(ReceiveErrorReason.TOO_LARGE, "x"), logging.INFO),
        (InvalidTraces("x"), logging.INFO),
        (PushRefused(Refusal.RATE_LIMITED, "x", 1.0), logging.WARNING),
        (PushRefused(Refusal.QUEUE_FULL, "x", None), logging.WARNING),
    ],
)
def test_client_mistakes_are_info_and_load_shedding_is_warn(error: object, level: int) -> None:
    assert rejection_level(error) == level  # type: ignore[arg-type]


async def test_refused_http_requests_are_logged_at_most_the_limit(
    start_service: StartService, log_output: io.StringIO
) -> None:
    running = await start_service(make_config())
    running.service.otlp_http.rejections = RejectionLog("otlp_http", ManualClock(), limit=2)
    for _ in range(5):
        answer = await running.post(b"\x00", headers={"Content-Type": "text/plain"})
        assert answer.status == 415
    refused = [line for line in lines_of(log_output) if "request refused" in line]
    assert len(refused) == 2
    assert refused[0].startswith("level=info ")
    assert "reason=unsupported_content_type transport=otlp_http status=415" in refused[0]


async def test_rate_limited_requests_are_warnings_on_both_transports(
    start_service: StartService, log_output: io.StringIO
) -> None:
    config = with_forwarders(make_config(multitenancy=True), rate_limit_bytes=1, burst_size_bytes=1)
    running = await start_service(config)
    body = sample_request().SerializeToString()
    assert (await running.post(body, tenant="acme")).status == 413
    assert (await running.export(body, tenant="acme")).code.name == "RESOURCE_EXHAUSTED"
    refused = [line for line in lines_of(log_output) if "request refused" in line]
    assert len(refused) == 2
    assert all(line.startswith("level=warn ") for line in refused)
    assert "transport=otlp_http status=413 tenant=acme" in refused[0]
    assert "transport=otlp_grpc status=RESOURCE_EXHAUSTED tenant=acme" in refused[1]


async def test_forward_retries_are_logged_with_the_reason(
    start_backend: StartBackend, start_service: StartService, log_output: io.StringIO
) -> None:
    backend = await start_backend(script=[Answer()] * 2)
    running = await start_service(config_for(forwarder_to(backend, "http")))
    assert (await running.post(sample_request().SerializeToString())).status == 200
    await eventually(lambda: len(backend.deliveries) == 1)
    retries = [line for line in lines_of(log_output) if "retrying in" in line]
    assert len(retries) == 2
    assert retries[0].startswith("level=info ") and "forwarder=backend" in retries[0]
    assert "reason=http_503" in retries[0]
