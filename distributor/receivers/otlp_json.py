"""OTLP/JSON trace requests -> protobuf.

OTLP/JSON is the proto3 JSON mapping with a few differences (hex trace/span ids, integer enums, ...).
``json_format.ParseDict`` does the actual conversion, but on its own it is too lenient for a receiver and
too vague when it fails: with ``ignore_unknown_fields`` it accepts a string where a message is expected,
``true`` for a double and ``1.5`` for an enum, rejects unknown keys that look like ``"[ext]"``, and many
of its errors lose the JSON path.  So a single walk driven by the message descriptors first validates
every known field, rewrites the hex ids to the base64 ParseDict expects, and emits a canonical dict
(camelCase keys, unknown keys and nulls dropped) that ParseDict then converts without surprises.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeAlias

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

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

_HEX_RE: Final = re.compile(r"[0-9a-fA-F]*")
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_NUMBER_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Standard or URL-safe alphabet, padding optional (proto3 JSON accepts all of these).
_BASE64_RE: Final = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
# json.loads joins escaped surrogate pairs, so any surrogate left in a str is unpaired.
_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")
_DOUBLE_WORDS: Final = frozenset({"NaN", "Infinity", "-Infinity"})
# Returned for values that are dropped (unknown enum names) instead of being handed to ParseDict.
_OMIT: Final = object()

# ParseDict error texts look like 'Failed to parse a field: Failed to parse b field: <why> at <path>.'
_PARSE_PREFIX_RE: Final = re.compile(r"Failed to parse (\S+) field: ")
_PARSE_AT_RE: Final = re.compile(r' at "?ExportTraceServiceRequest\.?([\w.\[\]]*)"?')

# A JSON path as a linked list (parent, key): building it costs one tuple per node, and it is
# only turned into text when something is wrong.
_Path: TypeAlias = "tuple[_Path, str | int] | None"


class _Kind(enum.Enum):
    MESSAGE = enum.auto()
    ID = enum.auto()
    STRING = enum.auto()
    BYTES = enum.auto()
    BOOL = enum.auto()
    INT = enum.auto()
    DOUBLE = enum.auto()
    ENUM = enum.auto()
    PASS = enum.auto()  # no such fields in OTLP traces (maps, groups); left to ParseDict


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    json_name: str
    kind: _Kind
    repeated: bool
    oneof: str | None = None
    message: _Message | None = None
    type_name: str = ""
    int_min: int = 0
    int_max: int = 0
    id_size: int = 0
    enum_names: frozenset[str] = frozenset()
    enum_numbers: frozenset[int] | None = None  # only for closed enums


class _Message:
    __slots__ = ("fields",)

    def __init__(self) -> None:
        # Both spellings (lowerCamelCase and proto name) map to the same _Field.
        self.fields: dict[str, _Field] = {}


def _is_repeated(fd: Any) -> bool:
    # FieldDescriptor.label is gone in protobuf 7, is_repeated is missing in older releases.
    is_repeated = getattr(fd, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


def _build_message(descriptor: Any, cache: dict[str, _Message]) -> _Message:
    message = cache.get(descriptor.full_name)
    if message is None:
        message = cache[descriptor.full_name] = _Message()  # registered first: AnyValue is recursive
        for fd in descriptor.fields:
            field = _build_field(fd, cache)
            message.fields[field.json_name] = field
            message.fields[field.name] = field
    return message


def _build_field(fd: Any, cache: dict[str, _Message]) -> _Field:
    name: str = fd.name
    common: dict[str, Any] = {
        "name": name,
        "json_name": fd.json_name,
        "repeated": _is_repeated(fd),
        "oneof": fd.containing_oneof.name if fd.containing_oneof is not None else None,
    }
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type.GetOptions().map_entry:
            return _Field(kind=_Kind.PASS, **common)
        return _Field(kind=_Kind.MESSAGE, message=_build_message(fd.message_type, cache), **common)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        if name in _ID_FIELDS:
            size, label = _ID_FIELDS[name]
            return _Field(kind=_Kind.ID, id_size=size, type_name=label, **common)
        return _Field(kind=_Kind.BYTES, **common)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _Field(kind=_Kind.STRING, **common)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return _Field(kind=_Kind.BOOL, **common)
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _Field(kind=_Kind.DOUBLE, **common)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum_type = fd.enum_type
        closed = bool(getattr(enum_type, "is_closed", False))
        return _Field(
            kind=_Kind.ENUM,
            type_name="int32",
            int_min=-(2**31),
            int_max=2**31 - 1,
            enum_names=frozenset(enum_type.values_by_name),
            enum_numbers=frozenset(enum_type.values_by_number) if closed else None,
            **common,
        )
    if fd.type in _INT_TYPES:
        type_name, low, high = _INT_TYPES[fd.type]
        return _Field(kind=_Kind.INT, type_name=type_name, int_min=low, int_max=high, **common)
    return _Field(kind=_Kind.PASS, **common)


_REQUEST: Final = _build_message(ExportTraceServiceRequest.DESCRIPTOR, {})


def otlp_json_to_protobuf(body: bytes) -> bytes:
    """Decode an OTLP/JSON ExportTraceServiceRequest body and return the protobuf encoding
    (ExportTraceServiceRequest.SerializeToString()) of the same request."""
    try:
        # OTLP/JSON is UTF-8; json.loads(bytes) would also guess UTF-16/32. A BOM is tolerated.
        text = str(body, "utf-8-sig")
    except UnicodeDecodeError as err:
        raise OtlpJsonError(f"body is not valid UTF-8 (bad byte at offset {err.start})") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
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
    if not isinstance(document, dict):
        raise OtlpJsonError(f"body must be a JSON object, got {_json_type(document)}")

    canonical = _walk_message(document, _REQUEST, None, 1)
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(canonical, message, ignore_unknown_fields=True, max_recursion_depth=_MAX_DEPTH)
    except json_format.ParseError as err:
        # The walk should have caught everything ParseDict rejects; this keeps the contract if not.
        raise _reword_parse_error(err) from None
    except (ValueError, TypeError) as err:
        raise OtlpJsonError(f"request: {_clip(str(err))}") from None
    result: bytes = message.SerializeToString()
    return result


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


def _walk_message(obj: object, message: _Message, path: _Path, depth: int) -> dict[str, object]:
    if not isinstance(obj, dict):
        _fail(path, f"expected an object, got {_json_type(obj)}")
    if depth > _MAX_DEPTH:
        _fail(path, f"nested too deeply (more than {_MAX_DEPTH} levels of messages)")
    out: dict[str, object] = {}
    oneofs: dict[str, str] | None = None
    for key, value in obj.items():
        field = message.fields.get(key)
        # Unknown fields must be ignored; null means "not set" in proto3 JSON.
        if field is None or value is None:
            continue
        if field.json_name in out:
            _fail(path, f'both "{field.json_name}" and "{field.name}" given')
        if field.oneof is not None:
            if oneofs is None:
                oneofs = {}
            other = oneofs.setdefault(field.oneof, key)
            if other != key:
                _fail(path, f'only one of "{other}" and "{key}" may be set')
        field_path = (path, key)
        if field.repeated and field.kind is not _Kind.PASS:
            if not isinstance(value, list):
                _fail(field_path, f"expected an array, got {_json_type(value)}")
            items = [_walk_value(item, field, (field_path, index), depth) for index, item in enumerate(value)]
            if field.kind is _Kind.ENUM:
                items = [item for item in items if item is not _OMIT]
            out[field.json_name] = items
        else:
            converted = _walk_value(value, field, field_path, depth)
            if converted is not _OMIT:
                out[field.json_name] = converted
    return out


def _walk_value(value: object, field: _Field, path: _Path, depth: int) -> object:
    kind = field.kind
    if kind is _Kind.MESSAGE:
        assert field.message is not None
        return _walk_message(value, field.message, path, depth + 1)
    if kind is _Kind.STRING:
        if not isinstance(value, str):
            _fail(path, f"expected a string, got {_json_type(value)}")
        if not value.isascii() and _SURROGATE_RE.search(value):
            _fail(path, "string contains an unpaired UTF-16 surrogate")
        return value
    if kind is _Kind.INT:
        return _to_int(value, field, path)
    if kind is _Kind.ID:
        return _hex_id_to_base64(value, field, path)
    if kind is _Kind.DOUBLE:
        return _to_double(value, path)
    if kind is _Kind.BOOL:
        if not isinstance(value, bool):
            _fail(path, f"expected true or false, got {_json_type(value)}")
        return value
    if kind is _Kind.ENUM:
        return _to_enum(value, field, path)
    if kind is _Kind.BYTES:
        if not isinstance(value, str):
            _fail(path, f"expected a base64 string, got {_json_type(value)}")
        data_length = len(value.rstrip("="))
        if (
            not _BASE64_RE.fullmatch(value)
            or data_length % 4 == 1
            or (data_length != len(value) and len(value) % 4)
        ):
            _fail(path, f"invalid base64 {_describe(value)}")
        return value
    return value


def _hex_id_to_base64(value: object, field: _Field, path: _Path) -> str:
    digits = 2 * field.id_size
    if not isinstance(value, str):
        _fail(path, f"{field.type_name} must be a hex string, got {_json_type(value)}")
    if (value and len(value) != digits) or not _HEX_RE.fullmatch(value):
        _fail(path, f"invalid {field.type_name} {_describe(value)} (expected {digits} hex digits)")
    # ParseDict reads bytes fields as base64.
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


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


def _to_double(value: object, path: _Path) -> float | str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail(path, f"expected a number, got {_json_type(value)}")
    if isinstance(value, str):
        if value in _DOUBLE_WORDS:
            return value  # ParseDict understands these spellings, not float('nan') and friends
        if not _NUMBER_RE.fullmatch(value):
            _fail(path, f"invalid number {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # a huge JSON integer literal
        number = math.inf
    if not math.isfinite(number):  # e.g. 1e400, which json.loads turns into inf
        _fail(path, f"{_describe(value)} is out of range for double")
    return number


def _to_enum(value: object, field: _Field, path: _Path) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail(path, f"expected an enum name or integer, got {_json_type(value)}")
    if isinstance(value, str) and not _INT_RE.fullmatch(value):
        if value in field.enum_names:
            return value
        # Unknown names are ignored like unknown fields, as ParseDict does with ignore_unknown_fields
        # (and it lets old receivers accept newer senders). They are dropped here rather than passed
        # on: upb's enum name lookup raises SystemError for a name with a lone surrogate.
        return _OMIT
    number = _to_int(value, field, path)
    if field.enum_numbers is not None and number not in field.enum_numbers:
        _fail(path, f"unknown enum value {number}")
    return number


def _reject_constant(name: str) -> NoReturn:
    raise OtlpJsonError(
        f'body is not valid JSON: {name} is not a JSON value (proto3 JSON spells it "{name}")'
    )


def _reword_parse_error(err: json_format.ParseError) -> OtlpJsonError:
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
