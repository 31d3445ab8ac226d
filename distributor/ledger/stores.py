"""The ledger's storage backends by `usage_attribution.ledger.backend`, one module each."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from distributor.common.config_reader import ConfigError
from distributor.ledger.config import LedgerConfig
from distributor.ledger.ledger import LedgerStore, LedgerUnavailable, UnavailableStore
from distributor.ledger.sqlite import SqliteLedgerStore

log = logging.getLogger(__name__)


def _sqlite(config: LedgerConfig, source: Path | None) -> LedgerStore:
    try:
        return SqliteLedgerStore(config.sqlite_path)
    except (OSError, sqlite3.Error) as err:
        if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
            return _unavailable(f"{config.sqlite_path}: {err}")  # a file that is not (or no longer) a ledger
        # The file cannot be opened or created: a configuration matter.
        raise ConfigError(
            str(source or ""),
            None,
            "usage_attribution.ledger.sqlite.path",
            f"cannot open the ledger {config.sqlite_path}: {err}",
        ) from err


def _unavailable(reason: str) -> UnavailableStore:
    """The service starts anyway, without a ledger, and says so loudly. The file stays where it is:
    it may be repairable, and it is the operator's to inspect."""
    error = LedgerUnavailable(reason)
    log.error(
        "%s; starting WITHOUT the usage ledger: usage is not recorded (counted in "
        "tempo_usage_ledger_unrecorded_bytes_total and _spans_total), the usage attribution API "
        "answers 503. The file is left in place: repair or move it, then restart",
        error,
    )
    return UnavailableStore(error)


# By the `backend` names ledger/config.py accepts (LEDGER_BACKENDS).
STORES: dict[str, Callable[[LedgerConfig, Path | None], LedgerStore]] = {"sqlite": _sqlite}


def open_store(config: LedgerConfig, source: Path | None) -> LedgerStore:
    """The configured store, ready to write; a ConfigError naming the key (in the configuration file
    `source`) when it cannot be opened; an UnavailableStore, logged as an error, when it opens but
    holds no usable ledger (a corrupted file)."""
    return STORES[config.backend](config, source)
