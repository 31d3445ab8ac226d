"""Valid protobuf encodings of a message that are not the canonical one, as other encoders write them:
zero-valued fields written out (protobufjs, as the OpenTelemetry JS exporter uses it, does this),
varints and lengths one byte longer than needed, fields in reverse order, unknown fields added. The
protobuf runtime decodes each to the same message as the canonical encoding."""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

# Field types written as varints, and the struct formats of the fixed-width ones.
VARINT_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_ENUM,
    FieldDescriptor.TYPE_BOOL,
}
FIXED_FORMATS = {
    FieldDescriptor.TYPE_FIXED64: "<Q",
    FieldDescriptor.TYPE_SFIXED64: "<q",
    FieldDescriptor.TYPE_DOUBLE: "<d",
    FieldDescriptor.TYPE_FIXED32: "<I",
    FieldDescriptor.TYPE_SFIXED32: "<i",
    FieldDescriptor.TYPE_FLOAT: "<f",
}


def varint(value: int, extra: int = 0) -> bytes:
    """`value` (taken mod 2**64) as a varint, `extra` bytes longer than needed (a valid, non-minimal
    form while it stays within 10 bytes)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append(value & 0x7F)
        value >>= 7
        if not value:
            break
        out[-1] |= 0x80
    for _ in range(extra):
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def encode(
    message: Any,
    *,
    explicit_zeros: bool = True,
    padded: bool = True,
    reverse: bool = True,
    unknown_fields: bool = False,
) -> bytes:
    """`message` encoded with the chosen departures from the canonical form, at every nesting level."""
    options = {
        "explicit_zeros": explicit_zeros,
        "padded": padded,
        "reverse": reverse,
        "unknown_fields": unknown_fields,
    }
    out = bytearray()
    fields = list(message.DESCRIPTOR.fields)
    if reverse:
        fields.reverse()
    for field in fields:
        repeated = field.is_repeated
        in_oneof = field.containing_oneof is not None
        if repeated:
            values = list(getattr(message, field.name))
        elif field.type == FieldDescriptor.TYPE_MESSAGE or in_oneof:
            values = [getattr(message, field.name)] if message.HasField(field.name) else []
        else:
            value = getattr(message, field.name)
            values = [value] if value or explicit_zeros else []
        for value in values:
            out += _field(field, value, options)
    if unknown_fields:
        # A varint, a fixed64 and a length-delimited field under numbers no OTLP message uses.
        out += varint(1000 << 3 | 0) + varint(7) + varint(1001 << 3 | 1) + bytes(8)
        out += varint(1002 << 3 | 2) + varint(3) + b"abc"
    return bytes(out)


def _field(field: Any, value: Any, options: dict[str, bool]) -> bytes:
    padded = 1 if options["padded"] else 0
    if field.type in VARINT_TYPES:
        return varint(field.number << 3 | 0, padded) + varint(int(value), padded)
    if field.type in FIXED_FORMATS:
        packed = struct.pack(FIXED_FORMATS[field.type], value)
        return varint(field.number << 3 | (1 if len(packed) == 8 else 5), padded) + packed
    if field.type == FieldDescriptor.TYPE_STRING:
        body = value.encode("utf-8")
    elif field.type == FieldDescriptor.TYPE_BYTES:
        body = value
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        body = encode(value, **options)
    else:
        raise AssertionError(f"no encoding for field type {field.type}")
    return varint(field.number << 3 | 2, padded) + varint(len(body), padded) + body
