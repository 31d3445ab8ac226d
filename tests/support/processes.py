"""Distributor processes that a test may SIGKILL and start again, OpenTelemetry SDK load from threads, and
a small tmpfs to fill: the pieces of the end-to-end delivery tests.

A process's stderr is read to its end by a thread, so a process that logs a lot never blocks on a full
pipe while the test is busy elsewhere."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.cli import ready_listeners
from tests.support.metrics import read_samples, scrape, total
from tests.support.otlp import sdk_spans

READY_TIMEOUT = 30.0


def free_port() -> int:
    """A port nothing listens on (bound then closed), for a process to listen on later."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DistributorProcess:
    """A `python -m distributor --config FILE` process, its log, and its listeners once it is ready."""

    process: subprocess.Popen[str]
    server_url: str = ""
    traces_url: str = ""
    grpc_target: str = ""
    lines: list[str] = field(default_factory=list)  # its log so far
    _ready: threading.Event = field(default_factory=threading.Event)
    _log_reader: threading.Thread | None = None

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if not self._ready.is_set() and "distributor ready" in line:
                listeners = ready_listeners(line.rstrip("\n"))
                self.server_url = listeners["server"]
                self.traces_url = listeners["otlp_http"]
                self.grpc_target = listeners.get("otlp_grpc", "")
                self._ready.set()
        self._ready.set()  # it exited: whoever waits for the ready line learns it from `process`

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once it has logged that it is ready; kill it and fail, with its log, if it exits first or
        is not ready within `timeout` (blocking: from an event loop, call it in a thread)."""
        if not self._ready.wait(timeout) or not self.server_url:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the distributor did not become ready:\n{self.log}")

    def exit_code(self, timeout: float = READY_TIMEOUT) -> int:
        """Its exit code once it has exited by itself, its whole log read by then; fails, with its log, as
        soon as it is ready instead, or when it has done neither within `timeout`."""
        if not self._ready.wait(timeout):
            raise AssertionError(f"the distributor neither exited nor became ready:\n{self.log}")
        if self.server_url:
            raise AssertionError(f"the distributor became ready instead of exiting:\n{self.log}")
        # Its log has ended: it is exiting.
        code = self.process.wait(timeout=timeout)
        if self._log_reader is not None:
            self._log_reader.join(timeout)
        return code

    def sigkill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine loses power or the OOM killer strikes."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful shutdown), then its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    async def metrics(
        self, session: aiohttp.ClientSession
    ) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return read_samples(await scrape(session, self.server_url + "/metrics"))

    async def total(self, session: aiohttp.ClientSession, name: str, **match: str) -> float:
        """The sum of the /metrics samples named `name` whose labels include `match`."""
        return total(await self.metrics(session), name, **match)

    async def ledger_flushed(self, session: aiohttp.ClientSession) -> bool:
        """Nothing waits in its ledger's memory (a batch being written counts as waiting until it is
        stored), and a flush has succeeded: what it accepted before is in the ledger."""
        samples = await self.metrics(session)
        pending = samples.get(("tempo_usage_ledger_pending_entries", frozenset()), 1.0)
        successes = samples.get(("tempo_usage_ledger_flushes_total", frozenset({("result", "success")})), 0.0)
        return pending == 0 and successes > 0

    async def ready_status(self, session: aiohttp.ClientSession) -> int:
        async with session.get(self.server_url + "/ready") as response:
            return response.status


def launch_distributor(config: Path) -> DistributorProcess:
    """Start a distributor process and return at once, its log read meanwhile: `wait_ready` or
    `exit_code` says how its start went."""
    process = subprocess.Popen(
        [sys.executable, "-m", "distributor", "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    launched = DistributorProcess(process)
    launched._log_reader = threading.Thread(target=launched._read_log, daemon=True, name=f"log-{process.pid}")
    launched._log_reader.start()
    return launched


def start_distributor(config: Path) -> DistributorProcess:
    """Start a distributor process and return once it has logged that it is ready (blocking: call it in a
    thread from an event loop that serves something the process needs)."""
    started = launch_distributor(config)
    started.wait_ready()
    return started


@contextlib.contextmanager
def distributor_processes() -> Iterator[list[DistributorProcess]]:
    """A list to put started processes in; whichever still run at the end of the block are killed."""
    started: list[DistributorProcess] = []
    try:
        yield started
    finally:
        for running in started:
            if running.process.poll() is None:
                running.process.kill()
                running.process.wait()


# --- OpenTelemetry SDK load -------------------------------------------------------------------------


def sdk_batches(batches: int, spans_per_batch: int, service: str = "e2e-load") -> list[list[Any]]:
    """`batches` lists of finished SDK spans (ReadableSpan), each the size of one export; made once and
    reused, since making spans is not what is measured."""
    spans = sdk_spans((service,), per_service=spans_per_batch)
    return [spans] * batches


@dataclass
class ExportOutcome:
    succeeded: int = 0  # exports the distributor answered with success
    failed: int = 0
    spans_succeeded: int = 0


def export_with_sdk(
    traces_url: str,
    batches: Sequence[list[Any]],
    threads: int = 4,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> ExportOutcome:
    """Each batch through the OpenTelemetry SDK's OTLP/HTTP exporter (one export, one request), from
    `threads` threads with an exporter each; blocking, so call it in a thread from an event loop."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    outcome = ExportOutcome()
    lock = threading.Lock()

    def run(share: Sequence[list[Any]]) -> None:
        exporter = OTLPSpanExporter(endpoint=traces_url, timeout=timeout, headers=headers)
        try:
            for spans in share:
                succeeded = exporter.export(spans) == SpanExportResult.SUCCESS
                with lock:
                    if succeeded:
                        outcome.succeeded += 1
                        outcome.spans_succeeded += len(spans)
                    else:
                        outcome.failed += 1
        finally:
            exporter.shutdown()

    with ThreadPoolExecutor(threads) as pool:
        for finished in [pool.submit(run, batches[index::threads]) for index in range(threads)]:
            finished.result()
    return outcome


# --- a small filesystem to fill ----------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `directory` for the block; the test is skipped, with the reason, when
    it cannot be mounted (not root, or no permission to mount in this container)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError as err:
        pytest.skip(f"cannot mount a {size} tmpfs to fill: {err}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs to fill: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False, timeout=10)
