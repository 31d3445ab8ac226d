"""The real command line: `python -m distributor ...` run to completion, or kept serving as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m distributor ARGS` until it exits, with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "distributor", *args], capture_output=True, text=True, timeout=60
    )


@dataclass
class RunningCli:
    process: subprocess.Popen[str]
    server_url: str
    traces_url: str
    grpc_target: str = ""  # host:port, when the OTLP/gRPC receiver is enabled
    startup_log: str = ""  # what it wrote up to and including the ready line
    ready_line: str = ""

    def next_log_line_containing(self, text: str) -> str:
        """The next line of the log containing `text` ("" if the log ends first); blocking, so from an
        event loop call it in a thread."""
        assert self.process.stderr is not None
        return next((line for line in self.process.stderr if text in line), "")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code once the process has stopped."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    async def exit_code(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit in a thread, so the event loop (and any backend on it) keeps
        serving meanwhile."""
        return await asyncio.to_thread(self.process.wait, timeout)

    def log_after_exit(self) -> str:
        assert self.process.stderr is not None and self.process.returncode is not None
        return self.process.stderr.read()


def ready_listeners(line: str) -> dict[str, str]:
    """The listeners named by the `distributor ready` line, in logfmt or JSON."""
    if line.startswith("{"):
        document = json.loads(line)
        return {key: document[key] for key in ("server", "otlp_http", "otlp_grpc") if key in document}
    return dict(re.findall(r" (server|otlp_http|otlp_grpc)=(\S+)", line))


@contextlib.contextmanager
def running_cli(config: Path, *args: str) -> Iterator[RunningCli]:
    """`python -m distributor --config FILE ARGS` as a real process, until it logs that it is ready;
    killed at exit if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "distributor", "--config", str(config), *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        cli = RunningCli(process, "", "")
        assert process.stderr is not None
        for line in process.stderr:
            cli.startup_log += line
            if "distributor ready" in line:
                break
        cli.ready_line = line.rstrip("\n")
        listeners = ready_listeners(cli.ready_line)
        assert "server" in listeners and "otlp_http" in listeners, "the ready line names both listeners"
        cli.server_url, cli.traces_url = listeners["server"], listeners["otlp_http"]
        cli.grpc_target = listeners.get("otlp_grpc", "")
        yield cli
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
