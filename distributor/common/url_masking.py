"""Credentials in URLs, masked wherever a URL is shown or logged: the userinfo (`user:password@`) and the
values of query parameters whose names look secret (`?api_key=...`). Everything else is kept as written,
so a masked URL still says where traffic goes, and masking it again changes nothing."""

from __future__ import annotations

import re

from distributor.common.config_fields import SECRET

_SECRET_PARAMETER = re.compile(r"key|token|secret|password|auth|signature|sig|credential", re.IGNORECASE)
# A URL inside free text (an error message): a scheme, then up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_url(url: str) -> str:
    """`url` with its userinfo and secret-looking query values replaced by SECRET. Also for a bare
    `host:port` (gRPC endpoints), which may carry userinfo too."""
    scheme_end = url.find("://")
    authority_start = scheme_end + 3 if scheme_end >= 0 else 0
    rest_start = _first_of(url, "/?#", authority_start)
    authority = url[authority_start:rest_start]
    at = authority.rfind("@")
    if at >= 0:
        authority = SECRET + authority[at:]
    rest = url[rest_start:]
    query_start = rest.find("?")
    if query_start >= 0:
        fragment_start = _first_of(rest, "#", query_start)
        query = "&".join(_masked_parameter(p) for p in rest[query_start + 1 : fragment_start].split("&"))
        rest = rest[: query_start + 1] + query + rest[fragment_start:]
    return url[:authority_start] + authority + rest


def mask_urls_in(text: str) -> str:
    """`text` (an error message, say) with every URL in it masked."""
    return _URL_IN_TEXT.sub(lambda found: mask_url(found.group()), text)


def _masked_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return name + equals + SECRET if equals and _SECRET_PARAMETER.search(name) else parameter


def _first_of(text: str, characters: str, start: int) -> int:
    """The index of the first of `characters` in `text` from `start`, or len(text)."""
    found = [i for i in (text.find(c, start) for c in characters) if i >= 0]
    return min(found, default=len(text))
