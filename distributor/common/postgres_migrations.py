"""Versioned schema migrations on PostgreSQL, applied once however many replicas start together: under
an advisory lock per schema, each version in its own transaction, recorded in a table of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

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
