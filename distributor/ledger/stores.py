"""The ledger's storage backends by `usage_attribution.ledger.backend`, one module each."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from distributor.common.config_reader import ConfigError
from distributor.ledger.config import LedgerConfig
from distributor.ledger.ledger import LedgerStore
from distributor.ledger.sqlite import SqliteLedgerStore


def _sqlite(config: LedgerConfig, source: Path | None) -> LedgerStore:
    try:
        return SqliteLedgerStore(config.sqlite_path)
    except (OSError, sqlite3.Error) as err:
        raise ConfigError(
            str(source or ""),
            None,
            "usage_attribution.ledger.sqlite.path",
            f"cannot open the ledger {config.sqlite_path}: {err}",
        ) from err


# By the `backend` names ledger/config.py accepts (LEDGER_BACKENDS).
STORES: dict[str, Callable[[LedgerConfig, Path | None], LedgerStore]] = {"sqlite": _sqlite}


def open_store(config: LedgerConfig, source: Path | None) -> LedgerStore:
    """The configured store, ready to write; a ConfigError naming the key (in the configuration file
    `source`) when it cannot be opened."""
    return STORES[config.backend](config, source)
