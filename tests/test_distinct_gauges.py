"""The distinct-count gauges at /usage_metrics, through the running service: sessions and hosts per
series and services per tenant, of the current UTC hour (the injected wall clock's), overflow and
staleness applied as to the series' bytes, and both exposition formats."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from distributor.config import load_config
from distributor.overrides.model import DEFAULT_SESSION_ATTRIBUTES
from distributor.usage.config import CostAttributionConfig
from distributor.usage.tracker import UsageTracker
from tests.support.clock import ManualClock
from tests.support.config_files import multitenant_config, write_config_files
from tests.support.metrics import Labels, labels, parse_usage, scrape
from tests.support.otlp import batch, limits, received, request, span
from tests.support.service import RunningService, StartService

SESSIONS = "tempo_usage_tracker_distinct_sessions"
HOSTS = "tempo_usage_tracker_distinct_hosts"
SERVICES = "tempo_usage_tracker_distinct_services"
HOUR = 3600
# Ten minutes into a UTC hour.
START = 1_790_000_000 // HOUR * HOUR + 600.0

BOTH = "distinct_counts: {sessions: {enabled: true}, hosts: {enabled: true}}"
OVERRIDES = f"""\
overrides:
  web:
    cost_attribution: {{dimensions: [team], {BOTH}}}
  tight:
    cost_attribution: {{dimensions: [team], max_cardinality: 1, {BOTH}}}
  bare:
    cost_attribution: {{dimensions: {{}}, {BOTH}}}
  sessions-only:
    cost_attribution: {{dimensions: [team], distinct_counts: {{sessions: {{enabled: true}}}}}}
  plain:
    cost_attribution: {{dimensions: [team]}}
  limited:
    cost_attribution: {{dimensions: [team], {BOTH}}}
    ingestion: {{rate_limit_bytes: 10, burst_size_bytes: 10}}
"""


async def start(start_service: StartService, tmp_path: Path) -> RunningService:
    config = load_config(write_config_files(tmp_path, multitenant_config(), OVERRIDES))
    return await start_service(config, wall_clock=ManualClock(START))


def shop_and_core(*shop_sessions: str) -> Any:
    """Team shop: service web on host h1, a span per session; team core: service api on host h2 whose
    session is on the resource, and two spans of its own without one."""
    return request(
        batch(
            {"service.name": "web", "team": "shop", "host.name": "h1"},
            [span({"session.id": session}) for session in shop_sessions],
        ),
        batch(
            {"service.name": "api", "team": "core", "host.id": "h2", "session.id": "c1"},
            [span(), span()],
        ),
    )


async def send(running: RunningService, tenant: str, body: Any, status: int = 200) -> None:
    answer = await running.post(body.SerializeToString(), tenant)
    assert answer.status == status, answer.body


async def gauges(running: RunningService, tenant: str) -> dict[str, dict[Labels, float]]:
    """The three gauge families at /usage_metrics, only this tenant's samples."""
    text = await scrape(running.session, running.server_url + "/usage_metrics")
    return {
        family: {
            series: value
            for series, value in parse_usage(text, family).items()
            if ("tenant", tenant) in series
        }
        for family in (SESSIONS, HOSTS, SERVICES)
    }


def team(tenant: str, value: str) -> Labels:
    return labels(tenant, team=value)


async def test_sessions_and_hosts_per_series_and_services_per_tenant_each_identity_once(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start(start_service, tmp_path)
    await send(running, "web", shop_and_core("s1", "s2"))
    await send(running, "web", shop_and_core("s2", "s3", "s1"))  # s1 and s2 again: counted once
    assert await gauges(running, "web") == {
        SESSIONS: {team("web", "shop"): 3, team("web", "core"): 1},
        HOSTS: {team("web", "shop"): 1, team("web", "core"): 1},
        SERVICES: {labels("web"): 2},
    }


async def test_a_new_utc_hour_starts_the_counts_again(start_service: StartService, tmp_path: Path) -> None:
    running = await start(start_service, tmp_path)
    wall_clock = running.wall_clock
    assert isinstance(wall_clock, ManualClock)
    await send(running, "web", shop_and_core("s1", "s2"))
    wall_clock.advance(HOUR - 600 - 1)  # the last second of the hour: still counting
    await send(running, "web", shop_and_core("s3"))
    assert (await gauges(running, "web"))[SESSIONS][team("web", "shop")] == 3
    wall_clock.advance(1)
    assert await gauges(running, "web") == {SESSIONS: {}, HOSTS: {}, SERVICES: {}}
    await send(running, "web", shop_and_core("s3", "s4"))
    assert await gauges(running, "web") == {
        SESSIONS: {team("web", "shop"): 2, team("web", "core"): 1},
        HOSTS: {team("web", "shop"): 1, team("web", "core"): 1},
        SERVICES: {labels("web"): 2},
    }
    wall_clock.advance(HOUR)
    running.service.tracker.purge_stale()
    assert running.service.tracker._distinct == {}  # an hour past is dropped, not only hidden


async def test_a_tenant_without_dimensions_shows_only_its_services(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start(start_service, tmp_path)
    await send(running, "bare", shop_and_core("s1", "s2"))
    await send(running, "bare", request(batch({"service.name": "cart", "host.name": "h9"}, [span()])))
    assert await gauges(running, "bare") == {SESSIONS: {}, HOSTS: {}, SERVICES: {labels("bare"): 3}}
    assert [series for series in await running.usage() if ("tenant", "bare") in series] == []


async def test_overflowed_series_count_in_the_overflow_series(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start(start_service, tmp_path)
    await send(running, "tight", shop_and_core("s1", "s2"))
    await send(
        running,
        "tight",
        request(
            batch({"service.name": "ops", "team": "ops", "host.name": "h3"}, [span({"session.id": "s9"})])
        ),
    )
    overflow = team("tight", "__overflow__")
    assert await gauges(running, "tight") == {
        SESSIONS: {team("tight", "shop"): 2, overflow: 2},  # core's c1 and ops' s9
        HOSTS: {team("tight", "shop"): 1, overflow: 2},
        SERVICES: {labels("tight"): 3},
    }
    assert set(await running.usage()) >= {team("tight", "shop"), overflow}


async def test_only_enabled_kinds_are_counted_and_a_tenant_counting_none_has_no_gauges(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start(start_service, tmp_path)
    await send(running, "sessions-only", shop_and_core("s1"))
    await send(running, "plain", shop_and_core("s1"))
    assert await gauges(running, "sessions-only") == {
        SESSIONS: {team("sessions-only", "shop"): 1, team("sessions-only", "core"): 1},
        HOSTS: {},
        SERVICES: {labels("sessions-only"): 2},
    }
    assert await gauges(running, "plain") == {SESSIONS: {}, HOSTS: {}, SERVICES: {}}
    assert team("plain", "shop") in await running.usage()


async def test_refused_requests_count_no_identities(start_service: StartService, tmp_path: Path) -> None:
    running = await start(start_service, tmp_path)
    await send(running, "limited", shop_and_core("s1"), status=413)  # over the burst
    assert team("limited", "shop") | {("reason", "rate_limited")} in await running.discarded()
    assert await gauges(running, "limited") == {SESSIONS: {}, HOSTS: {}, SERVICES: {}}


async def test_series_purged_as_stale_lose_their_counts(start_service: StartService, tmp_path: Path) -> None:
    running = await start(start_service, tmp_path)
    await send(running, "web", shop_and_core("s1", "s2"))
    running.clock.advance(10 * 60)
    await send(
        running, "web", request(batch({"service.name": "web", "team": "shop"}, [span({"session.id": "s3"})]))
    )
    running.clock.advance(6 * 60)  # core has had nothing for 16 minutes: stale; shop for 6
    running.service.tracker.purge_stale()
    assert await gauges(running, "web") == {
        SESSIONS: {team("web", "shop"): 3},
        HOSTS: {team("web", "shop"): 1},
        SERVICES: {labels("web"): 2},  # the tenant's, not a series'
    }
    await send(running, "web", shop_and_core())
    assert (await gauges(running, "web"))[SESSIONS][team("web", "core")] == 1  # from zero: c1 once


async def test_openmetrics_gauges_parse_with_one_eof_at_the_end(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start(start_service, tmp_path)
    await send(running, "web", shop_and_core("s1", "s2"))
    await send(running, "web", request(batch({"team": 'quo"te\\ ünï\n', "host.name": "h5"}, [span()])))
    async with running.session.get(
        running.server_url + "/usage_metrics", headers={"Accept": "application/openmetrics-text"}
    ) as response:
        text = await response.text()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    families = {family.name: family for family in parse_openmetrics(text)}
    assert [(name, families[name].type) for name in (SESSIONS, HOSTS, SERVICES)] == [
        (SESSIONS, "gauge"),
        (HOSTS, "gauge"),
        (SERVICES, "gauge"),
    ]
    hosts = {frozenset(sample.labels.items()): sample.value for sample in families[HOSTS].samples}
    assert hosts == {team("web", "shop"): 1, team("web", "core"): 1, team("web", 'quo"te\\ ünï\n'): 1}
    sessions = {frozenset(sample.labels.items()): sample.value for sample in families[SESSIONS].samples}
    assert sessions == {team("web", "shop"): 2, team("web", "core"): 1}
    [services] = families[SERVICES].samples
    assert (services.name, services.labels, services.value) == (
        SERVICES,
        {"tenant": "web", "tracker": "cost-attribution"},
        2,
    )


def test_a_tenants_counts_come_in_pieces_that_skip_purged_series_and_stop_when_the_hour_ends() -> None:
    clock, wall_clock = ManualClock(), ManualClock(START)
    tracker = UsageTracker(CostAttributionConfig(enabled=True), clock, wall_clock)
    by_team = replace(limits({"team": ""}), session_attributes=DEFAULT_SESSION_ATTRIBUTES)

    def receive(*teams: str) -> None:
        batches = [batch({"team": name}, [span({"session.id": f"{name}-session"})]) for name in teams]
        attribution = tracker.attribute(received(request(*batches)), by_team)
        assert attribution is not None
        tracker.record_received("acme", attribution)

    def key(name: str) -> str:
        return f'team="{name}",tenant="acme",tracker="cost-attribution"'

    receive("t0", "t1", "t2")
    clock.advance(10 * 60)
    receive("t0", "t1", "t3", "t4")
    clock.advance(6 * 60)  # t2 is stale from now on
    pieces = tracker.distinct_by_tenant(2)
    first = next(pieces)
    assert first == {
        "sessions": ([key("t0"), key("t1")], [1, 1]),
        "hosts": ([], []),
        "services": (['tenant="acme",tracker="cost-attribution"'], [0]),
    }
    assert tracker.purge_stale() == 1  # while the loop runs between two pieces
    assert next(pieces) == {"sessions": ([key("t3")], [1]), "hosts": ([], [])}
    wall_clock.advance(HOUR)
    assert list(pieces) == []  # t4's count was of the hour that ended
    receive("t4")
    assert list(tracker.distinct_by_tenant(2)) == [
        {
            "sessions": ([key("t4")], [1]),
            "hosts": ([], []),
            "services": (['tenant="acme",tracker="cost-attribution"'], [0]),
        }
    ]
