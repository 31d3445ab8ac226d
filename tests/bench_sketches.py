"""Distinct-count sketches side by side: Apache DataSketches' HLL (lg_k 13 and 14, HLL_4 and HLL_8) and
CPC (lg_k 11, 12, 13), and `DistinctCount` as the product uses it, over true distinct counts from 1 to
1,000,000. For each count:

- the worst and the 95th percentile relative error of the estimate over independent trials (disjoint
  identities per trial), and how often the estimate rounded to the nearest integer is the exact count;
- how often the 95% bounds (two standard deviations) contain the truth;
- the same errors after a union of three replicas' sketches that overlap (every identity is seen by one
  to three replicas, a fifth of them by all three): the estimate a merged count gives;
- the compact serialized size, the memory one sketch holds once built (bytes allocated from the C
  heap, measured in a child process running with PYTHONMALLOC=malloc so that Python's objects come from
  the same heap; glibc only), and the time of one union of the three replicas.

and per candidate the cost of adding one identity (a 36-character session id, through Python, as the
product calls it) and the errors pooled over every count above SMALL. The machine may be shared: the
timings compare the rows of one run.

    python -m tests.bench_sketches [--trials-scale F]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import datasketches

from distributor.common import distinct

COUNTS = (1, 2, 5, 10, 100, 1000, 2000, 5000, 10_000, 100_000, 1_000_000)
SMALL = 1000  # counts up to this one must come out exact
REPLICAS = 3
UPDATE_IDENTITIES = 200_000
UPDATE_ROUNDS = 5
UNION_REPEATS = 5


def trials_at(count: int, scale: float) -> int:
    """Many trials where they are cheap (exactness needs them: a miss is rare), few at a million."""
    base = 1000 if count <= SMALL else 50 if count <= 10_000 else 20 if count <= 100_000 else 5
    return max(1, round(base * scale))


class Sketch(Protocol):
    def feed(self, identities: range) -> None: ...
    def add_text(self, identity: str) -> None: ...
    def estimate(self) -> float: ...
    def bounds(self) -> tuple[float, float]: ...
    def to_bytes(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    new: Callable[[], Sketch]
    union: Callable[[Sequence[Sketch]], Sketch]


class LibrarySketch:
    """One of the library's sketches (HLL or CPC: the same methods, but for how each serializes)."""

    __slots__ = ("serialize", "sketch")

    def __init__(self, sketch: Any, serialize: Callable[[Any], Any]) -> None:
        self.sketch = sketch
        self.serialize = serialize

    def feed(self, identities: range) -> None:
        update = self.sketch.update
        for identity in identities:
            update(identity)

    def add_text(self, identity: str) -> None:
        self.sketch.update(identity)

    def estimate(self) -> float:
        return float(self.sketch.get_estimate())

    def bounds(self) -> tuple[float, float]:
        return float(self.sketch.get_lower_bound(2)), float(self.sketch.get_upper_bound(2))

    def to_bytes(self) -> bytes:
        return bytes(self.serialize(self.sketch))


def hll_candidate(lg_k: int, kind: datasketches.tgt_hll_type) -> Candidate:
    def serialize(sketch: datasketches.hll_sketch) -> Any:
        return sketch.serialize_compact()

    def union(sketches: Sequence[Sketch]) -> Sketch:
        merged = datasketches.hll_union(lg_k)
        for sketch in sketches:
            assert isinstance(sketch, LibrarySketch)
            merged.update(sketch.sketch)
        return LibrarySketch(merged.get_result(kind), serialize)

    return Candidate(
        f"HLL {lg_k} {kind.name}",
        lambda: LibrarySketch(datasketches.hll_sketch(lg_k, kind), serialize),
        union,
    )


def cpc_candidate(lg_k: int) -> Candidate:
    def serialize(sketch: datasketches.cpc_sketch) -> Any:
        return sketch.serialize()

    def union(sketches: Sequence[Sketch]) -> Sketch:
        merged = datasketches.cpc_union(lg_k)
        for sketch in sketches:
            assert isinstance(sketch, LibrarySketch)
            merged.update(sketch.sketch)
        return LibrarySketch(merged.get_result(), serialize)

    return Candidate(f"CPC {lg_k}", lambda: LibrarySketch(datasketches.cpc_sketch(lg_k), serialize), union)


class Product:
    """`DistinctCount` fed text identities, as the product feeds it."""

    __slots__ = ("count",)

    def __init__(self, count: distinct.DistinctCount) -> None:
        self.count = count

    def feed(self, identities: range) -> None:
        add = self.count.add
        for identity in identities:
            add(str(identity))

    def add_text(self, identity: str) -> None:
        self.count.add(identity)

    def estimate(self) -> float:
        return self.count.estimate()

    def bounds(self) -> tuple[float, float]:
        return self.count.bounds()

    def to_bytes(self) -> bytes:
        return self.count.to_bytes()


def product_union(sketches: Sequence[Sketch]) -> Sketch:
    counts = []
    for sketch in sketches:
        assert isinstance(sketch, Product)
        counts.append(sketch.count)
    return Product(distinct.union(counts))


CANDIDATES = (
    hll_candidate(13, datasketches.tgt_hll_type.HLL_4),
    hll_candidate(13, datasketches.tgt_hll_type.HLL_8),
    hll_candidate(14, datasketches.tgt_hll_type.HLL_4),
    hll_candidate(14, datasketches.tgt_hll_type.HLL_8),
    cpc_candidate(11),
    cpc_candidate(12),
    cpc_candidate(13),
    Candidate("DistinctCount", lambda: Product(distinct.DistinctCount()), product_union),
)


def identities_of(count_index: int, trial: int, count: int) -> range:
    """Identities of one trial, disjoint from every other trial's (the sketches hash them: consecutive
    integers are as good as random ones)."""
    start = (count_index * 4096 + trial) << 21
    return range(start, start + count)


def replica_shares(identities: range) -> list[range]:
    """Three overlapping shares covering `identities`: replica r sees the r-th window of three fifths,
    so the middle fifth is seen by all three and every identity by at least one."""
    count = len(identities)
    starts = (0, count // 5, 2 * count // 5)
    stops = (count - 2 * count // 5, count - count // 5, count)
    return [identities[start:stop] for start, stop in zip(starts, stops, strict=True)]


@dataclass(slots=True)
class Errors:
    relative: list[float] = field(default_factory=list)
    exact: int = 0
    covered: int = 0

    def record(self, sketch: Sketch, truth: int) -> None:
        estimate = sketch.estimate()
        self.relative.append(abs(estimate - truth) / truth)
        self.exact += round(estimate) == truth
        lower, upper = sketch.bounds()
        self.covered += lower <= truth <= upper

    def worst(self) -> float:
        return max(self.relative)

    def p95(self) -> float:
        return percentile(self.relative, 0.95)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Row:
    trials: int
    single: Errors
    merged: Errors
    serialized: int
    union_micros: float


def measure(candidate: Candidate, count_index: int, count: int, trials: int) -> Row:
    single, merged = Errors(), Errors()
    serialized = 0
    union_micros = 0.0
    for trial in range(trials):
        identities = identities_of(count_index, trial, count)
        sketch = candidate.new()
        sketch.feed(identities)
        single.record(sketch, count)
        replicas = []
        for share in replica_shares(identities):
            replica = candidate.new()
            replica.feed(share)
            replicas.append(replica)
        merged.record(candidate.union(replicas), count)
        if trial == trials - 1:
            serialized = len(sketch.to_bytes())
            timings = []
            for _ in range(UNION_REPEATS):
                started = time.perf_counter()
                candidate.union(replicas)
                timings.append(time.perf_counter() - started)
            union_micros = statistics.median(timings) * 1e6
    return Row(trials, single, merged, serialized, union_micros)


def update_nanos() -> dict[str, float]:
    """Nanoseconds per identity added to a fresh sketch, through Python, from 0 to UPDATE_IDENTITIES
    identities: the best of UPDATE_ROUNDS, the candidates taking turns so that a busy moment of a shared
    machine does not fall on one of them only."""
    identities = [
        str(uuid.UUID(int=(index * 0x9E3779B97F4A7C15) % (1 << 128))) for index in range(UPDATE_IDENTITIES)
    ]
    best = dict.fromkeys((candidate.name for candidate in CANDIDATES), math.inf)
    for _ in range(UPDATE_ROUNDS):
        for candidate in CANDIDATES:
            sketch = candidate.new()
            add = sketch.add_text
            started = time.perf_counter()
            for identity in identities:
                add(identity)
            best[candidate.name] = min(best[candidate.name], time.perf_counter() - started)
    return {name: seconds / len(identities) * 1e9 for name, seconds in best.items()}


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use() -> Callable[[], int] | None:
    """Bytes allocated from the C heap now (glibc's mallinfo2), or None where it is not available."""
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    libc = ctypes.CDLL(path)
    if not hasattr(libc, "mallinfo2"):
        return None
    mallinfo2 = libc.mallinfo2
    mallinfo2.restype = MallInfo2

    def in_use() -> int:
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return in_use


def memory_child() -> None:
    """Runs under PYTHONMALLOC=malloc: prints {candidate: {count: bytes held by one built sketch}}."""
    in_use = heap_in_use()
    held: dict[str, dict[int, int]] = {}
    if in_use is not None:
        for candidate in CANDIDATES:  # the first allocations of a kind set up more than a sketch
            candidate.new().feed(range(10))
        for candidate in CANDIDATES:
            held[candidate.name] = {}
            for count_index, count in enumerate((0, *COUNTS)):
                gc.collect()
                before = in_use()
                sketch = candidate.new()
                sketch.feed(identities_of(count_index, 0, count))
                gc.collect()
                held[candidate.name][count] = in_use() - before
                del sketch
    print(json.dumps(held))


def memory_per_sketch() -> dict[str, dict[int, int]]:
    # glibc's per-thread cache and fast bins keep freed chunks counted as in use: without them, what a
    # sketch allocates is exactly what mallinfo2 sees grow.
    environment = {
        **os.environ,
        "PYTHONMALLOC": "malloc",
        "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0",
    }
    child = subprocess.run(
        [sys.executable, "-m", "tests.bench_sketches", "--memory-child"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    answer: dict[str, dict[str, int]] = json.loads(child.stdout)
    return {name: {int(count): size for count, size in sizes.items()} for name, sizes in answer.items()}


def main(trials_scale: float) -> None:
    started = time.perf_counter()
    memory = memory_per_sketch()
    print(
        "relative errors in %; exact% = estimate rounded to the nearest integer equals the truth; "
        "in-CI% = the 2-standard-deviation bounds contain it; u.* = after the union of 3 overlapping "
        "replicas; bytes = compact serialized; memory = C heap held by one built sketch"
    )
    header = (
        f"{'candidate':<14} {'count':>9} {'trials':>6} {'worst%':>7} {'p95%':>6} {'exact%':>7} "
        f"{'in-CI%':>6} {'u.worst%':>8} {'u.p95%':>6} {'u.exact%':>8} {'bytes':>6} {'memory':>7} "
        f"{'union us':>9}"
    )
    summaries: list[tuple[str, list[float], list[float]]] = []
    for candidate in CANDIDATES:
        print(header)
        empty = memory.get(candidate.name, {}).get(0)
        serialized_empty = len(candidate.new().to_bytes())
        print(
            f"{candidate.name:<14} {0:>9} {'':>6} {'':>7} {'':>6} {'':>7} {'':>6} {'':>8} {'':>6} {'':>8} "
            f"{serialized_empty:>6} {empty if empty is not None else 'n/a':>7} {'':>9}"
        )
        pooled_single: list[float] = []
        pooled_merged: list[float] = []
        for count_index, count in enumerate(COUNTS, start=1):
            row = measure(candidate, count_index, count, trials_at(count, trials_scale))
            if count > SMALL:
                pooled_single.extend(row.single.relative)
                pooled_merged.extend(row.merged.relative)
            held = memory.get(candidate.name, {}).get(count)
            print(
                f"{candidate.name:<14} {count:>9} {row.trials:>6} {row.single.worst() * 100:>7.3f} "
                f"{row.single.p95() * 100:>6.3f} {row.single.exact / row.trials * 100:>7.1f} "
                f"{row.single.covered / row.trials * 100:>6.1f} {row.merged.worst() * 100:>8.3f} "
                f"{row.merged.p95() * 100:>6.3f} {row.merged.exact / row.trials * 100:>8.1f} "
                f"{row.serialized:>6} {held if held is not None else 'n/a':>7} {row.union_micros:>9.1f}",
                flush=True,
            )
        summaries.append((candidate.name, pooled_single, pooled_merged))
    add_nanos = update_nanos()
    print(
        f"\npooled over every count above {SMALL}; add ns = {UPDATE_IDENTITIES} session ids into a fresh "
        f"sketch, best of {UPDATE_ROUNDS} rounds"
    )
    print(
        f"{'candidate':<14} {'add ns':>9} {'worst%':>9} {'p95%':>7} {'u.worst%':>9} {'u.p95%':>7} "
        f"{'trials':>7}"
    )
    for name, pooled_single, pooled_merged in summaries:
        print(
            f"{name:<14} {add_nanos[name]:>9.0f} {max(pooled_single) * 100:>9.3f} "
            f"{percentile(pooled_single, 0.95) * 100:>7.3f} {max(pooled_merged) * 100:>9.3f} "
            f"{percentile(pooled_merged, 0.95) * 100:>7.3f} {len(pooled_single):>7}"
        )
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trials-scale", type=float, default=1.0, help="multiplies the number of trials at every count"
    )
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.memory_child:
        memory_child()
    else:
        main(arguments.trials_scale)
