"""The bound on active tenants, against the running service: a new tenant past it is refused before
anything is counted for it, on both transports, and finds room once an active tenant went idle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from distributor.common.config_reader import ConfigError
from distributor.config import config_as_data, load_config
from tests.support.config_files import write_config_files
from tests.support.metrics import sample_value
from tests.support.otlp import batch, request, span
from tests.support.service import StartService, make_config

BODY = request(batch({"service.name": "auth"}, [span()])).SerializeToString()
REFUSED = "tempo_distributor_refused_requests_total"


async def test_a_new_tenant_past_max_active_tenants_is_refused_on_both_transports_and_counted(
    start_service: StartService,
) -> None:
    running = await start_service(make_config(multitenancy=True, max_active_tenants=2))
    assert (await running.post(BODY, tenant="first")).status == 200
    assert (await running.export(BODY, tenant="second")).code == grpc.StatusCode.OK

    answer = await running.post(BODY, tenant="third")
    assert answer.status == 429
    assert b"too many active tenants" in answer.body
    assert answer.headers["Retry-After"] == "60"
    exported = await running.export(BODY, tenant="fourth")
    assert exported.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many active tenants" in exported.details

    samples = await running.samples()
    assert sample_value(samples, REFUSED, reason="too_many_active_tenants") == 2
    newcomers = {("tenant", "third"), ("tenant", "fourth")}
    assert [name for name, keys in samples if keys & newcomers] == []
    assert (await running.post(BODY, tenant="first")).status == 200


async def test_a_refused_tenant_is_accepted_once_an_active_tenant_has_been_idle_for_stale_duration(
    start_service: StartService,
) -> None:
    running = await start_service(make_config(multitenancy=True, max_active_tenants=1))
    assert (await running.post(BODY, tenant="first")).status == 200
    assert (await running.post(BODY, tenant="second")).status == 429
    running.clock.advance(15 * 60)
    running.service.tenant_activity.release_idle()  # what the once-a-minute task runs
    assert (await running.post(BODY, tenant="second")).status == 200
    samples = await running.samples()
    assert sample_value(samples, "tempo_distributor_spans_received_total", tenant="second") == 1


@pytest.mark.parametrize(("written", "expected"), [(None, 10_000), (3, 3)], ids=["default", "set"])
def test_max_active_tenants_is_read_from_the_distributor_section(
    tmp_path: Path, written: int | None, expected: int
) -> None:
    distributor: dict[str, Any] = {} if written is None else {"max_active_tenants": written}
    config = load_config(write_config_files(tmp_path, {"distributor": distributor}))
    assert config.max_active_tenants == expected
    assert config_as_data(config)["distributor"]["max_active_tenants"] == expected


def test_max_active_tenants_of_zero_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = write_config_files(tmp_path, {"distributor": {"max_active_tenants": 0}})
    with pytest.raises(ConfigError, match="max_active_tenants"):
        load_config(path)
