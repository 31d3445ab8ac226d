"""The examples say where they really sent traces and where to look at the result."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the module loads
    spec.loader.exec_module(module)
    return module


def test_send_traces_points_at_the_server_of_the_endpoint_it_sends_to() -> None:
    send_traces = load_example("send_traces")
    args = send_traces.parse_args(["--endpoint", "http://collector.internal:4318/v1/traces"])
    assert args.server == "http://collector.internal:3200"
    args = send_traces.parse_args(["--endpoint", "https://[::1]:14318/v1/traces"])
    assert args.server == "https://[::1]:3200"
    args = send_traces.parse_args(["--server", "http://10.0.0.5:3201"])
    assert args.server == "http://10.0.0.5:3201"
    assert send_traces.parse_args([]).endpoint == "http://127.0.0.1:4318/v1/traces"


async def test_the_rum_example_sends_the_distinct_sessions_it_says_by_department(tmp_path: Path) -> None:
    """examples/send_rum_sessions.py against a running service: the API reads back exactly the sessions
    it sent, by department, though sessions span several requests and some come back."""
    import asyncio

    from tests.support.attribution import COUNTING_TENANT, attribution_service, distinct_config

    send_rum_sessions = load_example("send_rum_sessions")
    async with attribution_service(distinct_config(tmp_path)) as running:
        arguments = [
            "--endpoint",
            running.traces_url,
            "--tenant",
            COUNTING_TENANT,
            "--sessions",
            "25",
            "--seed",
            "3",
        ]
        assert await asyncio.to_thread(send_rum_sessions.main, arguments) == 0
        await running.flush()
        status, body, _ = await running.get(
            "/api/v1/usage/hourly-attribution",
            {
                "start_hr": "2026-11-22T10",
                "usage_type": "rum_browser_mobile_sessions_usage",
                "tag_breakdown_keys": "department",
            },
        )
        assert status == 200, body
        by_department = {
            record["tags"]["department"][0]: record["total_usage_sum"] for record in body["usage"]
        }
        planned = send_rum_sessions.visits(25, send_rum_sessions.random.Random(3))
        expected: dict[str, set[str]] = {}
        for _, department, session in planned:
            expected.setdefault(department, set()).add(session)
        assert by_department == {department: len(sessions) for department, sessions in expected.items()}
        assert sum(by_department.values()) == 25
        assert len(planned) > 25  # more requests than sessions
