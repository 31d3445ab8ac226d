"""Runtime overrides: re-read the per-tenant file and swap in a new snapshot only if all of it is valid.

Like Cortex/Tempo runtime config: a bad edit (invalid YAML or values, a half-written or empty file, a
missing or unreadable file, one too large, not a regular file) never changes what is in force; it is
logged once per distinct error and visible through `status` (exported as tempo_runtime_config_*
metrics). Reading and parsing run in a thread, one reload at a time, so a large or hostile file never
stalls requests; only the swap of the snapshot runs on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from distributor.common.config_reader import MAX_FILE_BYTES, ConfigError, ConfigNote, read_bytes
from distributor.overrides.loading import parse_per_tenant_file
from distributor.overrides.model import OverridesSnapshot, TenantOverrides
from distributor.overrides.provider import OverridesProvider
from distributor.overrides.user_configurable import UserOverridesStore

log = logging.getLogger(__name__)

MAX_BYTES_SETTING = "overrides.per_tenant_override_max_bytes"


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    sha256_in_force: str  # of the file content in force
    last_reload_successful: bool
    last_success_time: float  # wall-clock seconds
    last_error: str | None
    content_in_force: bytes


@dataclass(frozen=True, slots=True)
class _FileRead:
    """What one read of a changed file found: its snapshot, or why it cannot be put in force."""

    content_hash: str  # "" when the file could not be read
    data: bytes
    snapshot: OverridesSnapshot | None
    error: str | None
    notes: tuple[ConfigNote, ...] = ()  # what it holds that is accepted with a warning


class RuntimeOverridesReloader:
    def __init__(
        self,
        provider: OverridesProvider,
        path: Path,
        defaults: TenantOverrides,
        expand_env: bool = False,
        wall_clock: Callable[[], float] = time.time,
        forwarder_names: Collection[str] | None = None,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.provider = provider
        self.max_bytes = max_bytes
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
        max_bytes: int = MAX_FILE_BYTES,
    ) -> RuntimeOverridesReloader:
        """Read the file at start-up, before anything is served, with the same limits as a reload; here
        an invalid file is fatal (raises ConfigError)."""
        data = read_bytes(path, max_bytes, MAX_BYTES_SETTING)
        notes: list[ConfigNote] = []
        snapshot = parse_per_tenant_file(data, str(path), defaults, expand_env, None, forwarder_names, notes)
        _log_notes(notes)
        reloader = cls(
            OverridesProvider(snapshot), path, defaults, expand_env, wall_clock, forwarder_names, max_bytes
        )
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

    async def reload(self) -> bool:
        """Re-read the file; True when a new snapshot was put in force. Never raises for a bad file.
        Not to be run twice at once (OverridesRefresh serialises reloads)."""
        read = await asyncio.to_thread(self._read)
        return self._apply(read) if read is not None else False

    def _read(self) -> _FileRead | None:
        """In a thread: the file read and parsed, or None when unchanged since the last attempt."""
        try:
            data = read_bytes(self.path, self.max_bytes, MAX_BYTES_SETTING)
        except ConfigError as err:
            return _FileRead("", b"", None, str(err))
        content_hash = hashlib.sha256(data).hexdigest()
        if content_hash == self._hash_last_seen:
            return None  # unchanged since the last attempt, good or bad: nothing new to say or apply
        notes: list[ConfigNote] = []
        try:
            snapshot = parse_per_tenant_file(
                data, str(self.path), self.defaults, self.expand_env, None, self.forwarder_names, notes
            )
        except ConfigError as err:
            return _FileRead(content_hash, data, None, str(err))
        return _FileRead(content_hash, data, snapshot, None, tuple(notes))

    def _apply(self, read: _FileRead) -> bool:
        """On the event loop: put a good read in force, or record why it was refused."""
        if read.snapshot is None:
            self._fail(read.error or "", read.content_hash)
            return False
        # The file is one layer; what tenants set through the API stays as it is.
        self.provider.replace(dataclasses.replace(read.snapshot, user=self.provider.snapshot.user))
        self._hash_in_force = self._hash_last_seen = read.content_hash
        self._content_in_force = read.data
        self._successful = True
        self._success_time = self._wall_clock()
        self._last_error = None
        log.info("per-tenant overrides reloaded from %s (sha256 %s)", self.path, read.content_hash[:12])
        _log_notes(read.notes)
        return True

    def _fail(self, error: str, content_hash: str) -> None:
        self._hash_last_seen = content_hash
        self._successful = False
        if error != self._last_error:
            log.error("per-tenant overrides not reloaded, the last good ones stay in force: %s", error)
        self._last_error = error


def _log_notes(notes: Collection[ConfigNote]) -> None:
    """Once per content put in force: an unchanged file is not read again."""
    for note in notes:
        log.warning("%s", note)


class OverridesRefresh:
    """Every source of overrides read again at runtime: the per-tenant file and the user-configurable
    overrides (where other replicas write). One reload at a time: a SIGHUP during the periodic one waits
    for it. User overrides `polled_apart` (from a database, on a period of their own) are left out of
    `reload_on_file_period`."""

    def __init__(
        self,
        reloader: RuntimeOverridesReloader | None,
        user_overrides: UserOverridesStore | None,
        polled_apart: bool = False,
    ) -> None:
        self.reloader = reloader
        self.user_overrides = user_overrides
        self.polled_apart = polled_apart
        self._one_at_a_time = asyncio.Lock()

    @property
    def has_sources(self) -> bool:
        """Whether anything is reloaded on the file's period."""
        return self.reloader is not None or (self.user_overrides is not None and not self.polled_apart)

    async def reload(self) -> bool:
        """Re-read every source now, off the event loop; True when anything new was put in force."""
        return await self._reload(with_file=True, with_user_overrides=True)

    async def reload_on_file_period(self) -> bool:
        return await self._reload(with_file=True, with_user_overrides=not self.polled_apart)

    async def reload_user_overrides(self) -> bool:
        return await self._reload(with_file=False, with_user_overrides=True)

    async def _reload(self, with_file: bool, with_user_overrides: bool) -> bool:
        async with self._one_at_a_time:
            changed = False
            if with_file and self.reloader is not None:
                changed = await self.reloader.reload()
            if with_user_overrides and self.user_overrides is not None:
                changed = await self.user_overrides.reload() or changed
            return changed
