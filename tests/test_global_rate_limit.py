"""The global ingestion rate strategy: a tenant's rate divided among the healthy replicas of the
distributor ring, whose heartbeats are rows in PostgreSQL.

Replicas are real services on 127.0.0.1 ephemeral ports sharing a schema of the test database (see
tests/support/ledger.py for DISTRIBUTOR_TEST_POSTGRES_DSN; skipped when it is unreachable, failed when
CI=true). Heartbeats are driven by calling the ring's periodic task (`ring.heartbeat.run_once()`); the
token buckets run on each service's ManualClock and the heartbeat timeout on a shared manual wall clock,
so every figure below is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from google.rpc.status_pb2 import Status
from prometheus_client import CollectorRegistry
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from distributor.check_config import check
from distributor.common.lifecycle import BackgroundTaskMetrics
from distributor.config import Config, config_as_data, load_config
from distributor.ingest.limits import IngestionRateLimiter
from distributor.overrides import ConfigError
from distributor.ring.config import RingConfig
from distributor.ring.ring import DistributorRing, RingMetrics
from distributor.service import Service
from tests.support.clock import ManualClock
from tests.support.config_files import write_config_files
from tests.support.ledger import PostgresSchemas, schemas
from tests.support.metrics import Samples, sample_value
from tests.support.otlp import batch, request, span
from tests.support.service import RunningService, make_config, with_forwarders

TENANT = "acme"
HEARTBEAT_TIMEOUT = 15.0
BODY = request(batch({"service.name": "api"}, [span(pad=400)])).SerializeToString()
SIZE = len(BODY)  # every request below is this many protobuf bytes
RATE = 4 * SIZE  # the tenant's rate, bytes/s, across the replicas
BURST = 4 * SIZE  # per replica
STEP = 0.5  # seconds between a client's rounds: a replica of two gains exactly one request's tokens

__all__ = ["schemas"]  # the fixture, used by name


# --- the limiter on its own ------------------------------------------------------------------------------


def test_a_global_tenant_gets_its_rate_divided_by_the_healthy_replicas_and_its_whole_burst() -> None:
    clock = ManualClock()
    replicas = [4]
    limiter = IngestionRateLimiter(clock, lambda: replicas[0])
    assert limiter.local_rate(4000, "global") == 1000.0
    assert limiter.local_rate(4000, "local") == 4000.0
    assert limiter.take("g", 2000, 4000, 2000, "global").allowed  # the whole burst at once
    refused = limiter.take("g", 500, 4000, 2000, "global")
    assert (refused.allowed, refused.retry_after) == (False, 0.5)  # 500 bytes at 1000 bytes/s
    assert (refused.local_rate, refused.global_rate) == (1000.0, 4000)
    clock.advance(0.5)
    assert limiter.take("g", 500, 4000, 2000, "global").allowed
    assert not limiter.take("g", 1, 4000, 2000, "global").allowed
    # A local tenant on the same replica keeps its whole rate, and its refusal says global 0.
    assert limiter.take("l", 2000, 4000, 2000).allowed
    local = limiter.take("l", 1000, 4000, 2000)
    assert (local.retry_after, local.local_rate, local.global_rate) == (0.25, 4000.0, 0)
    # The count changes: the time since the last request was earned at the old share (the count is
    # only known to have changed by now), the time from now on at the new one.
    replicas[0] = 2
    clock.advance(0.5)
    assert limiter.take("g", 500, 4000, 2000, "global").allowed  # 0.5 s at 1000 bytes/s
    assert not limiter.take("g", 1, 4000, 2000, "global").allowed
    clock.advance(0.5)
    assert limiter.take("g", 1000, 4000, 2000, "global").allowed  # 0.5 s at 2000 bytes/s
    assert not limiter.take("g", 1, 4000, 2000, "global").allowed
    assert limiter.take("g", 2001, 4000, 2000, "global").never  # larger than the burst, whatever the rate


def test_without_a_count_below_one_the_whole_rate_applies() -> None:
    """A ring that saw no replica (not even itself) must not divide by zero or multiply the rate."""
    limiter = IngestionRateLimiter(ManualClock(), lambda: 0)
    assert limiter.local_rate(4000, "global") == 4000.0


# --- replicas sharing a ring in PostgreSQL ---------------------------------------------------------------


def ring_config(dsn: str, instance_id: str) -> RingConfig:
    return RingConfig(
        backend="postgresql",
        postgresql_dsn=dsn,
        heartbeat_period=5.0,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        instance_id=instance_id,
        postgresql_timeout=2.0,
    )


def global_tenant_config(ring: RingConfig) -> Config:
    """Multitenant, no forwarders; every tenant's strategy global at RATE with BURST per replica."""
    config = with_forwarders(make_config(multitenancy=True), rate_limit_bytes=RATE, burst_size_bytes=BURST)
    ingestion = replace(config.overrides.defaults.ingestion, rate_strategy="global")
    defaults = replace(config.overrides.defaults, ingestion=ingestion)
    return replace(config, ring=ring, overrides=replace(config.overrides, defaults=defaults))


class Replicas:
    """Services started on one wall clock (for heartbeats), each with its own ManualClock (for its
    token buckets); stopped gracefully at the end unless a test stopped them."""

    def __init__(self) -> None:
        self.wall = ManualClock(1_700_000_000.0)
        self.session = aiohttp.ClientSession()
        self.running: list[RunningService] = []

    async def start(self, config: Config) -> RunningService:
        clock = ManualClock()
        service = Service(config, clock=clock, wall_clock=self.wall)
        await service.start()
        running = RunningService(service, self.session, clock, self.wall)
        self.running.append(running)
        return running

    async def stop(self, replica: RunningService) -> None:
        self.running.remove(replica)
        await replica.service.stop()

    async def close(self) -> None:
        for replica in self.running:
            await replica.service.stop()
        await self.session.close()


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    made = Replicas()
    try:
        yield made
    finally:
        await made.close()


def ring_members(samples: Samples, state: str) -> float:
    """Tempo's ring gauge for the distributor ring (its `name` label clashes with sample_value's)."""
    return samples.get(
        ("tempo_ring_members", frozenset({"name": "distributor", "state": state}.items())), 0.0
    )


def ring_of(replica: RunningService) -> DistributorRing:
    ring = replica.service.ring
    assert ring is not None
    return ring


async def greedy_round(replica: RunningService) -> int:
    """A client sending until refused: the bytes accepted."""
    accepted = 0
    while True:
        answer = await replica.post(BODY, TENANT)
        if answer.status != 200:
            assert answer.status == 429, answer
            return accepted
        accepted += SIZE


async def advance(replicas: list[RunningService], seconds: float) -> None:
    for replica in replicas:
        replica.clock.advance(seconds)


async def refusal_message(replica: RunningService) -> str:
    answer = await replica.post(BODY, TENANT)
    assert answer.status == 429, answer
    return Status.FromString(answer.body).message


async def test_two_replicas_together_let_a_global_tenant_through_at_its_rate_and_one_alone_at_all_of_it(
    schemas: PostgresSchemas, replicas: Replicas
) -> None:
    dsn = schemas.dsn("ring")
    a = await replicas.start(global_tenant_config(ring_config(dsn, "replica-a")))
    b = await replicas.start(global_tenant_config(ring_config(dsn, "replica-b")))
    # a's first heartbeat, at its start, saw only itself; b's saw both; a's next one sees both.
    assert (ring_of(a).healthy_replicas(), ring_of(b).healthy_replicas()) == (1, 2)
    await ring_of(a).heartbeat.run_once()
    assert ring_of(a).healthy_replicas() == 2
    for replica in (a, b):
        samples = await replica.samples()
        assert sample_value(samples, "tempo_distributor_replicas") == 2
        assert ring_members(samples, "ACTIVE") == 2

    seconds = 10.0
    accepted = [await greedy_round(a), await greedy_round(b)]  # each replica's burst
    for _ in range(int(seconds / STEP)):
        await advance([a, b], STEP)
        accepted[0] += await greedy_round(a)
        accepted[1] += await greedy_round(b)
    # Each replica let through its burst and half the rate; together at most the rate and two bursts.
    assert accepted == [BURST + RATE / 2 * seconds] * 2
    assert sum(accepted) <= RATE * seconds + 2 * BURST
    assert await refusal_message(a) == (
        f"RATE_LIMITED: ingestion rate limit (local: {RATE // 2} bytes/s, global: {RATE} bytes/s, burst: "
        f"{BURST} bytes) exceeded while adding {SIZE} bytes for user {TENANT}. consider increasing the "
        "limit or reducing ingestion rate."
    )

    await replicas.stop(b)  # graceful: its row is removed
    await ring_of(a).heartbeat.run_once()
    assert ring_of(a).healthy_replicas() == 1
    assert sample_value(await a.samples(), "tempo_distributor_replicas") == 1
    # A request now (refused: the bucket is empty) puts the new share in force from this instant; time
    # that passed before a request saw the new count is earned at the old share.
    assert f"(local: {RATE} bytes/s, global: {RATE} bytes/s," in await refusal_message(a)
    alone = 0
    for _ in range(int(seconds / STEP)):
        await advance([a], STEP)
        alone += await greedy_round(a)
    assert alone == RATE * seconds  # the whole rate, no burst: its bucket was empty


async def test_a_replica_whose_heartbeat_is_older_than_the_timeout_is_not_counted_until_it_beats_again(
    schemas: PostgresSchemas, replicas: Replicas
) -> None:
    dsn = schemas.dsn("ring")
    a = await replicas.start(global_tenant_config(ring_config(dsn, "replica-a")))
    b = await replicas.start(global_tenant_config(ring_config(dsn, "replica-b")))
    await ring_of(a).heartbeat.run_once()
    assert ring_of(a).healthy_replicas() == 2

    replicas.wall.advance(HEARTBEAT_TIMEOUT)  # b's heartbeat is exactly timeout old: still counted
    await ring_of(a).heartbeat.run_once()
    assert ring_of(a).healthy_replicas() == 2
    replicas.wall.advance(1.0)  # now older than the timeout (b hung, or lost the database)
    await ring_of(a).heartbeat.run_once()
    assert ring_of(a).healthy_replicas() == 1
    samples = await a.samples()
    assert ring_members(samples, "ACTIVE") == 1
    assert ring_members(samples, "Unhealthy") == 1
    assert a.service.rate_limiter.local_rate(RATE, "global") == RATE

    await ring_of(b).heartbeat.run_once()  # b is back
    await ring_of(a).heartbeat.run_once()
    assert (ring_of(a).healthy_replicas(), ring_of(b).healthy_replicas()) == (2, 2)
    assert a.service.rate_limiter.local_rate(RATE, "global") == RATE / 2


class TcpProxy:
    """127.0.0.1:<port> forwarded to PostgreSQL, until `cut()` closes the listener and every connection:
    through it the database is then unreachable."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self.pumps.add(pump)
            pump.add_done_callback(self.pumps.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()
        for pump in list(self.pumps):
            pump.cancel()


async def test_an_unreachable_database_keeps_the_last_count_and_ingestion_goes_on(
    schemas: PostgresSchemas, replicas: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = schemas.dsn("ring")
    target = conninfo_to_dict(dsn)
    proxy = TcpProxy(str(target.get("host", "127.0.0.1")), int(target.get("port", 5432)))
    proxied = make_conninfo(dsn, host="127.0.0.1", port=await proxy.start())
    other = DistributorRing(
        ring_config(dsn, "replica-b"),
        RingMetrics(CollectorRegistry()),
        BackgroundTaskMetrics(CollectorRegistry()),
        replicas.wall,
    )
    await other.heartbeat.run_once()
    a = await replicas.start(global_tenant_config(ring_config(proxied, "replica-a")))
    assert ring_of(a).healthy_replicas() == 2

    await proxy.cut()
    with caplog.at_level(logging.ERROR, logger="distributor.common.lifecycle"):
        for _ in range(3):
            await ring_of(a).heartbeat.run_once()
    assert ring_of(a).healthy_replicas() == 2  # the last count stays
    samples = await a.samples()
    assert sample_value(samples, "tempo_distributor_replicas") == 2
    failures = "tempo_distributor_background_task_failures_total"
    assert sample_value(samples, failures, task="distributor_ring_heartbeat") == 3
    # Logged once per distinct error: the connection lost, then every new one refused.
    logged = [r.getMessage() for r in caplog.records if "distributor_ring_heartbeat" in r.getMessage()]
    assert len(logged) == 2
    assert "server closed the connection" in logged[0] and "Connection refused" in logged[1]

    # Ingestion is unaffected: the burst, then half the rate, as with the database there.
    assert await greedy_round(a) == BURST
    await advance([a], 1.0)
    assert await greedy_round(a) == RATE / 2
    await replicas.stop(a)  # its row cannot be removed: logged, and the stop is still clean
    assert any("could not remove this replica (replica-a)" in r.getMessage() for r in caplog.records)


# --- configuration -----------------------------------------------------------------------------------------


def test_the_ring_is_read_from_distributor_ring_and_its_connection_string_is_shown_masked(
    tmp_path: Path,
) -> None:
    path = write_config_files(
        tmp_path,
        "distributor:\n  ring:\n    backend: postgresql\n"
        "    postgresql: {dsn: 'postgresql://u:pw-9f2a@db/test', timeout: 3s}\n"
        "    heartbeat_period: 2s\n    heartbeat_timeout: 1m\n    instance_id: replica-a\n"
        "    kvstore: {store: memberlist}\n",
    )
    config = load_config(path)
    assert config.ring == RingConfig(
        "postgresql", "postgresql://u:pw-9f2a@db/test", 3.0, 2.0, 60.0, "replica-a"
    )
    assert [note.key for note in config.notes] == ["distributor.ring.kvstore"]
    shown = config_as_data(config)["distributor"]["ring"]
    assert "pw-9f2a" not in str(shown)
    assert shown["heartbeat_timeout"] == "1m0s"


@pytest.mark.parametrize(
    ("ring", "key", "problem"),
    [
        ("{backend: postgresql}", "distributor.ring.postgresql.dsn", "connection string is required"),
        ("{heartbeat_period: 15s, heartbeat_timeout: 15s}", "distributor.ring.heartbeat_timeout", "longer"),
        ("{backend: consul}", "distributor.ring.backend", "expected one of none, postgresql"),
    ],
)
def test_a_ring_that_cannot_work_is_refused(tmp_path: Path, ring: str, key: str, problem: str) -> None:
    path = write_config_files(tmp_path, f"distributor:\n  ring: {ring}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key and problem in str(caught.value)


def test_check_config_notes_global_tenants_without_a_ring(tmp_path: Path) -> None:
    path = write_config_files(
        tmp_path,
        "overrides:\n  per_tenant_override_config: overrides.yaml\n",
        "overrides:\n  acme: {ingestion: {rate_strategy: global}}\n"
        "  beta: {ingestion: {rate_strategy: local}}\n",
    )
    result = check(path, None)
    assert not result.problems
    assert [(note.key, note.text.split(" (")[0]) for note in result.notes] == [
        ("distributor.ring.backend", "none: ingestion.rate_strategy global")
    ]
    assert "(acme)" in result.notes[0].text
    with_ring = write_config_files(
        tmp_path,
        "distributor:\n  ring: {backend: postgresql, postgresql: {dsn: 'host=db'}}\n"
        "overrides:\n  per_tenant_override_config: overrides.yaml\n",
    )
    assert check(with_ring, None).notes == []


async def test_status_overrides_show_the_rate_strategy_and_without_a_ring_global_is_local(
    replicas: Replicas,
) -> None:
    a = await replicas.start(global_tenant_config(RingConfig()))
    assert a.service.ring is None
    async with a.session.get(f"{a.server_url}/status/overrides/{TENANT}") as response:
        text = await response.text()
    assert "rate_strategy:\n    value: global\n    source: defaults" in text.replace("  ingestion:\n", "")
    assert sample_value(await a.samples(), "tempo_distributor_replicas") == 1
    assert await greedy_round(a) == BURST
    await advance([a], 1.0)
    assert await greedy_round(a) == RATE  # one replica: the whole rate
    assert f"(local: {RATE} bytes/s, global: {RATE} bytes/s," in await refusal_message(a)
