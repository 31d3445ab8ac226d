"""Why accepted or decoded spans did not reach a backend: the `reason` label of
tempo_discarded_spans_total, tempo_usage_tracker_bytes_discarded_total and the forwarders' drop counters."""

from __future__ import annotations

from enum import StrEnum


class DiscardReason(StrEnum):
    RATE_LIMITED = "rate_limited"  # Tempo's reason: the tenant's ingestion rate limit
    QUEUE_FULL = "queue_full"  # a forwarder's queue for the tenant had no room
    NO_FORWARDER = "no_forwarder"  # the tenant has no forwarders: measured only, sent nowhere
    FORWARD_REJECTED = "forward_rejected"  # a permanent failure (HTTP 4xx but 429, INVALID_ARGUMENT...)
    FORWARD_RETRIES_EXHAUSTED = "forward_retries_exhausted"  # retry.max_elapsed_time passed, or no retries
    FORWARD_UNDELIVERED_AT_SHUTDOWN = "forward_undelivered_at_shutdown"  # graceful_shutdown_timeout first
    FORWARD_INTERNAL_ERROR = "forward_internal_error"  # the forwarding client failed unexpectedly (a bug)
    # A synchronous forwarder's backend was unavailable (a retryable failure or no free send in time):
    # refused to the client, whose retry is the retry.
    FORWARD_UNAVAILABLE = "forward_unavailable"
    QUEUE_WRITE_FAILED = "queue_write_failed"  # a persistent queue could not store it (disk full, I/O error)
    QUEUE_CORRUPT = "queue_corrupt"  # a persistent queue's record failed its checksum when read back
