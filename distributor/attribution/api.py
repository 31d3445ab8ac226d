"""Datadog-compatible Usage Attribution API over the usage ledger (no web framework here).

Semantics: ../shared/specs/usage-attribution-api.md; shapes: Datadog's "Get hourly usage attribution",
"Get monthly usage attribution" and "Get usage attribution types" references, so the official clients
(datadog-api-client) read the answers unchanged.

A request goes: key pair -> 403 | per-key rate limit -> 429 | parameters -> 400 | the ledger as of one
flush (a snapshot, carried by the cursor) -> every record of the result, sorted -> one page.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from cachetools import TTLCache

from distributor.attribution.config import USAGE_READ, ApiKeyConfig, UsageAttributionConfig, parent_chain
from distributor.ledger.ledger import (
    BYTES_USAGE,
    HOUR,
    USAGE_TYPES,
    LedgerStore,
    Tags,
    UsageLedger,
    UsageRow,
    add_months,
    hour_of,
    month_of,
)
from distributor.usage.tracker import MISSING

HOURLY_PARAMETERS = (
    "start_hr",
    "end_hr",
    "usage_type",
    "tag_breakdown_keys",
    "next_record_id",
    "include_descendants",
)
MONTHLY_PARAMETERS = (
    "start_month",
    "end_month",
    "fields",
    "sort_direction",
    "sort_name",
    "tag_breakdown_keys",
    "next_record_id",
    "include_descendants",
)
PERCENTAGE_FIELDS = tuple(usage.removesuffix("_usage") + "_percentage" for usage in USAGE_TYPES)
MONTHLY_FIELDS = tuple(f for pair in zip(USAGE_TYPES, PERCENTAGE_FIELDS, strict=True) for f in pair)
RATE_LIMIT_NAME = "usage_attribution"
FORBIDDEN = "Forbidden"
CSV_CONTENT_TYPE = "text/csv"
ORG_FIELDS = ("org_name", "public_id", "region", "tag_config_source")  # every record's, in this order
RESULT_CACHE_RECORDS = 500_000


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class ApiAnswer:
    status: int
    body: Any  # a JSON document, or text for CSV
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


# -- orgs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Org:
    org_id: str
    name: str
    public_id: str
    region: str
    parent: str


class OrgDirectory:
    """Every tenant is an org; the configuration may name it, give it a public id and a parent."""

    def __init__(self, config: UsageAttributionConfig) -> None:
        self.region = config.region
        self._configured = {org.org_id: org for org in config.orgs}
        self._cache: dict[str, Org] = {}

    def org(self, org_id: str) -> Org:
        org = self._cache.get(org_id)
        if org is None:
            configured = self._configured.get(org_id)
            org = self._cache[org_id] = Org(
                org_id,
                (configured.name if configured else "") or org_id,
                (configured.public_id if configured else "") or default_public_id(org_id),
                self.region,
                configured.parent if configured else "",
            )
        return org

    def visible(self, key_org: str, include_descendants: bool, tenants: list[str]) -> list[str]:
        """The orgs among `tenants` a key of `key_org` reads: its own, and its descendants if asked."""
        return [t for t in tenants if t == key_org or (include_descendants and self.descends(t, key_org))]

    def descends(self, org_id: str, ancestor: str) -> bool:
        chain, _ = parent_chain(org_id, lambda org: self.org(org).parent)
        return ancestor in chain


def default_public_id(org_id: str) -> str:
    """Stable across restarts and replicas, and not the tenant id itself."""
    return hashlib.sha256(f"org:{org_id}".encode()).hexdigest()[:16]


def tag_config_source(org: Org, tags: tuple[str, ...]) -> str:
    return f"{org.name}:::{'///'.join(tags)}"


# -- keys and rate limits -----------------------------------------------------------------------------


class ApiKeys:
    def __init__(self, keys: tuple[ApiKeyConfig, ...]) -> None:
        self._keys = keys

    def authenticate(self, api_key: str | None, app_key: str | None) -> ApiKeyConfig:
        """The key pair with usage_read, or ApiError 403 (the same answer whatever is wrong)."""
        found = None
        if api_key and app_key:
            for key in self._keys:  # compare every pair in constant time: no timing hints
                match = hmac.compare_digest(key.api_key.encode(), api_key.encode())
                match &= hmac.compare_digest(key.app_key.encode(), app_key.encode())
                if match and found is None:
                    found = key
        if found is None or USAGE_READ not in found.scopes:
            raise ApiError(403, FORBIDDEN)
        return found


@dataclass(slots=True)
class _Window:
    started: float
    used: int


class ApiRateLimiter:
    """Fixed windows per key pair, as Datadog's X-RateLimit-* headers describe them."""

    def __init__(self, requests: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = requests
        self.period = period
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def take(self, key: ApiKeyConfig) -> tuple[bool, dict[str, str]]:
        now = self._clock()
        identity = (key.api_key, key.app_key)
        window = self._windows.get(identity)
        if window is None or now - window.started >= self.period:
            window = self._windows[identity] = _Window(now, 0)
        allowed = self.requests == 0 or window.used < self.requests
        if allowed:
            window.used += 1
        remaining = max(0, self.requests - window.used) if self.requests else 0
        reset = max(1, math.ceil(window.started + self.period - now))
        return allowed, {
            "X-RateLimit-Limit": str(self.requests),
            "X-RateLimit-Period": str(math.ceil(self.period)),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Name": RATE_LIMIT_NAME,
        }


# -- parameters ---------------------------------------------------------------------------------------

_SHORT_MONTH = re.compile(r"\d{4}-\d{2}")
_SPACE_OFFSET = re.compile(r" (\d{2}(:?\d{2})?)$")


def parse_time(name: str, text: str, month: bool) -> int:
    """`YYYY-MM-DDThh` / `YYYY-MM` or any ISO-8601 datetime (Z or offset, fractions), truncated down to
    the hour or month, as epoch seconds UTC."""
    # An unescaped '+' of an offset arrives as a space in a query string.
    cleaned = _SPACE_OFFSET.sub(r"+\1", text.strip())
    if month and _SHORT_MONTH.fullmatch(cleaned):
        cleaned += "-01"
    try:
        moment = datetime.fromisoformat(cleaned)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        timestamp = moment.timestamp()
        if not month:
            return hour_of(timestamp)
        start = month_of(timestamp)
        add_months(start, 1)  # the month after must exist too (end_month is inclusive): not past 9999
        return start
    except (ValueError, OverflowError):
        expected = "YYYY-MM" if month else "YYYY-MM-DDThh"
        raise ApiError(
            400, f"{name}: invalid datetime {text!r}; expected {expected} or an ISO-8601 datetime, UTC"
        ) from None


def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _single(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"{name}: given {len(values)} times; give it once")
    return values[0]


def _required(query: Mapping[str, list[str]], name: str) -> str:
    value = _single(query, name)
    if value is None or not value.strip():
        raise ApiError(400, f"{name}: required")
    return value


def _check_known(query: Mapping[str, list[str]], known: tuple[str, ...]) -> None:
    for name in query:
        if name not in known:
            raise ApiError(400, f"{name}: unknown parameter (known: {', '.join(known)})")


def _include_descendants(query: Mapping[str, list[str]]) -> bool:
    text = _single(query, "include_descendants")
    if text is None:
        return True
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise ApiError(400, f"include_descendants: expected true or false, got {text!r}")


def _breakdown_keys(query: Mapping[str, list[str]]) -> tuple[str, ...] | None:
    text = _single(query, "tag_breakdown_keys")
    if text is None or not text.strip():
        return None
    keys: list[str] = []
    for key in text.split(","):
        key = key.strip()
        if not key:
            raise ApiError(400, f"tag_breakdown_keys: empty tag key in {text!r}")
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def _usage_type(name: str, text: str) -> str:
    if text not in USAGE_TYPES:
        raise ApiError(
            400, f"{name}: unknown usage type {text!r}; this service records {', '.join(USAGE_TYPES)}"
        )
    return text


@dataclass(frozen=True, slots=True)
class HourlyQuery:
    start: int
    end: int | None  # exclusive; None = up to the current hour (fixed by the first page)
    usage_type: str
    breakdown: tuple[str, ...] | None
    include_descendants: bool
    cursor: str | None


@dataclass(frozen=True, slots=True)
class MonthlyQuery:
    start: int
    end: int | None  # exclusive (the month after end_month); None = through the current month
    fields: tuple[str, ...]
    sort_field: str
    descending: bool
    breakdown: tuple[str, ...] | None
    include_descendants: bool
    cursor: str | None


def parse_hourly(query: Mapping[str, list[str]]) -> HourlyQuery:
    _check_known(query, HOURLY_PARAMETERS)
    start = parse_time("start_hr", _required(query, "start_hr"), month=False)
    end_text = _single(query, "end_hr")
    end = parse_time("end_hr", end_text, month=False) if end_text else None
    if end is not None and end <= start:
        raise ApiError(400, "end_hr: must be after start_hr (end_hr is exclusive)")
    return HourlyQuery(
        start,
        end,
        _usage_type("usage_type", _required(query, "usage_type")),
        _breakdown_keys(query),
        _include_descendants(query),
        _single(query, "next_record_id"),
    )


def parse_monthly(query: Mapping[str, list[str]]) -> MonthlyQuery:
    _check_known(query, MONTHLY_PARAMETERS)
    start = parse_time("start_month", _required(query, "start_month"), month=True)
    end_text = _single(query, "end_month")
    end = add_months(parse_time("end_month", end_text, month=True), 1) if end_text else None
    if end is not None and end <= start:
        raise ApiError(400, "end_month: must not be before start_month")
    fields_text = _required(query, "fields")
    fields: list[str] = []
    for name in fields_text.split(","):
        name = name.strip()
        if name == "*":
            candidates: tuple[str, ...] = MONTHLY_FIELDS
        elif name in MONTHLY_FIELDS:
            candidates = (name,)
        else:
            raise ApiError(
                400,
                f"fields: unknown field {name!r}; this service records {', '.join(MONTHLY_FIELDS)} (or *)",
            )
        fields.extend(f for f in candidates if f not in fields)
    direction = _single(query, "sort_direction") or "desc"
    if direction not in ("desc", "asc"):
        raise ApiError(400, f"sort_direction: expected desc or asc, got {direction!r}")
    sort_name = _single(query, "sort_name")
    if sort_name is None:
        first = fields[0]
        sort_name = next(
            (f for f in fields if f in USAGE_TYPES), first.removesuffix("_percentage") + "_usage"
        )
    elif sort_name not in MONTHLY_FIELDS:
        raise ApiError(400, f"sort_name: unknown field {sort_name!r}; use one of {', '.join(MONTHLY_FIELDS)}")
    return MonthlyQuery(
        start,
        end,
        tuple(fields),
        sort_name,
        direction == "desc",
        _breakdown_keys(query),
        _include_descendants(query),
        _single(query, "next_record_id"),
    )


# -- cursors ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    seq: int  # the ledger snapshot every page of this answer reads
    offset: int  # records already returned
    end: int  # the resolved end of the range
    flushed_at: float  # when the snapshot's flush happened: every page's updated_at


class CursorCodec:
    """`next_record_id`: opaque, signed (HMAC-SHA256 with the ledger's secret, so any replica on the
    same ledger accepts it), and bound to one key and one query."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]

    def encode(self, fingerprint: str, cursor: Cursor) -> str:
        payload = json.dumps(
            [1, fingerprint, cursor.seq, cursor.offset, cursor.end, cursor.flushed_at], separators=(",", ":")
        )
        raw = payload.encode()
        return _b64(raw) + "." + _b64(self._signature(raw))

    def decode(self, fingerprint: str, text: str) -> Cursor:
        invalid = ApiError(
            400, "next_record_id: invalid (pass back the value of a previous answer unchanged)"
        )
        payload_text, _, signature_text = text.partition(".")
        try:
            raw, signature = _unb64(payload_text), _unb64(signature_text)
        except ValueError:
            raise invalid from None
        if not hmac.compare_digest(signature, self._signature(raw)):
            raise invalid
        try:
            version, bound_to, seq, offset, end, flushed_at = json.loads(raw)
        except (ValueError, TypeError):
            raise invalid from None
        if version != 1:
            raise invalid
        if bound_to != fingerprint:
            raise ApiError(
                400,
                "next_record_id: belongs to another query; repeat the parameters of the first page with it",
            )
        return Cursor(int(seq), int(offset), int(end), float(flushed_at))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as err:
        raise ValueError(str(err)) from None


def fingerprint(kind: str, key: ApiKeyConfig, parts: tuple[object, ...]) -> str:
    canonical = json.dumps([kind, key.org, hashlib.sha256(key.api_key.encode()).hexdigest(), *parts])
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


# -- the result set -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    period: int
    org: Org
    tags: tuple[str, ...] | None  # values of the breakdown keys; () for no breakdown; None: cannot apply
    spans_bytes: int = 0
    spans: int = 0

    def value(self, usage_type: str) -> int:
        return self.spans_bytes if usage_type == BYTES_USAGE else self.spans


def _group(
    rows: list[UsageRow],
    breakdown: tuple[str, ...] | None,
    orgs: OrgDirectory,
    org_tags: Callable[[str], tuple[str, ...]],
) -> list[_Record]:
    """One record per (period, org, values of the breakdown keys); an org whose attribution tags lack
    a requested key gets its total with tags null, as Datadog does. Per row this is two dict lookups
    and an addition: a parent org's month can be 100,000 rows."""
    sums: dict[tuple[int, str, tuple[str, ...] | None], list[int]] = {}
    if breakdown is None:
        for period, tenant, _, size, spans in rows:
            entry = sums.get((period, tenant, ()))
            if entry is None:
                sums[period, tenant, ()] = [size, spans]
            else:
                entry[0] += size
                entry[1] += spans
    else:
        applies: dict[str, bool] = {}
        projections: dict[Tags, tuple[str, ...]] = {}  # tag sets repeat across orgs: computed once each
        wanted = set(breakdown)
        for period, tenant, tags, size, spans in rows:
            usable = applies.get(tenant)
            if usable is None:
                usable = applies[tenant] = wanted <= set(org_tags(tenant))
            values: tuple[str, ...] | None = None
            if usable:
                values = projections.get(tags)
                if values is None:
                    present = dict(tags)
                    # Usage recorded under an older dimension set may lack a label: it was missing.
                    values = projections[tags] = tuple(present.get(k, MISSING) for k in breakdown)
            entry = sums.get((period, tenant, values))
            if entry is None:
                sums[period, tenant, values] = [size, spans]
            else:
                entry[0] += size
                entry[1] += spans
    org_of = {tenant: orgs.org(tenant) for tenant in {key[1] for key in sums}}
    return [
        _Record(period, org_of[tenant], values, size, spans)
        for (period, tenant, values), (size, spans) in sums.items()
        if size or spans
    ]


@dataclass(slots=True)
class _Result:
    records: list[_Record]  # sorted: the order of the pages
    totals: dict[tuple[int, str], tuple[int, int]]  # (period, org) -> bytes, spans: for percentages
    aggregates: list[dict[str, Any]]


def _tags_document(
    breakdown: tuple[str, ...] | None, values: tuple[str, ...] | None
) -> dict[str, Any] | None:
    if values is None:
        return None
    if breakdown is None:
        return {}
    return {key: [value] for key, value in zip(breakdown, values, strict=True)}


def _identity(record: _Record) -> tuple[str, str, tuple[str, ...]]:
    return (record.org.name, record.org.org_id, record.tags or ())


# -- the API ------------------------------------------------------------------------------------------


class UsageAttributionApi:
    def __init__(
        self,
        config: UsageAttributionConfig,
        ledger: UsageLedger,
        org_tags: Callable[[str], tuple[str, ...]],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.org_tags = org_tags
        self.orgs = OrgDirectory(config)
        self.keys = ApiKeys(config.keys)
        self.rate_limiter = ApiRateLimiter(
            config.api.rate_limit.requests, config.api.rate_limit.period, clock
        )
        self._wall_clock = wall_clock
        self._codec: CursorCodec | None = None
        # Bounded by records held (a parent org's month by tags can be 100,000); entries live as long
        # as their cursors.
        self._results: TTLCache[tuple[str, int, int], _Result] = TTLCache(
            maxsize=RESULT_CACHE_RECORDS,
            ttl=config.api.cursor_ttl,
            timer=clock,
            getsizeof=lambda result: len(result.records) + 1,
        )

    async def _cursors(self) -> CursorCodec:
        if self._codec is None:
            self._codec = CursorCodec(await self.ledger.read(lambda store: store.secret()))
        return self._codec

    async def hourly(self, headers: Mapping[str, str], query: Mapping[str, list[str]]) -> ApiAnswer:
        return await self._answer(headers, lambda key: self._hourly(key, parse_hourly(query)))

    async def monthly(
        self, headers: Mapping[str, str], query: Mapping[str, list[str]], accept: str = ""
    ) -> ApiAnswer:
        csv_wanted = CSV_CONTENT_TYPE in accept.lower()
        return await self._answer(headers, lambda key: self._monthly(key, parse_monthly(query), csv_wanted))

    async def types(self, headers: Mapping[str, str]) -> ApiAnswer:
        async def answer(_: ApiKeyConfig) -> ApiAnswer:
            return ApiAnswer(
                200,
                {
                    "data": {
                        "attributes": {"values": list(USAGE_TYPES)},
                        "id": "usage_attribution_types",
                        "type": "usage_attribution_types",
                    }
                },
            )

        return await self._answer(headers, answer)

    async def _answer(self, headers: Mapping[str, str], handle: Callable[[ApiKeyConfig], Any]) -> ApiAnswer:
        try:
            key = self.keys.authenticate(headers.get("DD-API-KEY"), headers.get("DD-APPLICATION-KEY"))
        except ApiError as err:
            return ApiAnswer(err.status, {"errors": [err.message]})
        allowed, limit_headers = self.rate_limiter.take(key)
        if not allowed:
            return ApiAnswer(429, {"errors": ["Too many requests"]}, limit_headers)
        try:
            answer: ApiAnswer = await handle(key)
        except ApiError as err:
            answer = ApiAnswer(err.status, {"errors": [err.message]})
        answer.headers.update(limit_headers)
        return answer

    def _check_retention(self, name: str, start: int) -> None:
        earliest = add_months(month_of(self._wall_clock()), -self.config.ledger.retention_months)
        if start < earliest:
            raise ApiError(
                400,
                f"{name}: older than the {self.config.ledger.retention_months} months this service keeps "
                f"(earliest {datetime.fromtimestamp(earliest, UTC):%Y-%m})",
            )

    async def _position(self, bound_to: str, cursor_text: str | None, default_end: int) -> Cursor:
        """Where this page starts: a new snapshot for a first page, the cursor's for the next ones."""
        if cursor_text is None:
            snapshot = await self.ledger.read(lambda store: store.snapshot())
            return Cursor(
                snapshot.seq, 0, default_end, snapshot.flushed_at if snapshot.seq else self._wall_clock()
            )
        codec = await self._cursors()
        cursor = codec.decode(bound_to, cursor_text)
        oldest = await self.ledger.read(lambda store: store.oldest_snapshot())
        if cursor.seq < oldest:
            raise ApiError(400, "next_record_id: expired; start again without next_record_id")
        return cursor

    def _describer(self) -> Callable[[_Record], dict[str, str]]:
        """The org fields every record carries, each org's worked out once per answer."""
        described: dict[str, dict[str, str]] = {}

        def describe(record: _Record) -> dict[str, str]:
            org = record.org
            fields = described.get(org.org_id)
            if fields is None:
                fields = described[org.org_id] = {
                    "org_name": org.name,
                    "public_id": org.public_id,
                    "region": org.region,
                    "tag_config_source": tag_config_source(org, self.org_tags(org.org_id)),
                }
            return fields

        return describe

    async def _page(
        self, records: list[_Record], bound_to: str, position: Cursor
    ) -> tuple[list[_Record], str | None]:
        """The page at `position`, and the cursor of the next one (None on the last page)."""
        page = records[position.offset : position.offset + self.config.api.page_size]
        next_offset = position.offset + len(page)
        if next_offset >= len(records):
            return page, None
        codec = await self._cursors()
        return page, codec.encode(
            bound_to, Cursor(position.seq, next_offset, position.end, position.flushed_at)
        )

    async def _hourly(self, key: ApiKeyConfig, query: HourlyQuery) -> ApiAnswer:
        self._check_retention("start_hr", query.start)
        bound_to = fingerprint(
            "hourly",
            key,
            (query.start, query.end, query.usage_type, query.breakdown, query.include_descendants),
        )
        position = await self._position(
            bound_to, query.cursor, query.end or hour_of(self._wall_clock()) + HOUR
        )
        result = await self._result(
            (bound_to, position.seq, position.end),
            lambda store: _Result(self._hourly_records(store, key, query, position), {}, []),
        )
        page, next_id = await self._page(result.records, bound_to, position)
        # The most recent hour usage had been calculated for, as of the snapshot every page reads.
        updated_at = format_time(hour_of(position.flushed_at))
        describe = self._describer()
        usage = [
            {
                "hour": format_time(record.period),
                **describe(record),
                "tags": _tags_document(query.breakdown, record.tags),
                "total_usage_sum": float(record.value(query.usage_type)),
                "updated_at": updated_at,
                "usage_type": query.usage_type,
            }
            for record in page
        ]
        return ApiAnswer(200, {"metadata": {"pagination": {"next_record_id": next_id}}, "usage": usage})

    def _hourly_records(
        self, store: LedgerStore, key: ApiKeyConfig, query: HourlyQuery, position: Cursor
    ) -> list[_Record]:
        tenants = self.orgs.visible(key.org, query.include_descendants, store.tenants())
        rows = store.hourly(tenants, query.start, position.end, position.seq)
        records = [
            r for r in _group(rows, query.breakdown, self.orgs, self.org_tags) if r.value(query.usage_type)
        ]
        records.sort(key=lambda r: (r.period, _identity(r)))
        return records

    async def _monthly(self, key: ApiKeyConfig, query: MonthlyQuery, csv_wanted: bool) -> ApiAnswer:
        self._check_retention("start_month", query.start)
        bound_to = fingerprint(
            "monthly",
            key,
            (
                query.start,
                query.end,
                query.fields,
                query.sort_field,
                query.descending,
                query.breakdown,
                query.include_descendants,
            ),
        )
        position = await self._position(
            bound_to, query.cursor, query.end or add_months(month_of(self._wall_clock()), 1)
        )
        result = await self._result(
            (bound_to, position.seq, position.end),
            lambda store: self._monthly_records(store, key, query, position),
        )
        records, org_totals, aggregates = result.records, result.totals, result.aggregates
        # The most recent hour usage had been calculated for, as of the snapshot every page reads.
        updated_at = format_time(hour_of(position.flushed_at))

        def values(record: _Record) -> dict[str, float]:
            result: dict[str, float] = {}
            for name in query.fields:
                result[name] = _field_value(record, name, org_totals)
            return result

        if csv_wanted:
            return ApiAnswer(
                200, self._csv(query, records, values), content_type=CSV_CONTENT_TYPE + "; charset=utf-8"
            )
        page, next_id = await self._page(records, bound_to, position)
        describe = self._describer()
        usage = [
            {
                "month": format_time(record.period),
                **describe(record),
                "tags": _tags_document(query.breakdown, record.tags),
                "updated_at": updated_at,
                "values": values(record),
            }
            for record in page
        ]
        return ApiAnswer(
            200,
            {
                "metadata": {"aggregates": aggregates, "pagination": {"next_record_id": next_id}},
                "usage": usage,
            },
        )

    def _monthly_records(
        self, store: LedgerStore, key: ApiKeyConfig, query: MonthlyQuery, position: Cursor
    ) -> _Result:
        tenants = self.orgs.visible(key.org, query.include_descendants, store.tenants())
        rows = store.monthly(tenants, query.start, position.end, position.seq)
        records = _group(rows, query.breakdown, self.orgs, self.org_tags)
        totals: dict[tuple[int, str], tuple[int, int]] = {}
        for record in records:
            size, spans = totals.get((record.period, record.org.org_id), (0, 0))
            totals[record.period, record.org.org_id] = (size + record.spans_bytes, spans + record.spans)
        # One total order: the value, then the month, then who (ascending whatever the direction), so
        # equal values never shuffle between pages. Percentages order like usage within an org-month,
        # but not across orgs, so they are sorted by their own value.
        sign = -1 if query.descending else 1
        sort_field = query.sort_field
        value: Callable[[_Record], float] = (
            attrgetter("spans_bytes" if sort_field == BYTES_USAGE else "spans")
            if sort_field in USAGE_TYPES
            else lambda r: _field_value(r, sort_field, totals)
        )
        records.sort(key=lambda r: (sign * value(r), sign * r.period, *_identity(r)))
        aggregates: list[dict[str, Any]] = []
        for name in query.fields:
            if name in USAGE_TYPES:
                total = float(sum(r.value(name) for r in records))
            else:  # each org-month's percentages add up to 100 (when it has any usage of that type)
                index = 0 if name.removesuffix("_percentage") + "_usage" == BYTES_USAGE else 1
                total = 100.0 * sum(1 for totals_of_org in totals.values() if totals_of_org[index])
            aggregates.append({"agg_type": "sum", "field": name, "value": total})
        return _Result(records, totals, aggregates)

    async def _result(
        self, cache_key: tuple[str, int, int], compute: Callable[[LedgerStore], _Result]
    ) -> _Result:
        """Every record of one answer as of one snapshot: computed once (on the reader thread), then
        each further page is a slice. The snapshot never changes, so neither does the result."""
        result = self._results.get(cache_key)
        if result is None:
            result = await self.ledger.read(compute)
            if len(result.records) < RESULT_CACHE_RECORDS:  # a bigger one is recomputed for each page
                self._results[cache_key] = result
        return result

    def _csv(
        self, query: MonthlyQuery, records: list[_Record], values: Callable[[_Record], dict[str, float]]
    ) -> str:
        """Every record of the result (a spreadsheet cannot page), one row each."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        breakdown = query.breakdown or ()
        describe = self._describer()
        writer.writerow(["month", *ORG_FIELDS, *breakdown, *query.fields])
        for record in records:
            tags = record.tags if record.tags is not None and query.breakdown else ("",) * len(breakdown)
            row_values = values(record)
            writer.writerow(
                [
                    format_time(record.period),
                    *(describe(record)[name] for name in ORG_FIELDS),
                    *tags,
                    *(_number(row_values[name]) for name in query.fields),
                ]
            )
        return out.getvalue()


def _field_value(record: _Record, name: str, org_totals: Mapping[tuple[int, str], tuple[int, int]]) -> float:
    if name.endswith("_usage"):
        return float(record.value(name))
    usage_type = name.removesuffix("_percentage") + "_usage"
    size_total, spans_total = org_totals[record.period, record.org.org_id]
    total = size_total if usage_type == BYTES_USAGE else spans_total
    return 100.0 * record.value(usage_type) / total if total else 0.0


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
