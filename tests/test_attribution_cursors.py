"""next_record_id without a server: a cursor comes back as it was given, and anything else (changed,
signed with another secret, bound to another query or key, of another version) is an invalid
next_record_id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from collections.abc import Callable

import pytest

from distributor.attribution.config import ApiKeyConfig
from distributor.attribution.cursors import Cursor, CursorCodec, fingerprint
from distributor.attribution.errors import InvalidParameter

SECRET = b"ledger secret"
KEY = ApiKeyConfig("acme-api", "acme-app", "acme")
QUERY = fingerprint("hourly", KEY, (1_700_000_000, None, "ingested_spans_bytes_usage", ("team",), True))
CURSOR = Cursor(seq=7, offset=500, end=1_700_010_000, flushed_at=1_700_003_600.25)
INVALID = "invalid (pass back the value of a previous answer unchanged)"
ANOTHER_QUERY = "belongs to another query; repeat the parameters of the first page with it"


def problem_of(codec: CursorCodec, bound_to: str, text: str) -> str:
    with pytest.raises(InvalidParameter) as raised:
        codec.decode(bound_to, text)
    assert raised.value.parameter == "next_record_id"
    return raised.value.problem


def flip(text: str, index: int) -> str:
    """`text` with one base64url character changed."""
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def signed(payload: object) -> str:
    """A cursor forged the way the codec signs, to reach the checks behind the signature."""
    return signed_raw(json.dumps(payload, separators=(",", ":")).encode())


def signed_raw(raw: bytes) -> str:
    signature = hmac.new(SECRET, raw, hashlib.sha256).digest()[:16]
    return ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (raw, signature))


def test_a_cursor_decodes_to_what_was_encoded() -> None:
    codec = CursorCodec(SECRET)
    assert codec.decode(QUERY, codec.encode(QUERY, CURSOR)) == CURSOR


def test_a_cursor_is_accepted_by_another_codec_on_the_same_secret() -> None:
    """Every replica on one ledger shares its secret, so any of them serves the next page."""
    assert CursorCodec(SECRET).decode(QUERY, CursorCodec(SECRET).encode(QUERY, CURSOR)) == CURSOR


def test_forging_the_format_reaches_the_same_cursor() -> None:
    """The forgeries below differ from a real cursor only in what each case changes."""
    payload = [1, QUERY, CURSOR.seq, CURSOR.offset, CURSOR.end, CURSOR.flushed_at]
    assert signed(payload) == CursorCodec(SECRET).encode(QUERY, CURSOR)


def tampered_payload(text: str) -> str:
    return flip(text, 3)


def tampered_signature(text: str) -> str:
    return flip(text, len(text) - 2)


def without_signature(text: str) -> str:
    return text.partition(".")[0]


def unused_bits_changed(text: str) -> str:
    """The last character of the 16-byte signature carries 4 bits base64 ignores: changing one of them
    must still invalidate the cursor."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]


def not_base64(text: str) -> str:
    return "!" + text[1:]


TAMPERINGS: dict[str, Callable[[str], str]] = {
    "payload changed": tampered_payload,
    "signature changed": tampered_signature,
    "unused bits changed": unused_bits_changed,
    "signature missing": without_signature,
    "not base64url": not_base64,
    "empty": lambda _: "",
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_a_tampered_cursor_is_invalid(tamper: Callable[[str], str]) -> None:
    codec = CursorCodec(SECRET)
    assert problem_of(codec, QUERY, tamper(codec.encode(QUERY, CURSOR))) == INVALID


def test_a_cursor_signed_with_another_secret_is_invalid() -> None:
    text = CursorCodec(b"another ledger").encode(QUERY, CURSOR)
    assert problem_of(CursorCodec(SECRET), QUERY, text) == INVALID


FOREIGN_BINDINGS = {
    "another query": fingerprint(
        "hourly", KEY, (1_700_000_000, None, "ingested_spans_bytes_usage", None, True)
    ),
    "another endpoint": fingerprint(
        "monthly", KEY, (1_700_000_000, None, "ingested_spans_bytes_usage", ("team",), True)
    ),
    "another key of the same org": fingerprint(
        "hourly",
        ApiKeyConfig("acme-api-2", "acme-app", "acme"),
        (1_700_000_000, None, "ingested_spans_bytes_usage", ("team",), True),
    ),
}


@pytest.mark.parametrize("bound_to", FOREIGN_BINDINGS.values(), ids=FOREIGN_BINDINGS.keys())
def test_a_cursor_bound_to_another_query_is_refused(bound_to: str) -> None:
    codec = CursorCodec(SECRET)
    assert bound_to != QUERY
    assert problem_of(codec, QUERY, codec.encode(bound_to, CURSOR)) == ANOTHER_QUERY


FORGED = {
    "unknown version": [2, QUERY, 7, 500, 1_700_010_000, 1.0],
    "missing a field": [1, QUERY, 7, 500, 1_700_010_000],
    "not a list": {"version": 1},
    "not JSON": "seven",
}


@pytest.mark.parametrize("payload", FORGED.values(), ids=FORGED.keys())
def test_a_well_signed_cursor_of_another_shape_is_invalid(payload: object) -> None:
    text = signed_raw(payload.encode()) if isinstance(payload, str) else signed(payload)
    assert problem_of(CursorCodec(SECRET), QUERY, text) == INVALID
