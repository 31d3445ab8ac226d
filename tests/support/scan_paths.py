"""Run a test on both scan paths: the compiled core, and the reference (the protobuf runtime's decode)
that serves where the core is missing or declines a request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from distributor.ingest import scan

PATHS = ("core", "reference")


@pytest.fixture(params=PATHS)
def scan_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which path scans requests in this test; the core's run is skipped where it was not built (a test
    of its own fails under CI when it is missing)."""
    if request.param == "core":
        if scan.CORE is None:
            pytest.skip("the compiled ingest core is not built on this machine")
    else:
        monkeypatch.setattr(scan, "CORE", None)
    yield request.param
