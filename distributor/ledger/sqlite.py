"""The embedded ledger store: one SQLite file in WAL mode.

Tables (periods are epoch seconds, UTC):
- `series(id, tenant, tags)`: each distinct label set once, clustered on (tenant, tags); rows below
  refer to it by id, so grouping and scanning work on integers. Ids are counted on from
  `meta.series_top`; no index on id (readers find ids within their tenants): as a rowid table with a
  (tenant, tags) index, the series rows cost a flush of 200,000 new ones 0.2 s more and the file 40%
  more bytes.
- `hourly(hour, tenant, series, bytes, spans, seq)`: what each flush `seq` added; clustered on
  (hour, tenant, series, seq), so a range of hours of one org is one range scan per hour.
- `monthly(month, tenant, series, bytes, spans)` and `monthly_tenants(month, tenant, bytes, spans)`:
  running totals of every flush stored, per series and per tenant, added to by each flush in its
  transaction. A month as of flush S is its totals less the hourly rows of the flushes after S (not
  merged yet, which `flush_hours` finds): a first page subtracts nothing, and a read never sums more
  than the flushes since its snapshot, where summing every flush not merged yet (up to an hour of them,
  360 at the default `flush_period`) grew with each.
- `hourly_distinct(hour, tenant, series, kind, seq, count)`: the distinct identities (sessions, hosts:
  `kind`) each flush saw per series and hour, a serialized DistinctCount (distributor/common/distinct.py),
  clustered like `hourly`. Counts are never added up but merged, which SQL cannot do: merging flushes
  unions them in Python, and readers union the rows they read (a month is the union of its hours).
- `flush_hours(seq, hour)`: the hours each flush not merged yet wrote, so merging and monthly reads find
  its rows (hourly and distinct) through the clustering key (a `seq` index cost every flush a third of
  its time). Hours of a flush not merged yet are kept until it is, even past the hourly retention
  (unless their month goes).
- `flushes(seq, at, batch_id)`: when each flush happened, and the id of the batch it stored (a batch
  retried after a write whose outcome was unknown is found by it, and not stored twice; ids of merged
  flushes go with their rows, long after any retry). `meta`: the merge horizon, the cursor secret and
  the schema version.

Flushes older than the cursor lifetime are merged into one hourly row per (hour, series) (and one
distinct row per (hour, series, kind)), carrying the newest merged `seq`: reading "as of flush S" stays
exact for every S at or after the horizon, so a paginated answer never changes under its reader.

Several replicas share one ledger on PostgreSQL instead (postgresql.py, the same tables and semantics).
"""

from __future__ import annotations

import contextlib
import json
import operator
import secrets
import sqlite3
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from itertools import compress
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from distributor.common.distinct import DistinctCount, union
from distributor.ledger.ledger import (
    BYTES_USAGE,
    SPANS_USAGE,
    DistinctRow,
    LedgerEntry,
    LedgerUnavailable,
    Snapshot,
    Tags,
    UsageRow,
    month_of,
)

SCHEMA_VERSION = 5
# Version 1 (no `schema` key in meta) wrote every flush to `monthly` too, indexed both tables by seq, and
# kept `series` as a rowid table (the id) with a unique (tenant, tags) index. Version 2 had no
# `flushes.batch_id`. Up to version 3, `monthly` held merged flushes only, per seq, and months were read
# as it plus the hours of the flushes not merged yet. Version 4 had no `hourly_distinct`.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS flushes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, batch_id TEXT UNIQUE
    )""",
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER NOT NULL, tenant TEXT NOT NULL, tags TEXT NOT NULL, PRIMARY KEY (tenant, tags)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS hourly (
        hour INTEGER NOT NULL, tenant TEXT NOT NULL, series INTEGER NOT NULL,
        bytes INTEGER NOT NULL, spans INTEGER NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (hour, tenant, series, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS monthly (
        month INTEGER NOT NULL, tenant TEXT NOT NULL, series INTEGER NOT NULL,
        bytes INTEGER NOT NULL, spans INTEGER NOT NULL, PRIMARY KEY (month, tenant, series)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS monthly_tenants (
        month INTEGER NOT NULL, tenant TEXT NOT NULL, bytes INTEGER NOT NULL, spans INTEGER NOT NULL,
        PRIMARY KEY (month, tenant)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS flush_hours (
        seq INTEGER NOT NULL, hour INTEGER NOT NULL, PRIMARY KEY (seq, hour)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS hourly_distinct (
        hour INTEGER NOT NULL, tenant TEXT NOT NULL, series INTEGER NOT NULL, kind TEXT NOT NULL,
        seq INTEGER NOT NULL, count BLOB NOT NULL, PRIMARY KEY (hour, tenant, series, kind, seq)
    ) WITHOUT ROWID""",
)


def month_of_hour(column: str) -> str:
    """SQL for the UTC month start of an epoch-seconds column (what ledger.month_of computes)."""
    return f"CAST(strftime('%s', {column}, 'unixepoch', 'start of month') AS INTEGER)"


# One encoder for every label set: json.dumps with options builds a new one per call.
_TAGS_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_tags(tags: Tags) -> str:
    """A label set as the `series.tags` column stores it; the same text for the same set, always."""
    return _TAGS_ENCODER.encode(dict(tags))


def _tags_encoder() -> Callable[[Tags], str]:
    """encode_tags for one flush, remembering what it encoded: a label set met again (another tenant's,
    say) costs a dict lookup, and a new one quotes each (label, value) pair once per flush. A flush of
    200,000 new series spent 0.3 s in encode_tags; 0.05 s this way."""
    encoded: dict[Tags, str] = {}
    pairs: dict[tuple[str, str], str] = {}

    def encode_new(tags: Tags) -> str:
        texts = []
        previous = None
        for pair in tags:
            if previous is not None and pair[0] <= previous:
                return encode_tags(tags)  # not sorted by label, or a label twice: what dict() makes of it
            previous = pair[0]
            text = pairs.get(pair)
            if text is None:
                text = pairs[pair] = encode_basestring(pair[0]) + ":" + encode_basestring(pair[1])
            texts.append(text)
        return "{" + ",".join(texts) + "}"

    def encode(tags: Tags) -> str:
        text = encoded.get(tags)
        if text is None:
            text = encoded[tags] = encode_new(tags)
        return text

    return encode


_DISTINCT_OF = operator.attrgetter("distinct")
DistinctKey = tuple[int, str, int, str]  # (hour, tenant, series id, kind)


def flush_distinct_counts(
    entries: Sequence[LedgerEntry], ids: Sequence[int]
) -> list[tuple[int, str, int, str, bytes]]:
    """(hour, tenant, series id, kind, count) of the distinct counts `entries` carry (`ids`: each entry's
    series id), one per (hour, series, kind): counts a flush carries twice are merged. A flush without
    counts costs one pass in C over the entries' `distinct`: 8-10 ms for 200,000 (a Python loop: 20 ms)."""
    if not any(map(_DISTINCT_OF, entries)):
        return []
    counts: dict[DistinctKey, list[bytes]] = {}
    for entry, series in compress(zip(entries, ids, strict=True), map(_DISTINCT_OF, entries)):
        for kind, count in entry.distinct:
            counts.setdefault((entry.hour, entry.tenant, series, kind), []).append(count)
    return [
        (*key, found[0] if len(found) == 1 else union(map(DistinctCount.from_bytes, found)).to_bytes())
        for key, found in counts.items()
    ]


def merged_distinct_counts(
    rows: Iterable[tuple[int, str, int, str, int, bytes]],
) -> tuple[list[tuple[int, str, int, str, int]], list[tuple[bytes, int, str, int, str, int]]]:
    """Merging flushes: of the stored (hour, tenant, series, kind, seq, count) rows, the keys of the
    rows to delete and (count, key) of the rows to update, so that each (hour, series, kind) keeps one
    row, its newest, holding the union of them all. SQL cannot merge counts; this is in Python."""
    groups: dict[DistinctKey, list[tuple[int, bytes]]] = {}
    for hour, tenant, series, kind, seq, count in rows:
        groups.setdefault((hour, tenant, series, kind), []).append((seq, bytes(count)))
    deleted: list[tuple[int, str, int, str, int]] = []
    updated: list[tuple[bytes, int, str, int, str, int]] = []
    for key, found in groups.items():
        if len(found) < 2:
            continue
        newest = max(seq for seq, _ in found)
        deleted.extend((*key, seq) for seq, _ in found if seq != newest)
        merged = union(DistinctCount.from_bytes(count) for _, count in found)
        updated.append((merged.to_bytes(), *key, newest))
    return deleted, updated


# What a flush adds, from `temp.flushed` (see `write`). Its seq is written into the statement.
_ADD_TO_HOURLY = """INSERT INTO hourly
    SELECT hour, tenant, series, bytes, spans, {seq:d} FROM temp.flushed WHERE true
    ON CONFLICT (hour, tenant, series, seq) DO UPDATE
    SET bytes = bytes + excluded.bytes, spans = spans + excluded.spans"""
_ADD_TO_MONTHLY = """INSERT INTO monthly
    SELECT month, tenant, series, bytes, spans FROM temp.flushed WHERE true
    ON CONFLICT (month, tenant, series) DO UPDATE
    SET bytes = bytes + excluded.bytes, spans = spans + excluded.spans"""
_ADD_TO_MONTHLY_TENANTS = """INSERT INTO monthly_tenants
    SELECT month, tenant, SUM(bytes), SUM(spans) FROM temp.flushed GROUP BY month, tenant
    ON CONFLICT (month, tenant) DO UPDATE
    SET bytes = bytes + excluded.bytes, spans = spans + excluded.spans"""


class SqliteLedgerStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        setup = self._connect()
        try:
            # WAL: readers never block the writer; synchronous=NORMAL: a committed flush survives a
            # process crash (only an OS crash can lose the last one).
            setup.execute("PRAGMA journal_mode=WAL")
            setup.execute("BEGIN IMMEDIATE")
            try:
                existing = setup.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hourly'"
                ).fetchone()
                for statement in SCHEMA:
                    setup.execute(statement)
                setup.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('cursor_secret', ?)", (secrets.token_bytes(32),)
                )
                setup.execute("INSERT OR IGNORE INTO meta VALUES ('merged_through', 0)")
                setup.execute("INSERT OR IGNORE INTO meta VALUES ('series_top', 0)")
                setup.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (1 if existing else SCHEMA_VERSION,)
                )
                version = int(setup.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])
                if version == 1:
                    _migrate_from_version_1(setup)
                if version <= 2:
                    _migrate_from_version_2(setup)
                if version <= 3:
                    _migrate_from_version_3(setup)
                if version <= 4:
                    _migrate_from_version_4(setup)
                top = _series_top(setup)
                setup.execute("COMMIT")
            except BaseException:
                setup.execute("ROLLBACK")
                raise
        finally:
            setup.close()
        # Each used from one thread only (the ledger's writer and reader threads).
        self._write: sqlite3.Connection | None = None
        self._read: sqlite3.Connection | None = None
        # By (tenant, tags) as flushes carry them, so a known series costs one dict lookup.
        self._series_ids: dict[tuple[str, Tags], int] = {}
        self._series: dict[int, Tags] = {}
        # The file's highest series id while `_series_ids` holds every series of the file (None when
        # it may not: the file had series before this process opened it). A series missing from the
        # dict is then new, and needs no lookup.
        self._all_series_through: int | None = top if top == 0 else None
        # label_sets of each tenant read, as of the file's highest series id `_label_sets_top`.
        self._label_sets: dict[str, set[tuple[str, ...]]] = {}
        self._label_sets_top: int | None = None

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    @property
    def _writer(self) -> sqlite3.Connection:
        if self._write is None:
            self._write = self._connect()
            self._write.execute("PRAGMA temp_store=MEMORY")
            self._write.execute(
                """CREATE TEMP TABLE flushed (
                    hour INTEGER, month INTEGER, tenant TEXT, series INTEGER, bytes INTEGER, spans INTEGER
                )"""
            )
        return self._write

    @property
    def _reader(self) -> sqlite3.Connection:
        if self._read is None:
            self._read = self._connect()
        return self._read

    # -- writing ----------------------------------------------------------------------------------------

    def write(self, entries: Sequence[LedgerEntry], flushed_at: float, batch_id: str | None = None) -> int:
        """One transaction: the flush, its new series, its hourly rows, its distinct counts, the hours it
        touched, and its usage added to the month totals per series and per tenant (nothing when
        `batch_id` is stored already: then that flush's seq).

        Measured with 200,000 series on the 2-core VM (tests/bench.py row (i)): against the layout of
        version 1 (every flush into `hourly` and a per-flush `monthly`, each with a seq index; an INSERT
        per new series), CPU seconds per write were, series new 1.0-1.1 (was 2.7-2.9), known to the file
        after a restart 1.2-1.3 (was 2.9-3.3), known to the process 0.5 (was 1.6-1.8). The month totals
        (version 4) add ~0.5 s to a flush of known series, SQLite's work of updating 200,000 rows: reads
        of a month no longer sum every flush of the last hour."""
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        added: list[tuple[str, Tags]] = []
        try:
            batch_id = batch_id or uuid.uuid4().hex
            stored = db.execute("SELECT seq FROM flushes WHERE batch_id = ?", (batch_id,)).fetchone()
            if stored is not None:
                db.execute("COMMIT")
                return int(stored[0])
            cursor = db.execute("INSERT INTO flushes (at, batch_id) VALUES (?, ?)", (flushed_at, batch_id))
            seq = cursor.lastrowid
            assert seq is not None
            top_before = _series_top(db)
            ids, top = self._series_of(db, entries, top_before, added)
            hours = {entry.hour for entry in entries}
            months = {hour: month_of(hour) for hour in hours}
            # Bound once, into a table in memory, then added to the hours and months by SQLite: binding
            # the rows again for the months cost a flush of 200,000 series 0.4 s, and summing them per
            # tenant in Python 0.2 s.
            db.execute("DELETE FROM temp.flushed")
            db.executemany(
                "INSERT INTO temp.flushed VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (entry.hour, months[entry.hour], entry.tenant, series, entry.spans_bytes, entry.spans)
                    for entry, series in zip(entries, ids, strict=True)
                ],
            )
            # A flush may carry a series twice in an hour (or a month): the upserts add them up.
            db.execute(_ADD_TO_HOURLY.format(seq=seq))
            db.execute(_ADD_TO_MONTHLY)
            db.execute(_ADD_TO_MONTHLY_TENANTS)
            db.execute("DELETE FROM temp.flushed")
            counts = flush_distinct_counts(entries, ids)
            if counts:
                db.executemany(f"INSERT INTO hourly_distinct VALUES (?, ?, ?, ?, {seq:d}, ?)", counts)
            db.executemany("INSERT INTO flush_hours VALUES (?, ?)", [(seq, hour) for hour in hours])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            for key in added:  # ids made in the rolled-back transaction are gone
                del self._series_ids[key]
            raise
        # Still every series of the file only if it was before this flush (no other writer added any).
        self._all_series_through = top if self._all_series_through == top_before else None
        return seq

    def _series_of(
        self, db: sqlite3.Connection, entries: Sequence[LedgerEntry], top: int, added: list[tuple[str, Tags]]
    ) -> tuple[list[int], int]:
        """The series id of each entry, and the file's highest id after them (`top`: before them).
        Known ones are a dict lookup; unknown ones are looked up in the file in one statement (unless
        this process knows every series of the file), and the rest inserted by one executemany with ids
        counted on from the highest. Each key added to the dict is appended to `added`.

        Whole-list steps rather than a loop per series, and each key hashed as few times as it can be
        (a tuple's hash is not kept): the Python part of a flush of 200,000 new series went from 0.47 s
        to 0.2 s this way."""
        known = self._series_ids
        # A process that knows no series yet (its first flush) need not look any up.
        found: list[int | None] = (
            [known.get((entry.tenant, entry.tags)) for entry in entries] if known else [None] * len(entries)
        )
        if None not in found:
            return found, top  # type: ignore[return-value]  # no None left
        unknown = [index for index, series in enumerate(found) if series is None]
        # Each distinct unknown series gets the next id in order (a series can come twice in one flush:
        # once per hour); it keeps it unless the file holds the series already, which it cannot while
        # this process knows every series of the file. Made that way, `new_ids` goes into `known`
        # without its keys hashed again.
        first = top + 1
        new_ids: dict[tuple[str, Tags], int] = {}
        ids = [
            new_ids.setdefault((entries[index].tenant, entries[index].tags), first + len(new_ids))
            for index in unknown
        ]
        fresh = list(new_ids)
        encode = _tags_encoder()
        tenants = [tenant for tenant, _ in fresh]
        texts = [encode(tags) for _, tags in fresh]
        stored: list[int] | None = None  # the id of each of `fresh`, when not the one given above
        if self._all_series_through == top:
            new_rows = list(zip(new_ids.values(), tenants, texts, strict=True))
        else:
            stored = []
            new_rows = []
            for position, series in enumerate(_series_in_file(db, tenants, texts)):
                if series is None:
                    series = first + len(new_rows)
                    new_rows.append((series, tenants[position], texts[position]))
                stored.append(series)
        top += len(new_rows)
        changes = db.total_changes
        db.executemany("INSERT INTO series VALUES (?, ?, ?) ON CONFLICT DO NOTHING", new_rows)
        if db.total_changes - changes < len(new_rows):
            # Label sets that differ only in order or in a repeated label are stored as one text (or
            # the file holds one this process did not know of): the id the file has for each text.
            stored = _series_in_file(db, tenants, texts)  # type: ignore[assignment]  # all found
        db.execute("UPDATE meta SET value = ? WHERE key = 'series_top'", (top,))
        if stored is not None:
            ids = [stored[series - first] for series in ids]
            new_ids = dict(zip(fresh, stored, strict=True))
        known.update(new_ids)
        added.extend(fresh)
        if len(unknown) == len(found):
            return ids, top
        for index, series in zip(unknown, ids, strict=True):
            found[index] = series
        return found, top  # type: ignore[return-value]  # every None replaced

    def maintain(self, merge_before: float, keep_from_hour: int, keep_from_month: int) -> None:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            merged_through = int(
                db.execute("SELECT value FROM meta WHERE key = 'merged_through'").fetchone()[0]
            )
            horizon_row = db.execute("SELECT MAX(seq) FROM flushes WHERE at < ?", (merge_before,)).fetchone()
            horizon = int(horizon_row[0] or 0)
            if horizon > merged_through:
                _merge_hours(db, merged_through, horizon)
                _merge_distinct(db, merged_through, horizon)
                db.execute("DELETE FROM flush_hours WHERE seq <= ?", (horizon,))
                db.execute("DELETE FROM flushes WHERE seq < ?", (horizon,))
                db.execute("UPDATE meta SET value = ? WHERE key = 'merged_through'", (horizon,))
                merged_through = horizon
            # The hours of flushes not merged yet are what a month is read "as of" an earlier flush
            # with (see `monthly`): they stay until merged, unless their month goes too.
            db.execute(
                "DELETE FROM hourly WHERE hour < :hour AND (seq <= :merged OR hour < :month)",
                {"hour": keep_from_hour, "month": keep_from_month, "merged": merged_through},
            )
            db.execute("DELETE FROM flush_hours WHERE hour < ?", (keep_from_month,))
            # Distinct counts of an hour are what its month's count is the union of: kept as long as
            # the month is.
            db.execute("DELETE FROM hourly_distinct WHERE hour < ?", (keep_from_month,))
            db.execute("DELETE FROM monthly WHERE month < ?", (keep_from_month,))
            db.execute("DELETE FROM monthly_tenants WHERE month < ?", (keep_from_month,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- reading ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A read that finds the file unusable (corrupted, unreadable) raises LedgerUnavailable."""
        try:
            yield
        except sqlite3.DatabaseError as err:
            raise LedgerUnavailable(f"{self.path}: {err}") from err

    def snapshot(self) -> Snapshot:
        with self._reading():
            row = self._reader.execute("SELECT seq, at FROM flushes ORDER BY seq DESC LIMIT 1").fetchone()
        return Snapshot(0, 0.0) if row is None else Snapshot(int(row[0]), float(row[1]))

    def oldest_snapshot(self) -> int:
        with self._reading():
            row = self._reader.execute("SELECT value FROM meta WHERE key = 'merged_through'").fetchone()
        return int(row[0])

    def secret(self) -> bytes:
        with self._reading():
            row = self._reader.execute("SELECT value FROM meta WHERE key = 'cursor_secret'").fetchone()
        return bytes(row[0])

    def tenants(self) -> list[str]:
        """From the month totals, which retention prunes (series stay): a few rows per tenant."""
        with self._reading():
            found = self._reader.execute("SELECT DISTINCT tenant FROM monthly_tenants ORDER BY tenant")
            return [row[0] for row in found]

    def hourly(self, tenants: Collection[str], start: int, end: int, seq: int) -> list[UsageRow]:
        with self._reading():
            return self._rows("hourly", "hour", tenants, start, end, seq)

    def distinct(
        self, tenants: Collection[str], kind: str, start: int, end: int, seq: int
    ) -> list[DistinctRow]:
        """Every stored count of `kind` of the hours, up to flush `seq`: merged flushes' one row per
        (hour, series), and one per flush after them (the caller merges them)."""
        if not tenants:
            return []
        marks = ",".join("?" * len(tenants))
        with self._reading():
            found = self._reader.execute(
                f"""SELECT hour, tenant, series, count FROM hourly_distinct
                WHERE hour >= ? AND hour < ? AND tenant IN ({marks}) AND kind = ? AND seq <= ?""",
                (start, end, *tenants, kind, seq),
            ).fetchall()
            series = self._tags_of(found)
        return [DistinctRow(hour, tenant, series[ident], count) for hour, tenant, ident, count in found]

    def has_distinct(self, tenants: Collection[str], kind: str, start: int, end: int, seq: int) -> bool:
        if not tenants:
            return False
        marks = ",".join("?" * len(tenants))
        with self._reading():
            found = self._reader.execute(
                f"""SELECT 1 FROM hourly_distinct
                WHERE hour >= ? AND hour < ? AND tenant IN ({marks}) AND kind = ? AND seq <= ? LIMIT 1""",
                (start, end, *tenants, kind, seq),
            ).fetchone()
        return found is not None

    def monthly(self, tenants: Collection[str], start: int, end: int, seq: int) -> list[UsageRow]:
        """One row per series: its running total, less the hours of the flushes after `seq`, in one
        snapshot of the file (even if a flush commits meanwhile)."""
        if not tenants:
            return []
        listed = json.dumps(sorted(tenants))
        parameters = {"start": start, "end": end, "seq": seq, "tenants": listed, "by_series": listed}
        with self._reading(), self._snapshot() as db:
            later, series, _ = _months_as_of(db, parameters)
            found = db.execute(f"{later} SELECT * FROM ({series}) WHERE b != 0 OR s != 0", parameters)
            return self._usage_rows(found.fetchall())

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
        """The running totals as of `seq` (see `monthly`), ordered and cut in SQL: rows of series from
        `monthly`, rows of orgs from `monthly_tenants`, so nothing is summed but the hours of flushes
        after `seq` (none on a first page)."""
        if not tenants:
            return []
        column = _USAGE_COLUMNS[order_by]
        direction = "DESC" if descending else "ASC"
        series = set(by_series) & set(tenants)
        parameters: dict[str, object] = {
            "start": start,
            "end": end,
            "seq": seq,
            "tenants": json.dumps(sorted(tenants)),
            "by_series": json.dumps(sorted(series)),
            "by_tenant": json.dumps(sorted(set(tenants) - series)),
        }
        kept = "WHERE (b != 0 OR s != 0)"
        if at is not None:
            kept += f" AND {column} = :at_sum AND month = :at_month"
            parameters |= {"at_sum": at[0], "at_month": at[1]}
        cut = ""
        if limit is not None:
            cut = "LIMIT :limit"
            parameters["limit"] = limit
        with self._reading(), self._snapshot() as db:
            later, series_rows, tenant_rows = _months_as_of(db, parameters)
            found = db.execute(
                f"""{later} SELECT * FROM ({series_rows} UNION ALL {tenant_rows}) {kept}
                ORDER BY {column} {direction}, month {direction} {cut}""",
                parameters,
            ).fetchall()
            return self._usage_rows(found)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """The reader in a transaction: its statements see one state of the file."""
        db = self._reader
        db.execute("BEGIN")
        try:
            yield db
        finally:
            if db.in_transaction:  # a failed read may have ended it
                db.execute("COMMIT")

    def label_sets(self, tenants: Collection[str]) -> dict[str, set[tuple[str, ...]]]:
        """Remembered per tenant as of the file's highest series id (`meta.series_top`): reading them
        parses the tags of every series of the tenants (0.14 s for 100,000); once a tenant is known,
        only series added since are read (ids are counted up, and series are never deleted), which
        scans the ids of every series (10 ms for 100,000) but parses only theirs."""
        with self._reading():
            db = self._reader
            top = _series_top(db)
            known = self._label_sets
            if self._label_sets_top is not None and top != self._label_sets_top and known:
                for tenant, labels in db.execute(
                    f"SELECT tenant, {_LABELS} FROM series WHERE id > ? AND id <= ?",
                    (self._label_sets_top, top),
                ):
                    if tenant in known:
                        known[tenant].add(tuple(sorted(json.loads(labels))))
            self._label_sets_top = top
            missing = [tenant for tenant in tenants if tenant not in known]
            for chunk in range(0, len(missing), 500):
                some = missing[chunk : chunk + 500]
                found: dict[str, set[tuple[str, ...]]] = {tenant: set() for tenant in some}
                for tenant, labels in db.execute(
                    f"""SELECT tenant, {_LABELS} AS labels FROM series
                    WHERE tenant IN ({",".join("?" * len(some))}) GROUP BY tenant, labels""",
                    some,
                ):
                    found[tenant].add(tuple(sorted(json.loads(labels))))
                known.update(found)  # only once read whole: a failed read leaves none half-known
        return {tenant: set(known[tenant]) for tenant in tenants}

    def _rows(
        self, table: str, period: str, tenants: Collection[str], start: int, end: int, seq: int
    ) -> list[UsageRow]:
        if not tenants:
            return []
        marks = ",".join("?" * len(tenants))
        # No GROUP BY: merged series have one row per period already, and the caller adds up rows
        # anyway (grouping by tags); SQLite's grouping cost 140 ms of 230 over 100,000 rows.
        found = self._reader.execute(
            f"""SELECT {period}, tenant, series, bytes, spans FROM {table}
            WHERE {period} >= ? AND {period} < ? AND tenant IN ({marks}) AND seq <= ?""",
            (start, end, *tenants, seq),
        ).fetchall()
        return self._usage_rows(found)

    def _usage_rows(self, found: list[tuple[int, str, int | None, int, int]]) -> list[UsageRow]:
        """(period, tenant, series id, bytes, spans) rows with their series' tags (() for no series)."""
        series = self._tags_of(found)
        return [
            UsageRow(when, tenant, () if series_id is None else series[series_id], size, spans)
            for when, tenant, series_id, size, spans in found
        ]

    def _tags_of(self, found: Sequence[tuple[Any, ...]]) -> dict[int, Tags]:
        """The tags of every series id of rows (_, tenant, series id or None, ...), by id: those this
        process has not read yet are read from the file (by tenant: the key's first column)."""
        db = self._reader
        series = self._series
        missing: dict[str, set[int]] = {}
        for row in found:
            if row[2] is not None and row[2] not in series:
                missing.setdefault(row[1], set()).add(row[2])
        for tenant, wanted in missing.items():
            ids = sorted(wanted)
            for chunk in range(0, len(ids), 500):
                some = ids[chunk : chunk + 500]
                for series_id, tags in db.execute(
                    f"SELECT id, tags FROM series WHERE tenant = ? AND id IN ({','.join('?' * len(some))})",
                    (tenant, *some),
                ):
                    series[series_id] = tuple(sorted(json.loads(tags).items()))
        return series

    def close(self) -> None:
        for connection in (self._write, self._read):
            if connection is not None:
                connection.close()
        self._write = self._read = None


_USAGE_COLUMNS = {BYTES_USAGE: "b", SPANS_USAGE: "s"}
# What a month read "as of flush S" (`:seq`) reads: `monthly` and `monthly_tenants` hold the sums of every
# flush stored; the hourly rows of the flushes after S (not merged yet: `flush_hours` lists their hours,
# read first in the same transaction) are taken from them. Tenants are JSON arrays. Rows whose sum as of
# S is 0 and 0 are the caller's to leave out.
_LATER = f"""WITH later AS MATERIALIZED (
        SELECT {month_of_hour("hour")} AS month, tenant, series, SUM(bytes) AS bytes, SUM(spans) AS spans
        FROM hourly
        WHERE hour IN (SELECT value FROM json_each(:hours)) AND seq > :seq
        AND tenant IN (SELECT value FROM json_each(:tenants))
        GROUP BY 1, tenant, series)"""
_SERIES_LESS_LATER = """SELECT totals.month AS month, totals.tenant AS tenant, totals.series AS series,
        totals.bytes - COALESCE(later.bytes, 0) AS b, totals.spans - COALESCE(later.spans, 0) AS s
    FROM monthly AS totals LEFT JOIN later
    ON later.month = totals.month AND later.tenant = totals.tenant AND later.series = totals.series
    WHERE totals.month >= :start AND totals.month < :end
    AND totals.tenant IN (SELECT value FROM json_each(:by_series))"""
_TENANTS_LESS_LATER = """SELECT totals.month, totals.tenant, NULL,
        totals.bytes - COALESCE(later.bytes, 0), totals.spans - COALESCE(later.spans, 0)
    FROM monthly_tenants AS totals LEFT JOIN (
        SELECT month, tenant, SUM(bytes) AS bytes, SUM(spans) AS spans FROM later GROUP BY month, tenant
    ) AS later ON later.month = totals.month AND later.tenant = totals.tenant
    WHERE totals.month >= :start AND totals.month < :end
    AND totals.tenant IN (SELECT value FROM json_each(:by_tenant))"""
# With no flush after S (every first page): the totals as they are.
_SERIES = """SELECT month, tenant, series, bytes AS b, spans AS s FROM monthly
    WHERE month >= :start AND month < :end AND tenant IN (SELECT value FROM json_each(:by_series))"""
_TENANTS = """SELECT month, tenant, NULL, bytes, spans FROM monthly_tenants
    WHERE month >= :start AND month < :end AND tenant IN (SELECT value FROM json_each(:by_tenant))"""


def _months_as_of(db: sqlite3.Connection, parameters: dict[str, object]) -> tuple[str, str, str]:
    """(WITH clause, series rows, tenant rows) of a month read as of flush `parameters["seq"]`, for a
    statement in the same transaction: its `hours` are set in `parameters`."""
    hours = [row[0] for row in db.execute(_HOURS_AFTER, (parameters["seq"],))]
    if not hours:
        return "", _SERIES, _TENANTS
    parameters["hours"] = json.dumps(hours)
    return _LATER, _SERIES_LESS_LATER, _TENANTS_LESS_LATER


_HOURS_AFTER = "SELECT DISTINCT hour FROM flush_hours WHERE seq > ?"
# The labels of a series' tags, as a JSON array.
_LABELS = "(SELECT json_group_array(key) FROM json_each(series.tags))"


def _series_in_file(db: sqlite3.Connection, tenants: list[str], texts: list[str]) -> list[int | None]:
    """The id the file holds for each (tenant, tags text), None for one it does not hold: one statement,
    the pairs passed as one JSON text."""
    ids: list[int | None] = [None] * len(tenants)
    for position, series in db.execute(
        """SELECT item.key, series.id FROM json_each(?) AS item
        JOIN series ON series.tenant = json_extract(item.value, '$[0]')
        AND series.tags = json_extract(item.value, '$[1]')""",
        (json.dumps(list(zip(tenants, texts, strict=True)), ensure_ascii=False),),
    ):
        ids[position] = series
    return ids


def _series_top(db: sqlite3.Connection) -> int:
    """The highest series id the file holds (ids of new series are counted on from it)."""
    return int(db.execute("SELECT value FROM meta WHERE key = 'series_top'").fetchone()[0])


def _merge_hours(db: sqlite3.Connection, after: int, through: int) -> None:
    """One `hourly` row per (hour, series) for everything up to flush `through`; only series that some
    flush since the last merge touched can have more than one such row, in the hours it wrote."""
    db.execute("DROP TABLE IF EXISTS temp.merged")
    db.execute(
        """CREATE TEMP TABLE merged AS
        SELECT hour, tenant, series, SUM(bytes) AS bytes, SUM(spans) AS spans, MAX(seq) AS seq
        FROM hourly
        WHERE hour IN (SELECT hour FROM flush_hours WHERE seq > :after AND seq <= :through)
        AND seq <= :through AND (hour, tenant, series) IN (
            SELECT hour, tenant, series FROM hourly
            WHERE hour IN (SELECT hour FROM flush_hours WHERE seq > :after AND seq <= :through)
            AND seq > :after AND seq <= :through)
        GROUP BY hour, tenant, series HAVING COUNT(*) > 1""",
        {"after": after, "through": through},
    )
    db.execute(
        """DELETE FROM hourly WHERE seq <= :through
        AND (hour, tenant, series) IN (SELECT hour, tenant, series FROM temp.merged)""",
        {"through": through},
    )
    db.execute("INSERT INTO hourly SELECT hour, tenant, series, bytes, spans, seq FROM temp.merged")
    db.execute("DROP TABLE temp.merged")


def _merge_distinct(db: sqlite3.Connection, after: int, through: int) -> None:
    """One `hourly_distinct` row per (hour, series, kind) for everything up to flush `through`, the
    union of the counts, under the newest seq of them (as `_merge_hours` does): read, in the hours
    `flush_hours` lists for the flushes merged, are the keys with more than one row that one of them
    wrote."""
    deleted, updated = merged_distinct_counts(
        db.execute(
            """SELECT hour, tenant, series, kind, seq, count FROM hourly_distinct
            WHERE hour IN (SELECT hour FROM flush_hours WHERE seq > :after AND seq <= :through)
            AND seq <= :through AND (hour, tenant, series, kind) IN (
                SELECT hour, tenant, series, kind FROM hourly_distinct
                WHERE hour IN (SELECT hour FROM flush_hours WHERE seq > :after AND seq <= :through)
                AND seq <= :through
                GROUP BY hour, tenant, series, kind HAVING COUNT(*) > 1 AND MAX(seq) > :after)""",
            {"after": after, "through": through},
        )
    )
    db.executemany(
        "DELETE FROM hourly_distinct WHERE hour = ? AND tenant = ? AND series = ? AND kind = ? AND seq = ?",
        deleted,
    )
    db.executemany(
        """UPDATE hourly_distinct SET count = ?
        WHERE hour = ? AND tenant = ? AND series = ? AND kind = ? AND seq = ?""",
        updated,
    )


def _migrate_from_version_1(db: sqlite3.Connection) -> None:
    """A version 1 file wrote each flush to `monthly` as well: those rows of flushes not merged yet are
    what reads now sum from `hourly`, so their hourly part leaves `monthly` (what is left, usage of
    hours retention deleted, stays there). Then the hours those flushes wrote go to `flush_hours`, and
    the seq indexes go. Runs inside the opening transaction: a crash leaves a version 1 file."""
    merged = int(db.execute("SELECT value FROM meta WHERE key = 'merged_through'").fetchone()[0])
    db.execute("DROP TABLE IF EXISTS temp.recent")
    db.execute(
        f"""CREATE TEMP TABLE recent AS
        SELECT {month_of_hour("hour")} AS month, tenant, series, seq, SUM(bytes) AS bytes, SUM(spans) AS spans
        FROM hourly WHERE seq > ? GROUP BY month, tenant, series, seq""",
        (merged,),
    )
    db.execute(
        """UPDATE monthly SET (bytes, spans) = (
            SELECT monthly.bytes - recent.bytes, monthly.spans - recent.spans FROM temp.recent AS recent
            WHERE (recent.month, recent.tenant, recent.series, recent.seq)
                = (monthly.month, monthly.tenant, monthly.series, monthly.seq))
        WHERE (month, tenant, series, seq) IN (SELECT month, tenant, series, seq FROM temp.recent)"""
    )
    db.execute("DELETE FROM monthly WHERE seq > ? AND bytes = 0 AND spans = 0", (merged,))
    db.execute("DROP TABLE temp.recent")
    db.execute(
        "INSERT OR IGNORE INTO flush_hours SELECT DISTINCT seq, hour FROM hourly WHERE seq > ?", (merged,)
    )
    db.execute("ALTER TABLE series RENAME TO series_version_1")
    db.execute(SCHEMA[2])
    db.execute("INSERT INTO series SELECT id, tenant, tags FROM series_version_1")
    db.execute("DROP TABLE series_version_1")
    db.execute("UPDATE meta SET value = (SELECT COALESCE(MAX(id), 0) FROM series) WHERE key = 'series_top'")
    db.execute("DROP INDEX IF EXISTS hourly_by_seq")
    db.execute("DROP INDEX IF EXISTS monthly_by_seq")
    db.execute("UPDATE meta SET value = 2 WHERE key = 'schema'")


def _migrate_from_version_2(db: sqlite3.Connection) -> None:
    """Flushes record their batch id from version 3 on; those stored before have none (NULL, which a
    UNIQUE column allows any number of). In the opening transaction, like version 1's."""
    db.execute("ALTER TABLE flushes ADD COLUMN batch_id TEXT")
    db.execute("CREATE UNIQUE INDEX flushes_by_batch_id ON flushes (batch_id)")
    db.execute("UPDATE meta SET value = 3 WHERE key = 'schema'")


def _migrate_from_version_3(db: sqlite3.Connection) -> None:
    """From version 4 on, `monthly` and `monthly_tenants` hold the sums of every flush stored, kept by
    each flush: made here from the merged months (and the hours retention moved there) plus the hours
    of the flushes not merged yet. Every flush is merged on the way: a month "as of" an earlier flush is
    now its totals less the hours of the flushes after it, and the hours that retention moved to
    `monthly` are no longer there to take (cursors made before the migration expire). In the opening
    transaction, like the others."""
    merged = int(db.execute("SELECT value FROM meta WHERE key = 'merged_through'").fetchone()[0])
    newest = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM flushes").fetchone()[0])
    db.execute("ALTER TABLE monthly RENAME TO monthly_version_3")
    db.execute(SCHEMA[4])
    db.execute(
        f"""INSERT INTO monthly
        SELECT month, tenant, series, SUM(bytes), SUM(spans) FROM (
            SELECT month, tenant, series, bytes, spans FROM monthly_version_3
            UNION ALL
            SELECT {month_of_hour("hour")}, tenant, series, bytes, spans FROM hourly
            WHERE seq > (SELECT value FROM meta WHERE key = 'merged_through'))
        GROUP BY month, tenant, series"""
    )
    db.execute(
        """INSERT INTO monthly_tenants
        SELECT month, tenant, SUM(bytes), SUM(spans) FROM monthly GROUP BY month, tenant"""
    )
    db.execute("DROP TABLE monthly_version_3")
    if newest > merged:
        _merge_hours(db, merged, newest)
        db.execute("DELETE FROM flush_hours WHERE seq <= ?", (newest,))
        db.execute("DELETE FROM flushes WHERE seq < ?", (newest,))
        db.execute("UPDATE meta SET value = ? WHERE key = 'merged_through'", (newest,))
    db.execute("UPDATE meta SET value = 4 WHERE key = 'schema'")


def _migrate_from_version_4(db: sqlite3.Connection) -> None:
    """Version 5 adds `hourly_distinct`, made with the other tables at open (a ledger of version 4 has
    no distinct counts, so nothing moves). In the opening transaction, like the others."""
    db.execute("UPDATE meta SET value = 5 WHERE key = 'schema'")
