"""Cost-attribution dimensions: attribute -> output label, with scopes and Prometheus-safe labels.

Semantics: docs/usage-tracker.md ("Dimensions").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from distributor.common.errors import DistributorError


class Scope(Enum):
    RESOURCE = "resource"
    SPAN = "span"
    ANY = "any"  # no prefix: resource attributes, overridden by the span's own


@dataclass(frozen=True, slots=True)
class Dimension:
    """One configured dimension: look up `attribute` in `scope`, expose its value as `label`."""

    configured: str  # the key as the operator wrote it, for messages
    attribute: str  # without its scope prefix
    scope: Scope
    label: str  # sanitized output label


# `reason` labels the discarded-bytes family, so no dimension may take it either.
RESERVED_LABELS = ("tenant", "tracker", "reason")


class DimensionError(DistributorError):
    """A dimension is invalid; the message names it."""


def sanitize_label(name: str) -> str:
    """Prometheus' SanitizeFullLabelName: one `_` per invalid character, multi-byte ones included."""
    if not name:
        return "_"
    return "".join(
        ch if ("a" <= ch <= "z" or "A" <= ch <= "Z" or ch == "_" or (i > 0 and "0" <= ch <= "9")) else "_"
        for i, ch in enumerate(name)
    )


def _split_scope(key: str) -> tuple[Scope, str]:
    for scope in (Scope.RESOURCE, Scope.SPAN):
        prefix = scope.value + "."
        if key.startswith(prefix):
            return scope, key[len(prefix) :]
    return Scope.ANY, key


def make_dimension(key: str, label: str | None) -> Dimension:
    scope, attribute = _split_scope(key)
    if not attribute:
        raise DimensionError(f"dimension {key!r}: the attribute name is empty")
    output = sanitize_label(label if label else attribute)
    if output.startswith("__"):
        raise DimensionError(
            f"dimension {key!r}: label {output!r} starts with '__', which Prometheus reserves"
        )
    if output in RESERVED_LABELS:
        raise DimensionError(f"dimension {key!r}: label {output!r} is reserved by the usage tracker")
    return Dimension(configured=key, attribute=attribute, scope=scope, label=output)


def parse_dimensions(raw: object) -> tuple[Dimension, ...]:
    """Accept Tempo's map form ({attribute: label}) and the seed's list form ([attribute, ...])."""
    pairs: list[tuple[str, str | None]] = []
    if raw is None:
        return ()
    if isinstance(raw, dict):
        for key, label in raw.items():
            if label is not None and not isinstance(label, str):
                raise DimensionError(f"dimension {key!r}: the label must be a string, got {label!r}")
            pairs.append((str(key), label))
    elif isinstance(raw, list):
        for item in raw:
            if not isinstance(item, str):
                raise DimensionError(f"dimension {item!r}: list entries must be attribute names (strings)")
            pairs.append((item, None))
    else:
        raise DimensionError(f"dimensions must be a mapping or a list, got {raw!r}")
    seen: set[str] = set()
    dimensions = []
    for key, label in pairs:
        if key in seen:
            raise DimensionError(f"dimension {key!r} is listed twice")
        seen.add(key)
        dimensions.append(make_dimension(key, label))
    return tuple(dimensions)
