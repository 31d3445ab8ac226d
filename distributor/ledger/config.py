"""`usage_attribution.ledger` settings: where usage history is stored and how often it is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LEDGER_BACKENDS = ("sqlite",)


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    backend: str = "sqlite"
    sqlite_path: Path = Path("data/ledger.db")  # relative paths: relative to the config file
    flush_period: float = 10.0
    retention_months: int = 15  # Datadog serves at most 15 months back
