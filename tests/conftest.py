from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.scan_paths import scan_path
from tests.support.service import ServiceStarter, StartService

__all__ = ["scan_path"]  # a fixture: every test may ask for it by name


@pytest.fixture
async def start_service() -> AsyncIterator[StartService]:
    """Start services in process (`await start_service(config)`); stopped gracefully at teardown."""
    starter = ServiceStarter()
    yield starter
    await starter.stop_all()
