"""Only the optional C core; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "distributor.ingest._core",
            ["distributor/ingest/_core.c"],
            # Optional: without a compiler the package still installs and ingest takes the reference path.
            optional=True,
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
