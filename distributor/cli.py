"""`distributor --config FILE`: run the service until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from distributor.common.lifecycle import StopFailed
from distributor.config import load_config
from distributor.overrides import ConfigError
from distributor.service import Service

log = logging.getLogger("distributor")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distributor", description="OpenTelemetry trace distributor with exact cost attribution"
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
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config, expand_env=args.expand_env)
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
