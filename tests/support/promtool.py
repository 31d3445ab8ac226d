"""Prometheus's promtool (Debian's `prometheus` package), for the tests of the example rules and the
dashboard's queries. Where it is not installed those tests are skipped, unless CI=true (then failed:
.ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def promtool() -> str:
    """promtool's path; skips the test (fails it when CI=true) when it is not on PATH."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not on PATH (Debian: apt-get install --no-install-recommends prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """promtool with these arguments, its output (stdout and stderr together) as text."""
    return subprocess.run(
        [promtool(), *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
