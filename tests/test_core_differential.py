"""The compiled ingest core against the reference scan (the protobuf runtime's decode, read plainly).

Random requests are encoded canonically and in every way protobuf still accepts (explicit zero fields,
non-minimal varints in tags, lengths and values, fields out of order, unknown fields of every wire type
including nested groups, known numbers under the wrong wire type, repeated singular fields and oneof
members), then mutated (truncations, bit flips, inserted and deleted bytes, invalid UTF-8 in any string
field, nesting around the depth limit). For each payload and random dimensions the two must agree on
accepting or refusing it and, when accepted, on every batch's span count and canonical size, every
series' bytes and spans and their order, and on long attributes. The core may decline (None) only a
payload in which protobuf would merge or replace a value; a canonical encoding never.

INGEST_CORE_PATH names a build of the core to test instead of the installed one (`make sanitize` points
it at a build with AddressSanitizer and UndefinedBehaviorSanitizer); CORE_DIFFERENTIAL_EXAMPLES scales
the number of random requests.
"""

from __future__ import annotations

import os
import random
import struct
from types import ModuleType
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from distributor.ingest.scan_reference import scan_reference
from tests.support.encodings import FIXED_FORMATS, VARINT_TYPES, varint
from tests.support.extensions import load_build


def load_core() -> ModuleType | None:
    path = os.environ.get("INGEST_CORE_PATH")
    if path:
        return load_build("distributor.ingest._core", path)
    try:
        from distributor.ingest import _core  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _core  # type: ignore[no-any-return]


CORE = load_core()
needs_core = pytest.mark.skipif(CORE is None, reason="the compiled ingest core is not built here")
EXAMPLES = int(os.environ.get("CORE_DIFFERENTIAL_EXAMPLES", "150"))
Keys = tuple[tuple[bytes, ...], ...]
MISSING = "__missing__"


def test_core_is_loaded_under_ci() -> None:
    if os.environ.get("CI") != "true" and CORE is None:
        pytest.skip("the compiled ingest core is not built here (required only under CI=true)")
    assert CORE is not None, "CI=true and distributor.ingest._core cannot be imported"
    if os.environ.get("INGEST_CORE_PATH"):  # the build asked for is the one under test
        assert os.path.samefile(CORE.__file__, os.environ["INGEST_CORE_PATH"])
    assert callable(CORE.scan)


# ---- The wire format, written by hand ------------------------------------------------------------


def wire_type(field: FieldDescriptor) -> int:
    if field.type in VARINT_TYPES:
        return 0
    if field.type in FIXED_FORMATS:
        return 1 if struct.calcsize(FIXED_FORMATS[field.type]) == 8 else 5
    return 2


def tag(number: int, wire: int, extra: int = 0) -> bytes:
    return varint(number << 3 | wire, extra)


def read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value & ((1 << 64) - 1), position


def skip(data: bytes, position: int, number: int, wire: int) -> tuple[int, bytes]:
    """Past one field's value in a payload the runtime accepted; returns the new position and the body
    of a length-delimited value."""
    if wire == 0:
        return read_varint(data, position)[1], b""
    if wire in (1, 5):
        return position + (8 if wire == 1 else 4), b""
    if wire == 2:
        size, position = read_varint(data, position)
        return position + size, data[position : position + size]
    while True:  # a group, up to its end tag
        inner, position = read_varint(data, position)
        if inner & 7 == 4:
            return position, b""
        position = skip(data, position, inner >> 3, inner & 7)[0]


def has_merge_encoding(data: bytes, descriptor: Descriptor = ExportTraceServiceRequest.DESCRIPTOR) -> bool:
    """Whether protobuf would merge or replace a value in decoding `data` (which it accepts): a
    singular field twice in one message, or two members of one oneof."""
    seen: set[int] = set()
    oneofs: set[str] = set()
    position = 0
    while position < len(data):
        field_tag, position = read_varint(data, position)
        number, wire = field_tag >> 3, field_tag & 7
        position, body = skip(data, position, number, wire)
        field = descriptor.fields_by_number.get(number)
        if field is None or wire_type(field) != wire:
            continue
        if not field.is_repeated:
            if number in seen:
                return True
            seen.add(number)
        if field.containing_oneof is not None:
            if field.containing_oneof.name in oneofs:
                return True
            oneofs.add(field.containing_oneof.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE and has_merge_encoding(body, field.message_type):
            return True
    return False


class Encoder:
    """Encodes a message with random departures from the canonical form, each one valid protobuf."""

    def __init__(
        self,
        rng: random.Random,
        *,
        canonical: bool = False,
        merges: bool = False,
        string_at: int = -1,
        string_bytes: bytes = b"",
    ) -> None:
        self.rng = rng
        self.canonical = canonical
        self.merges = merges  # repeated singular fields and second oneof members
        self.string_at, self.string_bytes = string_at, string_bytes  # replace the n-th string's bytes
        self.strings = 0

    def extra(self, limit: int) -> int:
        if self.canonical or limit < 1 or self.rng.random() < 0.8:
            return 0
        return self.rng.randint(1, limit)

    def message(self, message: Any) -> bytes:
        per_field: list[list[bytes]] = []
        for field in sorted(message.DESCRIPTOR.fields, key=lambda field: field.number):
            if field.is_repeated:
                values = list(getattr(message, field.name))
            elif field.type == FieldDescriptor.TYPE_MESSAGE or field.containing_oneof is not None:
                values = [getattr(message, field.name)] if message.HasField(field.name) else []
            else:
                value = getattr(message, field.name)
                values = [value] if value or (not self.canonical and self.rng.random() < 0.3) else []
            encoded = [self.field(field, value) for value in values]
            if self.merges and values and not field.is_repeated and self.rng.random() < 0.1:
                encoded.append(self.field(field, values[-1]))
            if encoded:
                per_field.append(encoded)
        if self.merges and message.DESCRIPTOR.name == "AnyValue" and self.rng.random() < 0.1:
            per_field.append([tag(2, 0) + varint(1)])  # a second member of the value oneof
        if not self.canonical:
            for _ in range(self.rng.choice((0, 0, 0, 1, 2))):
                per_field.append([self.unknown_field(message.DESCRIPTOR, 2)])
        if self.canonical:
            return b"".join(part for parts in per_field for part in parts)
        # Fields interleave in any order; the elements of one repeated field keep theirs.
        out = bytearray()
        while per_field:
            parts = self.rng.choice(per_field)
            out += parts.pop(0)
            if not parts:
                per_field.remove(parts)
        return bytes(out)

    def field(self, field: FieldDescriptor, value: Any) -> bytes:
        head = tag(field.number, wire_type(field), self.extra(5 - len(tag(field.number, 0))))
        if field.type in VARINT_TYPES:
            number = int(value)
            if field.type == FieldDescriptor.TYPE_BOOL and value and not self.canonical:
                number = self.rng.choice((1, 1, 2, 1 << 40))  # any non-zero varint decodes as true
            return head + varint(number, self.extra(10 - len(varint(number))))
        if field.type in FIXED_FORMATS:
            return head + struct.pack(FIXED_FORMATS[field.type], value)
        if field.type == FieldDescriptor.TYPE_STRING:
            body = value.encode("utf-8")
            if self.strings == self.string_at:
                body = self.string_bytes
            self.strings += 1
        elif field.type == FieldDescriptor.TYPE_BYTES:
            body = value
        else:
            body = self.message(value)
        return head + varint(len(body), self.extra(5 - len(varint(len(body))))) + body

    def unknown_field(self, descriptor: Descriptor, depth: int) -> bytes:
        """A field protobuf keeps as unknown: a number the message lacks, or a known number under
        another wire type; a group holds unknown fields itself."""
        while True:
            number = self.rng.choice((1, 2, 3, 5, 9, 16, 17, 100, 1000, (1 << 29) - 1))
            wire = self.rng.choice((0, 1, 2, 3, 5) if depth else (0, 1, 2, 5))
            field = descriptor.fields_by_number.get(number)
            if field is None or wire_type(field) != wire:
                break
        head = tag(number, wire, self.extra(5 - len(tag(number, wire))))
        if wire == 0:
            number = self.rng.choice((0, 1, 300, -1))
            return head + varint(number, self.extra(10 - len(varint(number))))
        if wire == 1:
            return head + self.rng.randbytes(8)
        if wire == 5:
            return head + self.rng.randbytes(4)
        if wire == 2:
            body = self.rng.randbytes(self.rng.randint(0, 5))
            return head + varint(len(body), self.extra(5 - len(varint(len(body))))) + body
        inner = b"".join(self.unknown_field(descriptor, depth - 1) for _ in range(self.rng.randint(0, 2)))
        return head + inner + tag(number, 4, self.extra(5 - len(tag(number, 4))))


# ---- Random requests and dimensions --------------------------------------------------------------

KEYS = ("service.name", "team", "app", "k8s.namespace.name", "", "é.key", "a-rather-long-attribute-key")
TEXTS = ("", "a", "svc-1", "team-2", "é", "☃ snow", "𝄞", "x" * 40, "nul\x00byte")


def random_value(rng: random.Random, depth: int) -> AnyValue:
    value = AnyValue()
    kind = rng.randrange(10 if depth > 0 else 8)
    if kind in (0, 1, 2):
        value.string_value = rng.choice(TEXTS)
    elif kind == 3:
        value.bool_value = rng.random() < 0.5
    elif kind == 4:
        value.int_value = rng.choice((0, 1, -1, 200, 1 << 40, -(1 << 63)))
    elif kind == 5:
        value.double_value = rng.choice((0.0, -0.0, 1.5, float("inf")))
    elif kind == 6:
        value.bytes_value = rng.randbytes(rng.randint(0, 3))
    elif kind == 7:
        value.string_value_strindex = rng.choice((0, 1, -1, (1 << 31) - 1))
    elif kind == 8:
        value.array_value.values.extend(random_value(rng, depth - 1) for _ in range(rng.randint(0, 2)))
    else:
        value.kvlist_value.values.extend(random_attributes(rng, depth - 1, 2))
    return value


def random_attributes(rng: random.Random, depth: int, most: int) -> list[KeyValue]:
    attributes = []
    for _ in range(rng.randint(0, most)):
        attribute = KeyValue(key=rng.choice(KEYS))
        if rng.random() < 0.9:
            attribute.value.CopyFrom(random_value(rng, depth))
        if rng.random() < 0.05:
            attribute.key_strindex = rng.choice((1, -5))
        attributes.append(attribute)
    return attributes


def random_request(rng: random.Random) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(rng.randint(0, 3)):
        batch = request.resource_spans.add()
        if rng.random() < 0.8:
            batch.resource.attributes.extend(random_attributes(rng, 2, 4))
            batch.resource.dropped_attributes_count = rng.choice((0, 0, 3))
            if rng.random() < 0.2:
                entity = batch.resource.entity_refs.add(type=rng.choice(TEXTS))
                entity.id_keys.extend(rng.choice(TEXTS) for _ in range(rng.randint(0, 2)))
                entity.description_keys.extend(rng.choice(TEXTS) for _ in range(rng.randint(0, 1)))
        batch.schema_url = rng.choice(("", "", "https://opentelemetry.io/schemas/1.21.0"))
        for _ in range(rng.randint(0, 3)):
            scope = batch.scope_spans.add(schema_url=rng.choice(("", "s")))
            if rng.random() < 0.7:
                scope.scope.name, scope.scope.version = rng.choice(TEXTS), rng.choice(TEXTS)
                scope.scope.attributes.extend(random_attributes(rng, 1, 2))
            for _ in range(rng.randint(0, 4)):
                random_span(rng, scope.spans.add())
    return request


def random_span(rng: random.Random, span: Any) -> None:
    span.trace_id, span.span_id = rng.randbytes(rng.choice((0, 16))), rng.randbytes(rng.choice((0, 8)))
    span.parent_span_id = rng.randbytes(rng.choice((0, 8)))
    span.trace_state, span.name = rng.choice(("", "k=v")), rng.choice(TEXTS)
    span.kind = rng.choice((0, 1, 2, 5, -1, (1 << 31) - 1))
    span.start_time_unix_nano = rng.choice((0, 1_700_000_000_000_000_000))
    span.end_time_unix_nano = span.start_time_unix_nano + rng.randint(0, 10**9)
    span.attributes.extend(random_attributes(rng, 3, 6))
    span.dropped_attributes_count = rng.choice((0, 1, (1 << 32) - 1))
    for _ in range(rng.randint(0, 2)):
        event = span.events.add(name=rng.choice(TEXTS), time_unix_nano=rng.choice((0, 5)))
        event.attributes.extend(random_attributes(rng, 1, 2))
    for _ in range(rng.randint(0, 1)):
        link = span.links.add(trace_id=rng.randbytes(16), flags=rng.choice((0, 1)))
        link.attributes.extend(random_attributes(rng, 1, 2))
    if rng.random() < 0.6:
        span.status.code = rng.choice((0, 1, 2, -3))
        span.status.message = rng.choice(TEXTS)
    span.flags = rng.choice((0, 0, 0x100, 0xFFFFFFFF))


def random_dimensions(rng: random.Random) -> tuple[Keys, Keys]:
    """Per label, resource and span keys in configuration order: one scope only (`resource.x`,
    `span.x`) or both, several keys combined, repeated keys, keys no attribute has."""
    labels = rng.randint(0, 3)

    def keys() -> tuple[bytes, ...]:
        return tuple(rng.choice(KEYS).encode() for _ in range(rng.choice((0, 1, 1, 1, 2, 3))))

    resource, span = [], []
    for _ in range(labels):
        scope = rng.choice(("both", "both", "resource", "span"))
        resource.append(keys() if scope != "span" else ())
        span.append(keys() if scope != "resource" else ())
    return tuple(resource), tuple(span)


# ---- The comparison ---------------------------------------------------------------------------------


def agree(
    payload: bytes,
    resource_keys: Keys | None = None,
    span_keys: Keys | None = None,
    max_attribute_bytes: int = 0,
    *,
    canonical: bool = False,
) -> str:
    """Asserts that the core and the reference agree on `payload`; says what they concluded."""
    assert CORE is not None
    try:
        expected: Any = scan_reference(payload, resource_keys, span_keys, MISSING, max_attribute_bytes)
    except DecodeError:
        expected = "refused"
    try:
        got: Any = CORE.scan(payload, resource_keys, span_keys, MISSING, max_attribute_bytes)
    except ValueError:
        got = "refused"
    if got is None:
        assert not canonical, f"the core declined a canonical encoding: {payload.hex()}"
        assert expected != "refused", f"the core declined what protobuf refuses: {payload.hex()}"
        assert has_merge_encoding(payload), f"the core declined without a merge: {payload.hex()}"
        return "declined"
    if expected == "refused" or got == "refused":
        assert got == expected, f"core {got!r}, reference {expected!r}: {payload.hex()}"
        return "refused"
    counts, sizes, series, long_attribute = got
    assert (counts, sizes, long_attribute) == (expected[0], expected[1], expected[3]), payload.hex()
    if expected[2] is None:
        assert series is None
    else:
        assert list(series.items()) == list(expected[2].items()), payload.hex()  # values, usage, order
    return "accepted"


def mutations(rng: random.Random, payload: bytes) -> list[bytes]:
    out = []
    if payload:
        at = rng.randrange(len(payload))
        out.append(payload[:at])  # truncated
        flipped = bytearray(payload)
        flipped[at] ^= 1 << rng.randrange(8)
        out.append(bytes(flipped))
        out.append(payload[:at] + bytes([rng.randrange(256)]) + payload[at:])
        out.append(payload[:at] + payload[at + 1 :])
    return out


@needs_core
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.integers(0, (1 << 64) - 1))
def test_random_requests_in_every_encoding(seed: int) -> None:
    # A seeded generator rather than hypothesis' own draws: a request takes thousands of choices, which
    # hypothesis records one by one (~50x slower); a failure still reports the seed that reproduces it.
    rng = random.Random(seed)
    request = random_request(rng)
    resource_keys, span_keys = random_dimensions(rng)
    max_attribute_bytes = rng.choice((0, 1, 5, 40))
    canonical = request.SerializeToString()
    assert Encoder(rng, canonical=True).message(request) == canonical
    assert agree(canonical, resource_keys, span_keys, max_attribute_bytes, canonical=True) == "accepted"
    agree(canonical, None, None, max_attribute_bytes, canonical=True)
    for merges in (False, False, True):
        encoded = Encoder(rng, merges=merges).message(request)
        outcome = agree(encoded, resource_keys, span_keys, max_attribute_bytes)
        assert outcome == "accepted" or merges, outcome
        for mutated in mutations(rng, encoded):
            agree(mutated, resource_keys, span_keys, max_attribute_bytes)
    strings = Encoder(rng, canonical=True)
    strings.message(request)
    if strings.strings:
        invalid = rng.choice(INVALID_UTF8)
        encoded = Encoder(rng, string_at=rng.randrange(strings.strings), string_bytes=invalid).message(
            request
        )
        assert agree(encoded, resource_keys, span_keys, max_attribute_bytes) == "refused"


# ---- Edges, one by one ------------------------------------------------------------------------------

VALID_UTF8 = [
    b"",
    b"plain ascii, longer than eight bytes",
    b"\x7f",
    b"\xc2\x80",
    b"\xdf\xbf",
    b"\xe0\xa0\x80",
    b"\xed\x9f\xbf",  # U+D7FF, just below the surrogates
    b"\xee\x80\x80",  # U+E000, just above them
    b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF
    b"12345678\xe2\x98\x83",
    b"\xe2\x98\x8312345678",
]
INVALID_UTF8 = [
    b"\x80",
    b"abcdefgh\xbf",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x9f\xbf",  # overlong
    b"\xed\xa0\x80",  # a surrogate
    b"\xed\xbf\xbf",
    b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xe2\x98",  # cut short
    b"1234567\xe2\x98",
    b"\xf0\x9f\x98",
    b"\xc2A",
]


def full_request() -> ExportTraceServiceRequest:
    """A request with every string field set, at every level."""
    request = ExportTraceServiceRequest()
    batch = request.resource_spans.add(schema_url="r")
    batch.resource.attributes.add(key="service.name").value.string_value = "s"
    entity = batch.resource.entity_refs.add(schema_url="e", type="t")
    entity.id_keys.append("i")
    entity.description_keys.append("d")
    scope = batch.scope_spans.add(schema_url="c")
    scope.scope.name, scope.scope.version = "n", "v"
    scope.scope.attributes.add(key="k").value.array_value.values.add().string_value = "a"
    span = scope.spans.add(name="span", trace_state="ts")
    span.attributes.add(key="team").value.kvlist_value.values.add(key="kk").value.string_value = "vv"
    span.events.add(name="ev").attributes.add(key="ek").value.string_value = "ev"
    span.links.add(trace_state="lt").attributes.add(key="lk").value.string_value = "lv"
    span.status.message = "m"
    return request


def test_utf8_in_every_string_field() -> None:
    if CORE is None:
        pytest.skip("the compiled ingest core is not built here")
    request = full_request()
    counter = Encoder(random.Random(0), canonical=True)
    counter.message(request)
    assert counter.strings == 24
    outcomes = set()
    for at in range(counter.strings):
        for text in VALID_UTF8 + INVALID_UTF8:
            encoded = Encoder(random.Random(at), canonical=True, string_at=at, string_bytes=text).message(
                request
            )
            outcome = agree(encoded, ((b"service.name",),), ((b"team",),), 3)
            assert outcome == ("accepted" if text in VALID_UTF8 else "refused")
            outcomes.add(outcome)
    assert outcomes == {"accepted", "refused"}


def nested(levels: int, kind: str) -> AnyValue:
    """An AnyValue about `levels` messages deep: arrays (2 messages per step) or kvlists (3) of one
    element."""
    value = AnyValue(string_value="leaf")
    for _ in range(levels // (2 if kind == "array" else 3)):
        outer = AnyValue()
        if kind == "array":
            outer.array_value.values.append(value)
        else:
            outer.kvlist_value.values.add(key="k").value.CopyFrom(value)
        value = outer
    return value


def deep_request(levels: int, kind: str, where: str) -> bytes:
    """A request whose deepest message is `levels` below it (upb refuses more than 100)."""
    request = ExportTraceServiceRequest()
    batch = request.resource_spans.add()
    if where == "resource":  # request > batch > resource > key-value > value: 4 levels
        batch.resource.attributes.add(key="k").value.CopyFrom(nested(levels - 4, kind))
    else:  # request > batch > scope spans > span > key-value > value: 5 levels
        span = batch.scope_spans.add().spans.add()
        span.attributes.add(key="team").value.CopyFrom(nested(levels - 5, kind))
    return Encoder(random.Random(0), canonical=True).message(request)  # upb would not encode it


@pytest.mark.parametrize("kind", ["array", "kvlist"])
@pytest.mark.parametrize("where", ["resource", "span"])
def test_nesting_around_the_depth_limit(kind: str, where: str) -> None:
    if CORE is None:
        pytest.skip("the compiled ingest core is not built here")
    outcomes = {}
    for levels in range(94, 106):
        payload = deep_request(levels, kind, where)
        outcomes[levels] = agree(payload, ((b"k",),), ((b"team",),), 3)
    assert "accepted" in outcomes.values() and "refused" in outcomes.values()


def group_chain(levels: int, inside: bytes = b"") -> bytes:
    return tag(9, 3) * levels + inside + tag(9, 4) * levels


def ld(number: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return tag(number, 2) + varint(len(body)) + body


def span_with(*raw: bytes) -> bytes:
    """A request holding one span whose encoding ends with `raw`."""
    return ld(1, ld(2, ld(2, ld(5, b"s"), *raw)))


def attribute(*key_value_fields: bytes) -> bytes:
    return ld(9, *key_value_fields)


TEAM = ld(1, b"team")

WIRE_EDGES = {
    "field number 0": tag(0, 0) + b"\x01",
    "wire type 6": tag(5, 6),
    "wire type 7": tag(5, 7),
    "end group outside a group": tag(5, 4),
    "end group of field 0": b"\x04",
    "empty group": tag(5, 3) + tag(5, 4),
    "group closed by another number": tag(5, 3) + tag(6, 4),
    "group never closed": tag(5, 3),
    "group holding everything": tag(5, 3)
    + tag(1, 0)
    + b"\x01"
    + tag(2, 1)
    + bytes(8)
    + tag(3, 5)
    + bytes(4)
    + ld(4, b"x")
    + tag(5, 3)
    + tag(5, 4)
    + tag(5, 4),
    "group with field 0 inside": tag(5, 3) + tag(0, 0) + b"\x01" + tag(5, 4),
    "group with a group 0 inside": tag(5, 3) + tag(0, 3) + tag(0, 4) + tag(5, 4),
    "group with wire type 6 inside": tag(5, 3) + tag(1, 6) + tag(5, 4),
    "field 0 in a message": ld(1, tag(0, 0) + b"\x01"),
    "group ended by its message": ld(1, tag(7, 3)) + tag(7, 4),
    "groups 100 deep": group_chain(100),
    "groups 101 deep": group_chain(101),
    "groups 100 deep below a span": span_with(group_chain(96)),
    "groups 101 deep below a span": span_with(group_chain(97)),
    "tag of 5 bytes": b"\x88\x80\x80\x80\x00\x01",
    "tag of 6 bytes": b"\x88\x80\x80\x80\x80\x00\x01",
    "tag above 32 bits": b"\x88\x80\x80\x80\x10\x01",
    "largest field number": b"\xf8\xff\xff\xff\x0f\x01",
    "varint of 10 bytes": tag(5, 0) + b"\xff" * 9 + b"\x7f",
    "varint of 11 bytes": tag(5, 0) + b"\xff" * 10 + b"\x01",
    "varint cut short": tag(5, 0) + b"\xff",
    "length past the end": tag(5, 2) + b"\x05abc",
    "length of 2**31 - 1": tag(5, 2) + varint((1 << 31) - 1),
    "length in 5 bytes": tag(5, 2) + varint(1, 4) + b"x",
    "length in 6 bytes": tag(5, 2) + varint(1, 5) + b"x",
    "message length in 6 bytes": ld(1, tag(1, 2) + varint(0, 5)),
    "resource spans as a varint": tag(1, 0) + b"\x05",
    "resource spans as a group": tag(1, 3) + tag(1, 4),
    "fixed64 cut short": tag(5, 1) + bytes(7),
    "fixed32 cut short": tag(5, 5) + bytes(3),
    "empty batch": ld(1),
    "empty span": ld(1, ld(2, ld(2))),
    "kind 2**31": span_with(tag(6, 0) + varint(1 << 31)),
    "kind 2**32 + 1 (truncated to 1)": span_with(tag(6, 0) + varint((1 << 32) + 1)),
    "kind -1 in 5 bytes": span_with(tag(6, 0) + b"\xff\xff\xff\xff\x0f"),
    "kind 2**32 (truncated to 0)": span_with(tag(6, 0) + varint(1 << 32)),
    "dropped count 2**32 (truncated to 0)": span_with(tag(10, 0) + varint(1 << 32)),
    "dropped count 2**33 - 1": span_with(tag(10, 0) + varint((1 << 33) - 1)),
    "status code -1": span_with(ld(15, tag(3, 0) + varint(-1))),
    "flags in a 3-byte tag": span_with(b"\x85\x81\x00" + bytes(4)),
    "flags as a varint": span_with(tag(16, 0) + b"\x01"),
    "name as a varint": span_with(tag(5, 0) + b"\x01"),
    "start time as a varint": span_with(tag(7, 0) + b"\x01"),
    "start time zero": span_with(tag(7, 1) + bytes(8)),
    "bool value 2": span_with(attribute(TEAM, ld(2, tag(2, 0) + b"\x02"))),
    "bool value false": span_with(attribute(TEAM, ld(2, tag(2, 0) + b"\x00"))),
    "int value in 10 bytes": span_with(attribute(TEAM, ld(2, tag(3, 0) + varint(5, 9)))),
    "double -0.0": span_with(attribute(TEAM, ld(2, tag(4, 1) + struct.pack("<d", -0.0)))),
    "empty string value": span_with(attribute(TEAM, ld(2, ld(1)))),
    "string value": span_with(attribute(TEAM, ld(2, ld(1, b"blue")))),
    "string value, long length": span_with(attribute(TEAM, ld(2, tag(1, 2) + varint(4, 1) + b"blue"))),
    "empty value": span_with(attribute(TEAM, ld(2))),
    "no value": span_with(attribute(TEAM)),
    "strindex 0": span_with(attribute(TEAM, ld(2, tag(8, 0) + b"\x00"))),
    "key strindex -1": span_with(attribute(TEAM, tag(3, 0) + varint(-1))),
    "attribute value cut short": span_with(attribute(TEAM, ld(2, tag(1, 2)))),
    "value before key": span_with(attribute(ld(2, ld(1, b"ab")), TEAM)),
    "unknown field in a value": span_with(attribute(TEAM, ld(2, ld(1, b"ab"), tag(9, 0) + b"\x01"))),
    "value as a group": span_with(attribute(TEAM, tag(2, 3) + tag(2, 4))),
    "key as a varint": span_with(attribute(tag(1, 0) + b"\x01", ld(2, ld(1, b"ab")))),
    "two resources": ld(1, ld(1), ld(1), ld(2, ld(2))),
    "two names": span_with(ld(5, b"t")),
    "two keys": span_with(attribute(TEAM, TEAM, ld(2, ld(1, b"ab")))),
    "two oneof members": span_with(attribute(TEAM, ld(2, ld(1, b"a"), tag(2, 0) + b"\x01"))),
    "two string values": span_with(attribute(TEAM, ld(2, ld(1, b"a"), ld(1, b"b")))),
    "two values": span_with(attribute(TEAM, ld(2, ld(1, b"a")), ld(2, ld(1, b"b")))),
    "a merge, then invalid": span_with(ld(5, b"t"), tag(5, 7)),
}


@pytest.mark.parametrize("name", WIRE_EDGES)
def test_wire_format_edges(name: str) -> None:
    if CORE is None:
        pytest.skip("the compiled ingest core is not built here")
    payload = WIRE_EDGES[name]
    outcome = agree(payload, ((b"team",),), ((b"team",),), 1)
    assert agree(payload) == outcome
    if name.startswith("two "):  # protobuf merges or replaces: the reference decides
        assert outcome == "declined"
    elif name == "a merge, then invalid":  # the core validates to the end even after a merge
        assert outcome == "refused"
