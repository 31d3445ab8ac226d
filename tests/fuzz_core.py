"""`make fuzz SECONDS=60`: coverage-guided fuzzing (atheris, i.e. libFuzzer) of the compiled ingest core
against the reference scan, with the core built for coverage and AddressSanitizer/UBSan.

An input is one byte choosing the dimensions, one the attribute limit, then the payload. Any
disagreement between the core and the reference (accept or refuse, sizes, series and their order, long
attributes, or a decline where protobuf merges nothing) raises, which libFuzzer reports as a crash and
saves as a crash-* file. The corpus starts from random requests in canonical and non-canonical
encodings.
"""

from __future__ import annotations

import ctypes
import importlib.util
import random
import sys
from pathlib import Path

import atheris

DIMENSIONS: list[tuple[tuple[tuple[bytes, ...], ...], tuple[tuple[bytes, ...], ...]] | None] = [
    None,
    (((b"service.name",),), ((),)),
    (((b"service.name",), (b"team",)), ((b"service.name",), (b"team",))),
    (((b"app", b"service.name"),), ((b"team", b"app"),)),
    (((), (b"team", b"team")), ((b"k8s.namespace.name",), (b"", b"team"))),
    ((), ()),
]
LIMITS = (0, 1, 5, 40)


def seed_corpus(directory: Path, differential: object) -> None:
    """Writes starting inputs when the corpus is empty."""
    if any(directory.iterdir()):
        return
    rng = random.Random(1)
    for index in range(64):
        request = differential.random_request(rng)  # type: ignore[attr-defined]
        encoder = differential.Encoder(rng, canonical=index % 2 == 0, merges=index % 8 == 1)  # type: ignore[attr-defined]
        header = bytes([index % len(DIMENSIONS), index % len(LIMITS)])
        (directory / f"seed-{index}").write_bytes(header + encoder.message(request))


def register_core_coverage(core: object) -> None:
    """Hands the core's coverage counters to the libFuzzer atheris loaded (privately, in Setup)."""
    spec = importlib.util.find_spec("atheris.core_with_libfuzzer")
    assert spec is not None and spec.origin is not None
    libfuzzer = ctypes.CDLL(spec.origin)  # the copy already loaded: same handle
    addresses = [
        ctypes.cast(getattr(libfuzzer, name), ctypes.c_void_p).value
        for name in ("__sanitizer_cov_8bit_counters_init", "__sanitizer_cov_pcs_init")
    ]
    core._fuzz_coverage(*addresses)  # type: ignore[attr-defined]


def main() -> None:
    test_one_input: list[object] = []
    atheris.Setup(sys.argv, lambda data: test_one_input[0](data))  # type: ignore[operator]
    from tests import test_core_differential as differential  # loads the core from INGEST_CORE_PATH

    assert differential.CORE is not None, "set INGEST_CORE_PATH to a build of the core"
    register_core_coverage(differential.CORE)
    corpus = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for directory in corpus:
        directory.mkdir(parents=True, exist_ok=True)
        seed_corpus(directory, differential)

    def one_input(data: bytes) -> None:
        if len(data) < 2:
            return
        dimensions = DIMENSIONS[data[0] % len(DIMENSIONS)]
        resource_keys, span_keys = dimensions if dimensions is not None else (None, None)
        differential.agree(data[2:], resource_keys, span_keys, LIMITS[data[1] % len(LIMITS)])

    test_one_input.append(one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
