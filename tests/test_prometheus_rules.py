"""The example Prometheus rules (examples/prometheus/rules.yml): promtool accepts them, their unit tests
(rules_test.yml) pass and cover every rule, and those tests fail when a rule stops doing its job."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promtool import run_promtool

PROMETHEUS_EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"
RULES = PROMETHEUS_EXAMPLES / "rules.yml"
RULES_TEST = PROMETHEUS_EXAMPLES / "rules_test.yml"


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """Every rule of every group, in order."""
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_name(rule: dict[str, Any]) -> str:
    return str(rule.get("alert") or rule["record"])


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_the_example_scrape_configuration_loads_the_rules() -> None:
    result = run_promtool("check", "config", PROMETHEUS_EXAMPLES.parent / "prometheus.yml")
    assert result.returncode == 0, result.stdout
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_the_unit_tests_of_the_rules_pass() -> None:
    result = run_promtool("test", "rules", RULES_TEST)
    assert result.returncode == 0, result.stdout
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing_and_every_recording_rule_for_its_values() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing: dict[str, list[bool]] = {}
    recorded: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            firing.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
        for case in test.get("promql_expr_test", []):
            if case.get("exp_samples"):
                recorded.add(case["expr"].strip())
    rules = load_rules()
    alerts = [rule["alert"] for rule in rules if "alert" in rule]
    records = [rule["record"] for rule in rules if "record" in rule]
    assert len(alerts) >= 6 and len(records) >= 3
    for alert in alerts:
        assert sorted(set(firing.get(alert, []))) == [False, True], f"{alert}: firing and not firing"
    assert set(firing) == set(alerts), "tests of alerts that do not exist"
    assert set(records) <= recorded, "recording rules without a test of their values"
    for rule in rules:
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule.get("for"), rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def broken(rule: dict[str, Any]) -> str:
    """The rule's expression changed so that it no longer does its job: an alert that never fires, a
    recording that records twice the value."""
    if "alert" in rule:
        return "vector(1) == 0"
    return f"2 * ({rule['expr']})"


@pytest.mark.parametrize("name", [rule_name(rule) for rule in load_rules()])
def test_the_unit_tests_fail_when_a_rule_is_broken(name: str, tmp_path: Path) -> None:
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule_name(rule) == name:
                rule["expr"] = broken(rule)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(document, sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = run_promtool("test", "rules", tmp_path / RULES_TEST.name)
    assert result.returncode != 0, f"the unit tests still pass with {name} broken"
    assert name in result.stdout
