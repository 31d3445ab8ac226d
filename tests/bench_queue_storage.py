"""The persistent queue's storage against two alternatives, in one run on one directory:

(1) SegmentLog: group commit (one os.writev + one fdatasync for every append waiting), unsynced acks
(2) SQLite in WAL mode with synchronous=FULL: a writer thread inserts every waiting append in one
    transaction (one WAL fsync per group); an acknowledgement deletes its row in its own transaction
(3) a naive log: one write + one fdatasync per append (appends serialised), unsynced acks

for payloads of 287 KB and 2 KB with 1, 4 and 16 concurrent appenders: appends/s, MB/s of payload,
records per fsync, and the cost of one acknowledgement (with the deletes it causes), over the first
ACKS_MEASURED records. Every appender loops for --seconds. The machine is shared: compare the rows of
one run, not runs.

    python -m tests.bench_queue_storage [--directory DIR] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from distributor.forwarding.segment_log import LogObserver, RecordRef, SegmentLog

PAYLOAD_SIZES = (287 * 1024, 2 * 1024)
CONCURRENCIES = (1, 4, 16)
ACKS_MEASURED = 500


@dataclass(frozen=True, slots=True)
class Result:
    appends: int
    seconds: float
    payload_bytes: int
    fsyncs: int
    ack_seconds: float
    acks: int


class FsyncCounter(LogObserver):
    def __init__(self) -> None:
        self.fsyncs = 0

    def committed(self, seconds: float, records: int, size: int) -> None:
        self.fsyncs += 1


async def drive(
    append: Callable[[bytes], Awaitable[object]], payload: bytes, concurrency: int, seconds: float
) -> tuple[list[object], float]:
    """Every appender appends until the deadline; the handles of all appends and the elapsed time."""
    handles: list[object] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def appender() -> None:
        while time.perf_counter() < deadline:
            handles.append(await append(payload))

    await asyncio.gather(*(appender() for _ in range(concurrency)))
    return handles, time.perf_counter() - started


async def bench_segment_log(directory: Path, payload: bytes, concurrency: int, seconds: float) -> Result:
    counter = FsyncCounter()
    log = SegmentLog(directory, max_size_bytes=1 << 40, observer=counter)
    log.open()
    handles, elapsed = await drive(lambda body: log.append("tenant", 10, body), payload, concurrency, seconds)
    refs = [handle for handle in handles if isinstance(handle, RecordRef)]
    # Acknowledge everything (the finished segments are deleted on the way), timing the first ones.
    started = time.perf_counter()
    for ref in refs[:ACKS_MEASURED]:
        log.acknowledge(ref)
    ack_seconds = time.perf_counter() - started
    for ref in refs[ACKS_MEASURED:]:
        log.acknowledge(ref)
    await log.close()
    return Result(
        len(refs),
        elapsed,
        len(refs) * len(payload),
        counter.fsyncs,
        ack_seconds,
        min(len(refs), ACKS_MEASURED),
    )


class SqliteQueue:
    """Group commit in SQLite: one writer thread, one transaction for every insert waiting."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=FULL")
        self.connection.execute(
            "CREATE TABLE queue (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self.lock = threading.Lock()  # the waiting list
        self.wakeup = threading.Condition(self.lock)
        self.connection_lock = threading.Lock()  # the connection, shared with acknowledge()
        self.waiting: list[tuple[bytes, asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        self.stopping = False
        self.transactions = 0
        self.writer = threading.Thread(target=self.write_loop, daemon=True)
        self.writer.start()

    async def append(self, payload: bytes) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self.lock:
            self.waiting.append((payload, loop, future))
            self.wakeup.notify()
        return await future

    def write_loop(self) -> None:
        while True:
            with self.wakeup:
                while not self.waiting and not self.stopping:
                    self.wakeup.wait()
                if not self.waiting:
                    return
                batch, self.waiting = self.waiting, []
            with self.connection_lock:
                self.connection.execute("BEGIN")
                ids = [
                    self.connection.execute(
                        "INSERT INTO queue (tenant, payload) VALUES (?, ?)", ("tenant", payload)
                    ).lastrowid
                    for payload, _, _ in batch
                ]
                self.connection.execute("COMMIT")
                self.transactions += 1
            for (_, loop, future), row_id in zip(batch, ids, strict=True):
                loop.call_soon_threadsafe(future.set_result, row_id or 0)

    def acknowledge(self, row_id: int) -> None:
        with self.connection_lock:
            self.connection.execute("DELETE FROM queue WHERE id = ?", (row_id,))

    def close(self) -> None:
        with self.wakeup:
            self.stopping = True
            self.wakeup.notify()
        self.writer.join()
        self.connection.close()


async def bench_sqlite(directory: Path, payload: bytes, concurrency: int, seconds: float) -> Result:
    directory.mkdir(parents=True, exist_ok=True)
    queue = SqliteQueue(directory / "queue.sqlite")
    handles, elapsed = await drive(queue.append, payload, concurrency, seconds)
    row_ids = [handle for handle in handles if isinstance(handle, int)]
    started = time.perf_counter()
    for row_id in row_ids[:ACKS_MEASURED]:
        queue.acknowledge(row_id)
    ack_seconds = time.perf_counter() - started
    fsyncs = queue.transactions
    queue.close()
    measured = min(len(row_ids), ACKS_MEASURED)
    return Result(len(row_ids), elapsed, len(row_ids) * len(payload), fsyncs, ack_seconds, measured)


class NaiveLog:
    """One write and one fdatasync per append, one append at a time; acks appended unsynced."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(directory / "naive.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.acks_fd = os.open(directory / "naive.acks", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.lock = threading.Lock()
        self.next_id = 0
        self.pending = 0
        self.fsyncs = 0

    def append_blocking(self, payload: bytes) -> int:
        with self.lock:
            self.next_id += 1
            header = self.next_id.to_bytes(8, "little") + zlib.crc32(payload).to_bytes(4, "little")
            os.writev(self.fd, [header, payload])
            os.fdatasync(self.fd)
            self.fsyncs += 1
            self.pending += 1
            return self.next_id

    async def append(self, payload: bytes) -> int:
        return await asyncio.to_thread(self.append_blocking, payload)

    def acknowledge(self, record_id: int, directory: Path) -> None:
        os.write(self.acks_fd, record_id.to_bytes(8, "little"))
        self.pending -= 1
        if self.pending == 0:
            os.close(self.fd)
            os.close(self.acks_fd)
            (directory / "naive.log").unlink()
            (directory / "naive.acks").unlink()


async def bench_naive(directory: Path, payload: bytes, concurrency: int, seconds: float) -> Result:
    log = NaiveLog(directory)
    handles, elapsed = await drive(log.append, payload, concurrency, seconds)
    ids = [handle for handle in handles if isinstance(handle, int)]
    started = time.perf_counter()
    for record_id in ids[:ACKS_MEASURED]:
        log.acknowledge(record_id, directory)
    ack_seconds = time.perf_counter() - started
    for record_id in ids[ACKS_MEASURED:]:
        log.acknowledge(record_id, directory)
    return Result(
        len(ids), elapsed, len(ids) * len(payload), log.fsyncs, ack_seconds, min(len(ids), ACKS_MEASURED)
    )


STORES: dict[str, Callable[[Path, bytes, int, float], Awaitable[Result]]] = {
    "segment log": bench_segment_log,
    "sqlite wal full": bench_sqlite,
    "naive fsync/append": bench_naive,
}


def filesystem_of(path: Path) -> str:
    """The type of the file system holding `path`, from the longest matching mount point."""
    resolved = str(path.resolve())
    best, kind = "", "unknown"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            mount_point, fs_type = fields[1], fields[2]
            inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > len(best):
                best, kind = mount_point, f"{fs_type} on {fields[0]} at {mount_point}"
    return kind


async def main(base: Path, seconds: float) -> None:
    print(
        f"directory {base} ({filesystem_of(base)}), {seconds:g} s per row, acks timed over the first "
        f"{ACKS_MEASURED} records"
    )
    print(
        f"{'store':<20} {'payload':>8} {'appenders':>9} {'appends/s':>10} {'MB/s':>8} {'rec/fsync':>9} "
        f"{'ack us':>8}"
    )
    for payload_size in PAYLOAD_SIZES:
        payload = os.urandom(payload_size)
        for concurrency in CONCURRENCIES:
            for name, bench in STORES.items():
                directory = base / f"{name.split()[0]}-{payload_size}-{concurrency}"
                result = await bench(directory, payload, concurrency, seconds)
                shutil.rmtree(directory, ignore_errors=True)
                rate = result.appends / result.seconds
                megabytes = result.payload_bytes / result.seconds / 1e6
                per_fsync = result.appends / result.fsyncs if result.fsyncs else 0.0
                ack_micros = result.ack_seconds / result.acks * 1e6 if result.acks else 0.0
                print(
                    f"{name:<20} {payload_size // 1024:>6}KB {concurrency:>9} {rate:>10.0f} "
                    f"{megabytes:>8.1f} {per_fsync:>9.2f} {ack_micros:>8.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--directory", type=Path, default=None, help="where to write (default: a temporary directory)"
    )
    parser.add_argument("--seconds", type=float, default=1.5, help="how long each row appends")
    arguments = parser.parse_args()
    if arguments.directory is not None:
        arguments.directory.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(arguments.directory, arguments.seconds))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-queue-storage-") as temporary:
            asyncio.run(main(Path(temporary), arguments.seconds))
