"""The server port: /usage_metrics in both formats, /ready, and staleness seen through the service."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.support.metrics import labels, parse_usage
from tests.support.otlp import batch, request, span
from tests.support.service import RunningService, StartService


async def send(running: RunningService, service_name: str) -> int:
    rs = batch({"service.name": service_name}, [span(), span()])
    assert (await running.post(request(rs).SerializeToString())).status == 200
    return rs.ByteSize()


async def test_usage_metrics_is_prometheus_text_with_only_usage_series(start_service: StartService) -> None:
    running = await start_service()
    size = await send(running, "auth-service")
    async with running.session.get(running.server_url + "/usage_metrics") as response:
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    assert text.splitlines() == [
        "# HELP tempo_usage_tracker_bytes_received_total bytes total received with these attributes",
        "# TYPE tempo_usage_tracker_bytes_received_total counter",
        'tempo_usage_tracker_bytes_received_total{service_name="auth-service",tenant="single-tenant",'
        f'tracker="cost-attribution"}} {size}',
        "# HELP tempo_usage_tracker_bytes_discarded_total bytes total refused or lost after decoding with "
        "these attributes, by reason",
        "# TYPE tempo_usage_tracker_bytes_discarded_total counter",
        "# HELP tempo_usage_tracker_distinct_sessions distinct sessions seen with these attributes in the "
        "current UTC hour (estimated)",
        "# TYPE tempo_usage_tracker_distinct_sessions gauge",
        "# HELP tempo_usage_tracker_distinct_hosts distinct hosts seen with these attributes in the current "
        "UTC hour (estimated)",
        "# TYPE tempo_usage_tracker_distinct_hosts gauge",
        "# HELP tempo_usage_tracker_distinct_services distinct services seen by the tenant in the current "
        "UTC hour (estimated)",
        "# TYPE tempo_usage_tracker_distinct_services gauge",
    ]


async def test_usage_metrics_speaks_openmetrics_when_the_scraper_asks(start_service: StartService) -> None:
    running = await start_service()
    size = await send(running, 'quote" back\\slash\nnewline ünï')
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    async with running.session.get(
        running.server_url + "/usage_metrics", headers={"Accept": accept}
    ) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        text = await response.text()
    assert text.endswith("# EOF\n")
    family, discarded, *gauges = list(parse_openmetrics(text))
    assert (discarded.name, discarded.samples) == ("tempo_usage_tracker_bytes_discarded", [])
    assert [(gauge.name, gauge.type, gauge.samples) for gauge in gauges] == [
        (f"tempo_usage_tracker_distinct_{kind}", "gauge", []) for kind in ("sessions", "hosts", "services")
    ]
    assert (family.name, family.type) == ("tempo_usage_tracker_bytes_received", "counter")
    [sample] = family.samples
    assert sample.labels["service_name"] == 'quote" back\\slash\nnewline ünï'
    assert sample.value == size


async def test_openmetrics_refused_with_q_zero_falls_back_to_text(start_service: StartService) -> None:
    running = await start_service()
    accept = "application/openmetrics-text;q=0,text/plain"
    async with running.session.get(
        running.server_url + "/usage_metrics", headers={"Accept": accept}
    ) as response:
        assert response.headers["Content-Type"].startswith("text/plain")


async def test_ready_once_both_listeners_are_up(start_service: StartService) -> None:
    running = await start_service()
    async with running.session.get(running.server_url + "/ready") as response:
        assert response.status == 200


async def test_stale_series_disappear_from_the_running_service(start_service: StartService) -> None:
    running = await start_service()
    old = await send(running, "old")
    running.clock.advance(14 * 60)
    fresh = await send(running, "fresh")
    running.clock.advance(2 * 60)
    running.service.tracker.purge_stale()  # what the once-a-minute purge task runs
    assert await running.usage() == {labels(service_name="fresh"): fresh}
    again = await send(running, "old")
    assert await running.usage() == {labels(service_name="fresh"): fresh, labels(service_name="old"): again}
    assert old == again


async def test_empty_usage_metrics_still_describes_the_family(start_service: StartService) -> None:
    running = await start_service()
    async with running.session.get(running.server_url + "/usage_metrics") as response:
        text = await response.text()
    assert parse_usage(text) == {}
    assert "# TYPE tempo_usage_tracker_bytes_received_total counter" in text
