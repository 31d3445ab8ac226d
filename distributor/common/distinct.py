"""Mergeable distinct counts (sessions, hosts, services): one sketch per (tenant, hour, series, kind),
merged across flushes, hours' unions and replicas, never by adding estimates.

Apache DataSketches' HLL sketch, lg_k = 14, HLL_4 (to be settled by measurement: see the module's tests
and `python -m tests.bench_sketches`)."""

from __future__ import annotations

from collections.abc import Iterable

import datasketches

LG_K = 14
_TYPE = datasketches.tgt_hll_type.HLL_4


class DistinctCount:
    """The distinct identities added to it (and to every count merged into it), estimated."""

    __slots__ = ("_sketch",)

    def __init__(self, sketch: datasketches.hll_sketch | None = None) -> None:
        self._sketch = sketch if sketch is not None else datasketches.hll_sketch(LG_K, _TYPE)

    def add(self, identity: str) -> None:
        self._sketch.update(identity)

    def merge(self, other: DistinctCount) -> None:
        """Adds `other`'s identities to this count (an identity in both counts once)."""
        union = datasketches.hll_union(LG_K)
        union.update(self._sketch)
        union.update(other._sketch)
        self._sketch = union.get_result(_TYPE)

    def estimate(self) -> float:
        return float(self._sketch.get_estimate())

    def bounds(self) -> tuple[float, float]:
        """The 95% confidence interval of the estimate (two standard deviations)."""
        return float(self._sketch.get_lower_bound(2)), float(self._sketch.get_upper_bound(2))

    def to_bytes(self) -> bytes:
        return bytes(self._sketch.serialize_compact())

    @classmethod
    def from_bytes(cls, data: bytes) -> DistinctCount:
        """Raises ValueError for bytes that are not a serialized count."""
        try:
            return cls(datasketches.hll_sketch.deserialize(data))
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"not a distinct count: {err}") from None

    @property
    def empty(self) -> bool:
        return bool(self._sketch.is_empty())


def union(counts: Iterable[DistinctCount]) -> DistinctCount:
    """One count of every identity in any of `counts`."""
    merged = datasketches.hll_union(LG_K)
    for count in counts:
        merged.update(count._sketch)
    return DistinctCount(merged.get_result(_TYPE))
