"""What a tenant used: the protobuf bytes and the spans that carried them, counted together."""

from __future__ import annotations

from typing import NamedTuple


class Usage(NamedTuple):
    """A NamedTuple rather than a frozen dataclass: one is made per series of every request, and a
    frozen dataclass's __init__ (object.__setattr__ per field) costs ~3x as much."""

    bytes: int
    spans: int

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(self.bytes + other.bytes, self.spans + other.spans)


NO_USAGE = Usage(0, 0)
