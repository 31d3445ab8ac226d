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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def seed_corpus(directory: Path, differential: Any) -> None:
    """Writes starting inputs when the corpus is empty: random requests in both encodings, every wire
    format edge of the differential test, nesting around the depth limit, and UTF-8 edges."""
    if any(directory.iterdir()):
        return
    rng = random.Random(1)
    payloads = []
    for index in range(64):
        request = differential.random_request(rng)
        payloads.append(
            differential.Encoder(rng, canonical=index % 2 == 0, merges=index % 8 == 1).message(request)
        )
    payloads.extend(differential.WIRE_EDGES.values())
    for levels in (99, 100, 101):
        payloads.extend(differential.deep_request(levels, kind, "span") for kind in ("array", "kvlist"))
    full = differential.full_request()
    for at, text in enumerate(differential.VALID_UTF8 + differential.INVALID_UTF8):
        payloads.append(
            differential.Encoder(rng, canonical=True, string_at=at % 24, string_bytes=text).message(full)
        )
    for index, payload in enumerate(payloads):
        header = bytes([index % len(DIMENSIONS), index % len(LIMITS)])
        (directory / f"seed-{index}").write_bytes(header + payload)


# Byte strings libFuzzer splices in: UTF-8 sequences at the edges of validity, group tags, long varints.
DICTIONARY = [
    b"\xed\x9f\xbf",
    b"\xed\xa0\x80",
    b"\xee\x80\x80",
    b"\xf4\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xe0\xa0\x80",
    b"\xe0\x9f\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xc2\x80",
    b"\xc1\xbf",
    b"\x4b" * 8,
    b"\x4c" * 8,
    b"\x80\x80\x80\x80",
    b"\xff\xff\xff\xff\x0f",
    b"\x85\x01",
]


def write_dictionary(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = ["".join(f"\\x{byte:02x}" for byte in token) for token in DICTIONARY]
    path.write_text("".join(f'"{entry}"\n' for entry in entries))


def register_core_coverage(core: Any) -> None:
    """Hands the core's coverage counters to the libFuzzer atheris loaded (privately, in Setup)."""
    spec = importlib.util.find_spec("atheris.core_with_libfuzzer")
    assert spec is not None and spec.origin is not None
    libfuzzer = ctypes.CDLL(spec.origin)  # the copy already loaded: same handle
    addresses = [
        ctypes.cast(getattr(libfuzzer, name), ctypes.c_void_p).value
        for name in ("__sanitizer_cov_8bit_counters_init", "__sanitizer_cov_pcs_init")
    ]
    core._fuzz_coverage(*addresses)


def main() -> None:
    dictionary = Path("build/fuzz/core.dict")
    write_dictionary(dictionary)
    test_one_input: list[Callable[[bytes], None]] = []
    atheris.Setup([*sys.argv, f"-dict={dictionary}"], lambda data: test_one_input[0](data))
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
