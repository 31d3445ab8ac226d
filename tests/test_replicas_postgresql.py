"""Three distributor processes sharing one PostgreSQL ledger, as replicas behind a load balancer: what
the Usage Attribution API answers through any one of them is the sum of what all of them counted; a
database cut off (a TCP proxy the test controls sits between the replicas and PostgreSQL) and restored
loses nothing and counts nothing twice; a replica killed with SIGKILL loses at most what it had not
flushed yet; paging stays exact while every replica flushes. And the schema migrations as real replicas
meet them: two starting at once on an empty schema migrate it once and share one cursor secret; one older
than the schema exits naming both versions; `distributor migrate` run as a command."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from distributor.ledger.ledger import BYTES_USAGE
from distributor.ledger.postgresql import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, migrate
from tests.support.attribution import write_config
from tests.support.cli import run_cli
from tests.support.config_files import edit_yaml
from tests.support.ledger import POSTGRES_DSN, PostgresSchemas, query, schemas
from tests.support.metrics import parse_usage, scrape
from tests.support.polling import eventually
from tests.support.processes import (
    DistributorProcess,
    distributor_processes,
    export_with_sdk,
    free_port,
    launch_distributor,
    sdk_batches,
    start_distributor,
)

TENANT = "acme"
HEADERS = {"X-Scope-OrgID": TENANT}
KEY_HEADERS = {"DD-API-KEY": "acme-api", "DD-APPLICATION-KEY": "acme-app"}
HOURLY_PATH = "/api/v1/usage/hourly-attribution"
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"

__all__ = ["schemas"]  # the fixture, used by name


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 to one address; `cut()` closes every connection through it and refuses
    new ones (as a network partition would look to the replicas), `restore()` lets them through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = True
        self._connections: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        ends = (writer, upstream_writer)
        self._connections.update(ends)
        pipes = [
            asyncio.create_task(self._pipe(reader, upstream_writer)),
            asyncio.create_task(self._pipe(upstream_reader, writer)),
        ]
        try:
            # Either side gone (a replica killed, the database closing) ends both, as a real network
            # would: PostgreSQL then rolls back what the vanished replica held, locks included.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            for end in ends:
                self._connections.discard(end)
                end.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()

    def cut(self) -> None:
        self.open = False
        for connection in list(self._connections):
            connection.transport.abort()
        self._connections.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def shared_database() -> AsyncIterator[tuple[str, CuttableProxy]]:
    """A fresh schema of the test database, and a proxy in front of PostgreSQL; the connection string
    goes through the proxy."""
    schemas = PostgresSchemas()
    direct = schemas.dsn("replicas")
    parts = conninfo_to_dict(direct)
    proxy = await CuttableProxy(
        (str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))
    ).start()
    try:
        yield make_conninfo(direct, host="127.0.0.1", port=proxy.port), proxy
    finally:
        await proxy.close()
        schemas.close()


def replica_config(directory: Path, dsn: str, page_size: int = 500) -> Path:
    """The attribution tests' configuration, flushing every second into the shared PostgreSQL ledger."""
    directory.mkdir()
    path = write_config(directory, flush_period="1s", page_size=page_size)
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    ledger = document["usage_attribution"]["ledger"]
    ledger["backend"] = "postgresql"
    ledger["postgresql"] = {"dsn": dsn, "pool": {"timeout": "2s"}}
    path.write_text(yaml.safe_dump(document))
    return path


async def start_replicas(
    tmp_path: Path, dsn: str, started: list[DistributorProcess], count: int = 3, page_size: int = 500
) -> list[DistributorProcess]:
    for index in range(count):
        config = replica_config(tmp_path / f"replica-{index}", dsn, page_size)
        started.append(await asyncio.to_thread(start_distributor, config))
    return started


async def usage_total(session: aiohttp.ClientSession, replica: DistributorProcess) -> float:
    """The tenant's bytes over every series at the replica's /usage_metrics."""
    series = parse_usage(await scrape(session, replica.server_url + "/usage_metrics"))
    return sum(value for labels, value in series.items() if ("tenant", TENANT) in labels)


async def failed_flushes(session: aiohttp.ClientSession, replica: DistributorProcess) -> float:
    samples = await replica.metrics(session)
    return samples.get(("tempo_usage_ledger_flushes_total", frozenset({("result", "failure")})), 0.0)


async def export(replica: DistributorProcess, batches: int, service: str) -> None:
    outcome = await asyncio.to_thread(
        export_with_sdk, replica.traces_url, sdk_batches(batches, 3, service), 2, 10.0, HEADERS
    )
    assert outcome.failed == 0 and outcome.succeeded == batches


async def hourly_records(
    session: aiohttp.ClientSession, through: Sequence[DistributorProcess], params: dict[str, str]
) -> list[dict[str, Any]]:
    """Every record of an hourly query, page after page, each page through the next replica of `through`
    in turn (so with two, every cursor one gave is passed to the other)."""
    records: list[dict[str, Any]] = []
    cursor: str | None = None
    for replica in itertools.cycle(through):
        query = params | ({"next_record_id": cursor} if cursor else {})
        async with session.get(replica.server_url + HOURLY_PATH, params=query, headers=KEY_HEADERS) as answer:
            assert answer.status == 200, await answer.text()
            body = await answer.json()
        records += body["usage"]
        cursor = body["metadata"]["pagination"]["next_record_id"]
        if not cursor:
            break
    return records


def this_hour_params() -> dict[str, str]:
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0).timestamp() - 3600  # the hour may turn
    return {
        "start_hr": datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H"),
        "end_hr": datetime.fromtimestamp(start + 3 * 3600, UTC).strftime("%Y-%m-%dT%H"),
        "usage_type": BYTES_USAGE,
    }


async def ledger_total_through(session: aiohttp.ClientSession, replica: DistributorProcess) -> float:
    return sum(
        record["total_usage_sum"] for record in await hourly_records(session, [replica], this_hour_params())
    )


async def monthly_total_through(session: aiohttp.ClientSession, replica: DistributorProcess) -> float:
    month = datetime.now(UTC).strftime("%Y-%m")
    params = {"start_month": month, "end_month": month, "fields": BYTES_USAGE}
    async with session.get(replica.server_url + MONTHLY_PATH, params=params, headers=KEY_HEADERS) as answer:
        assert answer.status == 200, await answer.text()
        body = await answer.json()
    [aggregate] = [found for found in body["metadata"]["aggregates"] if found["field"] == BYTES_USAGE]
    return float(aggregate["value"])


async def test_three_replicas_answer_the_sum_across_a_database_cut_and_a_sigkill(tmp_path: Path) -> None:
    async with shared_database() as (dsn, proxy), aiohttp.ClientSession() as session:
        with distributor_processes() as started:
            replicas = await start_replicas(tmp_path, dsn, started)
            for index, replica in enumerate(replicas):
                await export(replica, 20, f"service-{index}")

            # The database goes away: ingestion goes on, flushes fail and keep their usage.
            proxy.cut()
            for index, replica in enumerate(replicas):
                await export(replica, 10, f"service-{index}")
            for replica in replicas:
                await eventually(lambda r=replica: failed_flushes(session, r), "a flush failing", timeout=30)
            proxy.restore()
            for replica in replicas:
                await eventually(
                    lambda r=replica: r.ledger_flushed(session), "everything flushed", timeout=30
                )

            # The third replica has flushed all it counted; what it takes next may die with it.
            counted = [await usage_total(session, replica) for replica in replicas]
            await export(replicas[2], 5, "service-2")
            last = await usage_total(session, replicas[2]) - counted[2]
            replicas[2].sigkill()
            for replica in replicas[:2]:
                await export(replica, 5, "late")
                counted[replicas.index(replica)] = await usage_total(session, replica)
            for replica in replicas[:2]:
                await eventually(
                    lambda r=replica: r.ledger_flushed(session), "the late usage flushed", timeout=30
                )

            for reader in replicas[:2]:
                in_ledger = await ledger_total_through(session, reader)
                assert sum(counted) <= in_ledger <= sum(counted) + last, (counted, last, in_ledger)
                assert await monthly_total_through(session, reader) == in_ledger


async def test_paging_through_one_replica_is_exact_while_every_replica_flushes(tmp_path: Path) -> None:
    async with shared_database() as (dsn, _), aiohttp.ClientSession() as session:
        with distributor_processes() as started:
            replicas = await start_replicas(tmp_path, dsn, started, page_size=7)
            services = [f"before-{index}-{number}" for index in range(3) for number in range(8)]
            for service in services:
                await export(replicas[int(service.split("-")[1])], 1, service)
            for replica in replicas:
                await eventually(lambda r=replica: r.ledger_flushed(session), "flushed", timeout=30)
            params = this_hour_params() | {"tag_breakdown_keys": "service_name"}
            listed = await hourly_records(session, replicas[:1], params)
            known = {record["tags"]["service_name"][0] for record in listed}
            assert known == set(services)

            # Page through replica 0 while all three take new services and flush them every second.
            records: list[dict[str, Any]] = []
            cursor: str | None = None
            pages = 0
            while True:
                for index, replica in enumerate(replicas):
                    await export(replica, 1, f"during-{pages}-{index}")
                query = params | ({"next_record_id": cursor} if cursor else {})
                async with session.get(
                    replicas[0].server_url + HOURLY_PATH, params=query, headers=KEY_HEADERS
                ) as answer:
                    assert answer.status == 200, await answer.text()
                    body = await answer.json()
                records += body["usage"]
                pages += 1
                cursor = body["metadata"]["pagination"]["next_record_id"]
                if not cursor:
                    break
            keys = [(record["hour"], tuple(record["tags"]["service_name"])) for record in records]
            assert len(keys) == len(set(keys)), "a record repeated across pages"
            assert known <= {service for _, (service,) in keys}, "a record known before paging was skipped"


# --- Migrations, as replicas run them at start -----------------------------------------------------------

KNOWN_VERSIONS = [version for version, _, _ in MIGRATIONS]


def applied_versions(dsn: str) -> list[int]:
    return [int(row[0]) for row in query(dsn, "SELECT version FROM schema_migrations ORDER BY version")]


def sessions_waiting_on_a_lock(application: str) -> int:
    statement = (
        "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = %s"
    )
    return int(query(POSTGRES_DSN, statement, (application,))[0][0])


async def test_two_replicas_starting_at_once_on_an_empty_schema_migrate_it_once_and_share_one_secret(
    schemas: PostgresSchemas, tmp_path: Path
) -> None:
    # The replicas connect under a name of their own, by which the test finds them among the sessions
    # waiting on a lock.
    application = f"{schemas.prefix}-replica"
    dsn = make_conninfo(schemas.dsn(), application_name=application)
    configs = [replica_config(tmp_path / f"replica-{index}", dsn, page_size=1) for index in range(2)]
    async with aiohttp.ClientSession() as session:
        with distributor_processes() as started:
            # Two start-ups differ by more than a migration takes, so replicas merely started together
            # seldom migrate at the same moment. The test holds the door (the table the migrations create
            # first, made in a transaction it keeps open) until both wait at it, then lets both through
            # at once; rolled back, it leaves the schema empty.
            with psycopg.connect(schemas.dsn()) as door:
                door.execute("CREATE TABLE schema_migrations (version INTEGER)")
                started += [launch_distributor(config) for config in configs]

                def both_at_the_door() -> bool:
                    for replica in started:
                        assert replica.process.poll() is None, f"a replica exited:\n{replica.log}"
                    return sessions_waiting_on_a_lock(application) == 2

                await eventually(both_at_the_door, "both replicas waiting to migrate", timeout=30)
                door.rollback()
            replicas = started
            await asyncio.gather(*(asyncio.to_thread(replica.wait_ready) for replica in replicas))
            assert [await replica.ready_status(session) for replica in replicas] == [200, 200]

            assert applied_versions(dsn) == KNOWN_VERSIONS

            # One secret: each cursor one replica signed, the other accepts (a page holds one record, so
            # the second of the two records comes through the second replica with the first one's cursor).
            await export(replicas[0], 1, "checkout")
            await export(replicas[1], 1, "cart")
            for replica in replicas:
                await eventually(lambda r=replica: r.ledger_flushed(session), "flushed", timeout=30)
            params = this_hour_params() | {"tag_breakdown_keys": "service_name"}
            records = await hourly_records(session, replicas, params)
            assert {record["tags"]["service_name"][0] for record in records} == {"checkout", "cart"}


def test_a_replica_older_than_the_schema_exits_naming_both_versions_and_never_listens(
    schemas: PostgresSchemas, tmp_path: Path
) -> None:
    dsn = schemas.dsn()
    migrate(dsn)
    newer = SCHEMA_VERSION + 1
    query(dsn, f"INSERT INTO schema_migrations (version) VALUES ({newer})")
    ports = {"server": free_port(), "otlp_http": free_port()}

    def on_known_ports(document: dict[str, Any]) -> None:
        document["server"]["http_listen_port"] = ports["server"]
        http = document["distributor"]["receivers"]["otlp"]["protocols"]["http"]
        http["endpoint"] = f"127.0.0.1:{ports['otlp_http']}"

    config = edit_yaml(replica_config(tmp_path / "older", dsn), on_known_ports)
    with distributor_processes() as started:
        older = launch_distributor(config)
        started.append(older)
        assert older.exit_code() == 1, older.log
    assert str(SchemaTooNew(newer, SCHEMA_VERSION)) in older.log
    assert f"schema version {newer}, newer than the {SCHEMA_VERSION} this distributor knows" in older.log
    assert "distributor ready" not in older.log
    for name, port in ports.items():
        with contextlib.suppress(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 5):
            raise AssertionError(f"something listens on the {name} port {port}")
    # Refused, and left as it was.
    assert applied_versions(dsn) == [*KNOWN_VERSIONS, newer]


def test_distributor_migrate_as_a_command_migrates_an_empty_schema_then_has_nothing_to_do(
    schemas: PostgresSchemas, tmp_path: Path
) -> None:
    dsn = schemas.dsn()
    config = replica_config(tmp_path / "deploy", dsn)
    first = run_cli("migrate", "--config", str(config))
    assert (first.returncode, first.stdout) == (
        0,
        f"the postgresql ledger was migrated from schema version 0 to {SCHEMA_VERSION}\n",
    ), first.stderr
    assert applied_versions(dsn) == KNOWN_VERSIONS
    again = run_cli("migrate", "--config", str(config))
    assert (again.returncode, again.stdout) == (
        0,
        f"the postgresql ledger is at schema version {SCHEMA_VERSION}: nothing to do\n",
    ), again.stderr
