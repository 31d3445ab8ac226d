"""The persistent queue's storage on real files: recovery after a clean close, an abandoned log and a
SIGKILLed process; damaged data; the byte bound; a full disk (a file size limit and a real small tmpfs);
group commit; the directory lock."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from distributor.forwarding.segment_log import (
    HEADER_SIZE,
    LogObserver,
    QueueStorageError,
    RecordRef,
    SegmentLog,
)

REPO = Path(__file__).resolve().parent.parent


class RecordingObserver(LogObserver):
    def __init__(self) -> None:
        self.commits: list[tuple[float, int, int]] = []
        self.skips: list[tuple[str, int, int]] = []
        self.state_failures: list[OSError] = []

    def committed(self, seconds: float, records: int, size: int) -> None:
        self.commits.append((seconds, records, size))

    def skipped(self, reason: str, records: int, size: int) -> None:
        self.skips.append((reason, records, size))

    def state_write_failed(self, error: OSError) -> None:
        self.state_failures.append(error)


class StepClock:
    """Wall-clock seconds that move by one on every reading."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return self.now


def open_log(
    directory: Path,
    max_size_bytes: int = 1 << 30,
    segment_size_bytes: int = 1 << 20,
    observer: LogObserver | None = None,
    wall_clock: StepClock | None = None,
) -> tuple[SegmentLog, list[RecordRef]]:
    log = SegmentLog(directory, max_size_bytes, segment_size_bytes, observer, wall_clock or StepClock())
    return log, log.open()


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.log"))


def record_size(tenant: str, payload_size: int) -> int:
    return HEADER_SIZE + len(tenant.encode()) + payload_size


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


CASES = [
    ("", 0, b""),  # no tenant, no payload: a record that is only its header
    ("tenant-a", 1, b"x"),
    ("ténant-ü", 7, bytes(range(256)) * 4),
    ("tenant-b", 300, os.urandom(287 * 1024)),
    ("", 5, os.urandom(3 * 1024 * 1024 + 1)),
]


async def test_records_come_back_after_reopen_oldest_first_and_ids_continue(tmp_path: Path) -> None:
    log, recovered = open_log(tmp_path, segment_size_bytes=512 * 1024)
    assert recovered == []
    refs = [await log.append(tenant, spans, payload) for tenant, spans, payload in CASES]
    assert [ref.record_id for ref in refs] == sorted({ref.record_id for ref in refs})
    assert [(ref.tenant, ref.span_count, ref.payload_size) for ref in refs] == [
        (tenant, spans, len(payload)) for tenant, spans, payload in CASES
    ]
    assert [await log.read(ref) for ref in refs] == [payload for _, _, payload in CASES]
    assert log.pending_records() == len(CASES)
    assert log.oldest_appended_at() == refs[0].appended_at
    on_disk = sum(path.stat().st_size for path in segment_files(tmp_path))
    assert on_disk == sum(ref.size for ref in refs) == log.bytes_on_disk()
    assert len(segment_files(tmp_path)) > 1  # the 3 MB payload took a segment of its own
    await log.close()
    await log.close()  # idempotent

    reopened, recovered = open_log(tmp_path, segment_size_bytes=512 * 1024)
    assert recovered == refs
    assert [await reopened.read(ref) for ref in recovered] == [payload for _, _, payload in CASES]
    later = await reopened.append("tenant-a", 1, b"later")
    assert later.record_id > refs[-1].record_id
    assert reopened.bytes_on_disk() == on_disk + later.size
    await reopened.close()


async def test_ids_continue_after_every_record_was_acknowledged_and_deleted(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    refs = [await log.append("t", 1, b"p" * 10) for _ in range(3)]
    for ref in refs:
        log.acknowledge(ref)
    await log.close()
    for _ in range(2):  # the second reopen finds only an empty segment
        log, recovered = open_log(tmp_path)
        assert recovered == []
        assert log.pending_records() == 0
        await log.close()
    log, _ = open_log(tmp_path)
    assert (await log.append("t", 1, b"after")).record_id > refs[-1].record_id
    assert len(segment_files(tmp_path)) == 1
    await log.close()


async def test_a_state_file_left_without_its_segment_is_removed(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    await log.close()
    orphan = tmp_path / f"segment-{0:020d}.state"
    orphan.write_bytes(b"\x02" * 13)
    log, _ = open_log(tmp_path)
    assert not orphan.exists()
    await log.close()


async def test_acknowledged_records_stay_gone_and_a_finished_sealed_segment_is_deleted(
    tmp_path: Path,
) -> None:
    payload = b"a" * 1500
    # Two records per segment.
    log, _ = open_log(tmp_path, segment_size_bytes=2 * record_size("t", 1500))
    refs = [await log.append("t", 1, payload) for _ in range(5)]
    assert len(segment_files(tmp_path)) == 3
    before = log.bytes_on_disk()

    log.acknowledge(refs[0])
    log.acknowledge(refs[1])
    log.acknowledge(refs[1])  # twice is harmless
    assert log.bytes_on_disk() == before + 13 - 2 * refs[0].size - 13  # its state file went too
    # The writer thread deletes finished segments before it commits its next batch.
    kept = [f"segment-{refs[2].segment:020d}.log", f"segment-{refs[4].segment:020d}.log"]
    refs.append(await log.append("t", 1, payload))
    assert [path.name for path in segment_files(tmp_path)] == kept
    assert not (tmp_path / f"segment-{refs[0].segment:020d}.state").exists()
    log.acknowledge(refs[5])
    log.acknowledge(refs[2])
    log.acknowledge(refs[4])  # in the active segment: remembered, the file stays
    assert log.pending_records() == 1
    assert log.oldest_appended_at() == refs[3].appended_at
    await log.close()

    _, recovered = open_log(tmp_path, segment_size_bytes=2 * record_size("t", 1500))
    assert [ref.record_id for ref in recovered] == [refs[3].record_id]
    # The segment still holding a pending record, and the new active one: the old active one was
    # acknowledged to the end, so recovery deleted it.
    first, _active = segment_files(tmp_path)
    assert first.name == kept[0]


async def test_a_record_marked_sending_comes_back_with_was_sending(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    marked, unmarked = [await log.append("t", 1, b"body") for _ in range(2)]
    log.mark_sending(marked)
    await log.close()
    log, recovered = open_log(tmp_path)
    assert [(ref.record_id, ref.was_sending) for ref in recovered] == [
        (marked.record_id, True),
        (unmarked.record_id, False),
    ]
    await log.close()


async def test_an_abandoned_log_loses_no_returned_append(tmp_path: Path) -> None:
    """The log is never closed: a copy of its directory at that moment is what a killed process
    leaves behind (unsynced state files included)."""
    directory = tmp_path / "queue"
    log, _ = open_log(directory, segment_size_bytes=8 * 1024)
    refs = list(await asyncio.gather(*(log.append(f"t{n}", n, bytes([n]) * 3000) for n in range(20))))
    log.mark_sending(refs[0])
    log.acknowledge(refs[1])
    snapshot = tmp_path / "snapshot"
    shutil.copytree(directory, snapshot, ignore=shutil.ignore_patterns("lock"))

    copy, recovered = open_log(snapshot, segment_size_bytes=8 * 1024)
    expected = sorted(refs, key=lambda ref: ref.record_id)
    assert [ref.record_id for ref in recovered] == [ref.record_id for ref in expected if ref != refs[1]]
    assert recovered[0].was_sending
    assert [await copy.read(ref) for ref in recovered] == [
        bytes([ref.span_count]) * 3000 for ref in recovered
    ]
    await copy.close()
    await log.close()


APPENDING_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from distributor.forwarding.segment_log import SegmentLog

    async def main() -> None:
        log = SegmentLog(Path(sys.argv[1]), 1 << 30, segment_size_bytes=64 * 1024)
        log.open()

        async def appender(n: int) -> None:
            for i in range(1_000_000):
                ref = await log.append(f"t{n}", i, bytes([n]) * (1000 + 37 * i % 5000))
                print(ref.record_id, flush=True)

        await asyncio.gather(*(appender(n) for n in range(4)))

    asyncio.run(main())
    """
)


async def test_a_sigkilled_process_loses_no_returned_append(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", APPENDING_CHILD, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    returned = []
    try:
        while len(returned) < 300:
            line = child.stdout.readline()
            assert line, "the appending process ended early"
            returned.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    observer = RecordingObserver()
    log, recovered = open_log(tmp_path, observer=observer)
    recovered_ids = [ref.record_id for ref in recovered]
    assert set(returned) <= set(recovered_ids)
    assert recovered_ids == sorted(recovered_ids)
    for ref in recovered:
        tenant_number = int(ref.tenant[1:])
        assert await log.read(ref) == bytes([tenant_number]) * (1000 + 37 * ref.span_count % 5000)
    assert all(reason == "torn_tail" for reason, _, _ in observer.skips)  # a write the kill cut short
    await log.close()


async def test_a_torn_tail_is_cut_and_everything_before_it_kept(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    refs = [await log.append("t", n, bytes([n]) * 2000) for n in range(3)]
    await log.close()
    (segment,) = segment_files(tmp_path)
    os.truncate(segment, refs[2].offset + 1000)

    observer = RecordingObserver()
    log, recovered = open_log(tmp_path, observer=observer)
    assert recovered == refs[:2]
    assert observer.skips == [("torn_tail", 1, 1000)]
    assert segment.stat().st_size == refs[2].offset
    added = await log.append("t", 9, b"after")
    await log.close()

    observer = RecordingObserver()
    _, recovered = open_log(tmp_path, observer=observer)
    assert [ref.record_id for ref in recovered] == [refs[0].record_id, refs[1].record_id, added.record_id]
    assert observer.skips == []


async def test_flipped_bytes_skip_the_rest_of_their_segment_only(tmp_path: Path) -> None:
    # Three records per segment.
    segment_size = 3 * record_size("t", 2000)
    log, _ = open_log(tmp_path, segment_size_bytes=segment_size)
    refs = [await log.append("t", n, bytes([n]) * 2000) for n in range(4)]
    await log.close()
    first, _second = segment_files(tmp_path)
    flip_byte(first, refs[1].offset + HEADER_SIZE + 1 + 500)  # in the second record's payload

    observer = RecordingObserver()
    log, recovered = open_log(tmp_path, segment_size_bytes=segment_size, observer=observer)
    assert [ref.record_id for ref in recovered] == [refs[0].record_id, refs[3].record_id]
    assert observer.skips == [("checksum", 1, 2 * refs[1].size)]
    assert first.stat().st_size == refs[1].offset
    assert await log.read(recovered[1]) == bytes([3]) * 2000
    await log.close()


async def test_a_damaged_header_counts_as_a_checksum_failure(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    refs = [await log.append("t", n, b"p" * 100) for n in range(2)]
    await log.close()
    (segment,) = segment_files(tmp_path)
    flip_byte(segment, refs[1].offset + 20)  # payload_len: would otherwise read as a torn tail
    observer = RecordingObserver()
    _, recovered = open_log(tmp_path, observer=observer)
    assert recovered == refs[:1]
    assert [reason for reason, _, _ in observer.skips] == ["checksum"]


async def test_a_torn_state_entry_is_ignored_and_reported(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    refs = [await log.append("t", n, b"p") for n in range(3)]
    log.acknowledge(refs[0])
    log.mark_sending(refs[1])
    await log.close()
    (state,) = tmp_path.glob("segment-*.state")
    with open(state, "ab") as file:
        file.write(b"\x02\x01\x02")  # a third of an acknowledgement
    observer = RecordingObserver()
    log, recovered = open_log(tmp_path, observer=observer)
    assert [(ref.record_id, ref.was_sending) for ref in recovered] == [
        (refs[1].record_id, True),
        (refs[2].record_id, False),
    ]
    assert observer.skips == [("bad_state", 1, 3)]
    await log.close()


async def test_read_of_a_record_damaged_after_open_raises_corrupt(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    ref = await log.append("t", 1, b"payload" * 100)
    (segment,) = segment_files(tmp_path)
    flip_byte(segment, ref.offset + ref.size - 1)
    with pytest.raises(QueueStorageError) as raised:
        await log.read(ref)
    assert raised.value.reason == "corrupt"
    await log.close()


async def test_the_byte_bound_refuses_without_writing_and_acknowledging_frees_room(tmp_path: Path) -> None:
    size = record_size("t", 1000)
    # One record per segment, room for three.
    log, _ = open_log(tmp_path, max_size_bytes=3 * size + 100, segment_size_bytes=size)
    refs = [await log.append("t", 1, b"r" * 1000) for _ in range(3)]
    files = {path: path.stat().st_size for path in tmp_path.iterdir()}
    assert not log.has_room(1000)
    assert log.has_room(50)
    with pytest.raises(QueueStorageError) as raised:
        await log.append("t", 1, b"r" * 1000)
    assert raised.value.reason == "full"
    assert {path: path.stat().st_size for path in tmp_path.iterdir()} == files
    assert log.pending_records() == 3

    log.acknowledge(refs[0])  # a sealed segment: deleted
    assert log.has_room(1000)
    added = await log.append("t", 1, b"r" * 1000)
    assert log.bytes_on_disk() == 3 * size
    await log.close()
    _, recovered = open_log(tmp_path, max_size_bytes=3 * size + 100, segment_size_bytes=size)
    assert [ref.record_id for ref in recovered] == [refs[1].record_id, refs[2].record_id, added.record_id]


async def test_a_bound_smaller_than_a_segment_frees_room_once_everything_is_acknowledged(
    tmp_path: Path,
) -> None:
    size = record_size("t", 1000)
    log, _ = open_log(tmp_path, max_size_bytes=2 * size + 100, segment_size_bytes=1 << 20)
    refs = [await log.append("t", 1, b"r" * 1000) for _ in range(2)]
    with pytest.raises(QueueStorageError):
        await log.append("t", 1, b"r" * 1000)
    for ref in refs:
        log.acknowledge(ref)
    added = await log.append("t", 1, b"r" * 1000)  # moves to a new segment, deleting the finished one
    assert log.bytes_on_disk() == size
    await log.close()  # lets the writer delete the finished segment
    assert len(segment_files(tmp_path)) == 1
    _, recovered = open_log(tmp_path)
    assert [ref.record_id for ref in recovered] == [added.record_id]


FILE_SIZE_LIMITED_CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    from pathlib import Path
    from distributor.forwarding.segment_log import QueueStorageError, SegmentLog

    async def main() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        log = SegmentLog(Path(sys.argv[1]), 1 << 30, segment_size_bytes=1 << 30)
        log.open()
        appended, reason = [], None
        for n in range(20):
            try:
                appended.append((await log.append("t", n, bytes([n]) * 10_000)).record_id)
            except QueueStorageError as error:
                reason = error.reason
                break
        small = await log.append("t", 99, b"s" * 100)
        appended.append(small.record_id)
        print(json.dumps({"appended": appended, "reason": reason}))
        await log.close()

    asyncio.run(main())
    """
)


async def test_a_file_size_limit_fails_the_append_as_disk_full_and_the_log_goes_on(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED_CHILD, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(done.stdout)
    assert outcome["reason"] == "disk_full"
    assert len(outcome["appended"]) == 6 + 1  # 6 records of 10 KB fit in 64 KiB, then the small one

    observer = RecordingObserver()
    log, recovered = open_log(tmp_path, observer=observer)
    assert [ref.record_id for ref in recovered] == outcome["appended"]
    assert observer.skips == []  # the failed write was cut back
    assert await log.read(recovered[-1]) == b"s" * 100
    await log.close()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_tmpfs_fails_the_append_as_disk_full_and_the_log_goes_on(small_tmpfs: Path) -> None:
    directory = small_tmpfs / "queue"
    segment_size = 200_000  # two records of 90 KB each
    log, _ = open_log(directory, segment_size_bytes=segment_size)
    appended: list[RecordRef] = []
    with pytest.raises(QueueStorageError) as raised:
        for n in range(100):
            appended.append(await log.append("t", n, bytes([n]) * 90_000))
    assert raised.value.reason == "disk_full"
    assert 5 < len(appended) < 12
    assert log.bytes_on_disk() == sum(ref.size for ref in appended)

    for ref in appended[:2]:  # the first segment: deleted, which frees its pages
        log.acknowledge(ref)
    small = await log.append("t", 99, b"s" * 10_000)
    await log.close()

    observer = RecordingObserver()
    log, recovered = open_log(directory, segment_size_bytes=segment_size, observer=observer)
    assert [ref.record_id for ref in recovered] == [ref.record_id for ref in appended[2:]] + [small.record_id]
    assert observer.skips == []
    assert [await log.read(ref) for ref in recovered[:-1]] == [
        bytes([ref.span_count]) * 90_000 for ref in recovered[:-1]
    ]
    await log.close()


async def test_concurrent_appends_share_fdatasyncs(tmp_path: Path) -> None:
    observer = RecordingObserver()
    log, _ = open_log(tmp_path, observer=observer)
    refs = await asyncio.gather(*(log.append("t", n, b"x" * 1000) for n in range(50)))
    assert len({ref.record_id for ref in refs}) == 50
    assert sum(records for _, records, _ in observer.commits) == 50
    assert sum(size for _, _, size in observer.commits) == sum(ref.size for ref in refs)
    assert len(observer.commits) < 50
    await log.close()


async def test_a_second_log_cannot_open_a_directory_in_use(tmp_path: Path) -> None:
    first, _ = open_log(tmp_path)
    second = SegmentLog(tmp_path, 1 << 30)
    with pytest.raises(QueueStorageError) as raised:
        second.open()
    assert raised.value.reason == "io_error"
    assert "in use" in str(raised.value)
    await first.close()
    third = SegmentLog(tmp_path, 1 << 30)
    assert third.open() == []
    await third.close()


async def test_appending_to_a_closed_log_fails(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    await log.close()
    with pytest.raises(QueueStorageError) as raised:
        await log.append("t", 1, b"late")
    assert raised.value.reason == "io_error"


async def test_room_counts_the_record_header_as_well_as_the_payload(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, max_size_bytes=HEADER_SIZE + 100)
    assert log.bytes_on_disk() == 0
    assert log.has_room(100)
    assert not log.has_room(101), "the header needs room too"
    await log.close()
