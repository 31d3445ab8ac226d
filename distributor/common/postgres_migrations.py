"""What the PostgreSQL stores share: versioned schema migrations, applied once however many replicas start
together (under an advisory lock per schema, each version in its own transaction, recorded in a table of
its own), and their connection pool."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

# (version, what it does, its statements), in order.
Migration = tuple[int, str, tuple[str, ...]]
# The lock is taken per schema, so ledgers (or tables) in different schemas never wait for each other.
SCHEMA_HASH = "hashtext(current_schema())"


def apply_migrations(
    db: psycopg.Connection[Any],
    table: str,
    migrations: Sequence[Migration],
    lock: int,
    too_new: Callable[[int], Exception],
    then: Callable[[], None] = lambda: None,
) -> int:
    """Bring the schema of `db` (an autocommit connection) up to the last of `migrations`, recording
    each in `table`; `then` runs under the same lock once they are applied. Returns the version before;
    raises `too_new(version found)` when the database is newer than `migrations` know."""
    latest = migrations[-1][0]
    db.execute(f"SELECT pg_advisory_lock(%s, {SCHEMA_HASH})", (lock,))
    try:
        db.execute(
            f"""CREATE TABLE IF NOT EXISTS {table} (
                version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )"""
        )
        row = db.execute(f"SELECT COALESCE(MAX(version), 0) FROM {table}").fetchone()
        before = int(row[0]) if row else 0
        if before > latest:
            raise too_new(before)
        for version, _, statements in migrations:
            if version <= before:
                continue
            with db.transaction():
                for statement in statements:
                    db.execute(statement)
                db.execute(f"INSERT INTO {table} (version) VALUES (%s)", (version,))
        then()
    finally:
        db.execute(f"SELECT pg_advisory_unlock(%s, {SCHEMA_HASH})", (lock,))
    return before


def connection_pool(
    dsn: str, min_size: int, max_size: int, timeout: float, name: str, **connection: Any
) -> ConnectionPool:
    """A pool, not opened yet, of connections made with `connection` (psycopg.connect's keywords) and a
    connect timeout of `timeout`. A connection the server dropped (a restart, a failover) is replaced
    before it is used, so an outage costs the work done during it, not one more after it."""
    return ConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        name=name,
        kwargs={"connect_timeout": max(1, round(timeout)), **connection},
        check=ConnectionPool.check_connection,
    )
