"""User-configurable overrides: what a tenant sets for itself through /api/overrides.

Like Tempo's user-configurable overrides API: a tenant may set only `cost_attribution.dimensions`;
every write needs the current ETag (optimistic concurrency, so two clients cannot lose each other's
update). Here each tenant's document is one JSON file under a directory, replaced atomically (temp file,
fsync, rename) under an flock, so replicas that mount the same directory share it safely; the store in
user_configurable_postgresql.py keeps them in one PostgreSQL table instead. Both are a UserOverridesStore.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from distributor.common.config_reader import MAX_FILE_BYTES, FileRefused, read_regular_file
from distributor.common.errors import DistributorError
from distributor.overrides.dimensions import DimensionError, parse_dimensions
from distributor.overrides.model import CostAttributionOverrides, OverridesSnapshot, TenantOverrides
from distributor.overrides.provider import OverridesProvider
from distributor.overrides.tenant_ids import tenant_id_problem

log = logging.getLogger(__name__)

MAX_USER_DIMENSIONS = 10
# The one accepted shape nests three levels deep; the limit stops a hostile document before anything
# recurses into it (merging, validating, rendering a message), where it would raise RecursionError.
MAX_DOCUMENT_DEPTH = 8
_SUFFIX = ".json"
LOCK_FILE = ".lock"  # the one lock file of the directory, for every tenant


class UserOverridesErrorReason(Enum):
    INVALID_DOCUMENT = "invalid_document"  # not the one user-configurable shape, or invalid values
    INVALID_TENANT = "invalid_tenant"
    NOT_FOUND = "not_found"  # the tenant has no document
    PRECONDITION_FAILED = "precondition_failed"  # If-Match does not match the current document
    PRECONDITION_REQUIRED = "precondition_required"  # changing a document needs its current ETag
    UNAVAILABLE = "unavailable"  # the shared store cannot be reached; what is in force stays in force


class UserOverridesError(DistributorError):
    """A read or change of a tenant's overrides that is refused; `key` names the document key at fault."""

    def __init__(self, reason: UserOverridesErrorReason, message: str, key: str | None = None) -> None:
        super().__init__(message if key is None else f"{key}: {message}")
        self.reason = reason
        self.key = key


def _invalid(message: str, key: str | None = None) -> UserOverridesError:
    return UserOverridesError(UserOverridesErrorReason.INVALID_DOCUMENT, message, key)


@dataclasses.dataclass(frozen=True, slots=True)
class StoredOverrides:
    document: dict[str, Any]
    etag: str  # quoted, as sent in the ETag header


class UserOverridesStore(Protocol):
    """Where tenants' documents are kept: what /api/overrides and the periodic reload use."""

    async def get(self, tenant: str) -> StoredOverrides: ...

    async def set(self, tenant: str, document: object, if_match: str | None) -> StoredOverrides: ...

    async def patch(self, tenant: str, patch: object, if_match: str | None) -> StoredOverrides: ...

    async def delete(self, tenant: str, if_match: str | None) -> None: ...

    async def reload(self) -> bool:
        """Put in force what other replicas changed; True when anything changed. Raises when the store
        cannot be read (the periodic task counts it); what is in force then stays in force."""
        ...


def check_nesting(document: object) -> None:
    """Refuse a document nested deeper than MAX_DOCUMENT_DEPTH; walks without recursing."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if children and depth > MAX_DOCUMENT_DEPTH:
            raise _invalid(f"nested too deeply (at most {MAX_DOCUMENT_DEPTH} levels of objects and arrays)")
        pending.extend((child, depth + 1) for child in children)


def validate_document(document: object) -> TenantOverrides:
    """The only shape accepted: {"cost_attribution": {"dimensions": <map or list>}}."""
    check_nesting(document)
    if not isinstance(document, dict):
        raise _invalid("the body must be a JSON object")
    for key in document:
        if key != "cost_attribution":
            raise _invalid("unknown or not user-configurable (allowed: cost_attribution)", key)
    cost = document.get("cost_attribution") or {}
    if not isinstance(cost, dict):
        raise _invalid("must be an object", "cost_attribution")
    for key in cost:
        if key == "max_cardinality":
            raise _invalid("only the operator can set this", "cost_attribution.max_cardinality")
        if key != "dimensions":
            raise _invalid("unknown key (allowed: dimensions)", f"cost_attribution.{key}")
    raw = cost.get("dimensions")
    try:
        dimensions = parse_dimensions(raw) if raw is not None else None
    except DimensionError as err:
        raise _invalid(str(err), "cost_attribution.dimensions") from None
    if dimensions is not None and len(dimensions) > MAX_USER_DIMENSIONS:
        raise _invalid(
            f"{len(dimensions)} dimensions, at most {MAX_USER_DIMENSIONS}", "cost_attribution.dimensions"
        )
    return TenantOverrides(CostAttributionOverrides(dimensions=dimensions))


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# How a request changes a tenant's stored document: given what is stored (None: nothing), the new
# document, or None to remove it; raises UserOverridesError for a request that may not apply. Each store
# calls it with what it read under its own lock or compare-and-swap, and again if it lost a race.
Change = Callable[[StoredOverrides | None], object | None]


def replacing(document: object, if_match: str | None) -> Change:
    """POST: replace the tenant's document (checked now, before anything is read)."""
    validate_document(document)

    def replace(current: StoredOverrides | None) -> object:
        check_precondition(current, if_match)
        return document

    return replace


def patching(patch: object, if_match: str | None) -> Change:
    """PATCH: a JSON merge patch over the current document (or over {} when there is none)."""
    if not isinstance(patch, dict):
        raise _invalid("the body must be a JSON object (a JSON merge patch)")
    check_nesting(patch)

    def merge(current: StoredOverrides | None) -> object:
        check_precondition(current, if_match)
        document = merge_patch(current.document if current else {}, patch)
        validate_document(document)
        return document

    return merge


def removing(tenant: str, if_match: str | None) -> Change:
    """DELETE: remove the tenant's document."""

    def remove(current: StoredOverrides | None) -> None:
        if current is None:
            raise not_found(tenant)
        check_precondition(current, if_match)

    return remove


def _etag(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _stored(content: bytes) -> StoredOverrides:
    return StoredOverrides(json.loads(content), _etag(content))


class UserConfigurableOverrides:
    def __init__(self, directory: Path, provider: OverridesProvider) -> None:
        self.directory = directory
        self.provider = provider
        self._loaded: dict[str, bytes] = {}  # replaced, never changed in place: read_directory compares
        self._unreadable: dict[Path, str] = {}  # entries skipped by load_all, with why (logged once)
        self._generation = 0  # of what is in force, counted up by every change put in force
        # One write at a time in this process, as the one shared flock allows anyway: a thread never
        # waits on the flock for a write of this process, and writes are put in force in file order.
        self._one_write_at_a_time = asyncio.Lock()

    def _path(self, tenant: str) -> Path:
        return self.directory / f"{tenant}{_SUFFIX}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialises read-check-write across processes sharing the directory.

        One lock file for every tenant: writes are rare and take milliseconds, so serialising them
        all costs nothing, and it leaves one file behind, not one per tenant that ever wrote. (Removing
        a per-tenant lock file after use is unsafe with flock: a process waiting on the old inode and
        one that creates a new file would both hold "the" lock.) Lock files `.{tenant}.lock` of older
        versions are ignored like any name not ending in .json.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, tenant: str) -> StoredOverrides | None:
        try:
            content = read_regular_file(self._path(tenant), MAX_FILE_BYTES)
        except FileNotFoundError:
            return None
        return _stored(content)

    async def get(self, tenant: str) -> StoredOverrides:
        check_tenant(tenant)
        stored = await asyncio.to_thread(self._read, tenant)
        if stored is None:
            raise not_found(tenant)
        return stored

    async def set(self, tenant: str, document: object, if_match: str | None) -> StoredOverrides:
        check_tenant(tenant)
        content = await self._change(tenant, replacing(document, if_match))
        assert content is not None, "only a removal leaves no document"
        return _stored(content)

    async def patch(self, tenant: str, patch: object, if_match: str | None) -> StoredOverrides:
        check_tenant(tenant)
        content = await self._change(tenant, patching(patch, if_match))
        assert content is not None, "only a removal leaves no document"
        return _stored(content)

    async def delete(self, tenant: str, if_match: str | None) -> None:
        check_tenant(tenant)
        await self._change(tenant, removing(tenant, if_match))

    async def _change(
        self, tenant: str, change: Callable[[StoredOverrides | None], object | None]
    ) -> bytes | None:
        """Write the tenant's file in a thread, then put that one tenant's document in force.

        Only this tenant's entry changes: re-reading the whole directory after each write took 150 ms
        of the event loop per write at 3,000 tenants; now about 1 ms. Other replicas' writes arrive
        with the periodic reload; one that read the directory before this write is dropped by the
        generation count. Shielded: a request cancelled mid-write still puts what it wrote in force.
        """
        return await asyncio.shield(self._write_and_put_in_force(tenant, change))

    async def _write_and_put_in_force(
        self, tenant: str, change: Callable[[StoredOverrides | None], object | None]
    ) -> bytes | None:
        async with self._one_write_at_a_time:
            content = await asyncio.to_thread(self._write_file, tenant, change)
            await self._put_in_force(tenant, content)
        return content

    def _write_file(
        self, tenant: str, change: Callable[[StoredOverrides | None], object | None]
    ) -> bytes | None:
        """Under the lock: read the current document, let `change` check and compute the new one
        (None: remove it), and write it durably. The new content, None when removed."""
        with self._locked():
            document = change(self._read(tenant))
            if document is None:
                self._path(tenant).unlink()
                _fsync_directory(self.directory)
                return None
            content = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
            descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{tenant}.", suffix=".tmp")
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(content)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self._path(tenant))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
            _fsync_directory(self.directory)
            return content

    async def _put_in_force(self, tenant: str, content: bytes | None) -> None:
        """Put one tenant's just-written document (None: removed) in force; the others stay as they are.

        A snapshot resolves every tenant when built (24 ms at 3,000 tenants), so it is built in a
        thread; if another snapshot was put in force meanwhile (a reload), it is built again on that.
        """
        while True:
            base = self.provider.snapshot
            snapshot = await asyncio.to_thread(_with_user_document, base, tenant, content)
            if self.provider.snapshot is base:
                break
        loaded = dict(self._loaded)
        if content is None:
            loaded.pop(tenant, None)
        else:
            loaded[tenant] = content
        self._loaded = loaded
        self._generation += 1
        self.provider.replace(snapshot)

    async def reload(self) -> bool:
        """The periodic re-read: the directory read in a thread, put in force on the event loop."""
        return self.apply_directory(await asyncio.to_thread(self.read_directory))

    def load_all(self) -> bool:
        """Read every tenant's file and put them in force if anything changed; True when it did.

        Run at start-up, and every reload period so replicas see each other's writes (the periodic
        run calls read_directory in a thread and apply_directory on the event loop); a write of this
        process puts only its own tenant's document in force.
        A file that does not validate (edited by hand) is skipped and logged, never half-applied; so is
        an entry that cannot be read (a directory or FIFO named like a tenant's file, a file over
        MAX_FILE_BYTES, no permission), logged once until it changes or can be read.
        """
        return self.apply_directory(self.read_directory())

    def read_directory(self) -> DirectoryRead:
        """Read and validate every tenant's file; safe to run in a thread."""
        generation, loaded = self._generation, self._loaded
        contents: dict[str, bytes] = {}
        unreadable: dict[Path, str] = {}
        if self.directory.is_dir():
            for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
                tenant = path.name[: -len(_SUFFIX)]
                if tenant_id_problem(tenant) is None:
                    try:
                        contents[tenant] = read_regular_file(path, MAX_FILE_BYTES)
                    except FileNotFoundError:
                        pass  # deleted since the directory was listed
                    except FileRefused as err:
                        unreadable[path] = str(err)
                    except OSError as err:
                        unreadable[path] = err.strerror or str(err)
        if contents == loaded:
            return DirectoryRead(generation, contents, unreadable, None, {})
        user: dict[str, TenantOverrides] = {}
        invalid: dict[str, str] = {}
        for tenant, content in contents.items():
            try:
                user[tenant] = validate_document(json.loads(content))
            except RecursionError:
                log.error("ignoring user-configurable overrides of tenant %s: nested too deeply", tenant)
            except (ValueError, UserOverridesError) as err:
                invalid[tenant] = str(err)
        return DirectoryRead(generation, contents, unreadable, user, invalid)

    def apply_directory(self, read: DirectoryRead) -> bool:
        """Put what read_directory found in force; True when anything changed. A read that started
        before a later one was applied (a write's, while a periodic read ran) is older than what is in
        force and is dropped."""
        if read.generation != self._generation:
            return False
        for path, problem in read.unreadable.items():
            if self._unreadable.get(path) != problem:
                log.error("ignoring %s, it cannot be read: %s", path, problem)
        self._unreadable = read.unreadable
        if read.user is None:
            return False
        for tenant, problem in read.invalid.items():
            log.error("ignoring user-configurable overrides of tenant %s: %s", tenant, problem)
        self._loaded = read.contents
        self._generation += 1
        snapshot = self.provider.snapshot
        self.provider.replace(dataclasses.replace(snapshot, user=MappingProxyType(read.user)))
        return True


@dataclass(frozen=True, slots=True)
class DirectoryRead:
    """The user-configurable overrides directory as one read found it."""

    generation: int  # of what was in force when the read started
    contents: dict[str, bytes]  # every readable tenant file
    unreadable: dict[Path, str]  # with why
    user: dict[str, TenantOverrides] | None  # the valid ones; None: contents are those in force
    invalid: dict[str, str]  # tenant: why its file was skipped


def _with_user_document(snapshot: OverridesSnapshot, tenant: str, content: bytes | None) -> OverridesSnapshot:
    user = dict(snapshot.user)
    if content is None:
        user.pop(tenant, None)
    else:
        user[tenant] = validate_document(json.loads(content))
    return dataclasses.replace(snapshot, user=MappingProxyType(user))


def check_tenant(tenant: str) -> None:
    problem = tenant_id_problem(tenant)
    if problem is not None:
        raise UserOverridesError(UserOverridesErrorReason.INVALID_TENANT, problem)


def not_found(tenant: str) -> UserOverridesError:
    return UserOverridesError(
        UserOverridesErrorReason.NOT_FOUND, f"tenant {tenant!r} has no user-configurable overrides"
    )


def check_precondition(current: StoredOverrides | None, if_match: str | None) -> None:
    if current is None:
        if if_match is not None and if_match.strip() != "":
            raise UserOverridesError(
                UserOverridesErrorReason.PRECONDITION_FAILED,
                "If-Match was given but the tenant has no overrides yet",
            )
        return
    if if_match is None:
        raise UserOverridesError(
            UserOverridesErrorReason.PRECONDITION_REQUIRED,
            "If-Match with the current ETag is required to change existing overrides",
        )
    candidates = [tag.strip() for tag in if_match.split(",")]
    if "*" not in candidates and current.etag not in candidates:
        raise UserOverridesError(
            UserOverridesErrorReason.PRECONDITION_FAILED,
            "the overrides changed since they were read (ETag mismatch)",
        )


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
