"""Forwarding accepted traces to tracing backends: per-tenant queues, workers, retries, OTLP clients."""
