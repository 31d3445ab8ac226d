"""`distributor check-config`: validate files exactly as the service would, reporting every problem.

Meant for CI before rolling out an overrides change, like `promtool check config`. What the service would
accept with a warning (Tempo settings it does not use, unexpanded `${VAR}`s) is listed as notes, which do
not fail the check.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from distributor.common.config_reader import MAX_FILE_BYTES, ConfigNote, read_bytes
from distributor.config import Config, load_config
from distributor.overrides import ConfigError, TenantOverrides
from distributor.overrides.loading import parse_per_tenant_file
from distributor.overrides.model import OverridesSnapshot
from distributor.overrides.reload import MAX_BYTES_SETTING
from distributor.ring.config import global_rate_tenants, without_ring_note


@dataclass
class CheckedFiles:
    problems: list[ConfigError] = field(default_factory=list)
    notes: list[ConfigNote] = field(default_factory=list)
    checked: list[Path] = field(default_factory=list)
    config: Config | None = None  # the configuration read, when there was one and it parsed


def check_files(
    config_path: Path | None, overrides_path: Path | None, expand_env: bool = False
) -> tuple[list[ConfigError], list[Path]]:
    """Every problem found, and the files that were checked."""
    result = check(config_path, overrides_path, expand_env)
    return result.problems, result.checked


def check(config_path: Path | None, overrides_path: Path | None, expand_env: bool = False) -> CheckedFiles:
    """Every problem and note found, the files that were checked, and the configuration read."""
    result = CheckedFiles()
    defaults = TenantOverrides()
    forwarder_names: list[str] | None = None  # an overrides file checked alone: names unchecked
    max_bytes = MAX_FILE_BYTES
    if config_path is not None:
        result.checked.append(config_path)
        try:
            config = load_config(config_path, expand_env, result.problems)
        except ConfigError as err:  # unreadable or not YAML: nothing more to read in it
            result.problems.append(err)
        else:
            result.config = config
            result.notes.extend(config.notes)
            defaults = config.overrides.defaults
            forwarder_names = [forwarder.name for forwarder in config.forwarders]
            max_bytes = config.overrides.per_tenant_override_max_bytes
            if overrides_path is None:
                overrides_path = config.overrides.per_tenant_override_config
    snapshot = OverridesSnapshot(defaults=defaults)
    if overrides_path is not None:
        result.checked.append(overrides_path)
        try:
            snapshot = parse_per_tenant_file(
                read_bytes(overrides_path, max_bytes, MAX_BYTES_SETTING),
                str(overrides_path),
                defaults,
                expand_env,
                result.problems,
                forwarder_names,
                result.notes,
            )
        except ConfigError as err:
            result.problems.append(err)
    if result.config is not None and result.config.ring.backend == "none":
        tenants = global_rate_tenants(snapshot)
        if tenants:
            assert config_path is not None
            note = ConfigNote(str(config_path), None, "distributor.ring.backend", without_ring_note(tenants))
            result.notes.append(note)
    # Reported in reading order: by file as checked, then by line.
    order = {str(path): index for index, path in enumerate(result.checked)}
    result.problems.sort(key=lambda p: (order.get(p.file, len(order)), p.line or 0))
    result.notes.sort(key=lambda n: (order.get(n.file, len(order)), n.line or 0))
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distributor check-config",
        description="Validate a configuration and/or a per-tenant overrides file; exit 1 on any problem. "
        "Settings accepted with a warning are listed as notes and do not fail the check.",
    )
    # Tempo's single-dash spellings too, as the service takes them.
    parser.add_argument(
        "--config",
        "-config.file",
        dest="config",
        type=Path,
        help="the service configuration (and the overrides it names)",
    )
    parser.add_argument(
        "--overrides", type=Path, help="a per-tenant overrides file (instead of the one named)"
    )
    parser.add_argument(
        "--config.expand-env",
        "-config.expand-env",
        dest="expand_env",
        action="store_true",
        help="expand ${VAR} and ${VAR:-default} references, as the service would with the same flag",
    )
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.config is None and args.overrides is None:
        parser.error("give --config, --overrides, or both")
    result = check(args.config, args.overrides, args.expand_env)
    for problem in result.problems:
        print(problem)
    for note in result.notes:
        print(f"note: {note}")
    names = ", ".join(str(path) for path in result.checked)
    notes = len(result.notes)
    noted = f" ({notes} note{'s' if notes != 1 else ''})" if notes else ""
    if result.problems:
        count = len(result.problems)
        print(f"{count} problem{'s' if count != 1 else ''} in {names}{noted}", file=sys.stderr)
        return 1
    print(f"OK: {names}{noted}", file=sys.stderr)
    return 0
