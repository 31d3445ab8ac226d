"""`usage_attribution.ledger` settings: where usage history is stored and how often it is written."""

from __future__ import annotations

from pathlib import Path

from distributor.common.config_fields import setting, settings

LEDGER_BACKENDS = ("sqlite",)


@settings
class LedgerConfig:
    backend: str = setting(default="sqlite", choices=LEDGER_BACKENDS)
    sqlite_path: Path = setting(default=Path("data/ledger.db"), key="path", within="sqlite")
    flush_period: float = setting(default=10.0, positive=True)
    retention_months: int = setting(
        default=15, positive=True, maximum=120
    )  # Datadog serves at most 15 months back
