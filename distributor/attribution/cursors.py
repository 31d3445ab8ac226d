"""`next_record_id`: where the next page starts, opaque, signed (HMAC-SHA256 with the ledger's secret,
so any replica on the same ledger accepts it), and bound to one key and one query."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from distributor.attribution.config import ApiKeyConfig
from distributor.attribution.errors import InvalidParameter

CURSOR_PARAMETER = "next_record_id"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Cursor:
    seq: int  # the ledger snapshot every page of this answer reads
    offset: int  # records already returned
    end: int  # the resolved end of the range
    flushed_at: float  # when the snapshot's flush happened: every page's updated_at


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]

    def encode(self, fingerprint: str, cursor: Cursor) -> str:
        payload = json.dumps(
            [_VERSION, fingerprint, cursor.seq, cursor.offset, cursor.end, cursor.flushed_at],
            separators=(",", ":"),
        )
        raw = payload.encode()
        return _b64(raw) + "." + _b64(self._signature(raw))

    def decode(self, fingerprint: str, text: str) -> Cursor:
        """The cursor `encode` gave for the query of `fingerprint`, or InvalidParameter."""
        invalid = InvalidParameter(
            CURSOR_PARAMETER, "invalid (pass back the value of a previous answer unchanged)"
        )
        payload_text, _, signature_text = text.partition(".")
        try:
            raw, signature = _unb64(payload_text), _unb64(signature_text)
        except ValueError:
            raise invalid from None
        if not hmac.compare_digest(signature, self._signature(raw)):
            raise invalid
        try:
            version, bound_to, seq, offset, end, flushed_at = json.loads(raw)
        except (ValueError, TypeError):
            raise invalid from None
        if version != _VERSION:
            raise invalid
        if bound_to != fingerprint:
            raise InvalidParameter(
                CURSOR_PARAMETER,
                "belongs to another query; repeat the parameters of the first page with it",
            )
        return Cursor(int(seq), int(offset), int(end), float(flushed_at))


def fingerprint(kind: str, key: ApiKeyConfig, parts: tuple[object, ...]) -> str:
    """What a cursor is bound to: the endpoint, the key pair's org and api key, the parsed query."""
    canonical = json.dumps([kind, key.org, hashlib.sha256(key.api_key.encode()).hexdigest(), *parts])
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as err:
        raise ValueError(str(err)) from None
    # base64 ignores the unused low bits of the last character, so several texts decode to the same
    # bytes; accept only the one `_b64` writes, so that any changed character invalidates a cursor.
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data
