"""OTLP/JSON trace requests -> protobuf.

OTLP/JSON is the proto3 JSON mapping with a few differences (hex trace/span ids, integer enums, ...).
A receiver must be stricter than ``json_format.ParseDict`` (which, with ``ignore_unknown_fields``, accepts
a string where a message is expected, ``true`` for a double and ``1.5`` for an enum), must name the JSON
path of whatever it refuses, and must be fast: browsers send many small JSON requests.

So orjson parses the body, and one walk driven by per-message field tables (built once from the
descriptors) validates every known field and writes its protobuf encoding straight into bytes: no message
objects, no ParseDict. The encoding is the canonical one (fields in field-number order, proto3 defaults
left out), byte for byte what ``ExportTraceServiceRequest.SerializeToString()`` gives for the same
request, so the same spans cost the same whether they came as JSON or as protobuf.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Final, NoReturn, TypeAlias

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from distributor.common.errors import DistributorError

__all__ = ["OtlpJsonError", "export_response_json", "otlp_json_to_protobuf"]


class OtlpJsonError(DistributorError):
    """The body is not valid OTLP/JSON; str(err) is a clear message naming the JSON path at fault."""


# Same limit as protobuf's binary decoder (upb) and ParseDict, so anything accepted here also
# decodes on the protobuf path.
_MAX_DEPTH: Final = 100

# Field name -> (decoded size in bytes, wording for errors).
_ID_FIELDS: Final[dict[str, tuple[int, str]]] = {
    "trace_id": (16, "trace id"),
    "span_id": (8, "span id"),
    "parent_span_id": (8, "parent span id"),
}

_INT_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    FieldDescriptor.TYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: ("sint32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: ("sfixed32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: ("uint32", 0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: ("fixed32", 0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: ("sint64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: ("sfixed64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: ("uint64", 0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: ("fixed64", 0, 2**64 - 1),
}

# Protobuf wire types.
_VARINT: Final = 0
_I64: Final = 1
_LEN: Final = 2
_I32: Final = 5

_MASK64: Final = 2**64 - 1
_pack_double: Final = struct.Struct("<d").pack

_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_NUMBER_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Standard or URL-safe alphabet, padding optional (proto3 JSON accepts all of these).
_BASE64_RE: Final = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_DOUBLE_WORDS: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_KEY_VALUE: Final = KeyValue.DESCRIPTOR.full_name

# ParseDict error texts look like 'Failed to parse a field: Failed to parse b field: <why> at <path>.'
_PARSE_PREFIX_RE: Final = re.compile(r"Failed to parse (\S+) field: ")
_PARSE_AT_RE: Final = re.compile(r' at "?ExportTraceServiceRequest\.?([\w.\[\]]*)"?')

# A JSON path as a linked list (parent, key): building it costs one tuple per message, and it is
# only turned into text when something is wrong.
_Path: TypeAlias = "tuple[_Path, str | int] | None"


class _ExactNumbersNeeded(Exception):
    """orjson reads an integer literal beyond 64 bits as a float, where the stdlib keeps it exact; an
    integer field holding such a float is decided on the stdlib's reading of the body instead."""


# Encodes one field's JSON value: the field's tag and value, b"" for a default value that proto3 leaves
# out, or None for a value that leaves the field unset (an unknown enum name). Arguments: the value,
# the field, the path of the object holding it and its key there (a path is built only for errors), and
# the depth of that object in messages.
_Encoder: TypeAlias = "Callable[[Any, _Field, _Path, str, int], bytes | bytearray | None]"


@dataclass(frozen=True, slots=True)
class _Field:
    number: int
    name: str
    json_name: str
    repeated: bool
    tag: bytes  # the encoded field key: number and wire type
    slot: int  # where its chunk goes in its message: slots are in field-number order
    presence: bool  # encoded even when it holds the default value (oneof members and messages)
    encode: _Encoder
    oneof: str | None = None
    message: _Message | None = None
    type_name: str = ""
    int_min: int = 0
    int_max: int = 0
    pack_int: Callable[[int], bytes] | None = None
    id_size: int = 0
    enum_numbers_by_name: dict[str, int] = dataclass_field(default_factory=dict)
    enum_numbers: frozenset[int] | None = None  # only for closed enums
    # False when the table is used on orjson's reading of a body (see _ExactNumbersNeeded).
    exact_numbers: bool = True
    key_values: bool = False  # a repeated KeyValue field: attributes, mostly
    # For repeated strings and bytes: checks an element and returns its bytes.
    element: Callable[[object, _Path], bytes] | None = None


class _Message:
    __slots__ = ("fields", "has_oneofs", "slot_count")

    def __init__(self) -> None:
        # Both spellings (lowerCamelCase and proto name) map to the same _Field.
        self.fields: dict[str, _Field] = {}
        self.slot_count = 0
        self.has_oneofs = False


def _is_repeated(fd: Any) -> bool:
    # FieldDescriptor.label is gone in protobuf 7, is_repeated is missing in older releases.
    is_repeated = getattr(fd, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


def _build_message(descriptor: Any, cache: dict[str, _Message], exact_numbers: bool) -> _Message:
    message = cache.get(descriptor.full_name)
    if message is None:
        message = cache[descriptor.full_name] = _Message()  # registered first: AnyValue is recursive
        by_number = sorted(descriptor.fields, key=lambda fd: fd.number)
        message.slot_count = len(by_number)
        message.has_oneofs = bool(descriptor.oneofs)
        for slot, fd in enumerate(by_number):
            field = _build_field(fd, slot, cache, exact_numbers)
            message.fields[field.json_name] = field
            message.fields[field.name] = field
    return message


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _build_field(fd: Any, slot: int, cache: dict[str, _Message], exact_numbers: bool) -> _Field:
    name: str = fd.name
    repeated = _is_repeated(fd)
    oneof = fd.containing_oneof.name if fd.containing_oneof is not None else None
    common: dict[str, Any] = {
        "number": fd.number,
        "name": name,
        "json_name": fd.json_name,
        "repeated": repeated,
        "slot": slot,
        "presence": fd.type == FieldDescriptor.TYPE_MESSAGE or oneof is not None,
        "oneof": oneof,
        "exact_numbers": exact_numbers,
    }
    if repeated and fd.type not in (
        FieldDescriptor.TYPE_MESSAGE,
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BYTES,
    ):
        # Repeated numbers would need the packed encoding; trace requests have none.
        raise TypeError(f"{fd.full_name}: repeated scalar fields are not supported")
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type.GetOptions().map_entry:
            raise TypeError(f"{fd.full_name}: map fields are not supported")
        return _Field(
            tag=_tag(fd.number, _LEN),
            encode=_encode_repeated if repeated else _encode_submessage,
            message=_build_message(fd.message_type, cache, exact_numbers),
            key_values=repeated and fd.message_type.full_name == _KEY_VALUE,
            **common,
        )
    if fd.type == FieldDescriptor.TYPE_BYTES:
        if name in _ID_FIELDS:
            size, label = _ID_FIELDS[name]
            return _Field(
                tag=_tag(fd.number, _LEN), encode=_encode_id, id_size=size, type_name=label, **common
            )
        if repeated:
            return _Field(
                tag=_tag(fd.number, _LEN), encode=_encode_repeated, element=_decode_base64, **common
            )
        return _Field(tag=_tag(fd.number, _LEN), encode=_encode_bytes, **common)
    if fd.type == FieldDescriptor.TYPE_STRING:
        if repeated:
            return _Field(tag=_tag(fd.number, _LEN), encode=_encode_repeated, element=_utf8, **common)
        return _Field(tag=_tag(fd.number, _LEN), encode=_encode_string, **common)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return _Field(tag=_tag(fd.number, _VARINT), encode=_encode_bool, **common)
    if fd.type == FieldDescriptor.TYPE_DOUBLE:
        return _Field(tag=_tag(fd.number, _I64), encode=_encode_double, **common)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum_type = fd.enum_type
        closed = bool(getattr(enum_type, "is_closed", False))
        return _Field(
            tag=_tag(fd.number, _VARINT),
            encode=_encode_enum,
            type_name="int32",
            int_min=-(2**31),
            int_max=2**31 - 1,
            enum_numbers_by_name={value.name: value.number for value in enum_type.values},
            enum_numbers=frozenset(enum_type.values_by_number) if closed else None,
            **common,
        )
    if fd.type in _INT_TYPES:
        type_name, low, high = _INT_TYPES[fd.type]
        wire_type, pack_int = _INT_ENCODINGS[fd.type]
        return _Field(
            tag=_tag(fd.number, wire_type),
            encode=_encode_int,
            type_name=type_name,
            int_min=low,
            int_max=high,
            pack_int=pack_int,
            **common,
        )
    # float and group fields: none in trace requests.
    raise TypeError(f"{fd.full_name}: field type {fd.type} is not supported")


_SMALL_VARINTS: Final = tuple(bytes((number,)) for number in range(128))


def _varint(number: int) -> bytes:
    """Base-128 varint of a non-negative number below 2**64."""
    if number < 0x80:
        return _SMALL_VARINTS[number]
    if number < 0x4000:  # lengths of spans and attributes mostly land here
        return bytes((number & 0x7F | 0x80, number >> 7))
    out = bytearray()
    while number >= 0x80:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _signed_varint(number: int) -> bytes:
    # int32, int64 and enums: a negative number is written as its 64-bit two's complement (10 bytes).
    return _varint(number & _MASK64)


def _zigzag_varint(number: int) -> bytes:
    # sint32, sint64: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
    return _varint(-2 * number - 1 if number < 0 else 2 * number)


# Integer field type -> (wire type, how its values are written).
_INT_ENCODINGS: Final[dict[int, tuple[int, Callable[[int], bytes]]]] = {
    FieldDescriptor.TYPE_INT32: (_VARINT, _signed_varint),
    FieldDescriptor.TYPE_INT64: (_VARINT, _signed_varint),
    FieldDescriptor.TYPE_UINT32: (_VARINT, _varint),
    FieldDescriptor.TYPE_UINT64: (_VARINT, _varint),
    FieldDescriptor.TYPE_SINT32: (_VARINT, _zigzag_varint),
    FieldDescriptor.TYPE_SINT64: (_VARINT, _zigzag_varint),
    FieldDescriptor.TYPE_FIXED32: (_I32, struct.Struct("<I").pack),
    FieldDescriptor.TYPE_SFIXED32: (_I32, struct.Struct("<i").pack),
    FieldDescriptor.TYPE_FIXED64: (_I64, struct.Struct("<Q").pack),
    FieldDescriptor.TYPE_SFIXED64: (_I64, struct.Struct("<q").pack),
}


def otlp_json_to_protobuf(body: bytes) -> bytes:
    """Decode an OTLP/JSON ExportTraceServiceRequest body and return the protobuf encoding
    (ExportTraceServiceRequest.SerializeToString()) of the same request."""
    try:
        # orjson takes no BOM; OTLP/JSON tolerates one.
        document = orjson.loads(body[3:] if body[:3] == _UTF8_BOM else body)
    except orjson.JSONDecodeError:
        # orjson refuses a few bodies the stdlib parser takes (lone surrogate escapes, which unknown fields
        # may carry; numbers beyond the double range, which are refused with their path) and words its
        # errors differently: the stdlib parser decides those bodies, as it always did.
        return _encode_request(_loads_exactly(body), _REQUEST_EXACT)
    if _fast_encode is not None:
        # The C encoder answers the common case and None for everything else, which the walk decides.
        encoded = _fast_encode(document)
        if encoded is not None:
            return encoded
    try:
        return _encode_request(document, _REQUEST)
    except _ExactNumbersNeeded:
        return _encode_request(_loads_exactly(body), _REQUEST_EXACT)


def _encode_request(document: object, request: _Message) -> bytes:
    if type(document) is not dict:
        raise OtlpJsonError(f"body must be a JSON object, got {_json_type(document)}")
    return bytes(_encode_message(document, request, None, 1))


def _loads_exactly(body: bytes) -> object:
    """The stdlib's reading of the body: integers of any size stay exact, and its errors are ours."""
    try:
        # OTLP/JSON is UTF-8; json.loads(bytes) would also guess UTF-16/32. A BOM is tolerated.
        text = str(body, "utf-8-sig")
    except UnicodeDecodeError as err:
        raise OtlpJsonError(f"body is not valid UTF-8 (bad byte at offset {err.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except OtlpJsonError:
        raise
    except json.JSONDecodeError as err:
        raise OtlpJsonError(
            f"body is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from None
    except RecursionError:
        raise OtlpJsonError("body is nested too deeply to decode") from None
    except ValueError as err:  # e.g. an integer literal beyond int_max_str_digits
        raise OtlpJsonError(f"body is not valid JSON: {_clip(str(err).split(';')[0])}") from None


def export_response_json(rejected_spans: int = 0, error_message: str = "") -> bytes:
    """OTLP/JSON encoding of an ExportTraceServiceResponse: b'{}' when nothing was rejected, otherwise
    {"partialSuccess": {"rejectedSpans": "<n>", "errorMessage": "..."}} (int64 as a JSON string, as
    OTLP/JSON does). As in proto3 JSON, default values are left out: an error message with nothing
    rejected (a warning, which OTLP allows) gives {"partialSuccess": {"errorMessage": "..."}}."""
    if not 0 <= rejected_spans < 2**63:
        raise ValueError(f"rejected_spans must be a non-negative int64, got {rejected_spans}")
    partial: dict[str, str] = {}
    if rejected_spans:
        partial["rejectedSpans"] = str(rejected_spans)
    if error_message:
        # A lone surrogate would make the response undecodable as a protobuf string.
        partial["errorMessage"] = error_message.encode("utf-8", "replace").decode("utf-8")
    if not partial:
        return b"{}"
    return json.dumps({"partialSuccess": partial}, separators=(",", ":")).encode("ascii")


# --------------------------------------------------------------------------------------------------
# The walk. Each JSON object is checked in its own key order, so the first problem found (and named)
# is the one a depth-first reading of the document meets first.


def _encode_message(obj: object, message: _Message, path: _Path, depth: int) -> bytearray:
    if type(obj) is not dict:
        _fail(path, f"expected an object, got {_json_type(obj)}")
    if depth > _MAX_DEPTH:
        _fail(path, f"nested too deeply (more than {_MAX_DEPTH} levels of messages)")
    fields = message.fields
    # Senders write keys in any order (the OpenTelemetry JS exporters put parentSpanId before traceState,
    # for one): each field's chunk goes into its slot, and the slots are joined in field-number order.
    # A filled slot (b"" for a default value) also tells that a field came in both spellings.
    slots: list[bytes | bytearray | None] = [None] * message.slot_count
    has_oneofs = message.has_oneofs
    oneofs: dict[str, str] | None = None
    for key, value in obj.items():
        field = fields.get(key)
        # Unknown fields must be ignored; null means "not set" in proto3 JSON.
        if field is None or value is None:
            continue
        slot = field.slot
        if slots[slot] is not None:
            _fail(path, f'both "{field.json_name}" and "{field.name}" given')
        if has_oneofs and field.oneof is not None:
            if oneofs is None:
                oneofs = {}
            other = oneofs.setdefault(field.oneof, key)
            if other != key:
                _fail(path, f'only one of "{other}" and "{key}" may be set')
        slots[slot] = field.encode(value, field, path, key, depth)
    return bytearray().join(filter(None, slots))


def _encode_submessage(value: object, field: _Field, path: _Path, key: str, depth: int) -> bytes:
    assert field.message is not None
    encoded = _encode_message(value, field.message, (path, key), depth + 1)
    return field.tag + _varint(len(encoded)) + encoded


def _encode_repeated(values: object, field: _Field, parent: _Path, key: str, depth: int) -> bytearray:
    path = (parent, key)
    if type(values) is not list:
        _fail(path, f"expected an array, got {_json_type(values)}")
    if field.key_values and depth + 2 <= _MAX_DEPTH:  # a KeyValue and its AnyValue: two levels down
        return _encode_key_values(values, field, path, depth)
    out = bytearray()
    tag = field.tag
    message = field.message
    if message is not None:
        for index, item in enumerate(values):
            encoded = _encode_message(item, message, (path, index), depth + 1)
            out += tag
            out += _varint(len(encoded))
            out += encoded
    else:
        # Repeated strings and bytes (the only repeated scalars _build_field admits): every element is
        # written, empty ones included.
        element = field.element
        assert element is not None
        for index, item in enumerate(values):
            data = element(item, (path, index))
            out += tag
            out += _varint(len(data))
            out += data
    return out


# What the attribute fast path below writes itself: the tags of KeyValue.key and .value, and of
# AnyValue's scalar members (both spellings of whose names map to their field numbers).
_KEY_TAG: Final = _tag(KeyValue.DESCRIPTOR.fields_by_name["key"].number, _LEN)
_VALUE_TAG: Final = _tag(KeyValue.DESCRIPTOR.fields_by_name["value"].number, _LEN)
_STRING_VALUE: Final[int] = AnyValue.DESCRIPTOR.fields_by_name["string_value"].number
_BOOL_VALUE: Final[int] = AnyValue.DESCRIPTOR.fields_by_name["bool_value"].number
_INT_VALUE: Final[int] = AnyValue.DESCRIPTOR.fields_by_name["int_value"].number
_DOUBLE_VALUE: Final[int] = AnyValue.DESCRIPTOR.fields_by_name["double_value"].number
_STRING_VALUE_TAG: Final = _tag(_STRING_VALUE, _LEN)
_BOOL_VALUE_TAG: Final = _tag(_BOOL_VALUE, _VARINT)
_INT_VALUE_TAG: Final = _tag(_INT_VALUE, _VARINT)
_DOUBLE_VALUE_TAG: Final = _tag(_DOUBLE_VALUE, _I64)
_SCALAR_VALUES: Final = {
    "stringValue": _STRING_VALUE,
    "string_value": _STRING_VALUE,
    "boolValue": _BOOL_VALUE,
    "bool_value": _BOOL_VALUE,
    "intValue": _INT_VALUE,
    "int_value": _INT_VALUE,
    "doubleValue": _DOUBLE_VALUE,
    "double_value": _DOUBLE_VALUE,
}

# Attribute key -> its encoding as KeyValue.key. A deployment uses a few hundred keys at most; the cap
# keeps a sender of ever new keys from growing it.
_KEY_FIELDS: dict[str, bytes] = {}
_KEY_FIELDS_CAP: Final = 4096


def _encode_key_values(values: list[Any], field: _Field, path: _Path, depth: int) -> bytearray:
    """Attributes are most of a span, and nearly all of them look like {"key": "<non-empty>", "value":
    {"<string, bool, int or double>Value": <valid value>}}: those are encoded right here, several times
    faster than by the generic walk, which takes everything else (and names what is wrong)."""
    out = bytearray()
    tag = field.tag
    message = field.message
    assert message is not None
    for index, item in enumerate(values):
        encoded: bytes | bytearray | None = None
        if type(item) is dict and len(item) == 2:
            key = item.get("key")
            value = item.get("value")
            if type(key) is str and key and type(value) is dict and len(value) == 1:
                [(name, scalar)] = value.items()
                value_part = _scalar_any_value(_SCALAR_VALUES.get(name), scalar)
                key_part = _KEY_FIELDS.get(key) or _key_field(key)
                if value_part is not None and key_part is not None:
                    size = len(value_part)
                    value_size = _SMALL_VARINTS[size] if size < 0x80 else _varint(size)
                    encoded = key_part + _VALUE_TAG + value_size + value_part
        if encoded is None:
            encoded = _encode_message(item, message, (path, index), depth + 1)
        size = len(encoded)
        out += tag
        out += _SMALL_VARINTS[size] if size < 0x80 else _varint(size)
        out += encoded
    return out


def _key_field(key: str) -> bytes | None:
    """KeyValue.key encoded, or None if the key has a lone surrogate (for the generic walk to name)."""
    try:
        data = key.encode("utf-8")
    except UnicodeEncodeError:
        return None
    encoded = _KEY_TAG + _varint(len(data)) + data
    if len(_KEY_FIELDS) < _KEY_FIELDS_CAP:
        _KEY_FIELDS[key] = encoded
    return encoded


def _scalar_any_value(member: int | None, scalar: object) -> bytes | None:
    """The encoded AnyValue holding a valid string, int, double or bool, or None for anything else."""
    if member == _STRING_VALUE:
        if type(scalar) is not str:
            return None
        try:
            data = scalar.encode("utf-8")
        except UnicodeEncodeError:
            return None
        size = len(data)
        return _STRING_VALUE_TAG + (_SMALL_VARINTS[size] if size < 0x80 else _varint(size)) + data
    if member == _INT_VALUE:
        if type(scalar) is int and -(2**63) <= scalar < 2**63:
            return _INT_VALUE_TAG + _varint(scalar & _MASK64)
        if type(scalar) is str and scalar.isascii() and scalar.isdigit() and len(scalar) < 19:
            return _INT_VALUE_TAG + _varint(int(scalar))  # below 10**18, so within int64
        return None
    if member == _DOUBLE_VALUE:
        if type(scalar) is float and math.isfinite(scalar):
            return _DOUBLE_VALUE_TAG + _pack_double(scalar)
        if type(scalar) is int and -(2**63) <= scalar < 2**64:  # JavaScript writes 1.0 as 1
            return _DOUBLE_VALUE_TAG + _pack_double(float(scalar))
        return None
    if member == _BOOL_VALUE and type(scalar) is bool:
        return _BOOL_VALUE_TAG + (b"\x01" if scalar else b"\x00")
    return None


def _utf8(value: object, path: _Path) -> bytes:
    if type(value) is not str:
        _fail(path, f"expected a string, got {_json_type(value)}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # json.loads joins escaped surrogate pairs: any left is unpaired
        _fail(path, "string contains an unpaired UTF-16 surrogate")


def _encode_string(value: object, field: _Field, path: _Path, key: str, depth: int) -> bytes | None:
    if type(value) is not str:
        _fail((path, key), f"expected a string, got {_json_type(value)}")
    if not value and not field.presence:
        return b""
    data = _utf8(value, (path, key))
    size = len(data)
    return field.tag + (_SMALL_VARINTS[size] if size < 0x80 else _varint(size)) + data


def _encode_int(value: object, field: _Field, path: _Path, key: str, depth: int) -> bytes | None:
    # The usual spellings first: a JSON integer in range, or a decimal string (64-bit integers).
    number: int
    if type(value) is int and field.int_min <= value <= field.int_max:
        number = value
    elif type(value) is str and value.isascii() and value.isdigit() and len(value) < 20:
        number = int(value)  # below 10**19: out of range only for 32-bit fields
        if number > field.int_max:
            number = _to_int(value, field, (path, key))  # says which range it is out of
    else:
        number = _to_int(value, field, (path, key))
    if not number and not field.presence:
        return b""
    assert field.pack_int is not None
    return field.tag + field.pack_int(number)


def _encode_id(value: object, field: _Field, path: _Path, key: str, depth: int) -> bytes | None:
    if value == "":
        return b""  # no id, as an empty bytes field says in protobuf
    return field.tag + _SMALL_VARINTS[field.id_size] + _hex_id(value, field, (path, key))


def _encode_enum(value: object, field: _Field, path: _Path, key: str, depth: int) -> bytes | None:
    number: int
    if type(value) is int and field.enum_numbers is None and field.int_min <= value <= field.int_max:
        number = value
    else:
        resolved = _to_enum(value, field, (path, key))
        if resolved is None:
            return None
        number = resolved
    if not number and not field.presence:
        return b""
    return field.tag + _signed_varint(number)


def _encode_double(value: object, field: _Field, path: _Path, key: str, depth: int) -> bytes | None:
    encoded = _pack_double(_to_double(value, (path, key)))
    # Proto3 leaves out a double whose bits are all zero: -0.0 (sign bit set) is written.
    if not field.presence and encoded == b"\x00" * 8:
        return b""
    return field.tag + encoded


def _encode_bool(value: object, field: _Field, path: _Path, key: str, depth: int) -> bytes | None:
    if type(value) is not bool:
        _fail((path, key), f"expected true or false, got {_json_type(value)}")
    if not value and not field.presence:
        return b""
    return field.tag + (b"\x01" if value else b"\x00")


def _encode_bytes(value: object, field: _Field, path: _Path, key: str, depth: int) -> bytes | None:
    data = _decode_base64(value, (path, key))
    if not data and not field.presence:
        return b""
    return field.tag + _varint(len(data)) + data


def _hex_id(value: object, field: _Field, path: _Path) -> bytes:
    digits = 2 * field.id_size
    if type(value) is not str:
        _fail(path, f"{field.type_name} must be a hex string, got {_json_type(value)}")
    if len(value) == digits and value.isascii():
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            # fromhex skips whitespace between digit pairs, which would leave fewer bytes.
            if len(raw) == field.id_size:
                return raw
    _fail(path, f"invalid {field.type_name} {_describe(value)} (expected {digits} hex digits)")


def _decode_base64(value: object, path: _Path) -> bytes:
    if type(value) is not str:
        _fail(path, f"expected a base64 string, got {_json_type(value)}")
    data_length = len(value.rstrip("="))
    if (
        not _BASE64_RE.fullmatch(value)
        or data_length % 4 == 1
        or (data_length != len(value) and len(value) % 4)
    ):
        _fail(path, f"invalid base64 {_describe(value)}")
    # As proto3 JSON parsers read it: either alphabet, padding made up.
    encoded = value.encode("ascii")
    return base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))


def _to_int(value: object, field: _Field, path: _Path) -> int:
    number: int
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail(path, f"expected an integer, got {_json_type(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INT_RE.fullmatch(value):
        try:
            number = int(value)
        except ValueError:  # beyond int_max_str_digits, so far out of range anyway
            _fail(path, f"{_describe(value)} is out of range for {field.type_name}")
    else:
        if isinstance(value, str):
            if not _NUMBER_RE.fullmatch(value):
                _fail(path, f"invalid integer {_describe(value)}")
            # proto3 JSON also allows "1e3" and "5.0" for integers.
            as_float = float(value)
        else:
            if not field.exact_numbers and abs(value) >= 2**63:
                raise _ExactNumbersNeeded  # perhaps an integer literal orjson could not hold exactly
            as_float = value
        if not math.isfinite(as_float):
            _fail(path, f"{_describe(value)} is out of range for {field.type_name}")
        if not as_float.is_integer():
            _fail(path, f"expected an integer, got {_describe(value)}")
        number = int(as_float)
    if not field.int_min <= number <= field.int_max:
        _fail(
            path,
            f"{_describe(value)} is out of range for {field.type_name} ({field.int_min} to {field.int_max})",
        )
    return number


def _to_double(value: object, path: _Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail(path, f"expected a number, got {_json_type(value)}")
    if isinstance(value, str):
        special = _DOUBLE_WORDS.get(value)
        if special is not None:
            return special
        if not _NUMBER_RE.fullmatch(value):
            _fail(path, f"invalid number {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # a huge JSON integer literal
        number = math.inf
    if not math.isfinite(number):  # e.g. 1e400, which json.loads turns into inf
        _fail(path, f"{_describe(value)} is out of range for double")
    return number


def _to_enum(value: object, field: _Field, path: _Path) -> int | None:
    """The enum's number, or None for a name this enum does not have."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail(path, f"expected an enum name or integer, got {_json_type(value)}")
    if isinstance(value, str) and not _INT_RE.fullmatch(value):
        # Unknown names are ignored like unknown fields, as ParseDict does with ignore_unknown_fields
        # (and it lets old receivers accept newer senders).
        return field.enum_numbers_by_name.get(value)
    number = _to_int(value, field, path)
    if field.enum_numbers is not None and number not in field.enum_numbers:
        _fail(path, f"unknown enum value {number}")
    return number


def _reject_constant(name: str) -> NoReturn:
    raise OtlpJsonError(
        f'body is not valid JSON: {name} is not a JSON value (proto3 JSON spells it "{name}")'
    )


def _reword_parse_error(err: json_format.ParseError) -> OtlpJsonError:
    """An error of json_format's parser in this module's words (JSON path first, one line), for code
    that still converts with json_format."""
    text = str(err).split("\n", 1)[0]
    names: list[str] = []
    position = 0
    while match := _PARSE_PREFIX_RE.match(text, position):
        names.append(match.group(1))
        position = match.end()
    reason = text[position:]
    path = ".".join(names)  # without indices; used when the message carries no path itself
    if match := _PARSE_AT_RE.search(reason):
        path = match.group(1).rstrip(".") or path  # each wrapping level appends a "."
        reason = reason[: match.start()] + reason[match.end() :]
    reason = reason.rstrip(". ") or "invalid value"
    return OtlpJsonError(f"{path or 'request'}: {_clip(reason)}")


def _fail(path: _Path, problem: str) -> NoReturn:
    raise OtlpJsonError(f"{_render_path(path)}: {problem}")


def _render_path(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    text = "".join(reversed(parts)).lstrip(".") or "request"
    # Only deeply nested AnyValues get this long; the two ends are what locate the problem.
    return text if len(text) <= 120 else f"{text[:50]}...{text[-60:]}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _describe(value: object) -> str:
    """A short, single-line, ASCII rendering of a JSON scalar for error messages."""
    if isinstance(value, str):
        # json.dumps escapes control characters and lone surrogates.
        return json.dumps(value) if len(value) <= 40 else json.dumps(value[:40])[:-1] + '..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _clip(repr(value), 40)
    return _json_type(value)


def _clip(text: str, limit: int = 200) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Built last: the tables refer to the encoders above.
# One table for orjson's reading of a body, one for the stdlib's (see _ExactNumbersNeeded).
_REQUEST: Final = _build_message(ExportTraceServiceRequest.DESCRIPTOR, {}, exact_numbers=False)
_REQUEST_EXACT: Final = _build_message(ExportTraceServiceRequest.DESCRIPTOR, {}, exact_numbers=True)


def _schema_rows(descriptor: Any, rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """The fields of a message and of all messages below it, and the values of their enums, as
    _otlp_json.schema() lists its own."""
    if any(row[0] == descriptor.full_name for row in rows):
        return rows
    fields = sorted(descriptor.fields, key=lambda fd: fd.number)
    for fd in fields:
        sub = fd.message_type.full_name if fd.type == FieldDescriptor.TYPE_MESSAGE else ""
        oneof = fd.containing_oneof is not None
        rows.append(
            (descriptor.full_name, fd.number, fd.name, fd.json_name, fd.type, _is_repeated(fd), oneof, sub)
        )
    for fd in fields:
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            _schema_rows(fd.message_type, rows)
        elif fd.type == FieldDescriptor.TYPE_ENUM and not any(
            row[0] == fd.enum_type.full_name for row in rows
        ):
            rows.extend(
                (fd.enum_type.full_name, v.number, v.name, "", 0, False, False, "")
                for v in fd.enum_type.values
            )
    return rows


def _load_fast_encoder() -> Callable[[object], bytes | None] | None:
    """The C encoder, when it is built and knows exactly the fields of the installed descriptors (a new
    field it did not know would otherwise be dropped like an unknown one)."""
    try:
        from distributor.receivers import _otlp_json  # type: ignore[attr-defined]
    except ImportError:
        return None
    if sorted(_otlp_json.schema()) != sorted(_schema_rows(ExportTraceServiceRequest.DESCRIPTOR, [])):
        return None
    return _otlp_json.encode  # type: ignore[no-any-return]


_fast_encode: Final = _load_fast_encoder()
