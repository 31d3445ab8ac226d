"""The ledger's storage backends by `usage_attribution.ledger.backend`, one module each."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg_pool import PoolTimeout

from distributor.common.config_reader import ConfigError
from distributor.ledger.config import LedgerConfig, mask_dsns_in
from distributor.ledger.ledger import LedgerStore, LedgerUnavailable, UnavailableStore
from distributor.ledger.postgresql import PostgresLedgerStore, SchemaTooNew
from distributor.ledger.postgresql import migrate as migrate_postgresql
from distributor.ledger.sqlite import SqliteLedgerStore

log = logging.getLogger(__name__)

DSN_KEY = "usage_attribution.ledger.postgresql.dsn"


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


def _postgresql_error(source: Path | None, problem: str) -> ConfigError:
    return ConfigError(str(source or ""), None, DSN_KEY, problem)


def _checked_dsn(config: LedgerConfig, source: Path | None) -> str:
    if not config.postgresql_dsn:
        raise _postgresql_error(source, "backend postgresql needs a connection string")
    pool = config.postgresql_pool
    if pool.min_size > pool.max_size:
        raise ConfigError(
            str(source or ""),
            None,
            "usage_attribution.ledger.postgresql.pool.min_size",
            f"{pool.min_size} is more than max_size {pool.max_size}",
        )
    return config.postgresql_dsn


def _postgresql(config: LedgerConfig, source: Path | None) -> LedgerStore:
    """A database that cannot be reached, or whose schema is newer than this code, stops the start-up
    like an SQLite file that cannot be opened: the error names the key, never the password."""
    dsn = _checked_dsn(config, source)
    pool = config.postgresql_pool
    try:
        return PostgresLedgerStore(dsn, pool.min_size, pool.max_size, pool.timeout)
    except SchemaTooNew as err:
        raise _postgresql_error(source, str(err)) from None
    except (psycopg.Error, PoolTimeout) as err:
        raise _postgresql_error(source, f"cannot open the ledger: {mask_dsns_in(str(err))}") from None


def migrate(config: LedgerConfig, source: Path | None) -> str:
    """`distributor migrate`: what was done, in one line; a ConfigError as opening the store gives."""
    if config.backend != "postgresql":
        return f"the {config.backend} ledger is migrated when it is opened: nothing to do"
    dsn = _checked_dsn(config, source)
    try:
        before, after = migrate_postgresql(dsn, config.postgresql_pool.timeout)
    except SchemaTooNew as err:
        raise _postgresql_error(source, str(err)) from None
    except psycopg.Error as err:
        raise _postgresql_error(source, f"cannot migrate the ledger: {mask_dsns_in(str(err))}") from None
    if before == after:
        return f"the postgresql ledger is at schema version {after}: nothing to do"
    return f"the postgresql ledger was migrated from schema version {before} to {after}"


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
STORES: dict[str, Callable[[LedgerConfig, Path | None], LedgerStore]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}


def open_store(config: LedgerConfig, source: Path | None) -> LedgerStore:
    """The configured store, ready to write; a ConfigError naming the key (in the configuration file
    `source`) when it cannot be opened; an UnavailableStore, logged as an error, when it opens but
    holds no usable ledger (a corrupted file)."""
    return STORES[config.backend](config, source)
