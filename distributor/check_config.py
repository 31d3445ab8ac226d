"""`distributor check-config`: validate files exactly as the service would, reporting every problem.

Meant for CI before rolling out an overrides change, like `promtool check config`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distributor.common.config_reader import MAX_FILE_BYTES, read_bytes
from distributor.config import load_config
from distributor.overrides import ConfigError, TenantOverrides
from distributor.overrides.loading import parse_per_tenant_file
from distributor.overrides.reload import MAX_BYTES_SETTING


def check_files(
    config_path: Path | None, overrides_path: Path | None, expand_env: bool = False
) -> tuple[list[ConfigError], list[Path]]:
    """Every problem found, and the files that were checked."""
    problems: list[ConfigError] = []
    checked: list[Path] = []
    defaults = TenantOverrides()
    forwarder_names: list[str] | None = None  # an overrides file checked alone: names unchecked
    max_bytes = MAX_FILE_BYTES
    if config_path is not None:
        checked.append(config_path)
        try:
            config = load_config(config_path, expand_env, problems)
        except ConfigError as err:  # unreadable or not YAML: nothing more to read in it
            problems.append(err)
        else:
            defaults = config.overrides.defaults
            forwarder_names = [forwarder.name for forwarder in config.forwarders]
            max_bytes = config.overrides.per_tenant_override_max_bytes
            if overrides_path is None:
                overrides_path = config.overrides.per_tenant_override_config
    if overrides_path is not None:
        checked.append(overrides_path)
        try:
            parse_per_tenant_file(
                read_bytes(overrides_path, max_bytes, MAX_BYTES_SETTING),
                str(overrides_path),
                defaults,
                expand_env,
                problems,
                forwarder_names,
            )
        except ConfigError as err:
            problems.append(err)
    # Reported in reading order: by file as checked, then by line.
    order = {str(path): index for index, path in enumerate(checked)}
    problems.sort(key=lambda p: (order.get(p.file, len(order)), p.line or 0))
    return problems, checked


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="distributor check-config",
        description="Validate a configuration and/or a per-tenant overrides file; exit 1 on any problem.",
    )
    parser.add_argument("--config", type=Path, help="the service configuration (and the overrides it names)")
    parser.add_argument(
        "--overrides", type=Path, help="a per-tenant overrides file (instead of the one named)"
    )
    parser.add_argument("--config.expand-env", dest="expand_env", action="store_true")
    args = parser.parse_args(argv)
    if args.config is None and args.overrides is None:
        parser.error("give --config, --overrides, or both")
    problems, checked = check_files(args.config, args.overrides, args.expand_env)
    for problem in problems:
        print(problem)
    names = ", ".join(str(path) for path in checked)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {names}", file=sys.stderr)
        return 1
    print(f"OK: {names}", file=sys.stderr)
    return 0
