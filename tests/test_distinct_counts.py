"""Distinct counts: exact up to EXACT_LIMIT identities however they are added and merged, within 2% of
the truth beyond (at the 95% confidence the product states; fixed identities, so each case is
deterministic), merges of overlapping replicas' counts equal to the count of the union, and a byte form
that round-trips and refuses anything else with ValueError.

The error margins: `python -m tests.bench_sketches` and the module docstring of distributor.common.distinct.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterable, Sequence

import datasketches
import pytest

from distributor.common.distinct import EXACT_LIMIT, FORMAT_VERSION, LG_K, DistinctCount, union

TOLERANCE = 0.02
EXACT_FORM, SKETCH_FORM = 0, 1


def identities(label: str, count: int, start: int = 0) -> list[str]:
    return [f"{label}-{index:07d}" for index in range(start, start + count)]


def count_of(values: Iterable[str]) -> DistinctCount:
    count = DistinctCount()
    for value in values:
        count.add(value)
    return count


def replicas_of(values: Sequence[str], seed: int) -> list[list[str]]:
    """Three replicas' shares of `values`: each value reaches one, two or all three replicas, and each
    replica sees some values more than once."""
    chooser = random.Random(seed)
    shares: list[list[str]] = [[], [], []]
    for value in values:
        for replica in chooser.sample(range(3), chooser.randint(1, 3)):
            shares[replica].extend([value] * chooser.randint(1, 2))
    for share in shares:
        chooser.shuffle(share)
    return shares


def assert_exact(count: DistinctCount, truth: int) -> None:
    assert count.exact
    assert count.count() == truth
    assert count.estimate() == truth
    assert count.bounds() == (truth, truth)


def assert_close(count: DistinctCount, truth: int) -> None:
    estimate = count.estimate()
    assert abs(estimate - truth) <= TOLERANCE * truth, f"estimate {estimate} for {truth}"
    lower, upper = count.bounds()
    assert lower <= truth <= upper
    assert count.count() == round(estimate)


def sealed(form: int, body: bytes, version: int = FORMAT_VERSION) -> bytes:
    """`body` in the byte form's envelope with a correct digest: bytes that reach the parser proper."""
    prefix = bytes((version, form))
    return prefix + hashlib.blake2b(prefix + body, digest_size=8).digest() + body


def exact_body(hashes: Sequence[int], sketch: bytes) -> bytes:
    return struct.pack(f"<H{len(hashes)}Q", len(hashes), *hashes) + sketch


def test_an_empty_count_is_zero_and_the_empty_identity_is_none() -> None:
    count = DistinctCount()
    count.add("")
    assert count.empty
    assert_exact(count, 0)
    assert union([]).empty
    assert DistinctCount.from_bytes(count.to_bytes()).empty


def test_every_count_up_to_the_limit_is_exact_with_repeated_identities() -> None:
    values = identities("session", EXACT_LIMIT + 1)
    chooser = random.Random(1)
    count = DistinctCount()
    for seen, value in enumerate(values[:EXACT_LIMIT], start=1):
        count.add(value)
        count.add(values[chooser.randrange(seen)])  # one seen before, again
        assert count.count() == seen
    assert_exact(count, EXACT_LIMIT)
    count.add(values[EXACT_LIMIT])
    assert not count.exact
    assert_close(count, EXACT_LIMIT + 1)


@pytest.mark.parametrize("truth", [1, 2, 5, 10, 100, 999, EXACT_LIMIT])
def test_small_counts_are_exact_in_any_order_of_repeats(truth: int) -> None:
    values = identities(f"host{truth}", truth) * 3
    random.Random(truth).shuffle(values)
    assert_exact(count_of(values), truth)


def test_identities_the_library_refuses_are_counted_too() -> None:
    lone_surrogate = "session-\udc80"
    count = count_of([lone_surrogate, lone_surrogate, "session-\u00e9", "session-e"])
    assert_exact(count, 3)
    assert_exact(DistinctCount.from_bytes(count.to_bytes()), 3)


@pytest.mark.parametrize(("truth", "seeds"), [(10_000, (1, 2, 3)), (100_000, (1, 2)), (1_000_000, (1,))])
def test_large_counts_are_within_two_percent(truth: int, seeds: tuple[int, ...]) -> None:
    for seed in seeds:
        count = count_of(identities(f"run{seed}", truth))
        assert not count.exact
        assert_close(count, truth)


def test_a_count_just_over_the_limit_is_never_reported_at_or_under_it() -> None:
    for seed in range(20):
        count = count_of(identities(f"edge{seed}", EXACT_LIMIT + 1))
        assert count.count() >= EXACT_LIMIT + 1
        assert count.bounds()[0] >= EXACT_LIMIT + 1
        assert_close(count, EXACT_LIMIT + 1)


@pytest.mark.parametrize("truth", [1, 7, 300, EXACT_LIMIT])
def test_replicas_of_a_small_count_merge_to_the_exact_count_of_the_union(truth: int) -> None:
    shares = replicas_of(identities("small", truth), seed=truth)
    replicas = [count_of(share) for share in shares]
    assert_exact(union(replicas), truth)
    merged = DistinctCount()
    for replica in reversed(replicas):
        merged.merge(replica)
    assert_exact(merged, truth)


@pytest.mark.parametrize("truth", [EXACT_LIMIT + 1, 5_000, 50_000])
def test_replicas_of_a_large_count_merge_to_the_count_of_the_union(truth: int) -> None:
    values = identities("large", truth)
    replicas = [count_of(share) for share in replicas_of(values, seed=truth)]
    merged = union(replicas)
    assert not merged.exact
    assert_close(merged, truth)
    # A union is of the identities, not of the order of merging nor of how they were spread.
    one_by_one = DistinctCount()
    for replica in (replicas[2], replicas[0], replicas[1], replicas[0]):
        one_by_one.merge(replica)
    assert one_by_one.estimate() == merged.estimate()
    assert union([union(replicas[:2]), replicas[2]]).to_bytes() == merged.to_bytes()
    assert union([count_of(values), *replicas]).estimate() == merged.estimate()


def test_merges_of_each_form_with_each() -> None:
    small_a = count_of(identities("a", 600))
    small_b = count_of(identities("a", 600, start=300))  # 300 shared: 900 in all
    small_c = count_of(identities("a", 500, start=700))  # with small_a: 1100 in all
    large = count_of(identities("a", 5_000, start=200))

    assert_exact(union([small_a, small_b]), 900)
    assert_exact(union([small_a, count_of(identities("a", 400, start=600))]), EXACT_LIMIT)
    over = union([small_a, small_c])
    assert not over.exact
    assert_close(over, 1100)
    assert_close(union([small_a, large]), 5_200)
    assert_close(union([large, small_a]), 5_200)
    assert_close(union([over, large]), 5_200)
    assert_close(union([large, count_of(identities("a", 5_000, start=4_000))]), 8_800)
    # merge() changes only the count merged into.
    small_a.merge(large)
    assert_close(small_a, 5_200)
    assert_exact(small_b, 600)
    assert_close(large, 5_000)


def test_a_union_counts_identities_not_counts() -> None:
    for truth in (50, 3_000):
        count = count_of(identities("self", truth))
        copy = DistinctCount.from_bytes(count.to_bytes())
        assert union([count, count, copy]).to_bytes() == union([count]).to_bytes()
        merged = DistinctCount.from_bytes(count.to_bytes())
        merged.merge(count)
        assert merged.to_bytes() == union([count]).to_bytes()


@pytest.mark.parametrize("truth", [0, 1, 100, EXACT_LIMIT, EXACT_LIMIT + 1, 50_000])
def test_the_byte_form_round_trips_and_keeps_counting(truth: int) -> None:
    values = identities("trip", truth)
    count = count_of(values)
    data = count.to_bytes()
    assert data[0] == FORMAT_VERSION
    assert data[1] == (EXACT_FORM if truth <= EXACT_LIMIT else SKETCH_FORM)
    restored = DistinctCount.from_bytes(data)
    assert restored.to_bytes() == data
    assert (restored.exact, restored.empty, restored.estimate(), restored.bounds()) == (
        count.exact,
        count.empty,
        count.estimate(),
        count.bounds(),
    )
    # Identities already in the count stay counted once; new ones add to it, as before the round trip.
    for value in [*values[:20], "trip-new"]:
        restored.add(value)
        count.add(value)
    assert restored.to_bytes() == count.to_bytes()
    if truth < EXACT_LIMIT:
        assert_exact(restored, truth + 1)


def test_empty_counts_restored_or_merged_estimate_past_the_limit() -> None:
    for count in (
        DistinctCount.from_bytes(DistinctCount().to_bytes()),
        union([]),
        union([DistinctCount(), DistinctCount.from_bytes(DistinctCount().to_bytes())]),
    ):
        for value in identities("afresh", 5_000):
            count.add(value)
        assert_close(count, 5_000)
        assert_close(DistinctCount.from_bytes(count.to_bytes()), 5_000)


def test_merges_of_restored_counts_equal_merges_of_the_originals() -> None:
    counts = [count_of(identities("r", size, start=size // 2)) for size in (10, 700, 4_000)]
    restored = [DistinctCount.from_bytes(count.to_bytes()) for count in counts]
    for pair in ((0, 1), (1, 1), (0, 2), (1, 2)):
        assert (
            union(restored[index] for index in pair).to_bytes()
            == union(counts[index] for index in pair).to_bytes()
        )


VALID = {
    "empty": DistinctCount().to_bytes(),
    "exact": count_of(identities("valid", 40)).to_bytes(),
    "sketch": count_of(identities("valid", 3_000)).to_bytes(),
}


@pytest.mark.parametrize("name", list(VALID))
def test_every_truncation_and_every_damaged_byte_is_refused(name: str) -> None:
    data = VALID[name]
    for cut in range(len(data)):
        with pytest.raises(ValueError, match="not a distinct count"):
            DistinctCount.from_bytes(data[:cut])
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x20
        with pytest.raises(ValueError, match="not a distinct count"):
            DistinctCount.from_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="not a distinct count"):
        DistinctCount.from_bytes(data + b"\x00")


def test_garbage_is_refused() -> None:
    source = random.Random(7)
    garbage = [b"", b"\x01", b"\x01\x00", bytes(10), b"\x01" * 64, b"not a distinct count at all"]
    garbage += [source.randbytes(source.randrange(1, 6_000)) for _ in range(200)]
    garbage += [bytes((FORMAT_VERSION, source.choice((0, 1)))) + source.randbytes(100) for _ in range(50)]
    for data in garbage:
        with pytest.raises(ValueError, match="not a distinct count"):
            DistinctCount.from_bytes(data)


def cpc_bytes(values: Iterable[str], lg_k: int = LG_K) -> bytes:
    sketch = datasketches.cpc_sketch(lg_k)
    for value in values:
        sketch.update(value)
    return bytes(sketch.serialize())


@pytest.mark.parametrize(
    ("reason", "data"),
    [
        ("version 0", sealed(EXACT_FORM, exact_body([], b""), version=0)),
        ("a later version", sealed(EXACT_FORM, exact_body([], b""), version=2)),
        ("an unknown form", sealed(2, cpc_bytes(["a"]))),
        ("no hash count", sealed(EXACT_FORM, b"\x01")),
        ("more hashes than stored", sealed(EXACT_FORM, struct.pack("<HQ", 2, 5))),
        ("more hashes than the limit", sealed(EXACT_FORM, exact_body(range(1, EXACT_LIMIT + 2), b""))),
        ("hashes out of order", sealed(EXACT_FORM, exact_body([9, 5], b""))),
        ("a hash twice", sealed(EXACT_FORM, exact_body([5, 5], b""))),
        ("bytes after the hashes", sealed(EXACT_FORM, exact_body([5], cpc_bytes(["a"])))),
        ("an empty sketch form", sealed(SKETCH_FORM, cpc_bytes([]))),
        ("a cut sketch", sealed(SKETCH_FORM, cpc_bytes(identities("cut", 5_000))[:-40])),
        ("another lg_k", sealed(SKETCH_FORM, cpc_bytes(identities("k", 5_000), lg_k=LG_K - 1))),
        ("an HLL sketch", sealed(SKETCH_FORM, bytes(datasketches.hll_sketch(LG_K).serialize_compact()))),
    ],
)
def test_well_sealed_bytes_that_are_not_a_count_are_refused(reason: str, data: bytes) -> None:
    with pytest.raises(ValueError, match="not a distinct count"):
        DistinctCount.from_bytes(data)


def test_the_exact_form_holds_the_identities_hashes() -> None:
    """The stored hashes are the format's: the first 8 bytes of BLAKE2b of the UTF-8, ascending."""
    values = ["host-b", "host-a", "h\u00f4te"]
    data = count_of(values).to_bytes()
    expected = sorted(
        int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little") for value in values
    )
    assert data[10:12] == struct.pack("<H", 3)
    assert list(struct.unpack_from("<3Q", data, 12)) == expected
    # Bytes written by hand in the format are read as the same count.
    handmade = sealed(EXACT_FORM, exact_body(expected, b""))
    assert handmade == data
