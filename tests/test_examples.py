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
