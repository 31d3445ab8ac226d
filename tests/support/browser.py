"""Debian's Chromium (the `chromium` package) driven headless by Playwright for Python, for the usage
page's tests. Where Chromium or Playwright is missing those tests are skipped, unless CI=true (then
failed: .ci/run installs Chromium, and Playwright comes with the test extras)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Screenshots of each view of the page, kept after the run (git-ignored) for people and CI to look at.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "usage-page"


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def chromium_path() -> str:
    """Chromium's path; skips the test (fails it when CI=true) when it or Playwright is missing."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        _skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        _skip_or_fail(
            f"Chromium is not at {CHROMIUM} (Debian: apt-get install --no-install-recommends chromium; "
            "or set CHROMIUM_PATH)"
        )
    return str(CHROMIUM)
