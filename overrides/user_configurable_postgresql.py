"""User-configurable overrides in PostgreSQL: one table every replica behind a load balancer shares.

The same API and semantics as the directory store (user_configurable.py); what differs is how replicas
agree:
- One row per tenant. `version` comes from one sequence, so it is unique across tenants and across a
  tenant's deletion and re-creation: the ETag is made of it (still 32 hex digits between quotes), and an
  ETag of a deleted document never matches a later one.
- Every change is a compare-and-swap in one statement (`UPDATE ... WHERE tenant = ... AND version = ...`,
  `INSERT ... ON CONFLICT DO NOTHING` to create), so of two replicas racing with the same If-Match
  exactly one wins. The loser reads the row again and checks its request against it, as if it had come
  second: 412 for a stale If-Match, 428 for a create that now needs one.
- A deletion keeps the row with no document (and a new version), so that the replicas' polls see it.
- Each replica polls every `poll_period` for the rows changed since its last poll. Rows carry the id of
  the transaction that wrote them (`changed_by`); a poll takes the oldest transaction still running
  (the snapshot's xmin) before it reads, and the next poll reads from there: a write whose sequence
  number was drawn before another's but committed after it is never skipped. A row read twice is put
  in force once (its version is not newer than the one in force).
- The replica that writes puts the new document in force at once.
- The database unreachable: reads and writes raise UNAVAILABLE (503); a poll raises, so the periodic
  task counts it; what is in force stays in force. A service that starts while the database is down
  starts anyway (ingestion does not need it) and creates the schema and loads every row at the first
  poll that reaches it.
The schema is created at first use under a session advisory lock (replicas starting together create it
once), versioned in `user_overrides_migrations`, apart from the ledger's tables in the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout

from distributor.common.postgres_migrations import apply_migrations, connection_pool
from distributor.ledger.config import mask_dsns_in
from distributor.overrides.model import OverridesSnapshot, TenantOverrides
from distributor.overrides.provider import OverridesProvider
from distributor.overrides.user_configurable import (
    StoredOverrides,
    UserOverridesError,
    UserOverridesErrorReason,
    check_tenant,
    not_found,
    patching,
    removing,
    replacing,
    validate_document,
)

log = logging.getLogger(__name__)

# pg_advisory_lock's first key ("user overrides migrations"); the second is the schema's hash, so stores
# in different schemas of one database do not wait for each other.
MIGRATION_LOCK = 0x05E40701
# A write whose compare-and-swap lost is checked again against the row that won; as many times as
# other writers keep winning, up to this many.
MAX_ATTEMPTS = 10

# (version, what it does, statements): applied in order, each in its own transaction. Append only.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "the user-configurable overrides table",
        (
            "CREATE SEQUENCE user_overrides_versions",
            # document NULL: deleted, kept so that every replica's poll sees the deletion.
            """CREATE TABLE user_overrides (
                tenant TEXT PRIMARY KEY,
                document JSONB,
                version BIGINT NOT NULL,
                changed_by XID8 NOT NULL DEFAULT pg_current_xact_id()
            )""",
            "CREATE INDEX user_overrides_changed_by ON user_overrides (changed_by)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
_NEXT_VERSION = "nextval('user_overrides_versions')"


class UserOverridesSchemaTooNew(Exception):
    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the user-configurable overrides table has schema version {found}, newer than the {known} "
            "this distributor knows: run a distributor at least as new as the one that created it"
        )


def migrate_table(dsn: str, timeout: float) -> str:
    """`distributor migrate`: create or bring the table up to date; what was done, in one line. Raises
    UserOverridesSchemaTooNew, or psycopg.Error when the database cannot be reached."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, round(timeout))) as db:
        before, after = migrate(db)
    if before == after:
        return f"the user-configurable overrides table is at schema version {after}: nothing to do"
    return f"the user-configurable overrides table was migrated from schema version {before} to {after}"


def version_etag(version: int) -> str:
    """The ETag of a stored version: 32 hex digits between quotes, the directory store's shape."""
    return f'"{version:032x}"'


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    tenant: str
    version: int
    document: object | None  # None: deleted


class PostgresUserOverrides:
    def __init__(
        self,
        dsn: str,
        provider: OverridesProvider,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 10.0,
    ) -> None:
        """Opens the pool without waiting for the database: nothing here raises when it is down."""
        self.provider = provider
        self._pool = connection_pool(dsn, min_size, max_size, timeout, "user-overrides", autocommit=True)
        self._pool.open(wait=False)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._versions: dict[str, int] = {}  # by tenant, of what is in force (deletions included)
        self._since = "0"  # the xmin of the last poll's snapshot: rows changed from it on are read
        # One write at a time in this process: they are put in force in the order they were made.
        self._one_write_at_a_time = asyncio.Lock()

    # -- the API ------------------------------------------------------------------------------------------

    async def get(self, tenant: str) -> StoredOverrides:
        check_tenant(tenant)
        stored = await asyncio.to_thread(self._get, tenant)
        if stored is None:
            raise not_found(tenant)
        return stored

    def _get(self, tenant: str) -> StoredOverrides | None:
        with self._connection() as db:
            return _read_row(db, tenant)[0]

    async def set(self, tenant: str, document: object, if_match: str | None) -> StoredOverrides:
        check_tenant(tenant)
        return _written(await self._change(tenant, replacing(document, if_match)))

    async def patch(self, tenant: str, patch: object, if_match: str | None) -> StoredOverrides:
        check_tenant(tenant)
        return _written(await self._change(tenant, patching(patch, if_match)))

    async def delete(self, tenant: str, if_match: str | None) -> None:
        check_tenant(tenant)
        await self._change(tenant, removing(tenant, if_match))

    async def _change(self, tenant: str, change: Callable[[StoredOverrides | None], object | None]) -> _Row:
        """Write in a thread, then put the tenant's new document in force. Shielded: a request cancelled
        mid-write still puts what it wrote in force."""
        return await asyncio.shield(self._write_and_put_in_force(tenant, change))

    async def _write_and_put_in_force(
        self, tenant: str, change: Callable[[StoredOverrides | None], object | None]
    ) -> _Row:
        async with self._one_write_at_a_time:
            row = await asyncio.to_thread(self._write, tenant, change)
            await self._put_in_force([row])
        return row

    def _write(self, tenant: str, change: Callable[[StoredOverrides | None], object | None]) -> _Row:
        """Read the row, let `change` check the request against it and compute the new document (None:
        delete), and swap it in if the row has not changed meanwhile; else again, against the new row."""
        with self._connection() as db:
            for _ in range(MAX_ATTEMPTS):
                current, version = _read_row(db, tenant)
                document = change(current)
                if document is None:
                    found = db.execute(
                        f"""UPDATE user_overrides SET document = NULL, version = {_NEXT_VERSION},
                        changed_by = pg_current_xact_id()
                        WHERE tenant = %s AND version = %s AND document IS NOT NULL RETURNING version""",
                        (tenant, version),
                    ).fetchone()
                elif version is None:
                    found = db.execute(
                        f"""INSERT INTO user_overrides (tenant, document, version)
                        VALUES (%s, %s, {_NEXT_VERSION}) ON CONFLICT (tenant) DO NOTHING RETURNING version""",
                        (tenant, Jsonb(document)),
                    ).fetchone()
                else:
                    found = db.execute(
                        f"""UPDATE user_overrides SET document = %s, version = {_NEXT_VERSION},
                        changed_by = pg_current_xact_id()
                        WHERE tenant = %s AND version = %s RETURNING version""",
                        (Jsonb(document), tenant, version),
                    ).fetchone()
                if found is not None:
                    return _Row(tenant, int(found[0]), document)
        raise UserOverridesError(
            UserOverridesErrorReason.PRECONDITION_FAILED,
            "the overrides kept changing while this request was applied; read them again and retry",
        )

    # -- what is in force ---------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """The periodic poll: put in force the rows changed since the last one. Raises UserOverridesError
        (UNAVAILABLE) when the database cannot be read; what is in force stays."""
        since, rows = await asyncio.to_thread(self._read_changes)
        changed = await self._put_in_force(rows)
        self._since = since
        return changed

    def load_all(self) -> bool:
        """At start-up, before anything is served: every row, put in force. A database that cannot be
        reached is logged, not fatal: the first poll that reaches it loads everything."""
        try:
            since, rows = self._read_changes()
        except UserOverridesError as err:
            log.error(
                "user-configurable overrides not loaded, the polls will retry (tenants get the operator's "
                "overrides meanwhile): %s",
                err,
            )
            return False
        changes = self._newer(rows)
        self._since = since
        if not changes:
            return False
        self.provider.replace(_with_user_overrides(self.provider.snapshot, changes))
        return True

    def _read_changes(self) -> tuple[str, list[_Row]]:
        """In a thread: the xmin to read from next time, and the rows changed since the last poll."""
        with self._connection() as db:
            mark = db.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::TEXT").fetchone()
            assert mark is not None
            found = db.execute(
                """SELECT tenant, version, document::TEXT FROM user_overrides
                WHERE changed_by >= %s::TEXT::XID8""",
                (self._since,),
            ).fetchall()
        rows: list[_Row] = []
        for tenant, version, text in found:
            document: object | None = None
            if text is not None:
                try:
                    document = json.loads(text)
                except RecursionError:
                    document = {"": "nested too deeply"}  # refused by validation below, and logged
            rows.append(_Row(tenant, int(version), document))
        return str(mark[0]), rows

    def _newer(self, rows: list[_Row]) -> dict[str, tuple[int, TenantOverrides | None]]:
        """The rows newer than what is in force, validated (None: no document of the tenant's in force),
        by tenant with their versions, which are recorded as in force."""
        changes: dict[str, tuple[int, TenantOverrides | None]] = {}
        for row in rows:
            if row.version <= self._versions.get(row.tenant, 0):
                continue  # in force already (written here, or read by an earlier poll)
            self._versions[row.tenant] = row.version
            overrides: TenantOverrides | None = None
            if row.document is not None:
                try:
                    overrides = validate_document(row.document)
                except UserOverridesError as err:  # written by hand, or by another version of the service
                    log.error("ignoring user-configurable overrides of tenant %s: %s", row.tenant, err)
            changes[row.tenant] = (row.version, overrides)
        return changes

    async def _put_in_force(self, rows: list[_Row]) -> bool:
        """On the event loop: the rows newer than what is in force put in force, with the snapshot built
        in a thread (it resolves every tenant). If another snapshot was put in force meanwhile it is
        built again on that one, without the tenants that a newer version reached meanwhile."""
        changes = self._newer(rows)
        while changes:
            base = self.provider.snapshot
            snapshot = await asyncio.to_thread(_with_user_overrides, base, changes)
            if self.provider.snapshot is base:
                self.provider.replace(snapshot)
                return True
            changes = {
                tenant: change for tenant, change in changes.items() if self._versions[tenant] == change[0]
            }
        return False

    # -- the database -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection, the schema created first if this process has not seen it yet; a database that
        cannot be reached raises UNAVAILABLE (its message never carries the connection's password)."""
        try:
            with self._pool.connection() as db:
                self._ensure_schema(db)
                yield db
        except (psycopg.Error, PoolTimeout) as err:
            raise UserOverridesError(
                UserOverridesErrorReason.UNAVAILABLE,
                "the user-configurable overrides database cannot be reached, those in force stay in "
                f"force; retry later: {mask_dsns_in(str(err))}",
            ) from err
        except UserOverridesSchemaTooNew as err:
            raise UserOverridesError(UserOverridesErrorReason.UNAVAILABLE, str(err)) from err

    def _ensure_schema(self, db: psycopg.Connection[Any]) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                migrate(db)
                self._schema_ready = True

    async def start(self) -> None:
        """Nothing to start: the pool opened with the store, so that the first poll can run at once."""

    async def stop(self, deadline: float) -> None:
        await asyncio.to_thread(self._pool.close)

    def close(self) -> None:
        self._pool.close()


def migrate(db: psycopg.Connection[Any]) -> tuple[int, int]:
    """Create or bring the table up to SCHEMA_VERSION on an autocommit connection, once however many
    replicas start together; (version before, version after)."""
    too_new = lambda found: UserOverridesSchemaTooNew(found, SCHEMA_VERSION)  # noqa: E731
    before = apply_migrations(db, "user_overrides_migrations", MIGRATIONS, MIGRATION_LOCK, too_new)
    return before, SCHEMA_VERSION


def _read_row(db: psycopg.Connection[Any], tenant: str) -> tuple[StoredOverrides | None, int | None]:
    """The tenant's document (None when it has none) and its row's version (None when it has no row)."""
    row = db.execute("SELECT document, version FROM user_overrides WHERE tenant = %s", (tenant,)).fetchone()
    if row is None:
        return None, None
    document, version = row
    if document is None:
        return None, int(version)
    return StoredOverrides(document, version_etag(int(version))), int(version)


def _written(row: _Row) -> StoredOverrides:
    assert isinstance(row.document, dict), "only a deletion leaves no document"
    return StoredOverrides(row.document, version_etag(row.version))


def _with_user_overrides(
    snapshot: OverridesSnapshot, changes: Mapping[str, tuple[int, TenantOverrides | None]]
) -> OverridesSnapshot:
    user = dict(snapshot.user)
    for tenant, (_, overrides) in changes.items():
        if overrides is None:
            user.pop(tenant, None)
        else:
            user[tenant] = overrides
    return dataclasses.replace(snapshot, user=MappingProxyType(user))
