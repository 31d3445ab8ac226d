"""`distributor check-config`: every problem reported with file:line and key, exit 0/1."""

from __future__ import annotations

import os
from pathlib import Path

from distributor.check_config import check_files
from tests.support.cli import run_cli
from tests.support.config_files import NESTED_TOO_DEEPLY, alias_bomb, write_config_files

GOOD_CONFIG = """\
distributor:
  usage:
    cost_attribution: {enabled: true}
overrides:
  defaults:
    cost_attribution: {dimensions: [service.name]}
  per_tenant_override_config: overrides.yaml
"""
GOOD_OVERRIDES = "overrides:\n  acme:\n    cost_attribution:\n      dimensions: {team: owner}\n"

BAD_CONFIG = """\
server:
  http_listen_port: http
  http_listen_address: 127.0.0.1
distributor:
  receivers:
    otlp:
      protocols:
        http:
          endpoint: localhost
  usage:
    cost_attribution:
      stale_duration: soon
      colour: blue
overrides:
  defaults:
    cost_attribution: {dimensions: {service.name: tenant}}
  per_tenant_override_config: overrides.yaml
"""
BAD_OVERRIDES = """\
overrides:
  acme:
    cost_attribution:
      dimensions: {team: __owner}
      max_cardinality: many
  "bad/tenant":
    cost_attribution: {}
  beta:
    limits: {}
"""


def test_good_files_pass_with_exit_zero(tmp_path: Path) -> None:
    result = run_cli(
        "check-config", "--config", str(write_config_files(tmp_path, GOOD_CONFIG, GOOD_OVERRIDES))
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr.startswith("OK: ") and "overrides.yaml" in result.stderr


def test_every_problem_in_both_files_is_reported_with_line_and_key(tmp_path: Path) -> None:
    result = run_cli("check-config", "--config", str(write_config_files(tmp_path, BAD_CONFIG, BAD_OVERRIDES)))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    config, overrides = tmp_path / "distributor.yaml", tmp_path / "overrides.yaml"
    assert lines == [
        f"{config}:2: server.http_listen_port: expected an integer, got 'http'",
        f"{config}:9: distributor.receivers.otlp.protocols.http.endpoint: invalid listen address 'localhost' "
        "(expected host:port)",
        f"{config}:12: distributor.usage.cost_attribution.stale_duration: invalid duration 'soon' "
        "(expected e.g. 90s, 15m, 1h30m)",
        f"{config}:13: distributor.usage.cost_attribution.colour: unknown key "
        "(allowed: enabled, max_cardinality, stale_duration, max_label_value_bytes)",
        f"{config}:16: overrides.defaults.cost_attribution.dimensions: dimension 'service.name': "
        "label 'tenant' is reserved by the usage tracker",
        f"{overrides}:4: overrides.acme.cost_attribution.dimensions: dimension 'team': "
        "label '__owner' starts with '__', which Prometheus reserves",
        f"{overrides}:5: overrides.acme.cost_attribution.max_cardinality: expected an integer, got 'many'",
        f"{overrides}:6: overrides.bad/tenant: tenant id 'bad/tenant' contains characters outside "
        "a-zA-Z0-9!-_.*'()",
        f"{overrides}:9: overrides.beta.limits: unknown key "
        "(allowed: cost_attribution, ingestion, forwarders)",
    ]
    assert result.stderr.strip() == f"9 problems in {config}, {overrides}"


def test_an_overrides_file_can_be_checked_alone_or_instead_of_the_named_one(tmp_path: Path) -> None:
    config = write_config_files(tmp_path, GOOD_CONFIG, GOOD_OVERRIDES)
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(BAD_OVERRIDES)
    problems, checked = check_files(None, candidate)
    assert len(problems) == 4 and checked == [candidate]
    problems, checked = check_files(config, candidate)
    assert len(problems) == 4 and checked == [config, candidate]


def test_yaml_errors_and_missing_files_are_problems_too(tmp_path: Path) -> None:
    config = write_config_files(tmp_path, "server: [unclosed\n", "")
    problems, _ = check_files(config, None)
    assert [str(p) for p in problems] == [
        f"{config}:2: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]
    problems, _ = check_files(None, tmp_path / "overrides.yaml")
    assert "file is empty" in str(problems[0])
    problems, _ = check_files(tmp_path / "missing.yaml", None)
    assert "missing.yaml: cannot read" in str(problems[0])


def test_a_deeply_nested_file_is_a_problem_line_without_a_traceback(tmp_path: Path) -> None:
    write_config_files(tmp_path, GOOD_CONFIG, f"overrides:\n  acme: {NESTED_TOO_DEEPLY}\n")
    result = run_cli("check-config", "--overrides", str(tmp_path / "overrides.yaml"))
    assert result.returncode == 1
    assert result.stdout == f"{tmp_path / 'overrides.yaml'}:2: nested too deeply (more than 100 levels)\n"
    assert result.stderr == f"1 problem in {tmp_path / 'overrides.yaml'}\n"


def test_an_alias_bomb_a_fifo_and_an_oversized_file_are_problem_lines(tmp_path: Path) -> None:
    config = write_config_files(
        tmp_path, GOOD_CONFIG + "  per_tenant_override_max_bytes: 1000\n", GOOD_OVERRIDES + "#" * 1000 + "\n"
    )
    overrides = tmp_path / "overrides.yaml"
    size = overrides.stat().st_size
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    expected = {
        None: f"{overrides}: is {size} bytes, over the limit of 1000 bytes "
        "(overrides.per_tenant_override_max_bytes)",
        bomb: f"{bomb}:7: too many nodes (more than 1000000 once aliases are expanded)",
        fifo: f"{fifo}: not a regular file (a FIFO)",
    }
    for path, problem in expected.items():
        arguments = ["--config", str(config)] + (["--overrides", str(path)] if path else [])
        result = run_cli("check-config", *arguments)
        assert (result.returncode, result.stdout) == (1, problem + "\n"), result.stderr
        assert "Traceback" not in result.stderr


def test_check_config_agrees_with_the_service_on_the_shipped_files() -> None:
    root = Path(__file__).resolve().parent.parent
    for config, overrides in (
        (root / "config" / "distributor.yaml", None),
        (root / "config" / "distributor.yaml", root / "examples" / "overrides.yaml"),
        (root / "examples" / "forwarding.yaml", None),
        (root / "examples" / "backend.yaml", None),
    ):
        problems, _ = check_files(config, overrides)
        assert problems == []


def test_without_any_file_it_explains_its_usage() -> None:
    result = run_cli("check-config")
    assert result.returncode == 2 and "give --config, --overrides, or both" in result.stderr
