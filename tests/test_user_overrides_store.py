"""The user-configurable overrides store on its own: every refusal names its reason (and the document
key at fault), and changes nothing; what is stored is put in force. The HTTP statuses for these reasons
are tested through the running service in test_user_overrides_api.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest

from distributor.overrides import OverridesProvider, OverridesSnapshot, TenantOverrides, user_configurable
from distributor.overrides.user_configurable import (
    MAX_USER_DIMENSIONS,
    UserConfigurableOverrides,
    UserOverridesError,
    UserOverridesErrorReason,
    validate_document,
)

TENANT = "acme"
TEAM = {"cost_attribution": {"dimensions": ["team"]}}
NAMESPACE = {"cost_attribution": {"dimensions": {"k8s.namespace.name": "namespace"}}}
INVALID_DOCUMENT = UserOverridesErrorReason.INVALID_DOCUMENT
TOO_MANY = [f"attribute{i}" for i in range(MAX_USER_DIMENSIONS + 1)]


def new_store(directory: Path) -> UserConfigurableOverrides:
    return UserConfigurableOverrides(directory, OverridesProvider(OverridesSnapshot(TenantOverrides())))


@dataclass(frozen=True)
class Refusal:
    name: str
    change: Callable[[UserConfigurableOverrides, str], Awaitable[object]]  # given the store, the ETag
    reason: UserOverridesErrorReason
    message: str
    key: str | None = None


REFUSALS = [
    Refusal(
        "not an object",
        lambda store, _: store.set(TENANT, ["team"], None),
        INVALID_DOCUMENT,
        "the body must be a JSON object",
    ),
    Refusal(
        "patch not an object",
        lambda store, etag: store.patch(TENANT, "team", etag),
        INVALID_DOCUMENT,
        "the body must be a JSON object (a JSON merge patch)",
    ),
    Refusal(
        "unknown top-level key",
        lambda store, _: store.set(TENANT, {"ingestion": {}}, None),
        INVALID_DOCUMENT,
        "ingestion: unknown or not user-configurable (allowed: cost_attribution)",
        "ingestion",
    ),
    Refusal(
        "cost_attribution not an object",
        lambda store, _: store.set(TENANT, {"cost_attribution": ["team"]}, None),
        INVALID_DOCUMENT,
        "cost_attribution: must be an object",
        "cost_attribution",
    ),
    Refusal(
        "operator-only key",
        lambda store, _: store.set(TENANT, {"cost_attribution": {"max_cardinality": 5}}, None),
        INVALID_DOCUMENT,
        "cost_attribution.max_cardinality: only the operator can set this",
        "cost_attribution.max_cardinality",
    ),
    Refusal(
        "unknown cost_attribution key",
        lambda store, _: store.set(TENANT, {"cost_attribution": {"labels": []}}, None),
        INVALID_DOCUMENT,
        "cost_attribution.labels: unknown key (allowed: dimensions)",
        "cost_attribution.labels",
    ),
    Refusal(
        "invalid dimension, through a patch",
        lambda store, etag: store.patch(TENANT, {"cost_attribution": {"dimensions": {"x": "tenant"}}}, etag),
        INVALID_DOCUMENT,
        "cost_attribution.dimensions: dimension 'x': label 'tenant' is reserved by the usage tracker",
        "cost_attribution.dimensions",
    ),
    Refusal(
        "too many dimensions",
        lambda store, _: store.set(
            TENANT,
            {"cost_attribution": {"dimensions": TOO_MANY}},
            None,
        ),
        INVALID_DOCUMENT,
        f"cost_attribution.dimensions: {MAX_USER_DIMENSIONS + 1} dimensions, at most {MAX_USER_DIMENSIONS}",
        "cost_attribution.dimensions",
    ),
    Refusal(
        "invalid tenant id",
        lambda store, _: store.set("../acme", TEAM, None),
        UserOverridesErrorReason.INVALID_TENANT,
        "tenant id '../acme' contains characters outside a-zA-Z0-9!-_.*'()",
    ),
    Refusal(
        "other tenant has nothing to delete",
        lambda store, _: store.delete("globex", None),
        UserOverridesErrorReason.NOT_FOUND,
        "tenant 'globex' has no user-configurable overrides",
    ),
    Refusal(
        "other tenant has nothing to read",
        lambda store, _: store.get("globex"),
        UserOverridesErrorReason.NOT_FOUND,
        "tenant 'globex' has no user-configurable overrides",
    ),
    Refusal(
        "replace without If-Match",
        lambda store, _: store.set(TENANT, NAMESPACE, None),
        UserOverridesErrorReason.PRECONDITION_REQUIRED,
        "If-Match with the current ETag is required to change existing overrides",
    ),
    Refusal(
        "patch without If-Match",
        lambda store, _: store.patch(TENANT, NAMESPACE, None),
        UserOverridesErrorReason.PRECONDITION_REQUIRED,
        "If-Match with the current ETag is required to change existing overrides",
    ),
    Refusal(
        "delete without If-Match",
        lambda store, _: store.delete(TENANT, None),
        UserOverridesErrorReason.PRECONDITION_REQUIRED,
        "If-Match with the current ETag is required to change existing overrides",
    ),
    Refusal(
        "stale ETag",
        lambda store, _: store.set(TENANT, NAMESPACE, '"stale"'),
        UserOverridesErrorReason.PRECONDITION_FAILED,
        "the overrides changed since they were read (ETag mismatch)",
    ),
    Refusal(
        "If-Match for a tenant without overrides",
        lambda store, etag: store.set("globex", NAMESPACE, etag),
        UserOverridesErrorReason.PRECONDITION_FAILED,
        "If-Match was given but the tenant has no overrides yet",
    ),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=[refusal.name for refusal in REFUSALS])
async def test_refused_change_names_its_reason_and_changes_nothing(tmp_path: Path, refusal: Refusal) -> None:
    store = new_store(tmp_path)
    stored = await store.set(TENANT, TEAM, None)
    documents = sorted(path.name for path in tmp_path.glob("*.json"))
    with pytest.raises(UserOverridesError) as refused:
        await refusal.change(store, stored.etag)
    assert (refused.value.reason, str(refused.value), refused.value.key) == (
        refusal.reason,
        refusal.message,
        refusal.key,
    )
    assert await store.get(TENANT) == stored
    assert sorted(path.name for path in tmp_path.glob("*.json")) == documents


async def test_set_patch_and_delete_with_the_current_etag_put_the_document_in_force(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    created = await store.set(TENANT, TEAM, None)
    assert (await store.get(TENANT), created.document) == (created, TEAM)
    assert [d.label for d in store.provider.for_tenant(TENANT).dimensions] == ["team"]

    patched = await store.patch(TENANT, NAMESPACE, created.etag)
    assert patched.document == NAMESPACE and patched.etag != created.etag, "an object replaces a list whole"
    assert [d.label for d in store.provider.for_tenant(TENANT).dimensions] == ["namespace"]

    replaced = await store.set(TENANT, TEAM, "*")
    assert replaced.document == TEAM
    await store.delete(TENANT, replaced.etag)
    assert store.provider.for_tenant(TENANT).dimensions == ()
    with pytest.raises(UserOverridesError) as missing:
        await store.get(TENANT)
    assert missing.value.reason is UserOverridesErrorReason.NOT_FOUND


async def test_a_directory_read_from_before_a_write_is_dropped_and_one_from_after_finds_nothing_new(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path)
    (tmp_path / "globex.json").write_text('{"cost_attribution": {"dimensions": ["app"]}}')
    read_before_the_write = store.read_directory()
    created = await store.set(TENANT, TEAM, None)
    assert not store.apply_directory(read_before_the_write), "it would take acme's document away"
    assert [d.label for d in store.provider.for_tenant(TENANT).dimensions] == ["team"]
    assert store.provider.for_tenant("globex").dimensions == (), "another writer's file waits for a read"
    assert store.apply_directory(store.read_directory())
    assert [d.label for d in store.provider.for_tenant("globex").dimensions] == ["app"]
    await store.patch(TENANT, NAMESPACE, created.etag)
    assert not store.apply_directory(store.read_directory()), "what a write put in force is known as read"
    assert [d.label for d in store.provider.for_tenant(TENANT).dimensions] == ["namespace"]


async def test_writes_by_many_tenants_share_one_lock_file(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    for number in range(5):
        await store.set(f"tenant{number}", TEAM, None)
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(".json")) == [".lock"]


async def test_a_snapshot_put_in_force_while_a_write_builds_its_own_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = new_store(tmp_path)
    build = user_configurable._with_user_document
    runtime_file = MappingProxyType(
        {"globex": validate_document({"cost_attribution": {"dimensions": ["app"]}})}
    )

    def build_while_the_runtime_file_is_reloaded(
        snapshot: OverridesSnapshot, tenant: str, content: bytes | None
    ) -> OverridesSnapshot:
        if not store.provider.snapshot.per_tenant:
            store.provider.replace(dataclasses.replace(store.provider.snapshot, per_tenant=runtime_file))
        return build(snapshot, tenant, content)

    monkeypatch.setattr(user_configurable, "_with_user_document", build_while_the_runtime_file_is_reloaded)
    await store.set(TENANT, TEAM, None)
    assert [d.label for d in store.provider.for_tenant(TENANT).dimensions] == ["team"]
    assert [d.label for d in store.provider.for_tenant("globex").dimensions] == ["app"]
