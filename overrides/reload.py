"""Runtime overrides: re-read the per-tenant file and swap in a new snapshot only if all of it is valid.

Like Cortex/Tempo runtime config: a bad edit (invalid YAML or values, a half-written or empty file, a
missing or unreadable file) never changes what is in force; it is logged once per distinct error and
visible through `status` (exported as tempo_runtime_config_* metrics).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from distributor.common.config_reader import ConfigError, read_bytes
from distributor.overrides.loading import parse_per_tenant_file
from distributor.overrides.model import TenantOverrides
from distributor.overrides.provider import OverridesProvider
from distributor.overrides.user_configurable import UserConfigurableOverrides

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    sha256_in_force: str  # of the file content in force
    last_reload_successful: bool
    last_success_time: float  # wall-clock seconds
    last_error: str | None
    content_in_force: bytes


class RuntimeOverridesReloader:
    def __init__(
        self,
        provider: OverridesProvider,
        path: Path,
        defaults: TenantOverrides,
        expand_env: bool = False,
        wall_clock: Callable[[], float] = time.time,
        forwarder_names: Collection[str] | None = None,
    ) -> None:
        self.provider = provider
        self.forwarder_names = forwarder_names
        self.path = path
        self.defaults = defaults
        self.expand_env = expand_env
        self._wall_clock = wall_clock
        self._hash_in_force = ""
        self._content_in_force = b""
        self._hash_last_seen = ""
        self._successful = True
        self._success_time = 0.0
        self._last_error: str | None = None

    @classmethod
    def load_initial(
        cls,
        path: Path,
        defaults: TenantOverrides,
        expand_env: bool = False,
        wall_clock: Callable[[], float] = time.time,
        forwarder_names: Collection[str] | None = None,
    ) -> RuntimeOverridesReloader:
        """Read the file at start-up; here an invalid file is fatal (raises ConfigError)."""
        data = read_bytes(path)
        snapshot = parse_per_tenant_file(data, str(path), defaults, expand_env, None, forwarder_names)
        reloader = cls(OverridesProvider(snapshot), path, defaults, expand_env, wall_clock, forwarder_names)
        reloader._hash_in_force = reloader._hash_last_seen = hashlib.sha256(data).hexdigest()
        reloader._content_in_force = data
        reloader._success_time = wall_clock()
        return reloader

    @property
    def status(self) -> ReloadStatus:
        return ReloadStatus(
            self._hash_in_force,
            self._successful,
            self._success_time,
            self._last_error,
            self._content_in_force,
        )

    def reload(self) -> bool:
        """Re-read the file; True when a new snapshot was put in force. Never raises for a bad file."""
        try:
            data = read_bytes(self.path)
        except ConfigError as err:
            self._fail(str(err), content_hash="")
            return False
        content_hash = hashlib.sha256(data).hexdigest()
        if content_hash == self._hash_last_seen:
            return False  # unchanged since the last attempt, good or bad: nothing new to say or apply
        try:
            snapshot = parse_per_tenant_file(
                data, str(self.path), self.defaults, self.expand_env, None, self.forwarder_names
            )
        except ConfigError as err:
            self._fail(str(err), content_hash)
            return False
        # The file is one layer; what tenants set through the API stays as it is.
        self.provider.replace(dataclasses.replace(snapshot, user=self.provider.snapshot.user))
        self._hash_in_force = self._hash_last_seen = content_hash
        self._content_in_force = data
        self._successful = True
        self._success_time = self._wall_clock()
        self._last_error = None
        log.info("per-tenant overrides reloaded from %s (sha256 %s)", self.path, content_hash[:12])
        return True

    def _fail(self, error: str, content_hash: str) -> None:
        self._hash_last_seen = content_hash
        self._successful = False
        if error != self._last_error:
            log.error("per-tenant overrides not reloaded, the last good ones stay in force: %s", error)
        self._last_error = error


class OverridesRefresh:
    """Every source of overrides read again at runtime: the per-tenant file and the directory of
    user-configurable overrides (where other replicas write)."""

    def __init__(
        self, reloader: RuntimeOverridesReloader | None, user_overrides: UserConfigurableOverrides | None
    ) -> None:
        self.reloader = reloader
        self.user_overrides = user_overrides

    @property
    def has_sources(self) -> bool:
        return self.reloader is not None or self.user_overrides is not None

    def reload(self) -> bool:
        """Re-read every source now; True when anything new was put in force."""
        changed = self.reloader.reload() if self.reloader is not None else False
        if self.user_overrides is not None:
            changed = self.user_overrides.load_all() or changed
        return changed
