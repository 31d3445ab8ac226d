"""The shared ledger store: PostgreSQL, one database (or schema) for every replica of the service.

psycopg 3's synchronous API rather than asyncpg: `LedgerStore` is synchronous by design, called from the
ledger's writer and reader threads off the event loop, so an async driver would only add a loop per
thread; psycopg_pool hands those threads their connections.

The tables are those of the SQLite store (see sqlite.py for what each holds), with the same semantics:
hourly rows per flush `seq`, running month totals per series (`monthly`) and per tenant
(`monthly_tenants`), distinct counts per flush (`hourly_distinct`, merged in Python), `flush_hours`,
`flushes`, `meta`; reads "as of flush S" (hours and distinct counts: `seq <= S`; months:
the totals less the hours of the flushes after S), merging of flushes older than the cursor lifetime,
retention. Here a trigger on `hourly` adds every inserted row to the month totals, so the totals hold
whatever writes the hours (a replica of an older version during a rolling upgrade included); merging
updates and deletes hourly rows, never inserts them (`hourly_distinct` has no trigger: merging its rows
updates and deletes them too). What several writers change:
- Flush numbers follow commit order: a write takes a transaction-scoped advisory lock before it picks
  its seq (one more than the highest) and holds it until its commit, so once a reader sees flush S,
  no flush below S can still appear; a snapshot's pages neither repeat nor skip. Merging and retention
  take the same lock (two replicas must not fold the same rows twice).
- Series ids come from a sequence; the (tenant, tags) pairs a flush does not know are looked up, and
  only the missing ones inserted, under that lock.
- Every flush records the id of its batch (`flushes.batch_id`, unique): a batch retried after its
  commit's acknowledgement was lost is recognised and not stored twice.
- The schema is versioned: `schema_migrations` lists the migrations applied (MIGRATIONS below), applied
  at open under a session advisory lock, so replicas starting together migrate once. A database whose
  schema is newer than this code is refused (`SchemaTooNew`). The cursor secret is made once, there too.

Advisory lock keys are (a constant per purpose, a hash of the current schema), so ledgers in different
schemas of one database do not wait for each other.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from distributor.common.postgres_migrations import SCHEMA_HASH, apply_migrations, connection_pool
from distributor.ledger.config import mask_dsns_in
from distributor.ledger.ledger import (
    BYTES_USAGE,
    SPANS_USAGE,
    DistinctRow,
    LedgerEntry,
    LedgerUnavailable,
    Snapshot,
    Tags,
    UsageRow,
)
from distributor.ledger.sqlite import encode_tags, flush_distinct_counts, merged_distinct_counts

# pg_advisory_lock's first key, per purpose (the second is the schema's hash): "ledger migrations" and
# "ledger writes" as two arbitrary constants.
MIGRATION_LOCK = 0x1ED6E701
WRITE_LOCK = 0x1ED6E702


def month_of_hour(column: str) -> str:
    """SQL for the UTC month start of an epoch-seconds column (what ledger.month_of computes)."""
    return f"EXTRACT(EPOCH FROM date_trunc('month', to_timestamp({column}) AT TIME ZONE 'UTC'))::BIGINT"


# (version, what it does, statements): applied in order, each in its own transaction. Append only.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "the ledger tables",
        (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE flushes (
                seq BIGINT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, batch_id TEXT NOT NULL UNIQUE
            )""",
            "CREATE SEQUENCE series_ids",
            """CREATE TABLE series (
                id BIGINT NOT NULL UNIQUE, tenant TEXT NOT NULL, tags TEXT NOT NULL,
                PRIMARY KEY (tenant, tags)
            )""",
            """CREATE TABLE hourly (
                hour BIGINT NOT NULL, tenant TEXT NOT NULL, series BIGINT NOT NULL,
                bytes BIGINT NOT NULL, spans BIGINT NOT NULL, seq BIGINT NOT NULL,
                PRIMARY KEY (hour, tenant, series, seq)
            )""",
            """CREATE TABLE monthly (
                month BIGINT NOT NULL, tenant TEXT NOT NULL, series BIGINT NOT NULL,
                bytes BIGINT NOT NULL, spans BIGINT NOT NULL, seq BIGINT NOT NULL,
                PRIMARY KEY (month, tenant, series, seq)
            )""",
            "CREATE TABLE flush_hours (seq BIGINT NOT NULL, hour BIGINT NOT NULL, PRIMARY KEY (seq, hour))",
            "INSERT INTO meta VALUES ('merged_through', '0')",
        ),
    ),
    (
        2,
        "running monthly totals per series and per tenant, kept by a trigger on hourly",
        (
            # No flush may commit while the totals are summed from what is stored.
            f"SELECT pg_advisory_xact_lock({WRITE_LOCK}, {SCHEMA_HASH})",
            "ALTER TABLE monthly RENAME TO monthly_by_flush",
            # Every flush updates the rows of the series it carries: room left in each page lets the
            # new version go beside the old one without touching the index (a flush of 10,000 known
            # series 0.30-0.40 s -> 0.18-0.33 s).
            """CREATE TABLE monthly (
                month BIGINT NOT NULL, tenant TEXT NOT NULL, series BIGINT NOT NULL,
                bytes BIGINT NOT NULL, spans BIGINT NOT NULL, PRIMARY KEY (month, tenant, series)
            ) WITH (fillfactor = 70)""",
            """CREATE TABLE monthly_tenants (
                month BIGINT NOT NULL, tenant TEXT NOT NULL, bytes BIGINT NOT NULL, spans BIGINT NOT NULL,
                PRIMARY KEY (month, tenant)
            ) WITH (fillfactor = 70)""",
            # Everything stored: merged months (and hours retention moved there), and the hours of the
            # flushes not merged yet.
            f"""INSERT INTO monthly
            SELECT month, tenant, series, SUM(bytes)::BIGINT, SUM(spans)::BIGINT FROM (
                SELECT month, tenant, series, bytes, spans FROM monthly_by_flush
                UNION ALL
                SELECT {month_of_hour("hour")}, tenant, series, bytes, spans FROM hourly
                WHERE seq > (SELECT value::BIGINT FROM meta WHERE key = 'merged_through')
            ) AS stored GROUP BY month, tenant, series""",
            """INSERT INTO monthly_tenants
            SELECT month, tenant, SUM(bytes)::BIGINT, SUM(spans)::BIGINT FROM monthly
            GROUP BY month, tenant""",
            "DROP TABLE monthly_by_flush",
            f"""CREATE FUNCTION ledger_add_to_months() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO monthly
                SELECT {month_of_hour("hour")} AS month, tenant, series, SUM(bytes)::BIGINT,
                       SUM(spans)::BIGINT
                FROM added GROUP BY 1, tenant, series
                ON CONFLICT (month, tenant, series) DO UPDATE
                SET bytes = monthly.bytes + excluded.bytes, spans = monthly.spans + excluded.spans;
                INSERT INTO monthly_tenants
                SELECT {month_of_hour("hour")} AS month, tenant, SUM(bytes)::BIGINT, SUM(spans)::BIGINT
                FROM added GROUP BY 1, tenant
                ON CONFLICT (month, tenant) DO UPDATE
                SET bytes = monthly_tenants.bytes + excluded.bytes,
                    spans = monthly_tenants.spans + excluded.spans;
                RETURN NULL;
            END $$""",
            """CREATE TRIGGER hourly_added_to_months AFTER INSERT ON hourly
            REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION ledger_add_to_months()""",
        ),
    ),
    (
        3,
        "distinct counts (sessions, hosts) per flush, series, hour and kind",
        (
            """CREATE TABLE hourly_distinct (
                hour BIGINT NOT NULL, tenant TEXT NOT NULL, series BIGINT NOT NULL, kind TEXT NOT NULL,
                seq BIGINT NOT NULL, count BYTEA NOT NULL, PRIMARY KEY (hour, tenant, series, kind, seq)
            )""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaTooNew(Exception):
    """The database was migrated by a newer version of the distributor than this one."""

    def __init__(self, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"the ledger database has schema version {found}, newer than the {known} this distributor "
            "knows: run a distributor at least as new as the one that migrated it"
        )


def migrate(dsn: str, connect_timeout: float = 10.0) -> tuple[int, int]:
    """Bring the database's schema up to SCHEMA_VERSION, once however many replicas start together;
    makes the cursor secret if there is none. Returns (version before, version after); SchemaTooNew
    when the database is newer than this code."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout))) as db:

        def make_secret() -> None:
            db.execute(
                "INSERT INTO meta VALUES ('cursor_secret', %s) ON CONFLICT (key) DO NOTHING",
                (secrets.token_hex(32),),
            )

        too_new = lambda found: SchemaTooNew(found, SCHEMA_VERSION)  # noqa: E731
        before = apply_migrations(db, "schema_migrations", MIGRATIONS, MIGRATION_LOCK, too_new, make_secret)
    return before, SCHEMA_VERSION


class PostgresLedgerStore:
    def __init__(
        self, dsn: str, min_size: int = 1, max_size: int = 4, timeout: float = 10.0, *, name: str = "ledger"
    ) -> None:
        """Migrates the schema (see `migrate`), then opens the pool; psycopg.Error or PoolTimeout when
        the database cannot be reached, SchemaTooNew when its schema is newer than this code."""
        migrate(dsn, timeout)
        # Never prepared: a prepared statement's generic plan cannot hash a `tenant = ANY(...)` list it
        # does not know, and compares each row with every tenant instead (a parent's month of 100,000
        # series went from 40 ms to 250-430 ms from the sixth read on).
        self._pool = connection_pool(dsn, min_size, max_size, timeout, name, prepare_threshold=None)
        self._pool.open(wait=min_size > 0, timeout=timeout)
        # Series ids by (tenant, tags) as flushes carry them (ids never change once committed), and tags
        # by id for readers.
        self._series_ids: dict[tuple[str, Tags], int] = {}
        self._series: dict[int, Tags] = {}
        # label_sets of each tenant read, as of the highest series id `_label_sets_top` (ids are taken
        # from a sequence under the write lock, so a series committed later always has a higher one).
        self._label_sets: dict[str, set[tuple[str, ...]]] = {}
        self._label_sets_top: int | None = None

    # -- writing ----------------------------------------------------------------------------------------

    def write(self, entries: Sequence[LedgerEntry], flushed_at: float, batch_id: str | None = None) -> int:
        """One transaction under the write lock: the flush (unless `batch_id` was stored already: then
        its seq), its new series, its hourly rows, its distinct counts and the hours it touched."""
        batch_id = batch_id or uuid.uuid4().hex
        added: list[tuple[str, Tags]] = []
        try:
            with self._pool.connection() as db:
                db.execute(f"SELECT pg_advisory_xact_lock(%s, {SCHEMA_HASH})", (WRITE_LOCK,))
                stored = db.execute("SELECT seq FROM flushes WHERE batch_id = %s", (batch_id,)).fetchone()
                if stored is not None:
                    return int(stored[0])
                row = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM flushes").fetchone()
                assert row is not None
                seq = int(row[0])
                db.execute("INSERT INTO flushes VALUES (%s, %s, %s)", (seq, flushed_at, batch_id))
                ids = self._series_of(db, entries, added)
                # Summed per (hour, tenant, series): a flush may carry one twice, and the primary key
                # holds one row per flush.
                db.execute(
                    """INSERT INTO hourly
                    SELECT hour, tenant, series, SUM(bytes)::BIGINT, SUM(spans)::BIGINT, %s
                    FROM unnest(%s::BIGINT[], %s::TEXT[], %s::BIGINT[], %s::BIGINT[], %s::BIGINT[])
                        AS entry(hour, tenant, series, bytes, spans)
                    GROUP BY hour, tenant, series""",
                    (
                        seq,
                        [entry.hour for entry in entries],
                        [entry.tenant for entry in entries],
                        ids,
                        [entry.spans_bytes for entry in entries],
                        [entry.spans for entry in entries],
                    ),
                )
                counts = flush_distinct_counts(entries, ids)
                if counts:
                    hours, tenants, series, kinds, serialized = zip(*counts, strict=True)
                    db.execute(
                        """INSERT INTO hourly_distinct
                        SELECT hour, tenant, series, kind, %s, count
                        FROM unnest(%s::BIGINT[], %s::TEXT[], %s::BIGINT[], %s::TEXT[], %s::BYTEA[])
                            AS entry(hour, tenant, series, kind, count)""",
                        (seq, list(hours), list(tenants), list(series), list(kinds), list(serialized)),
                    )
                db.execute(
                    "INSERT INTO flush_hours SELECT %s, unnest(%s::BIGINT[])",
                    (seq, sorted({entry.hour for entry in entries})),
                )
        except BaseException:
            for key in added:  # ids made in a transaction that did not commit (or may not have)
                self._series_ids.pop(key, None)
            raise
        return seq

    def _series_of(
        self, db: psycopg.Connection[Any], entries: Sequence[LedgerEntry], added: list[tuple[str, Tags]]
    ) -> list[int]:
        """The series id of each entry: known ones from memory, the others looked up in one statement,
        the ones the database lacks inserted in one more. Each key added to memory is appended to
        `added`."""
        known = self._series_ids
        unknown = {(e.tenant, e.tags) for e in entries if (e.tenant, e.tags) not in known}
        if unknown:
            keys = list(unknown)
            texts: dict[tuple[str, Tags], str] = {}
            encoded: dict[Tags, str] = {}
            for tenant, tags in keys:
                text = encoded.get(tags)
                if text is None:
                    text = encoded[tags] = encode_tags(tags)
                texts[tenant, tags] = text
            # Label sets that differ only in order or in a repeated label are one stored text.
            pairs = sorted({(tenant, texts[tenant, tags]) for tenant, tags in keys})
            tenants = [tenant for tenant, _ in pairs]
            tag_texts = [text for _, text in pairs]
            ids: dict[tuple[str, str], int] = {
                (tenant, text): int(series)
                for tenant, text, series in db.execute(
                    """SELECT series.tenant, series.tags, series.id
                    FROM unnest(%s::TEXT[], %s::TEXT[]) AS wanted(tenant, tags)
                    JOIN series ON series.tenant = wanted.tenant AND series.tags = wanted.tags""",
                    (tenants, tag_texts),
                )
            }
            missing = [pair for pair in pairs if pair not in ids]
            if missing:
                for tenant, text, series in db.execute(
                    """INSERT INTO series
                    SELECT nextval('series_ids'), tenant, tags
                    FROM unnest(%s::TEXT[], %s::TEXT[]) WITH ORDINALITY AS new(tenant, tags, position)
                    ORDER BY position
                    RETURNING tenant, tags, id""",
                    ([tenant for tenant, _ in missing], [text for _, text in missing]),
                ):
                    ids[tenant, text] = int(series)
            for key in keys:
                known[key] = ids[key[0], texts[key]]
            added.extend(keys)
        return [known[entry.tenant, entry.tags] for entry in entries]

    def maintain(self, merge_before: float, keep_from_hour: int, keep_from_month: int) -> None:
        with self._pool.connection() as db:
            db.execute(f"SELECT pg_advisory_xact_lock(%s, {SCHEMA_HASH})", (WRITE_LOCK,))
            merged_through = _merged_through(db)
            row = db.execute("SELECT MAX(seq) FROM flushes WHERE at < %s", (merge_before,)).fetchone()
            horizon = int(row[0] or 0) if row else 0
            if horizon > merged_through:
                _merge_hours(db, merged_through, horizon)
                _merge_distinct(db, merged_through, horizon)
                db.execute("DELETE FROM flush_hours WHERE seq <= %s", (horizon,))
                db.execute("DELETE FROM flushes WHERE seq < %s", (horizon,))
                db.execute("UPDATE meta SET value = %s WHERE key = 'merged_through'", (str(horizon),))
                merged_through = horizon
            # The hours of flushes not merged yet are what a month is read "as of" an earlier flush
            # with (see `monthly`): they stay until merged, unless their month goes too.
            db.execute(
                "DELETE FROM hourly WHERE hour < %(hour)s AND (seq <= %(merged)s OR hour < %(month)s)",
                {"hour": keep_from_hour, "month": keep_from_month, "merged": merged_through},
            )
            db.execute("DELETE FROM flush_hours WHERE hour < %s", (keep_from_month,))
            # Distinct counts of an hour are what its month's count is the union of: kept as long as
            # the month is.
            db.execute("DELETE FROM hourly_distinct WHERE hour < %s", (keep_from_month,))
            db.execute("DELETE FROM monthly WHERE month < %s", (keep_from_month,))
            db.execute("DELETE FROM monthly_tenants WHERE month < %s", (keep_from_month,))

    # -- reading ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one read; a database that cannot be reached or read raises LedgerUnavailable
        (its message never carries the connection string's password)."""
        try:
            with self._pool.connection() as db:
                yield db
        except (psycopg.Error, PoolTimeout) as err:
            raise LedgerUnavailable(f"postgresql: {mask_dsns_in(str(err))}") from err

    def snapshot(self) -> Snapshot:
        with self._reading() as db:
            row = db.execute("SELECT seq, at FROM flushes ORDER BY seq DESC LIMIT 1").fetchone()
        return Snapshot(0, 0.0) if row is None else Snapshot(int(row[0]), float(row[1]))

    def oldest_snapshot(self) -> int:
        with self._reading() as db:
            return _merged_through(db)

    def secret(self) -> bytes:
        with self._reading() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'cursor_secret'").fetchone()
        assert row is not None  # made by the migration at open
        return bytes.fromhex(row[0])

    def tenants(self) -> list[str]:
        with self._reading() as db:
            # From the month totals: a few rows per tenant, where `series` has one per label set (15-30 ms
            # for 100,000, on every API request).
            found = db.execute("SELECT DISTINCT tenant FROM monthly_tenants ORDER BY tenant")
            return [row[0] for row in found]

    def hourly(self, tenants: Collection[str], start: int, end: int, seq: int) -> list[UsageRow]:
        if not tenants:
            return []
        with self._reading() as db:
            found = db.execute(
                """SELECT hour, tenant, series, bytes, spans FROM hourly
                WHERE hour >= %s AND hour < %s AND tenant = ANY(%s) AND seq <= %s""",
                (start, end, list(tenants), seq),
            ).fetchall()
            return self._usage_rows(db, found)

    def distinct(
        self, tenants: Collection[str], kind: str, start: int, end: int, seq: int
    ) -> list[DistinctRow]:
        """Every stored count of `kind` of the hours, up to flush `seq`: merged flushes' one row per
        (hour, series), and one per flush after them, of any replica (the caller merges them)."""
        if not tenants:
            return []
        with self._reading() as db:
            found = db.execute(
                """SELECT hour, tenant, series, count FROM hourly_distinct
                WHERE hour >= %s AND hour < %s AND tenant = ANY(%s) AND kind = %s AND seq <= %s""",
                (start, end, list(tenants), kind, seq),
            ).fetchall()
            series = self._tags_of(db, found)
        return [DistinctRow(hour, tenant, series[ident], count) for hour, tenant, ident, count in found]

    def has_distinct(self, tenants: Collection[str], kind: str, start: int, end: int, seq: int) -> bool:
        if not tenants:
            return False
        with self._reading() as db:
            found = db.execute(
                """SELECT 1 FROM hourly_distinct
                WHERE hour >= %s AND hour < %s AND tenant = ANY(%s) AND kind = %s AND seq <= %s LIMIT 1""",
                (start, end, list(tenants), kind, seq),
            ).fetchone()
        return found is not None

    def monthly(self, tenants: Collection[str], start: int, end: int, seq: int) -> list[UsageRow]:
        """One row per series: its running total, less the hours of the flushes after `seq`, in one
        snapshot (even if a flush commits meanwhile)."""
        if not tenants:
            return []
        listed = list(tenants)
        parameters = {"start": start, "end": end, "seq": seq, "tenants": listed, "by_series": listed}
        with self._reading() as db:
            later, series, _ = _months_as_of(db, parameters)
            found = db.execute(
                f"{later} SELECT * FROM ({series}) AS usage WHERE b != 0 OR s != 0", parameters
            ).fetchall()
            return self._usage_rows(db, found)

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
        """The running totals as of `seq` (see `monthly`), ordered and cut by the database: rows of
        series from `monthly`, rows of orgs from `monthly_tenants`, so nothing is summed but the hours of
        flushes after `seq` (none on a first page). 100,000 series of a parent's month: ~50 ms, where
        summing them from hourly rows took 130 ms (and grew with every flush of the last hour)."""
        if not tenants:
            return []
        column = _USAGE_COLUMNS[order_by]
        direction = "DESC" if descending else "ASC"
        series = set(by_series) & set(tenants)
        parameters: dict[str, Any] = {
            "start": start,
            "end": end,
            "seq": seq,
            "tenants": list(tenants),
            "by_series": sorted(series),
            "by_tenant": sorted(set(tenants) - series),
        }
        kept = "WHERE (b != 0 OR s != 0)"
        if at is not None:
            kept += f" AND {column} = %(at_sum)s AND month = %(at_month)s"
            parameters |= {"at_sum": at[0], "at_month": at[1]}
        cut = ""
        if limit is not None:
            cut = "LIMIT %(limit)s"
            parameters["limit"] = limit
        with self._reading() as db:
            later, series_rows, tenant_rows = _months_as_of(db, parameters)
            found = db.execute(
                f"""{later} SELECT * FROM ({series_rows} UNION ALL {tenant_rows}) AS usage {kept}
                ORDER BY {column} {direction}, month {direction} {cut}""",
                parameters,
            ).fetchall()
            return self._usage_rows(db, found)

    def label_sets(self, tenants: Collection[str]) -> dict[str, set[tuple[str, ...]]]:
        """Remembered per tenant as of the highest series id: reading a tenant's parses the tags of all
        its series (0.2 s for 100,000, on every monthly page); once known, only series added since are
        read."""
        with self._reading() as db:
            row = db.execute("SELECT COALESCE(MAX(id), 0) FROM series").fetchone()
            top = int(row[0]) if row is not None else 0
            known = self._label_sets
            if self._label_sets_top is not None and top != self._label_sets_top and known:
                for tenant, labels in db.execute(
                    f"""SELECT tenant, {_LABELS} FROM series
                    WHERE id > %s AND id <= %s AND tenant = ANY(%s)""",
                    (self._label_sets_top, top, list(known)),
                ):
                    known[tenant].add(tuple(labels))
            self._label_sets_top = top
            missing = [tenant for tenant in tenants if tenant not in known]
            if missing:
                found: dict[str, set[tuple[str, ...]]] = {tenant: set() for tenant in missing}
                for tenant, labels in db.execute(
                    f"SELECT DISTINCT tenant, {_LABELS} FROM series WHERE tenant = ANY(%s) AND id <= %s",
                    (missing, top),
                ):
                    found[tenant].add(tuple(labels))
                known.update(found)  # only once read whole: a failed read leaves none half-known
        return {tenant: set(known[tenant]) for tenant in tenants}

    def _usage_rows(self, db: psycopg.Connection[Any], found: list[tuple[Any, ...]]) -> list[UsageRow]:
        """(period, tenant, series id, bytes, spans) rows with their series' tags."""
        series = self._tags_of(db, found)
        return [
            UsageRow(when, tenant, series[series_id] if series_id is not None else (), size, spans)
            for when, tenant, series_id, size, spans in found
        ]

    def _tags_of(self, db: psycopg.Connection[Any], found: list[tuple[Any, ...]]) -> dict[int, Tags]:
        """The tags of every series id of rows (_, _, series id or None, ...), by id: those this process
        has not read yet are read from the database."""
        series = self._series
        missing = sorted({row[2] for row in found if row[2] is not None and row[2] not in series})
        if missing:
            for series_id, tags in db.execute("SELECT id, tags FROM series WHERE id = ANY(%s)", (missing,)):
                series[series_id] = tuple(sorted(json.loads(tags).items()))
        return series

    def close(self) -> None:
        self._pool.close()


# What a month read "as of flush S" (`seq`) reads: `monthly` and `monthly_tenants` hold the sums of every
# flush stored; the hourly rows of the flushes after S (not merged yet: `flush_hours` lists their hours,
# read first in the same snapshot) are taken from them. Rows whose sum as of S is 0 and 0 are the
# caller's to leave out.
_LATER = f"""WITH later AS MATERIALIZED (
        SELECT {month_of_hour("hour")} AS month, tenant, series, SUM(bytes)::BIGINT AS bytes,
               SUM(spans)::BIGINT AS spans
        FROM hourly WHERE hour = ANY(%(hours)s) AND seq > %(seq)s AND tenant = ANY(%(tenants)s)
        GROUP BY 1, tenant, series)"""
_SERIES_LESS_LATER = """SELECT totals.month, totals.tenant, totals.series,
        totals.bytes - COALESCE(later.bytes, 0) AS b, totals.spans - COALESCE(later.spans, 0) AS s
    FROM monthly AS totals LEFT JOIN later
    ON (later.month, later.tenant, later.series) = (totals.month, totals.tenant, totals.series)
    WHERE totals.month >= %(start)s AND totals.month < %(end)s AND totals.tenant = ANY(%(by_series)s)"""
_TENANTS_LESS_LATER = """SELECT totals.month, totals.tenant, NULL::BIGINT,
        totals.bytes - COALESCE(later.bytes, 0), totals.spans - COALESCE(later.spans, 0)
    FROM monthly_tenants AS totals LEFT JOIN (
        SELECT month, tenant, SUM(bytes)::BIGINT AS bytes, SUM(spans)::BIGINT AS spans FROM later
        GROUP BY month, tenant) AS later
    ON (later.month, later.tenant) = (totals.month, totals.tenant)
    WHERE totals.month >= %(start)s AND totals.month < %(end)s AND totals.tenant = ANY(%(by_tenant)s)"""
# With no flush after S (every first page): the totals as they are, no join for the planner to misjudge.
_SERIES = """SELECT month, tenant, series, bytes AS b, spans AS s FROM monthly
    WHERE month >= %(start)s AND month < %(end)s AND tenant = ANY(%(by_series)s)"""
_TENANTS = """SELECT month, tenant, NULL::BIGINT, bytes, spans FROM monthly_tenants
    WHERE month >= %(start)s AND month < %(end)s AND tenant = ANY(%(by_tenant)s)"""


def _months_as_of(db: psycopg.Connection[Any], parameters: dict[str, Any]) -> tuple[str, str, str]:
    """(WITH clause, series rows, tenant rows) of a month read as of flush `parameters["seq"]`, in a
    transaction at REPEATABLE READ begun here, so that the statement that uses them sees the flushes
    this one saw: its `hours` are set in `parameters`."""
    db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    hours = [row[0] for row in db.execute(_HOURS_AFTER, (parameters["seq"],))]
    if not hours:
        return "", _SERIES, _TENANTS
    parameters["hours"] = hours
    return _LATER, _SERIES_LESS_LATER, _TENANTS_LESS_LATER


_HOURS_AFTER = "SELECT DISTINCT hour FROM flush_hours WHERE seq > %s"
_USAGE_COLUMNS = {BYTES_USAGE: "b", SPANS_USAGE: "s"}
# The labels of a series' tags, sorted, as an array.
_LABELS = "ARRAY(SELECT jsonb_object_keys(tags::jsonb) ORDER BY 1)"


def _merged_through(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'merged_through'").fetchone()
    assert row is not None  # made by the first migration
    return int(row[0])


def _merge_hours(db: psycopg.Connection[Any], after: int, through: int) -> None:
    """One `hourly` row per (hour, series) for everything up to flush `through`; only series that some
    flush since the last merge touched can have more than one such row, in the hours it wrote. The sum
    goes to the newest of them and the others are deleted: no row is inserted, so the trigger that adds
    new hourly rows to the months leaves the months as they are."""
    db.execute(
        """CREATE TEMP TABLE merged ON COMMIT DROP AS
        SELECT hour, tenant, series, SUM(bytes)::BIGINT AS bytes, SUM(spans)::BIGINT AS spans,
               MAX(seq) AS seq
        FROM hourly
        WHERE hour IN (SELECT hour FROM flush_hours WHERE seq > %(after)s AND seq <= %(through)s)
        AND seq <= %(through)s AND (hour, tenant, series) IN (
            SELECT hour, tenant, series FROM hourly
            WHERE hour IN (SELECT hour FROM flush_hours WHERE seq > %(after)s AND seq <= %(through)s)
            AND seq > %(after)s AND seq <= %(through)s)
        GROUP BY hour, tenant, series HAVING COUNT(*) > 1""",
        {"after": after, "through": through},
    )
    db.execute(
        """DELETE FROM hourly USING merged
        WHERE (hourly.hour, hourly.tenant, hourly.series) = (merged.hour, merged.tenant, merged.series)
        AND hourly.seq < merged.seq"""
    )
    db.execute(
        """UPDATE hourly SET bytes = merged.bytes, spans = merged.spans FROM merged
        WHERE (hourly.hour, hourly.tenant, hourly.series, hourly.seq)
            = (merged.hour, merged.tenant, merged.series, merged.seq)"""
    )
    db.execute("DROP TABLE merged")


def _merge_distinct(db: psycopg.Connection[Any], after: int, through: int) -> None:
    """One `hourly_distinct` row per (hour, series, kind) for everything up to flush `through`, the
    union of the counts, under the newest seq of them (as `_merge_hours` does): read, in the hours
    `flush_hours` lists for the flushes merged, are the keys with more than one row that one of them
    wrote (a flush of each replica, say)."""
    deleted, updated = merged_distinct_counts(
        db.execute(
            """SELECT hour, tenant, series, kind, seq, count FROM hourly_distinct
            WHERE hour IN (SELECT hour FROM flush_hours WHERE seq > %(after)s AND seq <= %(through)s)
            AND seq <= %(through)s AND (hour, tenant, series, kind) IN (
                SELECT hour, tenant, series, kind FROM hourly_distinct
                WHERE hour IN (SELECT hour FROM flush_hours WHERE seq > %(after)s AND seq <= %(through)s)
                AND seq <= %(through)s
                GROUP BY hour, tenant, series, kind HAVING COUNT(*) > 1 AND MAX(seq) > %(after)s)""",
            {"after": after, "through": through},
        ).fetchall()
    )
    with db.cursor() as cursor:
        cursor.executemany(
            """DELETE FROM hourly_distinct
            WHERE hour = %s AND tenant = %s AND series = %s AND kind = %s AND seq = %s""",
            deleted,
        )
        cursor.executemany(
            """UPDATE hourly_distinct SET count = %s
            WHERE hour = %s AND tenant = %s AND series = %s AND kind = %s AND seq = %s""",
            updated,
        )
