"""Time as the service reads it: injectable, so tests move it instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable

# Seconds from an arbitrary origin (time.monotonic) for intervals, or since the epoch (time.time) for
# wall-clock time; which one a component takes is in its parameter's name.
Clock = Callable[[], float]
