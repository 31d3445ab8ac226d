"""Attribution: the Datadog-compatible Usage Attribution API over the ledger, and its HTTP adapter."""
