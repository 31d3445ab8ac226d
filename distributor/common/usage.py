"""What a tenant used: the protobuf bytes and the spans that carried them, counted together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int
    spans: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.bytes + other.bytes, self.spans + other.spans)


NO_USAGE = Usage(0, 0)
