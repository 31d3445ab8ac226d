"""`distributor --config FILE`: run the service until SIGINT/SIGTERM. `distributor check-config ...`
validates files without starting it."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import signal
import sys
from pathlib import Path

from distributor.check_config import check
from distributor.common.lifecycle import StopFailed
from distributor.overrides import ConfigError
from distributor.service import Service

log = logging.getLogger("distributor")

DISTRIBUTION = "otel-usage-distributor"
SUBCOMMANDS = """\
subcommands:
  distributor check-config --config FILE [--overrides FILE] [--config.expand-env]
                        validate a configuration and the per-tenant overrides file it names, as the
                        service would, printing every problem (exit 1) and every warning (as notes);
                        see `distributor check-config --help`
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
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


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
    args = _parser().parse_args(argv)
    # Read as check-config reads it, so that every problem is printed, not only the first.
    checked = check(args.config, None, args.expand_env)
    # Logging is configured here, once the configuration is read (server.log_level, server.log_format).
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if checked.problems or checked.config is None:
        for problem in checked.problems:
            print(f"error: invalid configuration: {problem}", file=sys.stderr)
        return 1
    config = checked.config
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


if __name__ == "__main__":
    sys.exit(main())
