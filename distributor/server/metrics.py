"""The process's metrics registry, served at GET /metrics (usage series live at /usage_metrics), and
what this build is (the tempo_build_info series and GET /status/buildinfo)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# No `_created` series: prometheus_client adds one per counter, histogram and summary series (43 of
# 374 series on an idle service), which Prometheus does not use and Tempo does not expose. A setting of
# the whole process, read whenever metrics are collected: made once, when this module is imported.
disable_created_metrics()  # type: ignore[no-untyped-call]

PACKAGE = "otel-usage-distributor"


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    revision: str  # the git commit of a source checkout, else ""
    branch: str  # its branch, else ""
    python_version: str

    def as_status(self) -> dict[str, str]:
        """Tempo's /status/buildinfo document (Prometheus's build information fields), with the
        Python version where Tempo gives Go's; buildUser and buildDate are not recorded."""
        return {
            "version": self.version,
            "revision": self.revision,
            "branch": self.branch,
            "buildUser": "",
            "buildDate": "",
            "pythonVersion": self.python_version,
        }


@cache
def build_info() -> BuildInfo:
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = ""
    revision, branch = _git_checkout(Path(__file__).resolve().parents[2])
    return BuildInfo(version, revision, branch, platform.python_version())


def _git_checkout(root: Path) -> tuple[str, str]:
    """(commit, branch) of the git checkout at `root` (installed with `pip install -e`), read from
    its files, without running git; ("", "") when it is not one or cannot be read."""
    try:
        git = root / ".git"
        if git.is_file():  # a worktree: `gitdir: <path>`
            git = Path(git.read_text().removeprefix("gitdir:").strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head, ""  # a detached HEAD holds the commit
        ref = head.removeprefix("ref:").strip()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for folder in (git, common):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip(), ref.removeprefix("refs/heads/")
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                commit, _, name = line.partition(" ")
                if name == ref:
                    return commit, ref.removeprefix("refs/heads/")
        return "", ref.removeprefix("refs/heads/")
    except (OSError, UnicodeDecodeError):
        return "", ""


def new_registry() -> CollectorRegistry:
    """One registry per service instance, so several services can run in one process (tests)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    info = build_info()
    # Named and labelled like Tempo's (pythonversion where Tempo has goversion), always 1.
    Gauge(
        "tempo_build_info",
        "A metric with a constant '1' value labeled by version, revision, branch, and pythonversion "
        "from which the distributor was built.",
        ["version", "revision", "branch", "pythonversion"],
        registry=registry,
    ).labels(info.version, info.revision, info.branch, info.python_version).set(1)
    return registry
