"""The root of the service's exceptions.

Domain errors say what went wrong (the parameter, key or reason at fault) and nothing about transports:
HTTP statuses, gRPC codes and headers are chosen by the adapters that answer a client.
"""

from __future__ import annotations


class DistributorError(Exception):
    """Anything the service refuses or fails at on purpose; str() is a message for a person."""
