"""Protobuf message types the receiver needs beyond the generated OTLP classes.

They read the same bytes as OTLP's messages, but keep parts undecoded or shaped for one question:
- `LazyTracesRequest`/`LazyResourceSpans`/`LazyScopeSpans` keep batches, scopes and spans as their raw
  encodings, so an exact encoded size is `len()` and no objects are built. On the benchmark payload
  (1000 spans of ~300 bytes) the generated full decode takes ~530 us, the lazy request decode ~21 us.
- `AttributeMapScopeSpans` reads span attributes as `map<string, bytes>` (a map entry has the same
  wire form as a KeyValue), so looking up one attribute is a C hash lookup instead of iterating
  KeyValue objects from Python (~0.5 us per object touched). A map keeps one entry per key, so
  `AttributeListScopeSpans` (attributes as raw entries) tells whether any key repeats.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1 import common_pb2

_FIELD = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _FIELD.LABEL_OPTIONAL
_REPEATED = _FIELD.LABEL_REPEATED


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="distributor/wire.proto",
        package="distributor.wire",
        syntax="proto3",
        dependency=[common_pb2.DESCRIPTOR.name],
    )

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]], parent: Any = None) -> Any:
        proto = (file.message_type if parent is None else parent.nested_type).add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name if type_name.startswith(".") else f".distributor.wire.{type_name}"
        return proto

    # Field numbers and wire types mirror opentelemetry/proto/trace/v1/trace.proto.
    message("LazyTracesRequest", [("resource_spans", 1, _FIELD.TYPE_BYTES, _REPEATED, None)])
    message(
        "LazyResourceSpans",
        [
            ("resource", 1, _FIELD.TYPE_BYTES, _OPTIONAL, None),
            ("scope_spans", 2, _FIELD.TYPE_BYTES, _REPEATED, None),
            ("schema_url", 3, _FIELD.TYPE_BYTES, _OPTIONAL, None),
        ],
    )
    message(
        "LazyScopeSpans",
        [
            ("scope", 1, _FIELD.TYPE_BYTES, _OPTIONAL, None),
            ("spans", 2, _FIELD.TYPE_BYTES, _REPEATED, None),
            ("schema_url", 3, _FIELD.TYPE_BYTES, _OPTIONAL, None),
        ],
    )
    message("AttributeMapScopeSpans", [("spans", 2, _FIELD.TYPE_MESSAGE, _REPEATED, "AttributeMapSpan")])
    span = message(
        "AttributeMapSpan",
        [("attributes", 9, _FIELD.TYPE_MESSAGE, _REPEATED, "AttributeMapSpan.AttributesEntry")],
    )
    entry = message(
        "AttributesEntry",
        [
            ("key", 1, _FIELD.TYPE_STRING, _OPTIONAL, None),
            ("value", 2, _FIELD.TYPE_BYTES, _OPTIONAL, None),  # an encoded AnyValue
        ],
        parent=span,
    )
    entry.options.map_entry = True
    message("AttributeListScopeSpans", [("spans", 2, _FIELD.TYPE_MESSAGE, _REPEATED, "AttributeListSpan")])
    message("AttributeListSpan", [("attributes", 9, _FIELD.TYPE_BYTES, _REPEATED, None)])
    pool = descriptor_pool.DescriptorPool()
    for dependency in (common_pb2,):
        pool.AddSerializedFile(dependency.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    names = (
        "LazyTracesRequest",
        "LazyResourceSpans",
        "LazyScopeSpans",
        "AttributeMapScopeSpans",
        "AttributeListScopeSpans",
    )
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"distributor.wire.{name}"))
        for name in names
    }


_CLASSES = _build()
LazyTracesRequest: Any = _CLASSES["LazyTracesRequest"]
LazyResourceSpans: Any = _CLASSES["LazyResourceSpans"]
LazyScopeSpans: Any = _CLASSES["LazyScopeSpans"]
AttributeMapScopeSpans: Any = _CLASSES["AttributeMapScopeSpans"]
AttributeListScopeSpans: Any = _CLASSES["AttributeListScopeSpans"]


_AT_LEAST_2_VARINT_BYTES = (0x7F).__lt__
_AT_LEAST_3_VARINT_BYTES = (0x3FFF).__lt__
_AT_LEAST_4_VARINT_BYTES = (0x1FFFFF).__lt__
_AT_LEAST_5_VARINT_BYTES = (0xFFFFFFF).__lt__


def framed_total(sizes: list[int]) -> int:
    """sum(framed_size(s) for s in sizes), in C-level passes: ~4x faster than a Python loop per span."""
    total = sum(sizes) + 2 * len(sizes) + sum(map(_AT_LEAST_2_VARINT_BYTES, sizes))
    if sizes and max(sizes) > 0x3FFF:
        total += sum(map(_AT_LEAST_3_VARINT_BYTES, sizes)) + sum(map(_AT_LEAST_4_VARINT_BYTES, sizes))
        total += sum(map(_AT_LEAST_5_VARINT_BYTES, sizes))
    return total


def framed_size(size: int) -> int:
    """Bytes a length-delimited field of `size` bytes occupies: 1 tag byte + varint(size) + size."""
    if size < 0x80:
        return size + 2
    if size < 0x4000:
        return size + 3
    varint = 1
    while size >> (7 * varint):
        varint += 1
    return size + 1 + varint
