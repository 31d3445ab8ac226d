"""Label values against the running service: a value longer than `max_label_value_bytes` reaches
/usage_metrics, the ledger and the attribution API in the same bounded form, and costs bounded memory.

Semantics: docs/usage-tracker.md ("Values").
"""

from __future__ import annotations

import gc
import hashlib
import tracemalloc
from pathlib import Path

import pytest

from distributor.config import load_config
from distributor.ledger.ledger import BYTES_USAGE
from distributor.overrides import ConfigError
from tests.support.attribution import attribution_service, spans_request, write_config
from tests.support.config_files import write_config_files

MEGABYTE = 1 << 20
DEFAULT_LIMIT = 256
# Over what a series of 256-byte values costs (tracker, ledger), far under one 1 MiB value.
MEMORY_PER_SERIES_BOUND = 8_000  # measured: ~1.4 KB with the default limit of 256 bytes


def megabyte_service_name(index: int) -> str:
    """A distinct 1 MiB value whose first 239 bytes (what a cut keeps) are the same for every index."""
    return "s" * (MEGABYTE - 8) + f"{index:08d}"


def bounded(value: str) -> str:
    return "s" * (DEFAULT_LIMIT - 17) + "~" + hashlib.sha256(value.encode()).hexdigest()[:16]


async def test_megabyte_values_are_bounded_alike_in_usage_metrics_and_the_attribution_api(
    tmp_path: Path,
) -> None:
    values = [megabyte_service_name(index) for index in range(3)]
    async with attribution_service(write_config(tmp_path)) as running:
        for value in values:
            await running.send("acme", spans_request(value, team="core"))
        await running.flush()
        tracked = {
            dict(series)["service_name"]: size
            for series, size in (await running.usage()).items()
            if ("tenant", "acme") in series
        }
        assert set(tracked) == {bounded(value) for value in values}
        assert all(len(value.encode()) == DEFAULT_LIMIT for value in tracked)

        status, body, _ = await running.get(
            "/api/v1/usage/hourly-attribution",
            {
                "start_hr": "2026-11-22T10",
                "end_hr": "2026-11-22T11",
                "usage_type": BYTES_USAGE,
                "tag_breakdown_keys": "service_name",
            },
            key="acme",
        )
        assert status == 200, body
        billed = {record["tags"]["service_name"][0]: record["total_usage_sum"] for record in body["usage"]}
        assert billed == tracked


async def test_memory_per_series_of_megabyte_values_is_bounded(tmp_path: Path) -> None:
    # Memory is compared between two points that each hold one request's body (aiohttp keeps the
    # last one a while): what grows in between is what the new series keep.
    first, then = 4, 12  # 16 requests of 1 MiB stay within the default ingestion burst of 20 MB
    async with attribution_service(write_config(tmp_path)) as running:
        tracemalloc.start()
        try:
            for index in range(first):
                await running.send("acme", spans_request(megabyte_service_name(index)))
            await running.flush()
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for index in range(first, first + then):
                await running.send("acme", spans_request(megabyte_service_name(index)))
            await running.flush()
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(await running.usage()) == first + then
    assert retained < then * MEMORY_PER_SERIES_BOUND, f"{retained / then:,.0f} bytes per series"


@pytest.mark.parametrize("limit", [31, 0])
def test_a_label_value_limit_below_32_bytes_is_refused(tmp_path: Path, limit: int) -> None:
    document = {"distributor": {"usage": {"cost_attribution": {"max_label_value_bytes": limit}}}}
    path = write_config_files(tmp_path, document)
    with pytest.raises(ConfigError, match=r"cost_attribution\.max_label_value_bytes: .*at least 32"):
        load_config(path)
