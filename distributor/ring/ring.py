"""The distributor ring on PostgreSQL: each replica upserts a heartbeat row every `heartbeat_period` and
counts the replicas whose heartbeat is within `heartbeat_timeout`, itself included; a tenant with the
`global` rate strategy gets its rate divided by that count on each replica.

The count is read off the event loop, in the heartbeat's own thread, and kept: a request reads the
last one and never waits on the database. When the database cannot be reached the last count stays
(ingestion goes on as before; the failure is counted and logged by the periodic task), so an outage
neither stops ingestion nor multiplies a tenant's rate by the number of replicas at once.

Heartbeat times are each replica's wall clock, compared with the counting replica's, as in Tempo's
ring: the replicas' clocks must agree to well within the timeout (NTP does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Gauge

from distributor.common.clock import Clock
from distributor.common.errors import DistributorError
from distributor.common.lifecycle import BackgroundTaskMetrics, PeriodicTask
from distributor.ledger.config import mask_dsns_in
from distributor.ring.config import RingConfig

log = logging.getLogger(__name__)

# pg_advisory_xact_lock's first key for creating the ring's table ("ring table", an arbitrary constant
# beside the ledger's); the second is the schema's hash, so rings in different schemas do not wait.
RING_TABLE_LOCK = 0x1ED6E703
# A row whose heartbeat is this many timeouts old is deleted by whichever replica counts next: a replica
# that crashed never removes its own, and each start is a new instance id.
FORGET_AFTER_TIMEOUTS = 10
RING_NAME = "distributor"  # the `name` label of Tempo's ring metrics


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RingUnavailable(DistributorError):
    """The ring's database could not be reached or used; the message never carries a password."""


class RingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.replicas = Gauge(
            "tempo_distributor_replicas",
            "Healthy replicas of the distributor ring at the last heartbeat, this one included (1 without "
            "a ring): a tenant with the global rate strategy gets its rate divided by it on each replica",
            registry=registry,
        )
        self.replicas.set(1)
        self.members = Gauge(
            "tempo_ring_members",
            "Members of the distributor ring by state, as Tempo reports its rings: ACTIVE within the "
            "heartbeat timeout, Unhealthy past it (until forgotten)",
            ["name", "state"],
            registry=registry,
        )


class PostgresHeartbeats:
    """One connection for one replica's heartbeats (they run one at a time), made again after any
    failure: a database restart costs the heartbeats made while it was down, not one more after."""

    def __init__(self, dsn: str, timeout: float) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._db: psycopg.Connection[Any] | None = None

    def beat(
        self, instance_id: str, at: float, healthy_since: float, forget_before: float
    ) -> tuple[int, int]:
        """Store this replica's heartbeat at `at`; (replicas whose heartbeat is at or after
        `healthy_since`, replicas older than that). Rows older than `forget_before` are deleted."""
        with self._transaction() as db:
            db.execute(
                """INSERT INTO distributor_ring (instance_id, heartbeat_at) VALUES (%s, %s)
                ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at""",
                (instance_id, at),
            )
            db.execute("DELETE FROM distributor_ring WHERE heartbeat_at < %s", (forget_before,))
            row = db.execute(
                """SELECT COUNT(*) FILTER (WHERE heartbeat_at >= %(since)s),
                    COUNT(*) FILTER (WHERE heartbeat_at < %(since)s)
                FROM distributor_ring""",
                {"since": healthy_since},
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def leave(self, instance_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM distributor_ring WHERE instance_id = %s", (instance_id,))

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on the connection; a database error closes it (the next heartbeat connects
        again) and is raised as RingUnavailable."""
        try:
            db = self._connection()
            with db.transaction():
                yield db
        except psycopg.Error as err:
            self.close()
            raise RingUnavailable(f"postgresql: {mask_dsns_in(str(err))}") from err

    def _connection(self) -> psycopg.Connection[Any]:
        if self._db is None:
            db = psycopg.connect(self._dsn, autocommit=True, connect_timeout=max(1, round(self._timeout)))
            try:
                db.execute(f"SET statement_timeout = {max(1, round(self._timeout * 1000))}")
                with db.transaction():
                    # Replicas starting together must not race to create the table.
                    db.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (RING_TABLE_LOCK,)
                    )
                    db.execute(
                        """CREATE TABLE IF NOT EXISTS distributor_ring (
                            instance_id TEXT PRIMARY KEY, heartbeat_at DOUBLE PRECISION NOT NULL
                        )"""
                    )
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db


class DistributorRing:
    """This replica's membership of the ring (a Component), and the count of healthy replicas."""

    def __init__(
        self,
        config: RingConfig,
        metrics: RingMetrics,
        task_metrics: BackgroundTaskMetrics,
        wall_clock: Clock,
    ) -> None:
        self.instance_id = config.instance_id or default_instance_id()
        self._timeout = config.heartbeat_timeout
        self._metrics = metrics
        self._wall_clock = wall_clock
        self._heartbeats = PostgresHeartbeats(config.postgresql_dsn, config.postgresql_timeout)
        self._healthy = 1  # until a heartbeat says otherwise, this replica is the only one known
        self.heartbeat = PeriodicTask(
            "distributor_ring_heartbeat", config.heartbeat_period, self._beat, task_metrics
        )

    def healthy_replicas(self) -> int:
        """The last count (at least 1: this replica); never waits."""
        return self._healthy

    async def start(self) -> None:
        """A first heartbeat before the receivers start, so that the first requests are limited with the
        ring's count; when the database cannot be reached it is logged and this replica counts as the
        only one until a heartbeat succeeds."""
        await self.heartbeat.run_once()
        await self.heartbeat.start()

    async def stop(self, deadline: float) -> None:
        """Stop heartbeating and remove this replica's row, so that the others' share grows at their next
        heartbeat rather than after the timeout. If the database cannot be reached, that is logged and
        the row expires by itself."""
        await self.heartbeat.stop(deadline)
        try:
            await asyncio.to_thread(self._heartbeats.leave, self.instance_id)
        except RingUnavailable as err:
            log.warning(
                "distributor ring: could not remove this replica (%s); the others stop counting it "
                "after heartbeat_timeout: %s",
                self.instance_id,
                err,
            )
        finally:
            await asyncio.to_thread(self._heartbeats.close)

    async def _beat(self) -> None:
        now = self._wall_clock()
        healthy, unhealthy = await asyncio.to_thread(
            self._heartbeats.beat,
            self.instance_id,
            now,
            now - self._timeout,
            now - FORGET_AFTER_TIMEOUTS * self._timeout,
        )
        healthy = max(1, healthy)  # this replica's own row was just written; a clock jump must not make 0
        if healthy != self._healthy:
            log.info(
                "distributor ring: %d healthy replicas (was %d); global rate strategy tenants get 1/%d of "
                "their rate here",
                healthy,
                self._healthy,
                healthy,
            )
        self._healthy = healthy
        self._metrics.replicas.set(healthy)
        self._metrics.members.labels(RING_NAME, "ACTIVE").set(healthy)
        self._metrics.members.labels(RING_NAME, "Unhealthy").set(unhealthy)
