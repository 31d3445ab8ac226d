"""/api/overrides on the postgresql backend: several replicas sharing one table, through the running
services on 127.0.0.1. What both backends share is tested on both in test_user_overrides_api.py; here,
what only a shared database shows: one replica's change in force on another after its poll, an ETag race
between two replicas, restarts, and a database that is down or broken.

Each test uses a schema of its own in the test database (DISTRIBUTOR_TEST_POSTGRES_DSN), dropped after;
without a reachable database the tests are skipped, or failed when CI=true.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import psycopg
import pytest

from distributor.check_config import check_files
from distributor.config import Config, config_as_data, load_config
from distributor.overrides.user_configurable import UserOverridesError
from tests.support.config_files import write_config_files
from tests.support.ledger import PostgresSchemas, schemas
from tests.support.polling import eventually
from tests.support.service import RunningService, StartService
from tests.test_user_overrides_api import (
    NAMESPACE,
    attributed_labels,
    call,
    labels_in_force,
    postgresql_config,
)

TASK_FAILURES = "tempo_distributor_background_task_failures_total"
APP = {"cost_attribution": {"dimensions": ["app"]}}

__all__ = ["schemas"]  # the fixture, used by name


async def replicas(start_service: StartService, config: Config) -> tuple[RunningService, RunningService]:
    return await start_service(config), await start_service(config)


def query(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(statement)  # type: ignore[arg-type]  # the test's own statements


def failures(running: RunningService, task: str) -> float:
    return running.service.registry.get_sample_value(TASK_FAILURES, {"task": task}) or 0.0


async def test_a_change_through_one_replica_is_in_force_on_the_other_after_its_poll(
    start_service: StartService, tmp_path: Path, schemas: PostgresSchemas
) -> None:
    replica_a, replica_b = await replicas(start_service, postgresql_config(tmp_path, schemas.dsn()))
    status, _, etag = await call(replica_a, "POST", NAMESPACE)
    assert status == 200 and etag
    assert labels_in_force(replica_a, "acme") == ["namespace"], "in force at once where it was written"
    assert labels_in_force(replica_b, "acme") == ["team"], "the other replica waits for its poll"
    assert await call(replica_b, "GET") == (200, NAMESPACE, etag), "reads go to the shared table"
    assert await replica_b.service.reload_overrides()
    assert await attributed_labels(replica_b) == {"namespace"}
    assert not await replica_b.service.reload_overrides(), "a poll with nothing new changes nothing"
    assert not await replica_a.service.reload_overrides(), "its own write is not put in force twice"

    status, _, new_etag = await call(replica_b, "PATCH", APP, {"If-Match": etag})
    assert status == 200 and new_etag != etag
    assert await replica_a.service.reload_overrides()
    assert labels_in_force(replica_a, "acme") == ["app"], "a list replaces the map (merge patch)"


async def test_an_etag_race_between_two_replicas_lets_exactly_one_through(
    start_service: StartService, tmp_path: Path, schemas: PostgresSchemas
) -> None:
    replica_a, replica_b = await replicas(start_service, postgresql_config(tmp_path, schemas.dsn()))
    created = await asyncio.gather(call(replica_a, "POST", NAMESPACE), call(replica_b, "POST", APP))
    assert sorted(status for status, _, _ in created) == [200, 428], "one creates, the other needs If-Match"
    [(_, document, etag)] = [answer for answer in created if answer[0] == 200]
    assert etag is not None
    for _ in range(5):  # the two requests reach the database in either order
        patches = await asyncio.gather(
            call(replica_a, "PATCH", {"cost_attribution": {"dimensions": {"team": ""}}}, {"If-Match": etag}),
            call(replica_b, "PATCH", {"cost_attribution": {"dimensions": {"app": ""}}}, {"If-Match": etag}),
        )
        assert sorted(status for status, _, _ in patches) == [200, 412]
        [(_, document, etag)] = [answer for answer in patches if answer[0] == 200]
        assert etag is not None
    assert await call(replica_a, "GET") == (200, document, etag)
    await replica_a.service.reload_overrides()
    await replica_b.service.reload_overrides()
    dimensions = document["cost_attribution"]["dimensions"]
    expected = {label or attribute for attribute, label in dimensions.items()}
    for replica in (replica_a, replica_b):
        assert set(labels_in_force(replica, "acme")) == expected


async def test_a_deletion_through_one_replica_reaches_the_other_and_its_etag_never_matches_again(
    start_service: StartService, tmp_path: Path, schemas: PostgresSchemas
) -> None:
    replica_a, replica_b = await replicas(start_service, postgresql_config(tmp_path, schemas.dsn()))
    _, _, etag = await call(replica_a, "POST", NAMESPACE)
    assert await replica_b.service.reload_overrides()
    assert (await call(replica_b, "DELETE", headers={"If-Match": etag or ""}))[0] == 204
    assert labels_in_force(replica_b, "acme") == ["team"], "back to the runtime file at once"
    assert labels_in_force(replica_a, "acme") == ["namespace"]
    assert await replica_a.service.reload_overrides()
    assert await attributed_labels(replica_a) == {"team"}
    assert (await call(replica_a, "GET"))[0] == 404
    assert (await call(replica_a, "DELETE", headers={"If-Match": etag or ""}))[0] == 404
    # The same document created again gets a new ETag: the old one never matches it.
    _, _, again = await call(replica_a, "POST", NAMESPACE)
    assert again != etag
    assert (await call(replica_b, "POST", APP, {"If-Match": etag or ""}))[0] == 412


async def test_overrides_survive_a_restart_of_every_replica(
    start_service: StartService, tmp_path: Path, schemas: PostgresSchemas
) -> None:
    config = postgresql_config(tmp_path, schemas.dsn())
    replica_a, replica_b = await replicas(start_service, config)
    _, _, acme_etag = await call(replica_a, "POST", NAMESPACE)
    _, _, globex_etag = await call(replica_b, "POST", APP, {"X-Scope-OrgID": "globex"})
    await replica_a.service.stop()
    await replica_b.service.stop()
    restarted = await start_service(config)
    assert labels_in_force(restarted, "acme") == ["namespace"], "in force from the start"
    assert labels_in_force(restarted, "globex") == ["app"]
    assert await call(restarted, "GET") == (200, NAMESPACE, acme_etag)
    assert (await call(restarted, "GET", headers={"X-Scope-OrgID": "globex"}))[2] == globex_etag


async def test_an_unreachable_database_answers_503_and_ingestion_goes_on(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    dsn = f"postgresql://distributor:pg-s3cret@127.0.0.1:{port}/test"
    running = await start_service(postgresql_config(tmp_path, dsn, timeout=0.2))
    assert any("user-configurable overrides not loaded" in message for message in caplog.messages)
    assert await attributed_labels(running) == {"team"}, "ingestion goes on with the runtime file"
    for method, body in (("GET", None), ("POST", NAMESPACE), ("PATCH", NAMESPACE), ("DELETE", None)):
        status, answer, _ = await call(running, method, body)
        assert status == 503, method
        assert "database cannot be reached" in answer["error"]
        assert "pg-s3cret" not in answer["error"]
    with pytest.raises(UserOverridesError, match="cannot be reached"):
        await running.service.reload_overrides()
    running.service.reload_overrides_soon()  # what SIGHUP does: the failure is counted, the task lives
    await eventually(lambda: failures(running, "user_overrides_poll") == 1, "the failed poll counted")
    assert await attributed_labels(running) == {"team"}
    assert "pg-s3cret" not in "\n".join(caplog.messages)


async def test_a_broken_database_keeps_what_is_in_force_and_the_next_poll_catches_up(
    start_service: StartService, tmp_path: Path, schemas: PostgresSchemas
) -> None:
    dsn = schemas.dsn()
    replica_a, replica_b = await replicas(start_service, postgresql_config(tmp_path, dsn, timeout=1.0))
    _, _, etag = await call(replica_a, "POST", NAMESPACE)
    assert await replica_b.service.reload_overrides()
    query(dsn, "ALTER TABLE user_overrides RENAME TO user_overrides_away")
    assert (await call(replica_a, "GET"))[0] == 503
    assert (await call(replica_a, "POST", APP, {"If-Match": etag or ""}))[0] == 503
    with pytest.raises(UserOverridesError):
        await replica_b.service.reload_overrides()
    assert labels_in_force(replica_b, "acme") == ["namespace"], "what is in force stays in force"
    assert await attributed_labels(replica_b) == {"namespace"}
    query(dsn, "ALTER TABLE user_overrides_away RENAME TO user_overrides")
    assert (await call(replica_a, "POST", APP, {"If-Match": etag or ""}))[0] == 200
    assert await replica_b.service.reload_overrides()
    assert labels_in_force(replica_b, "acme") == ["app"]


async def test_a_document_that_does_not_validate_in_the_table_is_ignored_and_logged(
    start_service: StartService, tmp_path: Path, schemas: PostgresSchemas, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = schemas.dsn()
    running = await start_service(postgresql_config(tmp_path, dsn))
    _, _, etag = await call(running, "POST", NAMESPACE)
    query(
        dsn,
        """UPDATE user_overrides SET document = '{"ingestion": {}}',
        version = nextval('user_overrides_versions'), changed_by = pg_current_xact_id()""",
    )
    assert await running.service.reload_overrides()
    assert labels_in_force(running, "acme") == ["team"], "the operator's overrides, not half of it"
    assert any("ignoring user-configurable overrides of tenant acme" in m for m in caplog.messages)
    assert (await call(running, "POST", APP, {"If-Match": etag or ""}))[0] == 412


def test_backend_postgresql_needs_a_dsn_and_shows_it_masked(tmp_path: Path) -> None:
    user: dict[str, object] = {"enabled": True, "backend": "postgresql", "postgresql": {"poll_period": "2s"}}
    config = write_config_files(tmp_path, {"overrides": {"user_configurable_overrides": user}})
    problems, _ = check_files(config, None)
    assert [str(problem).split(": ", 1)[1] for problem in problems] == [
        "overrides.user_configurable_overrides.postgresql.dsn: the PostgreSQL connection string is "
        "required for backend postgresql"
    ]
    user["postgresql"] = {"dsn": "host=db password=pg-pw-3e1 dbname=usage", "poll_period": "2s"}
    config = write_config_files(tmp_path, {"overrides": {"user_configurable_overrides": user}})
    assert check_files(config, None)[0] == []
    shown = config_as_data(load_config(config))["overrides"]["user_configurable_overrides"]
    assert shown["backend"] == "postgresql"
    assert shown["postgresql"]["dsn"] == "host=db password=<secret> dbname=usage"
    assert shown["postgresql"]["poll_period"] == "2s"


def test_the_directory_stays_the_default_backend() -> None:
    assert config_as_data(Config())["overrides"]["user_configurable_overrides"]["backend"] == "directory"
