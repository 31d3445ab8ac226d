"""The one tenant-id rule (Cortex/Tempo): used for request headers and for keys of the overrides file;
and the header that carries a tenant id, in requests received and forwarded."""

from __future__ import annotations

import re

ORG_ID_HEADER = "X-Scope-OrgID"
MAX_TENANT_ID_BYTES = 150
_ALLOWED = re.compile(r"[a-zA-Z0-9!\-_.*'()]+")


def tenant_id_problem(tenant: str) -> str | None:
    """Why `tenant` is not a valid tenant id, or None when it is."""
    if not tenant:
        return "tenant id is empty"
    try:
        size = len(tenant.encode("utf-8"))
    except UnicodeEncodeError:  # a header byte that is not UTF-8 arrives as a lone surrogate
        return "tenant id is not valid UTF-8"
    if size > MAX_TENANT_ID_BYTES:
        return f"tenant id is longer than {MAX_TENANT_ID_BYTES} bytes"
    if tenant in (".", ".."):
        return f"tenant id {tenant!r} is not allowed"
    if not _ALLOWED.fullmatch(tenant):
        return f"tenant id {tenant!r} contains characters outside a-zA-Z0-9!-_.*'()"
    return None
