"""A usage ledger on its own, outside a service: the test flushes it (its periodic flush is not started);
and ledger stores of either backend (an SQLite file, or a schema of the test PostgreSQL database)."""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.conninfo import make_conninfo

from distributor.common.lifecycle import BackgroundTaskMetrics
from distributor.ledger.ledger import LedgerMetrics, LedgerStore, UsageLedger
from distributor.ledger.postgresql import PostgresLedgerStore
from distributor.ledger.sqlite import SqliteLedgerStore


def standalone_ledger(
    store: LedgerStore,
    wall_clock: Callable[[], float],
    registry: CollectorRegistry | None = None,
    max_pending_entries: int = 1_000_000,
) -> UsageLedger:
    """Flush period, retention and merge horizon as a service's defaults would not get in the way: an
    hour, 15 months, an hour. Its metrics go to `registry` when the test reads them."""
    registry = registry or CollectorRegistry()
    return UsageLedger(
        store,
        LedgerMetrics(registry),
        flush_period=3600.0,
        retention_months=15,
        merge_after=3600.0,
        wall_clock=wall_clock,
        task_metrics=BackgroundTaskMetrics(registry),
        max_pending_entries=max_pending_entries,
    )


# --- ledger stores of either backend ------------------------------------------------------------------

# The PostgreSQL the tests use; where it cannot be reached they are skipped, unless CI=true (then failed).
POSTGRES_DSN = os.environ.get("DISTRIBUTOR_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")

# A write that fails inside its transaction, after the series rows were inserted: what a full disk does.
_SQLITE_FAIL_WRITES = (
    "CREATE TRIGGER disk_full BEFORE INSERT ON hourly BEGIN SELECT RAISE(ABORT, 'disk full'); END"
)
_POSTGRES_FAIL_WRITES = (
    "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
    "CREATE TRIGGER disk_full BEFORE INSERT ON hourly FOR EACH ROW EXECUTE FUNCTION disk_full()",
)


def query(dsn: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one statement of the test's own, on a connection of its own to `dsn` (none when the
    statement returns none)."""
    with psycopg.connect(dsn, autocommit=True) as db:
        cursor = db.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def reachable_postgres() -> str:
    """POSTGRES_DSN once it answers; skips the test (fails it when CI=true) otherwise."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3):
            pass
    except psycopg.Error as err:
        reason = f"PostgreSQL at DISTRIBUTOR_TEST_POSTGRES_DSN is unreachable: {err}".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return POSTGRES_DSN


class PostgresSchemas:
    """Schemas of the test database made on demand, one per name (a ledger each), all dropped at close."""

    def __init__(self) -> None:
        self.base = reachable_postgres()
        self.prefix = f"t_{secrets.token_hex(6)}"
        self.made: list[str] = []

    def dsn(self, name: str = "ledger") -> str:
        """A connection string whose search_path is the schema of `name` (made the first time)."""
        schema = f"{self.prefix}_{name}"
        if schema not in self.made:
            with psycopg.connect(self.base, autocommit=True) as db:
                db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            self.made.append(schema)
        return make_conninfo(self.base, options=f"-csearch_path={schema}")

    def close(self) -> None:
        with psycopg.connect(self.base, autocommit=True) as db:
            # A session a test left open in a transaction (a process killed behind a proxy) must fail
            # the teardown, not hang it: its locks would hold the DROP forever.
            db.execute("SET lock_timeout = '20s'")
            for schema in self.made:
                db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def schemas() -> Iterator[PostgresSchemas]:
    """PostgreSQL schemas for one test, dropped at its end (import it where a test asks for it)."""
    made = PostgresSchemas()
    try:
        yield made
    finally:
        made.close()


class LedgerBackend:
    """Stores of one backend for a test, each ledger by name (a file, or a schema), and what a test
    reads of a ledger through a connection of its own. Stores it opened are closed at `close`."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        self.schemas = PostgresSchemas() if kind == "postgresql" else None
        self.opened: list[LedgerStore] = []

    def open(self, name: str = "ledger") -> LedgerStore:
        store: LedgerStore
        if self.schemas is not None:
            store = PostgresLedgerStore(self.schemas.dsn(name), min_size=0, max_size=2)
        else:
            store = SqliteLedgerStore(self.path(name))
        self.opened.append(store)
        return store

    def path(self, name: str = "ledger") -> Path:
        return self.directory / f"{name}.db"

    def query(self, statement: str, name: str = "ledger") -> list[tuple[Any, ...]]:
        if self.schemas is not None:
            return query(self.schemas.dsn(name), statement)
        with contextlib.closing(sqlite3.connect(self.path(name))) as file:
            rows = file.execute(statement).fetchall()
            file.commit()
            return rows

    def row_counts(self, name: str = "ledger") -> dict[str, int]:
        return {
            table: int(self.query(f"SELECT COUNT(*) FROM {table}", name)[0][0])
            for table in ("hourly", "monthly", "flushes")
        }

    def series_ids(self, name: str = "ledger") -> dict[tuple[str, str], int]:
        return {
            (tenant, tags): int(series) for series, tenant, tags in self.query("SELECT * FROM series", name)
        }

    def fail_writes(self) -> None:
        """Every write fails inside its transaction from now on, after its series rows."""
        for statement in _POSTGRES_FAIL_WRITES if self.schemas is not None else (_SQLITE_FAIL_WRITES,):
            self.query(statement)

    def allow_writes(self) -> None:
        self.query("DROP TRIGGER disk_full" + (" ON hourly" if self.schemas is not None else ""))

    def close(self) -> None:
        for store in self.opened:
            store.close()
        if self.schemas is not None:
            self.schemas.close()


@contextlib.contextmanager
def ledger_backend(kind: str, directory: Path) -> Iterator[LedgerBackend]:
    backend = LedgerBackend(kind, directory)
    try:
        yield backend
    finally:
        backend.close()
