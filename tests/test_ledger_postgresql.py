"""The usage ledger on PostgreSQL, where what SQLite cannot show matters: several replicas flushing into
one ledger while a reader pages through a snapshot, schema migrations run by replicas starting together
(and a schema newer than the code refused), a flush whose commit succeeded but whose acknowledgement was
lost, and a service that ingests, flushes and answers the API from PostgreSQL. The semantics both stores
share are tested on both in test_usage_ledger.py.

Each test uses schemas of its own in the test database (DISTRIBUTOR_TEST_POSTGRES_DSN), dropped after;
without a reachable database the tests are skipped, or failed when CI=true.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry

from distributor.cli import main
from distributor.common.distinct import DistinctCount, union
from distributor.common.postgres_migrations import apply_migrations
from distributor.common.usage import Usage
from distributor.config import load_config
from distributor.ledger.config import mask_dsn
from distributor.ledger.ledger import BYTES_USAGE, HOUR, SESSIONS, SPANS_USAGE, LedgerEntry, hour_of, month_of
from distributor.ledger.postgresql import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    PostgresLedgerStore,
    SchemaTooNew,
)
from distributor.ledger.stores import open_store
from distributor.overrides import ConfigError
from distributor.service import Service
from tests.support.attribution import START, attribution_service, spans_request, write_config
from tests.support.config_files import edit_yaml
from tests.support.ledger import PostgresSchemas, query, schemas, standalone_ledger

H10 = hour_of(START)
NOV = month_of(START)
PASSWORD = "pg-s3cret-9f2a"  # trust auth: the server never asks for it, so it may be anything

__all__ = ["schemas"]  # the fixture, used by name


def totals(rows: Any) -> dict[tuple[int, str, tuple[tuple[str, str], ...]], tuple[int, int]]:
    found: dict[tuple[int, str, tuple[tuple[str, str], ...]], tuple[int, int]] = {}
    for row in rows:
        key = (row.period, row.tenant, row.tags)
        size, spans = found.get(key, (0, 0))
        found[key] = (size + row.spans_bytes, spans + row.spans)
    return found


# --- Several replicas on one ledger ------------------------------------------------------------------------


def test_two_replicas_flushing_at_once_never_change_a_snapshot_a_reader_pages_through(
    schemas: PostgresSchemas,
) -> None:
    """Each write of each replica adds (1 byte, 1 span) to a series of its own, in one of four hours; a
    reader pages through snapshots an hour a page meanwhile. Every page of snapshot S holds exactly the
    writes numbered <= S (by the seq each write returned), whenever it is read."""
    dsn = schemas.dsn()
    replicas = [PostgresLedgerStore(dsn, 1, 2), PostgresLedgerStore(dsn, 1, 2)]
    reader = PostgresLedgerStore(dsn, 1, 2)
    writes_each, hours = 60, [H10 + k * HOUR for k in range(4)]
    written: dict[int, LedgerEntry] = {}  # by the seq of the flush that stored it
    written_lock = threading.Lock()
    failures: list[BaseException] = []

    def replica(index: int) -> None:
        try:
            for n in range(writes_each):
                added = LedgerEntry("acme", hours[n % 4], (("writer", f"{index}-{n}"),), 1, 1)
                seq = replicas[index].write([added], float(n))
                with written_lock:
                    assert seq not in written
                    written[seq] = added
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=replica, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    snapshots: list[tuple[int, dict[Any, tuple[int, int]]]] = []
    try:
        while any(thread.is_alive() for thread in threads) or not snapshots:
            seq = reader.snapshot().seq
            pages: dict[Any, tuple[int, int]] = {}
            for hour in hours:  # a page per hour, read while the replicas keep writing
                pages.update(totals(reader.hourly(["acme"], hour, hour + HOUR, seq)))
            snapshots.append((seq, pages))
    finally:
        for thread in threads:
            thread.join()
    assert not failures, failures
    try:
        assert sorted(written) == list(range(1, 2 * writes_each + 1))  # every flush numbered, none twice
        assert len(snapshots) > 2 and len({seq for seq, _ in snapshots}) > 2  # read while writes went on
        for seq, pages in snapshots:
            expected = {
                (added.hour, added.tenant, added.tags): (1, 1)
                for number, added in written.items()
                if number <= seq
            }
            assert pages == expected, f"snapshot {seq}"
        final = reader.snapshot().seq
        assert totals(reader.hourly(["acme"], H10, H10 + 4 * HOUR, final)) == {
            (added.hour, added.tenant, added.tags): (1, 1) for added in written.values()
        }
    finally:
        for store in (*replicas, reader):
            store.close()


# --- Migrations ------------------------------------------------------------------------------------------


def test_replicas_opening_an_empty_schema_at_once_migrate_it_once_and_share_one_secret(
    schemas: PostgresSchemas,
) -> None:
    dsn = schemas.dsn()
    opened: list[PostgresLedgerStore] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        try:
            start.wait()
            opened.append(PostgresLedgerStore(dsn, 0, 1))
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not failures, failures
        assert len(opened) == 4
        assert [row[0] for row in query(dsn, "SELECT version FROM schema_migrations")] == [
            version for version, _, _ in MIGRATIONS
        ]
        assert len({store.secret() for store in opened}) == 1
        assert len(opened[0].secret()) == 32
        assert opened[0].write([LedgerEntry("acme", H10, (), 1, 1)], 1.0) == 1
        assert opened[1].write([LedgerEntry("acme", H10, (), 2, 1)], 2.0) == 2
    finally:
        for store in opened:
            store.close()
    # Opening again changes nothing.
    PostgresLedgerStore(dsn, 0, 1).close()
    assert len(query(dsn, "SELECT version FROM schema_migrations")) == len(MIGRATIONS)


def test_a_version_1_ledger_gains_running_month_totals_that_count_a_version_1_replica_still_flushing(
    schemas: PostgresSchemas,
) -> None:
    """Version 1 read a month as its merged `monthly` rows plus the hours of the flushes not merged yet;
    version 2 keeps running totals, which a trigger on `hourly` adds to, so a replica not yet upgraded
    (it writes hours only) is counted too. Reads as of each flush stay what they were."""
    dsn = schemas.dsn()
    with psycopg.connect(dsn, autocommit=True) as db:
        apply_migrations(db, "schema_migrations", MIGRATIONS[:1], MIGRATION_LOCK, SchemaTooNew)
        a, b, globex = 1, 2, 3
        for statement in (
            "SELECT setval('series_ids', 3)",
            "UPDATE meta SET value = '2' WHERE key = 'merged_through'",
            "INSERT INTO meta VALUES ('cursor_secret', 'ab')",
            "INSERT INTO flushes VALUES (2, 1001.0, 'batch-2'), (3, 1002.0, 'batch-3')",
            f"""INSERT INTO series VALUES ({a}, 'acme', '{{"team":"a"}}'), ({b}, 'acme', '{{"team":"b"}}'),
                ({globex}, 'globex', '{{}}')""",
            # Flushes 1 and 2, merged; flush 3 not merged yet.
            f"""INSERT INTO hourly VALUES ({H10}, 'acme', {a}, 120, 3, 2),
                ({H10 + HOUR}, 'acme', {b}, 5, 1, 2), ({H10}, 'acme', {a}, 30, 1, 3),
                ({H10}, 'globex', {globex}, 7, 1, 3)""",
            f"INSERT INTO monthly VALUES ({NOV}, 'acme', {a}, 120, 3, 2), ({NOV}, 'acme', {b}, 5, 1, 2)",
            f"INSERT INTO flush_hours VALUES (3, {H10})",
        ):
            db.execute(statement)  # type: ignore[arg-type]  # the test's own statements

    store = PostgresLedgerStore(dsn, 0, 1)
    try:
        a_tags, b_tags = (("team", "a"),), (("team", "b"),)

        def month(seq: int) -> dict[tuple[int, str, tuple[tuple[str, str], ...]], tuple[int, int]]:
            return totals(store.monthly(["acme", "globex"], NOV, NOV + 31 * 24 * HOUR, seq))

        def per_org(seq: int) -> dict[str, tuple[int, int]]:
            ranked = store.monthly_ranked(
                ["acme", "globex"], (), NOV, NOV + 31 * 24 * HOUR, seq, BYTES_USAGE, True, None
            )
            return {row.tenant: (row.spans_bytes, row.spans) for row in ranked}

        assert month(2) == {(NOV, "acme", a_tags): (120, 3), (NOV, "acme", b_tags): (5, 1)}
        assert month(3) == {
            (NOV, "acme", a_tags): (150, 4),
            (NOV, "acme", b_tags): (5, 1),
            (NOV, "globex", ()): (7, 1),
        }
        assert per_org(2) == {"acme": (125, 4)}
        assert per_org(3) == {"acme": (155, 5), "globex": (7, 1)}

        # A replica of version 1 flushes: hours only, as it always did.
        with psycopg.connect(dsn, autocommit=True) as db, db.transaction():
            db.execute("INSERT INTO flushes VALUES (4, 1003.0, 'batch-4')")
            db.execute(f"INSERT INTO hourly VALUES ({H10}, 'acme', {a}, 6, 1, 4)")
            db.execute(f"INSERT INTO flush_hours VALUES (4, {H10})")
        assert month(4)[NOV, "acme", a_tags] == (156, 5)
        assert month(3)[NOV, "acme", a_tags] == (150, 4)
        assert per_org(4) == {"acme": (161, 6), "globex": (7, 1)}
        # And one of version 2, then a merge: the totals stay.
        assert store.write([LedgerEntry("acme", H10 + HOUR, b_tags, 1, 1)], 1004.0) == 5
        store.maintain(merge_before=2000.0, keep_from_hour=0, keep_from_month=0)
        assert month(5) == {
            (NOV, "acme", a_tags): (156, 5),
            (NOV, "acme", b_tags): (6, 2),
            (NOV, "globex", ()): (7, 1),
        }
        assert per_org(5) == {"acme": (162, 7), "globex": (7, 1)}
    finally:
        store.close()


def test_a_version_2_ledger_gains_distinct_counts_while_a_version_2_replica_still_flushes(
    schemas: PostgresSchemas,
) -> None:
    """Migration 3 adds `hourly_distinct` to a ledger with flushes not merged yet: usage reads the same,
    a replica not yet upgraded (hours only, no counts) still flushes, and merging folds the counts of
    the upgraded one."""
    dsn = schemas.dsn()
    with psycopg.connect(dsn, autocommit=True) as db:
        apply_migrations(db, "schema_migrations", MIGRATIONS[:2], MIGRATION_LOCK, SchemaTooNew)
    a_tags = (("team", "a"),)

    def counted(first: int, last: int) -> LedgerEntry:
        count = DistinctCount()
        for number in range(first, last + 1):
            count.add(f"session-{number}")
        return LedgerEntry("acme", H10, a_tags, 1, 1, ((SESSIONS, count.to_bytes()),))

    def sessions(store: PostgresLedgerStore, seq: int) -> int:
        rows = store.distinct(["acme"], SESSIONS, H10, H10 + HOUR, seq)
        return round(union(DistinctCount.from_bytes(row.serialized) for row in rows).estimate())

    store = PostgresLedgerStore(dsn, 0, 1)
    try:
        assert [row[0] for row in query(dsn, "SELECT version FROM schema_migrations ORDER BY 1")] == [1, 2, 3]
        assert store.write([LedgerEntry("acme", H10, a_tags, 100, 2)], 1000.0) == 1
        # A replica of version 2 flushes: hours only, as it always did.
        with psycopg.connect(dsn, autocommit=True) as db, db.transaction():
            db.execute("INSERT INTO flushes VALUES (2, 1001.0, 'batch-2')")
            db.execute(f"INSERT INTO hourly VALUES ({H10}, 'acme', 1, 10, 1, 2)")
            db.execute(f"INSERT INTO flush_hours VALUES (2, {H10})")
        assert store.write([counted(1, 12)], 1002.0) == 3
        assert store.write([counted(10, 20)], 1003.0) == 4
        assert (sessions(store, 2), sessions(store, 3), sessions(store, 4)) == (0, 12, 20)
        store.maintain(merge_before=2000.0, keep_from_hour=0, keep_from_month=0)
        assert query(dsn, "SELECT seq FROM hourly_distinct") == [(4,)]
        assert sessions(store, 4) == 20
        assert totals(store.hourly(["acme"], H10, H10 + HOUR, 4)) == {(H10, "acme", a_tags): (112, 5)}
        assert totals(store.monthly(["acme"], NOV, NOV + 31 * 24 * HOUR, 4)) == {
            (NOV, "acme", a_tags): (112, 5)
        }
    finally:
        store.close()


def ledger_config(directory: Path, dsn: str) -> Path:
    def use_postgresql(doc: dict[str, Any]) -> None:
        doc["usage_attribution"]["ledger"] = {
            "backend": "postgresql",
            "postgresql": {"dsn": dsn, "pool": {"min_size": 1, "max_size": 2, "timeout": "5s"}},
            "flush_period": "1h",
        }

    return edit_yaml(write_config(directory), use_postgresql)


def test_a_schema_newer_than_the_code_is_refused_naming_both_versions(
    schemas: PostgresSchemas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = schemas.dsn()
    PostgresLedgerStore(dsn, 0, 1).close()
    newer = SCHEMA_VERSION + 1
    query(dsn, f"INSERT INTO schema_migrations (version) VALUES ({newer})")
    with pytest.raises(SchemaTooNew) as raised:
        PostgresLedgerStore(dsn, 0, 1)
    message = f"schema version {newer}, newer than the {SCHEMA_VERSION} this distributor knows"
    assert message in str(raised.value)

    # The service does not start, as on an SQLite file it cannot open: a ConfigError naming the key.
    config = load_config(ledger_config(tmp_path, dsn))
    with pytest.raises(ConfigError) as refused:
        Service(config)
    assert refused.value.key == "usage_attribution.ledger.postgresql.dsn"
    assert message in str(refused.value)
    assert main(["migrate", "--config", str(config.source)]) == 1
    assert message in capsys.readouterr().err


def test_distributor_migrate_applies_the_migrations_once_and_says_so(
    schemas: PostgresSchemas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ledger_config(tmp_path, schemas.dsn())
    assert main(["migrate", "--config", str(path)]) == 0
    assert capsys.readouterr().out == (
        f"the postgresql ledger was migrated from schema version 0 to {SCHEMA_VERSION}\n"
    )
    assert main(["migrate", "--config", str(path)]) == 0
    assert (
        capsys.readouterr().out
        == f"the postgresql ledger is at schema version {SCHEMA_VERSION}: nothing to do\n"
    )

    on_sqlite = tmp_path / "sqlite"
    on_sqlite.mkdir()
    assert main(["migrate", "--config", str(write_config(on_sqlite))]) == 0
    assert capsys.readouterr().out == "the sqlite ledger is migrated when it is opened: nothing to do\n"


def test_an_unreachable_database_stops_the_start_naming_the_key_and_never_the_password(
    tmp_path: Path,
) -> None:
    closed_port = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test?connect_timeout=1"
    config = load_config(ledger_config(tmp_path, closed_port))
    with pytest.raises(ConfigError) as refused:
        open_store(config.usage_attribution.ledger, config.source)
    assert refused.value.key == "usage_attribution.ledger.postgresql.dsn"
    assert "cannot open the ledger" in str(refused.value)
    assert PASSWORD not in str(refused.value)


# --- A commit whose acknowledgement was lost ---------------------------------------------------------------


async def test_a_flush_whose_commit_succeeded_but_raised_is_counted_once_when_retried(
    schemas: PostgresSchemas, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresLedgerStore(schemas.dsn(), 1, 2)
    real_connection = store._pool.connection
    lost = [1]  # acknowledgements still to lose

    @contextlib.contextmanager
    def losing_the_acknowledgement(*args: Any, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
        with real_connection(*args, **kwargs) as db:
            yield db
        # Committed by now; the caller hears what a connection dropped during COMMIT says.
        if lost[0]:
            lost[0] -= 1
            raise psycopg.OperationalError("consuming input failed: server closed the connection")

    ledger = standalone_ledger(store, lambda: START, CollectorRegistry())
    try:
        ledger.record("acme", ("team",), {("a",): Usage(100, 2)}, {})
        monkeypatch.setattr(store._pool, "connection", losing_the_acknowledgement)
        assert not await ledger.flush()
        ledger.record("acme", ("team",), {("a",): Usage(5, 1)}, {})
        assert await ledger.flush()
        snapshot, stored = await ledger.read(
            lambda s: (s.snapshot(), totals(s.hourly(["acme"], H10, H10 + HOUR, s.snapshot().seq)))
        )
        assert snapshot.seq == 2  # the first batch (stored once), then what came after it
        assert stored == {(H10, "acme", (("team", "a"),)): (105, 3)}
    finally:
        await ledger.stop(0.0)


# --- The service on PostgreSQL ----------------------------------------------------------------------------


async def test_a_service_on_postgresql_ingests_flushes_and_answers_the_hourly_api_from_it(
    schemas: PostgresSchemas, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dsn = schemas.dsn().replace("user=postgres", f"user=postgres password={PASSWORD}")
    assert PASSWORD in dsn
    config = ledger_config(tmp_path, dsn)
    async with attribution_service(config) as running:
        await running.send("acme", spans_request("checkout", 3, team="payments"))
        sent = await running.tenant_usage("acme")
        await running.flush()
        found = {}
        for usage_type in (BYTES_USAGE, SPANS_USAGE):
            status, body, _ = await running.get(
                "/api/v1/usage/hourly-attribution",
                {
                    "start_hr": "2026-11-22T10",
                    "usage_type": usage_type,
                    "tag_breakdown_keys": "service_name,team",
                },
                key="acme",
            )
            assert status == 200, body
            (record,) = body["usage"]
            found[usage_type] = (record["tags"], record["total_usage_sum"])
        assert found == {
            BYTES_USAGE: ({"service_name": ["checkout"], "team": ["payments"]}, sent),
            SPANS_USAGE: ({"service_name": ["checkout"], "team": ["payments"]}, 3),
        }
        async with running.session.get(running.server_url + "/status/config") as response:
            shown = await response.text()
    rendered = yaml.safe_load(shown)["usage_attribution"]["ledger"]["postgresql"]
    assert PASSWORD not in shown
    assert "password=<secret>" in rendered["dsn"]
    assert rendered["pool"] == {"min_size": 1, "max_size": 2, "timeout": "5s"}
    (started,) = [message for message in caplog.messages if message.startswith("usage ledger:")]
    assert started == f"usage ledger: postgresql at {mask_dsn(dsn)}"
    assert "password=<secret>" in started
    assert PASSWORD not in "\n".join(caplog.messages)
    # Stored in PostgreSQL, read back by a connection of the test's own.
    assert query(schemas.dsn(), "SELECT tenant, tags FROM series") == [
        ("acme", '{"service_name":"checkout","team":"payments"}')
    ]


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://ledger:pw@db:5432/usage", "postgresql://<secret>@db:5432/usage"),
        (
            "postgresql://db/usage?password=pw&sslmode=require",
            "postgresql://db/usage?password=<secret>&sslmode=require",
        ),
        (
            "host=db user=ledger password=pw dbname=usage",
            "host=db user=ledger password=<secret> dbname=usage",
        ),
        ("host=db password = 'p w\\'x' dbname=usage", "host=db password = <secret> dbname=usage"),
        ("host=db dbname=usage", "host=db dbname=usage"),
    ],
)
def test_a_connection_string_shows_without_its_password(dsn: str, shown: str) -> None:
    assert mask_dsn(dsn) == shown


def test_distributor_migrate_also_creates_the_shared_user_overrides_table(
    schemas: PostgresSchemas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = schemas.dsn()

    def share_user_overrides(doc: dict[str, Any]) -> None:
        doc["overrides"]["user_configurable_overrides"] = {
            "enabled": True,
            "backend": "postgresql",
            "postgresql": {"dsn": dsn},
        }

    path = edit_yaml(ledger_config(tmp_path, dsn), share_user_overrides)
    assert main(["migrate", "--config", str(path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].startswith("the user-configurable overrides table was migrated from schema version 0")
    assert query(dsn, "SELECT COUNT(*) FROM user_overrides") == [(0,)]
    assert main(["migrate", "--config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(": nothing to do")
