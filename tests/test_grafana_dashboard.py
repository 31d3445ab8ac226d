"""The example Grafana dashboard (examples/grafana/usage-dashboard.json) and the example Prometheus rules
read only what the service exposes: every metric their queries name is a family a running service
serves at /metrics or /usage_metrics, with the suffix its type gives its samples; the dashboard's
queries parse as PromQL; its per-tenant queries keep to the tenants chosen in its `tenant` variable."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from distributor.config import load_config
from tests.support.backends import Answer, RecordingBackend
from tests.support.config_files import write_config_files
from tests.support.metrics import families, scrape
from tests.support.otlp import batch, request, span
from tests.support.polling import eventually
from tests.support.promql import Selector, filters_tenant, is_recorded, metric_names, selectors
from tests.support.promtool import run_promtool
from tests.support.service import RunningService, StartService

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DASHBOARD = EXAMPLES / "grafana" / "usage-dashboard.json"
RULES = EXAMPLES / "prometheus" / "rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# What the names of a family's samples are, by the family's type (prometheus_client's parser names a
# counter's family without `_total`).
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

# Values the dashboard's variables stand for when its queries are checked as PromQL.
VARIABLE_VALUES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$topn": "10",
    "$tenant": ".*",
    "$dimension": "service_name",
}


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    return found


def variable_expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    """The PromQL inside the query variables' label_values(...) and label_names(...)."""
    for templated in dashboard["templating"]["list"]:
        if templated["type"] != "query":
            continue
        query = templated["query"]
        query = query if isinstance(query, str) else query["query"]
        values = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
        names = re.fullmatch(r"label_names\((.+)\)", query.strip())
        matched = values or names
        assert matched is not None, f"variable {templated['name']}: unexpected query {query!r}"
        yield matched.group(1)


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query the dashboard sends."""
    for title, target in targets(dashboard):
        yield f"panel {title!r} {target['refId']}", target["expr"]
    for expression in variable_expressions(dashboard):
        yield "a variable", expression


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule['record']}", rule["expr"]


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


# --- the PromQL reader ---------------------------------------------------------------------------------


def test_the_promql_reader_finds_the_selectors_and_nothing_else() -> None:
    expression = (
        'topk($topn, sum by (tenant, $dimension) (rate(a_total{tenant=~"$tenant", $dimension!=""}'
        "[$__rate_interval] @ end())))\n/ on (forwarder) group_left (x) b offset 5m > 1e3 "
        'and label_replace(c, "dst", "$1", "src", "(.*)") unless ${datasource_name}'
        ' or histogram_quantile(0.99, sum by (le) (rate(d_bucket{reason="by (x) {y}"}[5m])))'
        " or rule:e:rate5m"
    )
    assert selectors(expression) == [
        Selector("a_total", 'tenant=~"$tenant", $dimension!=""'),
        Selector("b", ""),
        Selector("c", ""),
        Selector("d_bucket", 'reason="by (x) {y}"'),
        Selector("rule:e:rate5m", ""),
    ]
    assert filters_tenant(selectors(expression)[0])
    assert not filters_tenant(Selector("x", 'tenant="$tenant"'))
    assert not filters_tenant(Selector("x", 'other_tenant=~"$tenant"'))
    assert is_recorded("rule:e:rate5m") and not is_recorded("a_total")


# --- the dashboard on its own --------------------------------------------------------------------------


def test_the_dashboard_has_a_data_source_variable_a_tenant_variable_and_uses_them() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] and dashboard["title"]
    datasource = variable(dashboard, "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    # Grafana's import asks for the data source of this input and puts it where the input is named.
    [prometheus] = dashboard["__inputs"]
    assert (prometheus["type"], prometheus["pluginId"]) == ("datasource", "prometheus")
    assert datasource["current"]["value"] == "${" + prometheus["name"] + "}"
    tenant = variable(dashboard, "tenant")
    assert tenant["query"] == "label_values(tempo_usage_tracker_bytes_received_total, tenant)"
    assert tenant["multi"] and tenant["includeAll"] and tenant["allValue"] == ".*"
    assert tenant["datasource"] == DATASOURCE
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    queried = [panel for panel in all_panels(dashboard) if panel["type"] != "row"]
    assert len(queried) >= 20
    for panel in queried:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    # A repeated panel per dimension, and the top N everywhere it says so.
    [by_dimension] = [panel for panel in queried if panel.get("repeat") == "dimension"]
    assert "$dimension" in by_dimension["targets"][0]["expr"]
    for panel in queried:
        if "top $topn" in panel["title"]:
            assert all("topk($topn," in target["expr"] for target in panel["targets"]), panel["title"]


def test_every_query_that_splits_by_tenant_keeps_to_the_chosen_tenants() -> None:
    """Which of its selectors must be filtered (those of families with a tenant label) is checked
    against a running service, below."""
    split_by_tenant = 0
    for title, target in targets(load_dashboard()):
        expression = target["expr"]
        if re.search(r"\bby\s*\([^)]*\btenant\b", expression):
            split_by_tenant += 1
            assert any(filters_tenant(s) for s in selectors(expression)), f"{title}: not filtered by tenant"
    assert split_by_tenant >= 12


def test_the_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """Each query, its variables given values, as a recording rule: promtool parses it with
    Prometheus's own parser."""
    rules = []
    for index, (where, expression) in enumerate(dashboard_expressions(load_dashboard())):
        concrete = expression
        for name, value in sorted(VARIABLE_VALUES.items(), key=lambda item: -len(item[0])):
            concrete = concrete.replace(name, value)
        assert "$" not in concrete, f"{where}: a variable without a test value: {expression}"
        rules.append({"record": f"dashboard:query_{index}:check", "expr": concrete})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# --- against a running service -------------------------------------------------------------------------

# Tenant shop counts distinct sessions and hosts, and its usage can be stored only in part
# (max_pending_entries: 1), so the ledger counts some as unrecorded; tenant limited is over its burst;
# tenant third finds max_active_tenants reached.
OVERRIDES = {
    "overrides": {
        "shop": {
            "cost_attribution": {
                "dimensions": {"service.name": "", "team": ""},
                "distinct_counts": {"sessions": {"enabled": True}, "hosts": {"enabled": True}},
            }
        },
        "limited": {"ingestion": {"rate_limit_bytes": 10, "burst_size_bytes": 10}},
    }
}


def service_config(directory: Path, taking: RecordingBackend, refusing: RecordingBackend) -> Path:
    """Every feature whose metrics the dashboard shows: a per-tenant overrides file, the usage ledger,
    a queued forwarder (`backend`, which fails once then takes everything) and a persistent one
    (`archive`, which refuses everything)."""
    retry = {"initial_interval": "10ms", "max_interval": "50ms", "max_elapsed_time": "30s"}
    document = {
        "multitenancy_enabled": True,
        "server": {"http_listen_port": 0, "graceful_shutdown_timeout": "5s"},
        "distributor": {
            "max_active_tenants": 2,
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
            "forwarders": [
                {
                    "name": "backend",
                    "backend": "otlphttp",
                    "otlphttp": {"endpoint": taking.http_url},
                    "retry": retry,
                },
                {
                    "name": "archive",
                    "backend": "otlphttp",
                    "otlphttp": {"endpoint": refusing.http_url},
                    "retry": retry,
                    "delivery": "persistent",
                    "persistent_queue": {"path": str(directory / "archive-queue")},
                },
            ],
            "usage": {"cost_attribution": {"enabled": True}},
        },
        "overrides": {
            "defaults": {
                "cost_attribution": {"dimensions": {"service.name": ""}},
                "forwarders": ["backend", "archive"],
            },
            "per_tenant_override_config": "overrides.yaml",
        },
        "usage_attribution": {
            "enabled": True,
            "region": "local",
            "ledger": {
                "backend": "sqlite",
                "sqlite": {"path": str(directory / "ledger.db")},
                "flush_period": "1h",  # flushed by the test
                "max_pending_entries": 1,
            },
        },
    }
    return write_config_files(directory, document, OVERRIDES)


def shop_request() -> bytes:
    """Two services of two teams, each with a session and a host."""
    return request(
        batch({"service.name": "web", "team": "core", "host.name": "h1"}, [span({"session.id": "s1"})]),
        batch({"service.name": "api", "team": "shop", "host.name": "h2"}, [span({"session.id": "s2"})]),
    ).SerializeToString()


async def exposed_families(running: RunningService) -> dict[str, Metric]:
    """Every family at /metrics and /usage_metrics, by name."""
    exposed = families(await running.metrics_text())
    usage = families(await scrape(running.session, running.server_url + "/usage_metrics"))
    assert not set(exposed) & set(usage)
    return exposed | usage


def sample_names(family: Metric) -> set[str]:
    """The names a family's samples have, by its type, whether or not it has samples yet."""
    return {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}


@pytest.fixture
async def backends() -> AsyncIterator[tuple[RecordingBackend, RecordingBackend]]:
    """A backend that fails once and then takes everything, and one that refuses everything; stopped
    at teardown after the service (tests ask for this fixture before `start_service`), so the
    forwarders' drain finds them."""
    taking = await RecordingBackend(script=[Answer(http_status=503)]).start()
    refusing = await RecordingBackend(always=Answer(http_status=400)).start()
    yield taking, refusing
    await taking.stop()
    await refusing.stop()


async def test_every_metric_the_dashboard_and_the_rules_read_is_exposed_by_a_running_service(
    backends: tuple[RecordingBackend, RecordingBackend], start_service: StartService, tmp_path: Path
) -> None:
    running = await start_service(load_config(service_config(tmp_path, *backends)))
    for tenant, status in (("shop", 200), ("limited", 413), ("third", 429)):
        answer = await running.post(shop_request(), tenant)
        assert answer.status == status, (tenant, answer.body)
    forwarders = running.service.forwarders.values()
    await eventually(lambda: all(f.pending() == 0 for f in forwarders), "every request delivered or dropped")
    assert running.service.ledger is not None
    assert await running.service.ledger.flush()
    exposed = await exposed_families(running)

    by_sample_name = {name: family for family in exposed.values() for name in sample_names(family)}
    recorded = recorded_names()
    used: dict[str, list[str]] = {}
    for where, expression in [*dashboard_expressions(load_dashboard()), *rule_expressions()]:
        for name in metric_names(expression):
            used.setdefault(name, []).append(where)
    assert len(used) >= 25
    unknown = {
        name: places
        for name, places in used.items()
        if name not in by_sample_name and not (is_recorded(name) and name in recorded)
    }
    assert unknown == {}, "metric names the service does not expose"

    # Every family read has samples here (the test made the events that create them), so its labels
    # are known: those with a tenant label are filtered on the dashboard's tenant variable.
    read = {by_sample_name[name].name: by_sample_name[name] for name in used if name in by_sample_name}
    assert {name for name, family in read.items() if not family.samples} == set()
    per_tenant = {
        name
        for name, family in by_sample_name.items()
        if any("tenant" in sample.labels for sample in family.samples)
    }
    assert len(per_tenant & set(used)) >= 12
    for title, target in targets(load_dashboard()):
        for selector in selectors(target["expr"]):
            if selector.metric in per_tenant:
                assert filters_tenant(selector), f"{title}: {selector.metric} is not filtered by tenant"
