"""GET /metrics as Prometheus and Tempo's dashboards read it: no `_created` series, OpenMetrics on
request, gRPC calls among the request metrics, and what build is running (also at /status/buildinfo)."""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from tests.support.metrics import read_samples, total
from tests.support.otlp import sample_request
from tests.support.service import StartService, make_config

EXPORT_ROUTE = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DURATION_COUNT = "tempo_request_duration_seconds_count"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


async def test_no_created_series(start_service: StartService) -> None:
    running = await start_service(make_config())
    assert (await running.post(sample_request().SerializeToString())).status == 200
    text = await running.metrics_text()
    assert "tempo_request_duration_seconds_count{" in text  # there are histograms and counters...
    assert "_created" not in text  # ...and none has a _created series


async def test_openmetrics_when_the_scraper_asks_for_it(start_service: StartService) -> None:
    running = await start_service(make_config())
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    async with running.session.get(running.server_url + "/metrics", headers={"Accept": accept}) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == OPENMETRICS
        text = await answer.text()
    assert text.endswith("# EOF\n")
    names = {family.name for family in openmetrics_families(text)}  # parses as OpenMetrics, strictly
    assert "tempo_build_info" in names
    async with running.session.get(running.server_url + "/metrics") as answer:
        assert answer.headers["Content-Type"].startswith("text/plain;")
        assert "# EOF" not in await answer.text()


async def test_grpc_calls_are_timed_like_tempos_grpc_server_labels_them(start_service: StartService) -> None:
    running = await start_service(make_config(multitenancy=True))
    body = sample_request().SerializeToString()
    assert (await running.export(body, tenant="acme")).code.name == "OK"
    assert (await running.export(body, tenant="acme")).code.name == "OK"
    assert (await running.export(b"", tenant="acme")).code.name == "INVALID_ARGUMENT"
    assert (await running.export(body)).code.name == "UNAUTHENTICATED"  # no tenant
    samples = read_samples(await running.metrics_text())
    grpc_calls = {"method": "gRPC", "route": EXPORT_ROUTE}
    assert total(samples, DURATION_COUNT, **grpc_calls, status_code="success") == 2
    assert total(samples, DURATION_COUNT, **grpc_calls, status_code="error") == 2
    assert total(samples, DURATION_COUNT, **grpc_calls) == 4


async def test_build_info_metric_and_status_buildinfo(start_service: StartService) -> None:
    running = await start_service(make_config())
    samples = read_samples(await running.metrics_text())
    (labels,) = [dict(keys) for (name, keys) in samples if name == "tempo_build_info"]
    assert samples[("tempo_build_info", frozenset(labels.items()))] == 1
    version = metadata.version("otel-usage-distributor")
    assert labels["version"] == version
    assert labels["pythonversion"] == platform.python_version()
    assert set(labels) == {"version", "revision", "branch", "pythonversion"}
    async with running.session.get(running.server_url + "/status/buildinfo") as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("application/json")
        document = await answer.json()
    assert document == {
        "version": version,
        "revision": labels["revision"],
        "branch": labels["branch"],
        "buildUser": "",
        "buildDate": "",
        "pythonVersion": platform.python_version(),
    }
