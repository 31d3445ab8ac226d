"""The durable usage ledger: what each tenant used per UTC hour and label values, for chargeback.

Fed by the same attribution as the tracker (same labels, `__missing__`, `__overflow__`), so the bytes a
tenant's hour holds equal the increase of its `tempo_usage_tracker_bytes_received_total` series over
that hour. Usage is summed in memory on the event loop (a few dict operations per request) and written
to a `LedgerStore` in one batch every `flush_period` and on graceful shutdown, off the event loop.

Every flush gets a sequence number; the store keeps recent flushes apart (see `LedgerStore`), so a
reader can ask for "the ledger as of flush N" and page through a consistent snapshot while usage
keeps arriving.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from distributor.common.distinct import DistinctCount
from distributor.common.errors import DistributorError
from distributor.common.lifecycle import BackgroundTaskMetrics, PeriodicTask, Sleep
from distributor.common.usage import NO_USAGE, Usage

log = logging.getLogger(__name__)

HOUR = 3600
# The usage types summed from traces (Datadog's names).
BYTES_USAGE = "ingested_spans_bytes_usage"
SPANS_USAGE = "estimated_ingested_spans_usage"
SUMMED_USAGE_TYPES = (BYTES_USAGE, SPANS_USAGE)
# The distinct counts (Datadog's names), and the kind of count each reads.
SESSIONS_USAGE = "rum_browser_mobile_sessions_usage"
HOSTS_USAGE = "apm_host_usage"
DISTINCT_USAGE_TYPES = {SESSIONS_USAGE: "sessions", HOSTS_USAGE: "hosts"}
# Every usage type the ledger records.
USAGE_TYPES = (*SUMMED_USAGE_TYPES, *DISTINCT_USAGE_TYPES)

Tags = tuple[tuple[str, str], ...]  # (label, value) pairs, sorted by label
T = TypeVar("T")


# Distinct counts a series' hour may carry (distributor/common/distinct.py), by kind.
SESSIONS = "sessions"
HOSTS = "hosts"
DISTINCT_KINDS = (SESSIONS, HOSTS)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What one flush adds to one series in one hour: bytes and spans, and the distinct identities
    (sessions, hosts) it saw, by kind, each a serialized DistinctCount (merged with what is stored, never
    added)."""

    tenant: str
    hour: int  # epoch seconds, UTC, a multiple of 3600
    tags: Tags
    spans_bytes: int
    spans: int
    distinct: tuple[tuple[str, bytes], ...] = ()  # (kind, serialized DistinctCount), kinds distinct


class DistinctRow(NamedTuple):
    """One stored distinct count of a series in an hour (a series may have several per hour: flushes
    not merged yet, other replicas'), which readers merge."""

    hour: int
    tenant: str
    tags: Tags
    serialized: bytes  # a DistinctCount


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int  # the last flush included; 0 when nothing was ever flushed
    flushed_at: float  # wall-clock time of that flush


class UsageRow(NamedTuple):
    """Usage of one series in one period, as stored; a series may have several rows per hour (flushes
    not merged yet), which readers add up. A tuple: a month of a parent org is 100,000 rows."""

    period: int  # the hour or month start, epoch seconds UTC
    tenant: str
    tags: Tags
    spans_bytes: int
    spans: int


class LedgerStore(Protocol):
    """Where the ledger lives (SQLite embedded; PostgreSQL shared by many replicas).

    Implementations are called from one writer thread and one reader thread at a time. A read that
    finds the storage unusable (a corrupted file) raises LedgerUnavailable."""

    def write(self, entries: Sequence[LedgerEntry], flushed_at: float, batch_id: str | None = None) -> int:
        """Add one flush atomically, recording `batch_id` with it (one is made when None); returns its
        sequence number. A batch whose id is stored already (its commit succeeded, but the caller never
        learnt it) adds nothing: the seq it was stored under is returned."""
        ...

    def snapshot(self) -> Snapshot: ...

    def oldest_snapshot(self) -> int:
        """The oldest sequence number a reader can still ask for (older flushes were merged)."""
        ...

    def hourly(self, tenants: Collection[str], start: int, end: int, seq: int) -> list[UsageRow]:
        """Usage rows of hours start <= hour < end, as of flush `seq`."""
        ...

    def monthly(self, tenants: Collection[str], start: int, end: int, seq: int) -> list[UsageRow]:
        """Usage rows of months starting in [start, end), as of flush `seq`."""
        ...

    def monthly_ranked(
        self,
        tenants: Collection[str],
        by_series: Collection[str],
        start: int,
        end: int,
        seq: int,
        order_by: str,
        descending: bool,
        limit: int | None,
        at: tuple[int, int] | None = None,
    ) -> list[UsageRow]:
        """The usage `monthly` reads, summed: one row per (month, tenant, series) for the tenants of
        `tenants` also in `by_series`, with the series' tags, and one per (month, tenant) for the
        others, with tags (); rows whose bytes and spans are both 0 left out. Ordered by the sum of
        `order_by` (BYTES_USAGE or SPANS_USAGE), then by month, both descending or both ascending; rows
        equal in both come in any order. The first `limit` of them (all for None); with `at` =
        (sum of `order_by`, month), only the rows with exactly that sum and month."""
        ...

    def distinct(
        self, tenants: Collection[str], kind: str, start: int, end: int, seq: int
    ) -> list[DistinctRow]:
        """The distinct counts of `kind` of hours start <= hour < end, as of flush `seq`."""
        ...

    def has_distinct(self, tenants: Collection[str], kind: str, start: int, end: int, seq: int) -> bool:
        """Whether `distinct` would return any row (without reading them)."""
        ...

    def label_sets(self, tenants: Collection[str]) -> dict[str, set[tuple[str, ...]]]:
        """For each of `tenants`, the distinct label sets of its series (each its labels sorted, the
        values left out), whatever period or flush they have usage in; an empty set for a tenant
        without series."""
        ...

    def tenants(self) -> list[str]:
        """Every tenant the ledger holds usage for."""
        ...

    def maintain(self, merge_before: float, keep_from_hour: int, keep_from_month: int) -> None:
        """Merge flushes older than `merge_before` (wall clock) and delete usage before the retention."""
        ...

    def secret(self) -> bytes:
        """A random key made once per ledger, shared by every replica that uses it (signs cursors)."""
        ...

    def close(self) -> None: ...


class LedgerUnavailable(DistributorError):
    """The ledger's storage cannot be used (a corrupted file, say): the API answers 503 with this."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"usage ledger unavailable: {reason}")


class UnavailableStore:
    """Stands in for a store that could not be opened, so that the service runs without a ledger:
    every read raises the error that opening it raised; nothing is ever written."""

    def __init__(self, error: LedgerUnavailable) -> None:
        self.error = error

    def write(self, entries: Sequence[LedgerEntry], flushed_at: float, batch_id: str | None = None) -> int:
        raise self.error

    def snapshot(self) -> Snapshot:
        raise self.error

    def oldest_snapshot(self) -> int:
        raise self.error

    def hourly(self, tenants: Collection[str], start: int, end: int, seq: int) -> list[UsageRow]:
        raise self.error

    def monthly(self, tenants: Collection[str], start: int, end: int, seq: int) -> list[UsageRow]:
        raise self.error

    def monthly_ranked(
        self,
        tenants: Collection[str],
        by_series: Collection[str],
        start: int,
        end: int,
        seq: int,
        order_by: str,
        descending: bool,
        limit: int | None,
        at: tuple[int, int] | None = None,
    ) -> list[UsageRow]:
        raise self.error

    def distinct(
        self, tenants: Collection[str], kind: str, start: int, end: int, seq: int
    ) -> list[DistinctRow]:
        raise self.error

    def has_distinct(self, tenants: Collection[str], kind: str, start: int, end: int, seq: int) -> bool:
        raise self.error

    def label_sets(self, tenants: Collection[str]) -> dict[str, set[tuple[str, ...]]]:
        raise self.error

    def tenants(self) -> list[str]:
        raise self.error

    def maintain(self, merge_before: float, keep_from_hour: int, keep_from_month: int) -> None:
        raise self.error

    def secret(self) -> bytes:
        raise self.error

    def close(self) -> None:
        pass


def hour_of(timestamp: float) -> int:
    return int(timestamp // HOUR) * HOUR


def month_of(timestamp: float) -> int:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return calendar.timegm((moment.year, moment.month, 1, 0, 0, 0))


def add_months(month: int, count: int) -> int:
    moment = datetime.fromtimestamp(month, UTC)
    index = moment.year * 12 + moment.month - 1 + count
    return calendar.timegm((index // 12, index % 12 + 1, 1, 0, 0, 0))


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.flushes = Counter(
            "tempo_usage_ledger_flushes_total",
            "Usage ledger flushes, by result (a failed flush keeps its usage for the next one)",
            ["result"],
            registry=registry,
        )
        self.flushed_entries = Counter(
            "tempo_usage_ledger_flushed_entries_total",
            "Series-hours written to the usage ledger",
            registry=registry,
        )
        self.pending_entries = Gauge(
            "tempo_usage_ledger_pending_entries",
            "Series-hours summed in memory, waiting for the next flush",
            registry=registry,
        )
        self.last_flush = Gauge(
            "tempo_usage_ledger_last_successful_flush_timestamp_seconds",
            "Wall-clock time of the last successful flush",
            registry=registry,
        )
        self.unrecorded_bytes = Counter(
            "tempo_usage_ledger_unrecorded_bytes_total",
            "Accepted bytes the ledger could not store, by reason: the final flush at shutdown failed "
            "(shutdown_flush_failed), the ledger is unavailable (ledger_unavailable), or usage waiting "
            "for the store reached max_pending_entries (pending_full)",
            ["tenant", "reason"],
            registry=registry,
        )
        self.unrecorded_spans = Counter(
            "tempo_usage_ledger_unrecorded_spans_total",
            "Accepted spans the ledger could not store, by reason (as for the bytes)",
            ["tenant", "reason"],
            registry=registry,
        )
        self.available = Gauge(
            "tempo_usage_ledger_available",
            "1 while the usage ledger records usage; 0 when its store could not be opened at start "
            "(usage is then counted as unrecorded and the attribution API answers 503)",
            registry=registry,
        )


# (tenant, hour, labels, values)
_PendingKey = tuple[str, int, tuple[str, ...], tuple[str, ...]]

# Why accepted usage was not stored: the `reason` of the unrecorded counters.
SHUTDOWN_FLUSH_FAILED = "shutdown_flush_failed"
LEDGER_UNAVAILABLE = "ledger_unavailable"
PENDING_FULL = "pending_full"


class UsageLedger:
    def __init__(
        self,
        store: LedgerStore,
        metrics: LedgerMetrics,
        flush_period: float,
        retention_months: int,
        merge_after: float,
        wall_clock: Callable[[], float] = time.time,
        *,
        task_metrics: BackgroundTaskMetrics,
        sleep: Sleep = asyncio.sleep,
        max_pending_entries: int = 1_000_000,
    ) -> None:
        self.store = store
        # While the store is down usage waits in memory, one entry per series and hour: this bounds it.
        self.max_pending_entries = max_pending_entries
        self.metrics = metrics
        self.flush_period = flush_period
        self.retention_months = retention_months
        self.merge_after = merge_after
        self._wall_clock = wall_clock
        self._pending: dict[_PendingKey, Usage] = {}
        # The distinct identities (sessions, hosts) each pending series-hour saw, by kind.
        self._pending_distinct: dict[_PendingKey, dict[str, DistinctCount]] = {}
        # A batch whose write failed, retried as it was cut (same id, same usage) before a new one is:
        # its commit may have succeeded unbeknown to us, and its id is what makes the retry harmless.
        self._failed: _Batch | None = None
        # One writer thread (SQLite allows one writer) and one reader thread, each with its connection.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ledger-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="ledger-reader")
        self._flush_lock = asyncio.Lock()
        self._last_maintenance = float("-inf")
        self._periodic_flush = PeriodicTask(
            "usage_ledger_flush", flush_period, self.flush, task_metrics, sleep
        )
        metrics.pending_entries.set_function(self._held_entries)
        # Without a store the service still runs: usage is counted as unrecorded, reads raise.
        self.unavailable = store.error if isinstance(store, UnavailableStore) else None
        metrics.available.set(0 if self.unavailable else 1)

    # -- the hot path (event loop) --------------------------------------------------------------------

    def record(
        self,
        tenant: str,
        labels: tuple[str, ...],
        usage: Mapping[tuple[str, ...], Usage],
        overflowed: Mapping[tuple[str, ...], tuple[str, ...]],
        identities: Mapping[str, Mapping[tuple[str, ...], Collection[int]]] | None = None,
    ) -> None:
        """One accepted request's usage by label values, attributed as the tracker recorded it, and the
        distinct identities (by kind, by label values, as their identity_hash) it carried; kinds other
        than DISTINCT_KINDS are not the ledger's."""
        if self.unavailable is not None:
            self._count_unrecorded(tenant, sum(usage.values(), NO_USAGE), LEDGER_UNAVAILABLE)
            return
        hour = hour_of(self._wall_clock())
        pending = self._pending
        for values, series_usage in usage.items():
            if overflowed:
                values = overflowed.get(values, values)
            key = (tenant, hour, labels, values)
            entry = pending.get(key)
            if entry is not None:
                pending[key] = entry + series_usage
            elif self._held_entries() < self.max_pending_entries:
                pending[key] = series_usage
            else:
                # The store has been failing long enough to fill the bound: a series-hour already held
                # still sums, a new one is counted as unrecorded instead of growing memory.
                self._count_unrecorded(tenant, series_usage, PENDING_FULL)
        if identities:
            self._record_identities(tenant, hour, labels, overflowed, identities)

    def _record_identities(
        self,
        tenant: str,
        hour: int,
        labels: tuple[str, ...],
        overflowed: Mapping[tuple[str, ...], tuple[str, ...]],
        identities: Mapping[str, Mapping[tuple[str, ...], Collection[int]]],
    ) -> None:
        """Into the counts of the series-hours `record` holds (one it could not hold counts nothing)."""
        for kind in DISTINCT_KINDS:
            for values, seen in identities.get(kind, {}).items():
                if overflowed:
                    values = overflowed.get(values, values)
                key = (tenant, hour, labels, values)
                if key not in self._pending:
                    continue
                counts = self._pending_distinct.get(key)
                if counts is None:
                    counts = self._pending_distinct[key] = {}
                count = counts.get(kind)
                if count is None:
                    count = counts[kind] = DistinctCount()
                count.add_hashes(seen)

    def _held_entries(self) -> int:
        return len(self._pending) + (len(self._failed.usage) if self._failed else 0)

    def record_total(self, tenant: str, usage: Usage) -> None:
        """Usage of a tenant without cost-attribution dimensions: one series with no tags."""
        self.record(tenant, (), {(): usage}, {})

    # -- flushing ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.unavailable is None:
            await self._periodic_flush.start()

    async def flush(self) -> bool:
        """Write what was summed since the last flush; True when it is stored (or there was nothing).

        What a flush writes is cut into a batch with an id made then. A batch whose write fails is kept
        apart and retried as it is (same id, same usage) by the next flush, before that one cuts a new
        batch: if its commit went through but the acknowledgement was lost, the store recognises the id
        and does not count it twice. So at most one failed batch is held, next to the usage pending
        since (which, as before, grows while the store is down). Always False while the store is
        unavailable (nothing is held: `record` counts usage as unrecorded at once)."""
        if self.unavailable is not None:
            return False
        async with self._flush_lock:
            now = self._wall_clock()
            if self._failed is not None and not await self._write_failed(now):
                return False
            if self._pending:
                # failed until it is stored
                self._failed = _Batch(uuid.uuid4().hex, self._pending, self._pending_distinct)
                self._pending = {}
                self._pending_distinct = {}
                if not await self._write_failed(now):
                    return False
            self.metrics.flushes.labels("success").inc()
            self.metrics.last_flush.set(now)
            # Apart from the write: the batch is stored by now, whatever happens to the maintenance.
            if now - self._last_maintenance >= min(60.0, self.merge_after):
                self._last_maintenance = now
                try:
                    await self._in_writer(lambda: self._maintain(now))
                except Exception:
                    log.exception("usage ledger maintenance (merging old flushes, retention) failed")
            return True

    async def _write_failed(self, now: float) -> bool:
        """Write the batch held as failed; True (and nothing held) when it is stored."""
        batch = self._failed
        assert batch is not None
        try:
            await self._in_writer(lambda: self.store.write(_entries(batch), now, batch.id))
        except Exception:
            log.exception(
                "usage ledger flush failed; %d series-hours kept for the next flush (and %d recorded since)",
                len(batch.usage),
                len(self._pending),
            )
            self.metrics.flushes.labels("failure").inc()
            return False
        self._failed = None
        self.metrics.flushed_entries.inc(len(batch.usage))
        return True

    def _maintain(self, now: float) -> None:
        keep_from_month = add_months(month_of(now), -self.retention_months)
        self.store.maintain(now - self.merge_after, keep_from_month, keep_from_month)

    async def stop(self, deadline: float) -> None:
        """Stop the periodic flush (a flush under way finishes), flush what is left and release the
        store. Not bound by `deadline`: usage already accepted is stored, or counted as unrecorded."""
        await self._periodic_flush.stop(deadline)
        if self.unavailable is None and not await self.flush():
            # The failed batch too: its write may have committed, but nothing says it did.
            lost: dict[str, Usage] = {}
            for held in (self._failed.usage if self._failed else {}, self._pending):
                for (tenant, *_), usage in held.items():
                    lost[tenant] = lost.get(tenant, NO_USAGE) + usage
            for tenant, usage in sorted(lost.items()):
                self._count_unrecorded(tenant, usage, SHUTDOWN_FLUSH_FAILED)
                log.error(
                    "usage ledger: %d bytes and %d spans of tenant %s were not stored",
                    usage.bytes,
                    usage.spans,
                    tenant,
                )
            self._pending.clear()
            self._pending_distinct.clear()
            self._failed = None
        await self._in_writer(self.store.close)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    def _count_unrecorded(self, tenant: str, usage: Usage, reason: str) -> None:
        self.metrics.unrecorded_bytes.labels(tenant, reason).inc(usage.bytes)
        self.metrics.unrecorded_spans.labels(tenant, reason).inc(usage.spans)

    # -- reading ----------------------------------------------------------------------------------------

    async def read(self, query: Callable[[LedgerStore], T]) -> T:
        """Run a read against the store on the reader thread; LedgerUnavailable when the store cannot be
        read."""
        return await asyncio.get_running_loop().run_in_executor(self._reader, query, self.store)

    async def _in_writer(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, work)


@dataclass(frozen=True, slots=True)
class _Batch:
    """Usage cut from the pending sums for one write, and the id the store records it under."""

    id: str  # uuid4 hex
    usage: dict[_PendingKey, Usage]
    distinct: dict[_PendingKey, dict[str, DistinctCount]]


def _entries(batch: _Batch) -> list[LedgerEntry]:
    """The batch as the store takes it (on the writer thread: serializing the counts is not the loop's
    work; the loop no longer touches a batch once cut)."""
    distinct = batch.distinct
    return [
        LedgerEntry(
            tenant,
            hour,
            tuple(zip(labels, values, strict=True)),
            usage.bytes,
            usage.spans,
            tuple((kind, count.to_bytes()) for kind, count in distinct[key].items())
            if key in distinct
            else (),
        )
        for key, usage in batch.usage.items()
        for tenant, hour, labels, values in (key,)
    ]
