"""Only the optional C extensions; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

# CPython's own flags, which setuptools compiles extensions with, include -fwrapv (signed overflow
# wraps). Nothing in the extensions relies on wrapping (every length is checked before it is added), and
# the core's walk is ~10% faster without it (bench request, interleaved runs: the (b) scan 128 -> 115 us,
# the no-dimension scan 119 -> 103 us): gcc can fold its bounds arithmetic. The sanitizer builds run
# without -fwrapv too, so UBSan would report any overflow.
COMPILE_ARGS = [
    "-O3",
    "-std=c11",
    "-fno-wrapv",
    "-Wall",
    "-Wextra",
    "-Wno-missing-field-initializers",
]

setup(
    ext_modules=[
        Extension(
            "distributor.ingest._core",
            ["distributor/ingest/_core.c"],
            # Optional: without a compiler the package still installs and ingest takes the reference path.
            optional=True,
            extra_compile_args=COMPILE_ARGS,
        ),
        Extension(
            "distributor.receivers._otlp_json",
            ["distributor/receivers/_otlp_json.c"],
            # Optional too: without it OTLP/JSON is converted by the Python walk alone.
            optional=True,
            extra_compile_args=COMPILE_ARGS,
        ),
    ]
)
