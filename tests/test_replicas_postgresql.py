"""Three distributor processes sharing one PostgreSQL ledger, as replicas behind a load balancer: what
the Usage Attribution API answers through any one of them is the sum of what all of them counted; a
database cut off (a TCP proxy the test controls sits between the replicas and PostgreSQL) and restored
loses nothing and counts nothing twice; a replica killed with SIGKILL loses at most what it had not
flushed yet; paging stays exact while every replica flushes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from distributor.ledger.ledger import BYTES_USAGE
from tests.support.attribution import write_config
from tests.support.ledger import PostgresSchemas
from tests.support.metrics import parse_usage, scrape
from tests.support.polling import eventually
from tests.support.processes import (
    DistributorProcess,
    distributor_processes,
    export_with_sdk,
    sdk_batches,
    start_distributor,
)

TENANT = "acme"
HEADERS = {"X-Scope-OrgID": TENANT}
KEY_HEADERS = {"DD-API-KEY": "acme-api", "DD-APPLICATION-KEY": "acme-app"}
HOURLY_PATH = "/api/v1/usage/hourly-attribution"
MONTHLY_PATH = "/api/v1/usage/monthly-attribution"


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


async def flushed(session: aiohttp.ClientSession, replica: DistributorProcess) -> bool:
    """Nothing waits in the replica's ledger memory, and a flush has succeeded."""
    samples = await replica.metrics(session)
    pending = samples.get(("tempo_usage_ledger_pending_entries", frozenset()), 1.0)
    successes = samples.get(("tempo_usage_ledger_flushes_total", frozenset({("result", "success")})), 0.0)
    return pending == 0 and successes > 0


async def failed_flushes(session: aiohttp.ClientSession, replica: DistributorProcess) -> float:
    samples = await replica.metrics(session)
    return samples.get(("tempo_usage_ledger_flushes_total", frozenset({("result", "failure")})), 0.0)


async def export(replica: DistributorProcess, batches: int, service: str) -> None:
    outcome = await asyncio.to_thread(
        export_with_sdk, replica.traces_url, sdk_batches(batches, 3, service), 2, 10.0, HEADERS
    )
    assert outcome.failed == 0 and outcome.succeeded == batches


async def hourly_records(
    session: aiohttp.ClientSession, replica: DistributorProcess, params: dict[str, str]
) -> list[dict[str, Any]]:
    """Every record of an hourly query through `replica`, page after page."""
    records: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = params | ({"next_record_id": cursor} if cursor else {})
        async with session.get(replica.server_url + HOURLY_PATH, params=query, headers=KEY_HEADERS) as answer:
            assert answer.status == 200, await answer.text()
            body = await answer.json()
        records += body["usage"]
        cursor = body["metadata"]["pagination"]["next_record_id"]
        if not cursor:
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
        record["total_usage_sum"] for record in await hourly_records(session, replica, this_hour_params())
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
                await eventually(lambda r=replica: flushed(session, r), "everything flushed", timeout=30)

            # The third replica has flushed all it counted; what it takes next may die with it.
            counted = [await usage_total(session, replica) for replica in replicas]
            await export(replicas[2], 5, "service-2")
            last = await usage_total(session, replicas[2]) - counted[2]
            replicas[2].sigkill()
            for replica in replicas[:2]:
                await export(replica, 5, "late")
                counted[replicas.index(replica)] = await usage_total(session, replica)
            for replica in replicas[:2]:
                await eventually(lambda r=replica: flushed(session, r), "the late usage flushed", timeout=30)

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
                await eventually(lambda r=replica: flushed(session, r), "flushed", timeout=30)
            params = this_hour_params() | {"tag_breakdown_keys": "service_name"}
            listed = await hourly_records(session, replicas[0], params)
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
