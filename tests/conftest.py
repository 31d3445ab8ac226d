from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.service import ServiceStarter, StartService


@pytest.fixture
async def start_service() -> AsyncIterator[StartService]:
    """Start services in process (`await start_service(config)`); stopped gracefully at teardown."""
    starter = ServiceStarter()
    yield starter
    await starter.stop_all()
