"""Durable storage for the persistent forwarding queue: an append-only log of checksummed records in
segment files, made durable by group commit, with per-segment state files for "sending" marks and
acknowledgements.

Directory layout:
    lock                              fcntl.flock'ed while a SegmentLog has the directory open
    segment-<first id, 20 digits>.log the records, appended in record-id order
    segment-<first id, 20 digits>.state  marks and acknowledgements of that segment's records

Record (little-endian), HEADER_SIZE = 38 bytes then the bodies:
    magic u32 | record_id u64 | tenant_len u16 | span_count u32 | payload_len u32 | appended_at f64 |
    body_crc u32 (zlib.crc32 of tenant + payload) | header_crc u32 (zlib.crc32 of the 34 bytes before it)
    + tenant (utf-8, tenant_len bytes) + payload (payload_len bytes)
The header has its own checksum so that recovery can tell a torn tail (a valid header whose bodies stop
at the end of the file, or fewer than HEADER_SIZE bytes left) from damaged data (a header or body that
fails its checksum, or a record id not above the one before it). Both stop the scan of that segment,
which is truncated after its last good record.

State entry, STATE_ENTRY_SIZE = 13 bytes: kind u8 (1 sending, 2 acknowledged) | record_id u64 |
crc32 u32 of the 9 bytes before it. Entries are appended with os.write and never fsynced: they survive
the process (the page cache) but not necessarily the machine, which at worst delivers a record again.
A torn last entry (the file's length not a multiple of the entry size) is cut off at recovery.

Record ids grow over the log's whole life: a segment is named after the first id it may hold, recovery
continues after the highest id seen in any segment name, record or state entry, and the segment
appends go to after a restart is created before any fully acknowledged segment is deleted.

Appends are durable when they return: one writer thread takes every append waiting at that moment,
writes them with os.writev and makes them durable with one os.fdatasync (group commit); a segment file
it creates also has its directory fsynced. The same thread deletes the files of segments acknowledged
to the end (unlinking a large file takes milliseconds), before it commits its next batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from distributor.common.errors import DistributorError

log = logging.getLogger(__name__)

MAGIC = 0x51_4C_4F_47  # "QLOG"
_HEADER_BODY = struct.Struct("<IQHIIdI")  # every header field up to body_crc
_HEADER_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER_BODY.size + _HEADER_CRC.size
MAX_TENANT_BYTES = 0xFFFF
MAX_PAYLOAD_BYTES = 0xFFFF_FFFF
MAX_SPAN_COUNT = 0xFFFF_FFFF

_STATE_BODY = struct.Struct("<BQ")
_STATE_CRC = struct.Struct("<I")
STATE_ENTRY_SIZE = _STATE_BODY.size + _STATE_CRC.size
_SENDING = 1
_ACKNOWLEDGED = 2

_SEGMENT_PREFIX = "segment-"
_SEGMENT_SUFFIX = ".log"
_STATE_SUFFIX = ".state"
_LOCK_NAME = "lock"

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# os.writev takes at most IOV_MAX buffers per call (1024 on Linux).
_MAX_BUFFERS_PER_WRITE = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 1024
_SCAN_CHUNK = 1 << 20


class QueueStorageError(DistributorError):
    """The queue's storage refused or failed: `reason` is "full" (the byte bound), "disk_full" (ENOSPC,
    EDQUOT, EFBIG), "io_error" (any other OSError, or the directory in use) or "corrupt" (a record read
    back failed its checksum)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RecordRef:
    record_id: int  # strictly increasing over the log's whole life (survives restarts)
    segment: int  # the first record id its segment file may hold (the file's name)
    offset: int  # where the record starts in that file
    size: int  # the record's bytes on disk (header + tenant + payload)
    tenant: str
    span_count: int
    payload_size: int
    appended_at: float  # wall-clock seconds when appended
    was_sending: bool = False  # set by recovery: a send of it had started before the restart


class LogObserver(Protocol):
    """What the log reports. Subclass it to implement only some methods: the others do nothing.
    `committed` is called from the writer thread, `skipped` from the thread calling open(),
    `state_write_failed` from the caller of mark_sending/acknowledge."""

    def committed(self, seconds: float, records: int, size: int) -> None:
        """One group commit (write + fdatasync) of `records` records, `size` bytes, is done."""
        return None

    def skipped(self, reason: str, records: int, size: int) -> None:
        """Recovery dropped bad data: reason "torn_tail" or "checksum" (records 1: the record where the
        segment's scan stopped, size: the bytes cut from there to the file's end), or "bad_state"
        (records: the state entries ignored, size: their bytes)."""
        return None

    def state_write_failed(self, error: OSError) -> None:
        """A mark or acknowledgement could not be written (it still holds in memory)."""
        return None


def storage_error(error: OSError, action: str) -> QueueStorageError:
    reason = "disk_full" if error.errno in _DISK_FULL_ERRNOS else "io_error"
    return QueueStorageError(reason, f"queue storage: {action} failed: {error}")


@dataclass(eq=False, slots=True)
class _Segment:
    first_id: int
    path: Path
    state_path: Path
    size: int = 0  # committed record bytes
    state_size: int = 0
    pending: int = 0  # records neither acknowledged nor lost
    sealed: bool = False  # no more appends: deleted once `pending` reaches 0
    fd: int | None = None  # for appends, the active segment only
    state_fd: int | None = None


@dataclass(eq=False, slots=True)
class _Append:
    record_id: int
    tenant: bytes
    tenant_name: str
    span_count: int
    payload: bytes
    appended_at: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[RecordRef]

    @property
    def size(self) -> int:
        return HEADER_SIZE + len(self.tenant) + len(self.payload)


@dataclass(eq=False, slots=True)
class _Group:
    """Appends bound for one segment within a batch; `created` when the batch made that segment."""

    segment: _Segment
    start: int
    created: bool
    appends: list[_Append] = field(default_factory=list)


class SegmentLog:
    def __init__(
        self,
        directory: Path,
        max_size_bytes: int,
        segment_size_bytes: int = 64 * 1024 * 1024,
        observer: LogObserver | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_size_bytes = max_size_bytes
        self.segment_size_bytes = segment_size_bytes
        self._observer = observer
        self._wall_clock = wall_clock
        # Guards everything below that both the writer thread and the callers touch.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: list[_Append] = []
        self._finished: list[_Segment] = []  # acknowledged to the end: the writer deletes their files
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._pending: dict[int, _Segment] = {}  # record id -> its segment
        self._oldest: collections.deque[tuple[int, float]] = collections.deque()  # id order
        self._segment_bytes = 0
        self._state_bytes = 0
        self._reserved = 0
        self._next_id = 1
        # Set by the writer when a failed batch could not be cut back: appends move to a new segment.
        self._abandon_active = False
        self._lock_fd: int | None = None
        self._writer: threading.Thread | None = None
        self._stopping = False
        self._closed = False

    # --- opening and recovery ---

    def open(self) -> list[RecordRef]:
        """Lock the directory, recover it and start the writer; the records not yet acknowledged,
        oldest first. Blocking: call it in a thread."""
        if self._lock_fd is not None or self._closed:
            raise RuntimeError("a SegmentLog opens once")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise storage_error(error, f"opening {self.directory}") from error
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(lock_fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise QueueStorageError(
                    "io_error", f"queue storage: {self.directory} is in use by another queue (locked)"
                ) from error
            raise storage_error(error, f"locking {self.directory}") from error
        self._lock_fd = lock_fd
        try:
            records = self._recover()
        except OSError as error:
            self._release_lock()
            raise storage_error(error, f"recovering {self.directory}") from error
        except BaseException:
            self._release_lock()
            raise
        self._writer = threading.Thread(target=self._write_loop, name="segment-log-writer", daemon=True)
        self._writer.start()
        return records

    def _recover(self) -> list[RecordRef]:
        names = sorted(
            (int(path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]), path)
            for path in self.directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}")
            if path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)].isdigit()
        )
        # A segment is deleted before its state file: a crash in between leaves the state file alone.
        segment_paths = {path for _, path in names}
        for state_path in self.directory.glob(f"{_SEGMENT_PREFIX}*{_STATE_SUFFIX}"):
            if state_path.with_suffix(_SEGMENT_SUFFIX) not in segment_paths:
                state_path.unlink()
        next_id = 1
        recovered: list[RecordRef] = []
        segments: list[_Segment] = []
        for first_id, path in names:
            segment = _Segment(first_id, path, self._state_path(first_id))
            sending, acknowledged, highest_state_id = self._read_state(segment)
            refs, highest_id = self._scan_segment(segment, sending, acknowledged)
            next_id = max(next_id, first_id, highest_id + 1, highest_state_id + 1)
            segment.pending = len(refs)
            segment.sealed = True
            segments.append(segment)
            recovered.extend(refs)
        self._next_id = next_id
        # The new active segment is named after the next id before any old segment goes, so that a
        # file always carries the highest id given out.
        active = self._segment_named(next_id, segments)
        if active is None:
            active = _Segment(next_id, self._segment_path(next_id), self._state_path(next_id))
        else:
            segments.remove(active)
            active.state_path.unlink(missing_ok=True)
            active.state_size = 0
        self._open_for_appends(active)
        for segment in segments:
            if segment.pending == 0:
                self._delete_files(segment)
            else:
                self._segments[segment.first_id] = segment
                self._segment_bytes += segment.size
                self._state_bytes += segment.state_size
        self._segments[active.first_id] = active
        self._active = active
        for ref in recovered:
            self._pending[ref.record_id] = self._segments[ref.segment]
            self._oldest.append((ref.record_id, ref.appended_at))
        return recovered

    @staticmethod
    def _segment_named(first_id: int, segments: Sequence[_Segment]) -> _Segment | None:
        # Only an empty segment can carry the next id as its name (its records would be above it).
        return next((segment for segment in segments if segment.first_id == first_id), None)

    def _read_state(self, segment: _Segment) -> tuple[set[int], set[int], int]:
        try:
            data = segment.state_path.read_bytes()
        except FileNotFoundError:
            return set(), set(), 0
        sending: set[int] = set()
        acknowledged: set[int] = set()
        highest_id = 0
        bad_entries = 0
        whole = len(data) - len(data) % STATE_ENTRY_SIZE
        for offset in range(0, whole, STATE_ENTRY_SIZE):
            body = data[offset : offset + _STATE_BODY.size]
            (crc,) = _STATE_CRC.unpack_from(data, offset + _STATE_BODY.size)
            kind, record_id = _STATE_BODY.unpack(body)
            if crc != zlib.crc32(body) or kind not in (_SENDING, _ACKNOWLEDGED):
                bad_entries += 1
                continue
            (sending if kind == _SENDING else acknowledged).add(record_id)
            highest_id = max(highest_id, record_id)
        torn = len(data) - whole
        if torn:
            # Later entries are appended after this point: a torn one would shift them all.
            with open(segment.state_path, "r+b") as state_file:
                state_file.truncate(whole)
        if bad_entries or torn:
            self._notify_skipped(
                "bad_state", bad_entries + (1 if torn else 0), bad_entries * STATE_ENTRY_SIZE + torn
            )
        segment.state_size = whole
        return sending, acknowledged, highest_id

    def _scan_segment(
        self, segment: _Segment, sending: set[int], acknowledged: set[int]
    ) -> tuple[list[RecordRef], int]:
        """The segment's unacknowledged records, and the highest record id in it; cuts it after its last
        good record."""
        refs: list[RecordRef] = []
        highest_id = 0
        with open(segment.path, "r+b") as segment_file:
            file_size = os.fstat(segment_file.fileno()).st_size
            offset = 0
            problem: str | None = None
            while offset < file_size:
                header = segment_file.read(HEADER_SIZE)
                if len(header) < HEADER_SIZE:
                    problem = "torn_tail"
                    break
                parsed = _parse_header(header)
                if parsed is None or parsed[0] <= highest_id or parsed[0] < segment.first_id:
                    problem = "checksum"
                    break
                record_id, tenant_len, span_count, payload_len, appended_at, body_crc = parsed
                size = HEADER_SIZE + tenant_len + payload_len
                if offset + size > file_size:
                    problem = "torn_tail"
                    break
                tenant = segment_file.read(tenant_len)
                crc = zlib.crc32(tenant)
                left = payload_len
                while left:
                    chunk = segment_file.read(min(left, _SCAN_CHUNK))
                    crc = zlib.crc32(chunk, crc)
                    left -= len(chunk)
                if crc != body_crc:
                    problem = "checksum"
                    break
                highest_id = record_id
                if record_id not in acknowledged:
                    refs.append(
                        RecordRef(
                            record_id=record_id,
                            segment=segment.first_id,
                            offset=offset,
                            size=size,
                            tenant=tenant.decode("utf-8", errors="replace"),
                            span_count=span_count,
                            payload_size=payload_len,
                            appended_at=appended_at,
                            was_sending=record_id in sending,
                        )
                    )
                offset += size
            if problem is not None:
                self._notify_skipped(problem, 1, file_size - offset)
                segment_file.truncate(offset)
                os.fsync(segment_file.fileno())
        segment.size = offset
        return refs, highest_id

    # --- appending ---

    def has_room(self, size: int) -> bool:
        """Whether a payload of `size` bytes (with a record header, and a tenant counted as part of the
        payload) fits under max_size_bytes now."""
        with self._lock:
            needed = HEADER_SIZE + size
            return self._used_bytes() + needed <= self.max_size_bytes or self._reclaimable_active_fits(needed)

    async def append(self, tenant: str, span_count: int, payload: bytes) -> RecordRef:
        """Durable on return. Cancelling the caller does not stop the write: such a record stays
        pending, and comes back from the next open()."""
        tenant_bytes = tenant.encode("utf-8")
        if len(tenant_bytes) > MAX_TENANT_BYTES:
            raise ValueError(f"a tenant of {len(tenant_bytes)} bytes is longer than {MAX_TENANT_BYTES}")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"a payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
        if not 0 <= span_count <= MAX_SPAN_COUNT:
            raise ValueError(f"span_count {span_count} is out of range")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RecordRef] = loop.create_future()
        with self._lock:
            if self._writer is None or self._stopping:
                raise QueueStorageError("io_error", "queue storage: the log is not open")
            size = HEADER_SIZE + len(tenant_bytes) + len(payload)
            used = self._used_bytes()
            if used + size > self.max_size_bytes:
                if not self._reclaimable_active_fits(size):
                    raise QueueStorageError(
                        "full",
                        f"queue storage: {size} more bytes would pass the bound of {self.max_size_bytes} "
                        f"({used} in use)",
                    )
                self._abandon_active = True
            self._reserved += size
            record_id = self._next_id
            self._next_id += 1
            self._queue.append(
                _Append(
                    record_id, tenant_bytes, tenant, span_count, payload, self._wall_clock(), loop, future
                )
            )
            self._wakeup.notify()
        return await future

    def _used_bytes(self) -> int:
        return self._segment_bytes + self._state_bytes + self._reserved

    def _reclaimable_active_fits(self, size: int) -> bool:
        """Whether `size` fits once the active segment is gone, when it holds only acknowledged records
        and no append is on its way to it: the next batch then moves to a new segment and deletes it.
        Without this, a bound smaller than a segment could stay full with nothing left to acknowledge."""
        active = self._active
        if active is None or active.pending or self._reserved or not active.size:
            return False
        return self._used_bytes() - active.size - active.state_size + size <= self.max_size_bytes

    def _write_loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._finished and not self._stopping:
                    self._wakeup.wait()
                if not self._queue and not self._finished:
                    return
                batch, self._queue = self._queue, []
                finished, self._finished = self._finished, []
            # Deletions first: the room they make may be what the batch needs on a full disk.
            for segment in finished:
                self._delete_files(segment)
            if not batch:
                continue
            try:
                self._commit(batch)
            except BaseException as error:  # not an OSError: a bug; the callers must still hear of it
                log.exception("queue storage: the writer failed")
                self._release(batch)
                self._settle(batch, None, error)

    def _commit(self, batch: list[_Append]) -> None:
        groups = self._plan(batch)
        made: list[_Group] = []
        commits: list[tuple[float, int, int]] = []  # seconds, records, bytes of each fdatasync
        try:
            for group in groups:
                started = time.perf_counter()
                if group.created:
                    self._open_for_appends(group.segment)
                made.append(group)
                assert group.segment.fd is not None
                buffers: list[bytes] = []
                for item in group.appends:
                    buffers.append(_encode_header(item) + item.tenant)
                    buffers.append(item.payload)
                _write_all(group.segment.fd, buffers)
                os.fdatasync(group.segment.fd)
                size = sum(item.size for item in group.appends)
                commits.append((time.perf_counter() - started, len(group.appends), size))
        except OSError as error:
            self._undo(made)
            self._release(batch)
            self._settle(batch, None, storage_error(error, "appending"))
            return
        refs = self._publish(groups)
        for seconds, records, size in commits:  # counted before the appends return
            self._notify("committed", seconds, records, size)
        self._settle(batch, refs, None)

    def _plan(self, batch: list[_Append]) -> list[_Group]:
        """Splits the batch over segments: a record that would take the active segment past
        segment_size_bytes starts a new one (unless the segment is still empty)."""
        assert self._active is not None
        group = _Group(self._active, self._active.size, created=False)
        groups = [group]
        end = group.start
        move_on = self._abandon_active
        for item in batch:
            if move_on or (end > 0 and end + item.size > self.segment_size_bytes):
                move_on = False
                segment = _Segment(
                    item.record_id, self._segment_path(item.record_id), self._state_path(item.record_id)
                )
                group = _Group(segment, 0, created=True)
                groups.append(group)
                end = 0
            group.appends.append(item)
            end += item.size
        return [group for group in groups if group.appends]

    def _open_for_appends(self, segment: _Segment) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        segment.fd = os.open(segment.path, flags, 0o644)
        try:
            _fsync_directory(self.directory)
        except OSError:
            os.close(segment.fd)
            segment.fd = None
            raise

    def _undo(self, made: list[_Group]) -> None:
        """Cut every segment the failed batch wrote to back to where the batch started; drop the
        segments it created."""
        for group in made:
            segment = group.segment
            if segment.fd is None:
                continue
            if group.created:
                _close_quietly(segment.fd)
                segment.fd = None
                try:
                    segment.path.unlink(missing_ok=True)
                except OSError as error:
                    log.warning("queue storage: could not remove %s: %s", segment.path, error)
                continue
            try:
                os.ftruncate(segment.fd, group.start)
                os.fdatasync(segment.fd)
            except OSError as error:
                # Its end is unknown now: recovery cuts whatever follows the last good record, and
                # appends move on to a new segment.
                log.warning("queue storage: could not cut %s back: %s", segment.path, error)
                self._abandon_active = True

    def _publish(self, groups: list[_Group]) -> list[RecordRef]:
        """Makes a committed batch visible: its records pending, segments grown, the last new segment
        active and the one before it sealed."""
        refs: list[RecordRef] = []
        with self._lock:
            for group in groups:
                segment = group.segment
                offset = group.start
                for item in group.appends:
                    ref = RecordRef(
                        record_id=item.record_id,
                        segment=segment.first_id,
                        offset=offset,
                        size=item.size,
                        tenant=item.tenant_name,
                        span_count=item.span_count,
                        payload_size=len(item.payload),
                        appended_at=item.appended_at,
                    )
                    refs.append(ref)
                    offset += item.size
                    self._pending[item.record_id] = segment
                    self._oldest.append((item.record_id, item.appended_at))
                    self._reserved -= item.size
                    self._segment_bytes += item.size
                segment.pending += len(group.appends)
                segment.size = offset
                if group.created:
                    self._segments[segment.first_id] = segment
                    self._replace_active(segment)
                    self._abandon_active = False
        return refs

    def _replace_active(self, segment: _Segment) -> None:
        old = self._active
        self._active = segment
        if old is None or old is segment:
            return
        old.sealed = True
        if old.fd is not None:
            _close_quietly(old.fd)
            old.fd = None
        if old.pending == 0:
            self._drop(old)

    def _release(self, batch: Iterable[_Append]) -> None:
        with self._lock:
            self._reserved -= sum(item.size for item in batch)

    @staticmethod
    def _settle(batch: list[_Append], refs: list[RecordRef] | None, error: BaseException | None) -> None:
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[RecordRef], RecordRef | None]]
        ] = {}
        for index, item in enumerate(batch):
            by_loop.setdefault(item.loop, []).append((item.future, refs[index] if refs else None))
        for loop, outcomes in by_loop.items():
            # A closed loop raises RuntimeError: nobody waits for these any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, outcomes, error)

    # --- marks and acknowledgements ---

    def mark_sending(self, ref: RecordRef) -> None:
        """Not fsynced: survives the process, comes back as was_sending."""
        with self._lock:
            segment = self._pending.get(ref.record_id)
            if segment is None:
                return
            self._write_state(segment, _SENDING, ref.record_id)

    def acknowledge(self, ref: RecordRef) -> None:
        """The record is done with; not fsynced. A sealed segment with nothing pending leaves
        bytes_on_disk at once; the writer thread deletes its files before it commits its next batch
        (or at close)."""
        with self._lock:
            segment = self._pending.pop(ref.record_id, None)
            if segment is None:
                return
            segment.pending -= 1
            if segment.sealed and segment.pending == 0:
                self._drop(segment)
                return
            self._write_state(segment, _ACKNOWLEDGED, ref.record_id)

    def _write_state(self, segment: _Segment, kind: int, record_id: int) -> None:
        body = _STATE_BODY.pack(kind, record_id)
        entry = body + _STATE_CRC.pack(zlib.crc32(body))
        try:
            if segment.state_fd is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                segment.state_fd = os.open(segment.state_path, flags, 0o644)
            written = os.write(segment.state_fd, entry)
        except OSError as error:
            self._notify("state_write_failed", error)
            return
        segment.state_size += written
        self._state_bytes += written

    def _drop(self, segment: _Segment) -> None:
        """Forgets a finished segment (the lock is held) and has the writer thread delete its files:
        unlinking a 64 MB file takes milliseconds, too long for the event loop acknowledging."""
        self._segments.pop(segment.first_id, None)
        self._segment_bytes -= segment.size
        self._state_bytes -= segment.state_size
        self._close_files_of(segment)
        self._finished.append(segment)
        self._wakeup.notify()

    @staticmethod
    def _close_files_of(segment: _Segment) -> None:
        for fd in (segment.fd, segment.state_fd):
            if fd is not None:
                _close_quietly(fd)
        segment.fd = segment.state_fd = None

    @classmethod
    def _delete_files(cls, segment: _Segment) -> None:
        cls._close_files_of(segment)
        for path in (segment.path, segment.state_path):
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("queue storage: could not remove %s: %s", path, error)

    # --- reading ---

    async def read(self, ref: RecordRef) -> bytes:
        """The record's payload, checked against its checksums again."""
        return await asyncio.to_thread(self._read, ref)

    def _read(self, ref: RecordRef) -> bytes:
        path = self._segment_path(ref.segment)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise storage_error(error, f"reading record {ref.record_id}") from error
        try:
            header = os.pread(fd, HEADER_SIZE + len(ref.tenant.encode("utf-8")), ref.offset)
            parsed = _parse_header(header[:HEADER_SIZE]) if len(header) >= HEADER_SIZE else None
            if parsed is None or parsed[0] != ref.record_id or parsed[3] != ref.payload_size:
                raise QueueStorageError(
                    "corrupt", f"queue storage: record {ref.record_id}'s header is damaged"
                )
            _, tenant_len, _, payload_len, _, body_crc = parsed
            tenant = header[HEADER_SIZE:]
            payload = os.pread(fd, payload_len, ref.offset + HEADER_SIZE + tenant_len)
            if len(tenant) != tenant_len or zlib.crc32(payload, zlib.crc32(tenant)) != body_crc:
                raise QueueStorageError(
                    "corrupt", f"queue storage: record {ref.record_id} fails its checksum"
                )
            return payload
        except OSError as error:
            raise storage_error(error, f"reading record {ref.record_id}") from error
        finally:
            os.close(fd)

    # --- figures ---

    def bytes_on_disk(self) -> int:
        """Segment and state file bytes held, plus the appends reserved and not yet committed."""
        with self._lock:
            return self._used_bytes()

    def pending_records(self) -> int:
        with self._lock:
            return len(self._pending)

    def oldest_appended_at(self) -> float | None:
        with self._lock:
            while self._oldest and self._oldest[0][0] not in self._pending:
                self._oldest.popleft()
            return self._oldest[0][1] if self._oldest else None

    # --- closing ---

    async def close(self) -> None:
        """Lets the appends already made finish, stops the writer, syncs the state files and releases
        the directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        if writer is not None:
            with self._wakeup:
                self._stopping = True
                self._wakeup.notify()
            await asyncio.to_thread(writer.join)
        await asyncio.to_thread(self._close_files)

    def _close_files(self) -> None:
        with self._lock:
            for segment in self._segments.values():
                if segment.state_fd is not None:
                    try:
                        os.fsync(segment.state_fd)
                    except OSError as error:
                        self._notify("state_write_failed", error)
                    _close_quietly(segment.state_fd)
                    segment.state_fd = None
                if segment.fd is not None:
                    _close_quietly(segment.fd)
                    segment.fd = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            _close_quietly(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # --- helpers ---

    def _segment_path(self, first_id: int) -> Path:
        return self.directory / f"{_SEGMENT_PREFIX}{first_id:020d}{_SEGMENT_SUFFIX}"

    def _state_path(self, first_id: int) -> Path:
        return self.directory / f"{_SEGMENT_PREFIX}{first_id:020d}{_STATE_SUFFIX}"

    def _notify_skipped(self, reason: str, records: int, size: int) -> None:
        self._notify("skipped", reason, records, size)

    def _notify(self, method: str, *arguments: object) -> None:
        """An observer's failure is its own: it must not fail an append that is already durable."""
        if self._observer is None:
            return
        handler = getattr(self._observer, method, None)
        if handler is None:
            return
        try:
            handler(*arguments)
        except Exception:
            log.exception("queue storage: the observer's %s failed", method)


def _resolve(
    outcomes: list[tuple[asyncio.Future[RecordRef], RecordRef | None]], error: BaseException | None
) -> None:
    for future, ref in outcomes:
        if future.done():  # cancelled by its caller
            continue
        if error is not None:
            future.set_exception(error)
        else:
            assert ref is not None
            future.set_result(ref)


def _encode_header(item: _Append) -> bytes:
    body_crc = zlib.crc32(item.payload, zlib.crc32(item.tenant))
    body = _HEADER_BODY.pack(
        MAGIC,
        item.record_id,
        len(item.tenant),
        item.span_count,
        len(item.payload),
        item.appended_at,
        body_crc,
    )
    return body + _HEADER_CRC.pack(zlib.crc32(body))


def _parse_header(header: bytes) -> tuple[int, int, int, int, float, int] | None:
    """(record_id, tenant_len, span_count, payload_len, appended_at, body_crc), or None when the header
    fails its checksum."""
    body = header[: _HEADER_BODY.size]
    (header_crc,) = _HEADER_CRC.unpack_from(header, _HEADER_BODY.size)
    if zlib.crc32(body) != header_crc:
        return None
    magic, record_id, tenant_len, span_count, payload_len, appended_at, body_crc = _HEADER_BODY.unpack(body)
    if magic != MAGIC:
        return None
    return record_id, tenant_len, span_count, payload_len, appended_at, body_crc


def _write_all(fd: int, buffers: list[bytes]) -> None:
    """Writes every buffer, in as few os.writev calls as the kernel takes (a call may stop short, for
    instance just before the disk fills: the next one then raises)."""
    views = [memoryview(buffer) for buffer in buffers if buffer]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + _MAX_BUFFERS_PER_WRITE])
        if written <= 0:
            raise OSError(errno.EIO, "writev wrote nothing")
        while written:
            head = views[first]
            if written >= len(head):
                written -= len(head)
                first += 1
            else:
                views[first] = head[written:]
                written = 0


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
