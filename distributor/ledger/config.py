"""`usage_attribution.ledger` settings: where usage history is stored and how often it is written."""

from __future__ import annotations

import re
from pathlib import Path

from distributor.common.config_fields import SECRET, setting, settings
from distributor.common.config_reader import Section
from distributor.common.url_masking import mask_url, mask_urls_in

LEDGER_BACKENDS = ("sqlite", "postgresql")

# A password in a key=value connection string: `password=secret` or `password='with spaces'`.
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_dsn(dsn: str) -> str:
    """A PostgreSQL connection string as it may be shown: a URL (postgresql://user:password@host/db)
    masked like a forwarder's URL, a key=value string with its password value replaced."""
    if "://" in dsn:
        return mask_url(dsn)
    return _KEYWORD_PASSWORD.sub(lambda found: found.group(1) + SECRET, dsn)


def mask_dsns_in(text: str) -> str:
    """`text` (a driver's error message) with the passwords of any connection strings in it masked."""
    return _KEYWORD_PASSWORD.sub(lambda found: found.group(1) + SECRET, mask_urls_in(text)).strip()


@settings
class PoolConfig:
    """The connections each replica keeps to PostgreSQL (one writer and one reader use them)."""

    min_size: int = setting(default=1, minimum=0, maximum=100)
    max_size: int = setting(default=4, positive=True, maximum=100)
    timeout: float = setting(default=10.0, positive=True)  # waiting for a connection, and connecting


def check_postgresql_settings(section: Section, dsn: str, pool: PoolConfig) -> None:
    """The checks of a `postgresql: {dsn, pool}` block that need both fields (`section`: the block)."""
    if not dsn:
        section.fail("dsn", "the PostgreSQL connection string is required for backend postgresql")
    if pool.min_size > pool.max_size:
        section.reopened("pool").fail("min_size", "must be at most max_size")


@settings
class LedgerConfig:
    backend: str = setting(default="sqlite", choices=LEDGER_BACKENDS)
    sqlite_path: Path = setting(default=Path("data/ledger.db"), key="path", within="sqlite")
    # libpq's URL or key=value form; it may carry a password, so it is only ever shown masked.
    postgresql_dsn: str = setting(default="", key="dsn", within="postgresql", render=mask_dsn)
    postgresql_pool: PoolConfig = setting(default_factory=PoolConfig, key="pool", within="postgresql")
    flush_period: float = setting(default=10.0, positive=True)
    # Series-hours waiting in memory for the store (while it is down); past it new ones are unrecorded.
    max_pending_entries: int = setting(default=1_000_000, positive=True)
    retention_months: int = setting(
        default=15, positive=True, maximum=120
    )  # Datadog serves at most 15 months back
