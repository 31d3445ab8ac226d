"""Protobuf message types the receiver needs beyond the generated OTLP classes.

They read the same bytes as OTLP's messages, but keep parts undecoded: `LazyTracesRequest`,
`LazyResourceSpans` and `LazyScopeSpans` keep batches, scopes and spans as their raw encodings, so the
truncation stage finds what could hold a too-long attribute by `len()` without building objects. On the
benchmark payload (1000 spans of ~300 bytes) the generated full decode takes ~530 us, the lazy request
decode ~21 us.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _FIELD.LABEL_OPTIONAL
_REPEATED = _FIELD.LABEL_REPEATED


# Each message's fields as (name, number, repeated); every field is kept as raw bytes. Field numbers
# mirror opentelemetry/proto/trace/v1/trace.proto and the collector's trace_service.proto.
_MESSAGES: dict[str, list[tuple[str, int, bool]]] = {
    "LazyTracesRequest": [("resource_spans", 1, True)],
    "LazyResourceSpans": [("resource", 1, False), ("scope_spans", 2, True), ("schema_url", 3, False)],
    "LazyScopeSpans": [("scope", 1, False), ("spans", 2, True), ("schema_url", 3, False)],
}


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="distributor/wire.proto", package="distributor.wire", syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        proto = file.message_type.add(name=name)
        for field_name, number, repeated in fields:
            label = _REPEATED if repeated else _OPTIONAL
            proto.field.add(name=field_name, number=number, type=_FIELD.TYPE_BYTES, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"distributor.wire.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _build()
LazyTracesRequest: Any = _CLASSES["LazyTracesRequest"]
LazyResourceSpans: Any = _CLASSES["LazyResourceSpans"]
LazyScopeSpans: Any = _CLASSES["LazyScopeSpans"]
