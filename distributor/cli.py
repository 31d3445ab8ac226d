"""`distributor --config FILE`: run the service until SIGINT/SIGTERM. `distributor check-config ...`
validates files without starting it; `distributor migrate ...` migrates the usage ledger's schema."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import signal
import sys
from pathlib import Path

import psycopg

from distributor.check_config import check
from distributor.common.lifecycle import StopFailed
from distributor.common.logging_setup import (
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    configure_logging,
    parse_log_format,
    parse_log_level,
)
from distributor.config import Config
from distributor.ledger.config import mask_dsns_in
from distributor.ledger.stores import migrate as migrate_ledger
from distributor.overrides import ConfigError
from distributor.overrides.user_configurable_postgresql import UserOverridesSchemaTooNew, migrate_table
from distributor.service import Service

log = logging.getLogger("distributor")

DISTRIBUTION = "otel-usage-distributor"
SUBCOMMANDS = """\
subcommands:
  distributor check-config --config FILE [--overrides FILE] [--config.expand-env]
                        validate a configuration and the per-tenant overrides file it names, as the
                        service would, printing every problem (exit 1) and every warning (as notes);
                        see `distributor check-config --help`
  distributor migrate --config FILE [--config.expand-env]
                        apply the schema migrations of the configured usage ledger (PostgreSQL; an
                        SQLite ledger is migrated when opened) and of the shared user-configurable
                        overrides table (when in PostgreSQL), and print their schema versions
"""


def version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distributor",
        description="OpenTelemetry trace distributor with exact cost attribution",
        epilog=SUBCOMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", "-version", action="version", version=f"distributor, version {version()}"
    )
    parser.add_argument(
        "--config",
        "-config.file",
        dest="config",
        required=True,
        type=Path,
        help="the YAML configuration file",
    )
    parser.add_argument(
        "--config.expand-env",
        "-config.expand-env",
        dest="expand_env",
        action="store_true",
        help="expand ${VAR} and ${VAR:-default} references in the configuration",
    )
    parser.add_argument(
        "--log.level",
        "-log.level",
        "--log-level",
        dest="log_level",
        default=None,
        type=_log_level,
        help="debug, info, warn or error (default: server.log_level, else info)",
    )
    parser.add_argument(
        "--log.format",
        "-log.format",
        dest="log_format",
        default=None,
        type=_log_format,
        help="logfmt or json (default: server.log_format, else logfmt)",
    )
    return parser


def _log_level(text: str) -> str:
    try:
        parse_log_level(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text.strip().lower()


def _log_format(text: str) -> str:
    try:
        return parse_log_format(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _configure_log(args: argparse.Namespace, config: Config | None) -> None:
    """The log as the command line says, else as `server.log_level` / `server.log_format` say."""
    server = config.server if config is not None else None
    level = args.log_level or getattr(server, "log_level", None) or DEFAULT_LOG_LEVEL
    log_format = args.log_format or getattr(server, "log_format", None) or DEFAULT_LOG_FORMAT
    configure_logging(level, log_format)


async def _serve(service: Service) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload_overrides_soon)
    await service.start()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await service.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check-config"]:
        from distributor.check_config import main as check_config

        return check_config(argv[1:])
    if argv[:1] == ["migrate"]:
        return migrate(argv[1:])
    args = _parser().parse_args(argv)
    _configure_log(args, None)  # what reading the configuration logs, as the command line says
    # Read as check-config reads it, so that every problem is printed, not only the first.
    checked = check(args.config, None, args.expand_env)
    if checked.problems or checked.config is None:
        for problem in checked.problems:
            print(f"error: invalid configuration: {problem}", file=sys.stderr)
        return 1
    config = checked.config
    _configure_log(args, config)  # server.log_level and server.log_format, unless the flags say otherwise
    # The per-tenant file's notes are logged by its reader, at start-up and on every reload.
    for note in config.notes:
        log.warning("%s", note)
    try:
        service = Service(config)
    except ConfigError as err:
        print(f"error: invalid configuration: {err}", file=sys.stderr)
        return 1
    try:
        asyncio.run(_serve(service))
    except OSError as err:
        print(f"error: cannot listen: {err}", file=sys.stderr)
        return 1
    except StopFailed as err:
        print(f"error: shutdown incomplete, every other step ran: {err}", file=sys.stderr)
        return 1
    return 0


def migrate(argv: list[str]) -> int:
    """`distributor migrate`: the configuration is checked as the service checks it, then the ledger's
    migrations run (each replica also runs them at start; this lets a deploy run them first)."""
    parser = argparse.ArgumentParser(
        prog="distributor migrate",
        description="Apply the schema migrations of the configured usage ledger, then exit.",
    )
    parser.add_argument("--config", "-config.file", dest="config", required=True, type=Path)
    parser.add_argument("--config.expand-env", "-config.expand-env", dest="expand_env", action="store_true")
    args = parser.parse_args(argv)
    checked = check(args.config, None, args.expand_env)
    if checked.problems or checked.config is None:
        for problem in checked.problems:
            print(f"error: invalid configuration: {problem}", file=sys.stderr)
        return 1
    try:
        print(migrate_ledger(checked.config.usage_attribution.ledger, checked.config.source))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    user_overrides = checked.config.overrides.user_configurable_overrides
    if user_overrides.enabled and user_overrides.backend == "postgresql":
        try:
            print(migrate_table(user_overrides.postgresql_dsn, user_overrides.postgresql_pool.timeout))
        except (UserOverridesSchemaTooNew, psycopg.Error) as err:
            print(f"error: overrides.user_configurable_overrides: {mask_dsns_in(str(err))}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
