"""Cutting text to a number of UTF-8 bytes without splitting a character."""

from __future__ import annotations


def utf8_prefix(encoded: bytes, max_bytes: int) -> str:
    """The longest prefix of the valid UTF-8 `encoded` that fits in `max_bytes` bytes and ends on a
    character boundary (a cut inside a character drops that character whole)."""
    # `encoded` is valid UTF-8, so decoding the slice can only meet an incomplete last character,
    # which "ignore" drops.
    return encoded[:max_bytes].decode("utf-8", "ignore")
