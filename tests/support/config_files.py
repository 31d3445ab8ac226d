"""Writing configuration files for a service to load: the main file and its per-tenant overrides file."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

OVERRIDES_FILE = "overrides.yaml"


def write_config_files(
    directory: Path,
    config: str | Mapping[str, Any],
    overrides: str | Mapping[str, Any] | None = None,
    name: str = "distributor.yaml",
) -> Path:
    """`config` as `directory/name` and, when given, `overrides` as `directory/overrides.yaml` (text as
    written, mappings as YAML in their own order); returns the config file's path."""
    if overrides is not None:
        (directory / OVERRIDES_FILE).write_text(as_yaml(overrides))
    path = directory / name
    path.write_text(as_yaml(config))
    return path


def edit_yaml(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Load a YAML file, let `change` edit the document, write it back; returns the path."""
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(as_yaml(document))
    return path


def as_yaml(content: str | Mapping[str, Any]) -> str:
    return content if isinstance(content, str) else yaml.safe_dump(dict(content), sort_keys=False)


def multitenant_config(user_configurable: bool = False) -> str:
    """A service config on ephemeral ports with `overrides.yaml` beside it as the per-tenant file."""
    text = """\
multitenancy_enabled: true
server: {http_listen_port: 0}
distributor:
  receivers: {otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}}
  usage: {cost_attribution: {enabled: true}}
overrides:
  defaults: {cost_attribution: {dimensions: [service.name]}}
  per_tenant_override_config: overrides.yaml
"""
    if user_configurable:
        text += "  user_configurable_overrides: {enabled: true, storage_path: user-overrides}\n"
    return text


# Hostile YAML for the reader's bounds. Deep enough to exhaust Python's recursion limit in a recursive
# YAML composer:
NESTED_TOO_DEEPLY = "[" * 5000 + "]" * 5000


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" document of a few hundred bytes: each line's list repeats the previous line's
    `width` times, so it stands for width**levels nodes once the aliases are walked."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    text = "a: &a [" + ",".join(["lol"] * width) + "]\n"
    for previous, name in itertools.pairwise(names):
        text += f"{name}: &{name} [" + ",".join([f"*{previous}"] * width) + "]\n"
    return text
