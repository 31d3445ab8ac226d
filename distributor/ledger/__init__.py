"""Ledger: the durable history of usage per tenant, hour and tags; one module per storage backend."""
