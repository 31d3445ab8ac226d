"""Ingest: tenant, rate limits, the request model and the pipeline that accounts and queues a request."""
