"""OTLP/JSON -> protobuf conversion of trace export requests."""

from __future__ import annotations

import base64
import copy
import enum
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeAlias

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    EntityRef,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from distributor.receivers import otlp_json
from distributor.receivers.otlp_json import (
    OtlpJsonError,
    _reword_parse_error,
    export_response_json,
    otlp_json_to_protobuf,
)

BIG_U64 = 2**64 - 1  # fixed64 maximum, far above 2**53
BIG_I64 = 2**63 - 1
SPAN_PATH = "resourceSpans[0].scopeSpans[0].spans[0]"
VALUE_PATH = f"{SPAN_PATH}.attributes[0].value"

# --------------------------------------------------------------------------------------------------
# helpers


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def every_any_value() -> list[KeyValue]:
    nested_array = AnyValue(
        array_value=ArrayValue(
            values=[
                AnyValue(int_value=1),
                AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="deep"), AnyValue()])),
                AnyValue(kvlist_value=KeyValueList(values=[kv("inner", AnyValue(bool_value=False))])),
            ]
        )
    )
    nested_kvlist = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                kv("list", AnyValue(array_value=ArrayValue(values=[AnyValue(double_value=-0.5)]))),
                kv("map", AnyValue(kvlist_value=KeyValueList(values=[kv("x", AnyValue(int_value=-1))]))),
                kv("empty", AnyValue(kvlist_value=KeyValueList())),
            ]
        )
    )
    return [
        kv("str", AnyValue(string_value='h\u00e9llo \u2603 \U0001f600 "quoted" \\ \n')),
        kv("empty.str", AnyValue(string_value="")),
        kv("bool", AnyValue(bool_value=True)),
        kv("int.big", AnyValue(int_value=BIG_I64)),
        kv("int.min", AnyValue(int_value=-(2**63))),
        kv("int.above.2**53", AnyValue(int_value=2**53 + 1)),
        kv("int.zero", AnyValue(int_value=0)),
        kv("double", AnyValue(double_value=3.141592653589793)),
        kv("double.inf", AnyValue(double_value=float("-inf"))),
        kv("double.tiny", AnyValue(double_value=5e-324)),
        # b"\xfb\xff\xbf" is "+/+/" in base64: exercises the characters that differ in the URL-safe alphabet.
        kv("bytes", AnyValue(bytes_value=b"\xfb\xff\xbf\x00\x01")),
        kv("bytes.empty", AnyValue(bytes_value=b"")),
        kv("array", nested_array),
        kv("kvlist", nested_kvlist),
        kv("unset", AnyValue()),
    ]


def make_span(seed: int, *, root: bool = False) -> Span:
    rng = random.Random(seed)
    # Ids with 0x00 and 0xff bytes catch sign, padding and alphabet mistakes.
    trace_id = bytes([0xFF, 0x00]) + rng.randbytes(14)
    span = Span(
        trace_id=trace_id,
        span_id=rng.randbytes(7) + b"\xff",
        parent_span_id=b"" if root else b"\x00" + rng.randbytes(7),
        trace_state="vendor=abc,other=1",
        flags=0x301,
        name=f"span-{seed}",
        kind=Span.SPAN_KIND_SERVER if seed % 2 else Span.SPAN_KIND_CONSUMER,
        start_time_unix_nano=1_700_000_000_123_456_789 + seed,
        end_time_unix_nano=BIG_U64 - seed,
        attributes=every_any_value(),
        dropped_attributes_count=4_000_000_000,
        events=[
            Span.Event(
                time_unix_nano=1_700_000_000_999_999_999,
                name="exception",
                attributes=[kv("exception.type", AnyValue(string_value="ValueError"))],
                dropped_attributes_count=1,
            ),
            Span.Event(name="bare"),
        ],
        dropped_events_count=2,
        links=[
            Span.Link(
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                trace_state="k=v",
                attributes=[kv("link.attr", AnyValue(int_value=7))],
                dropped_attributes_count=3,
                flags=0x100,
            ),
            Span.Link(trace_id=rng.randbytes(16), span_id=rng.randbytes(8)),
        ],
        dropped_links_count=5,
        status=Status(message="boom", code=Status.STATUS_CODE_ERROR),
    )
    return span


def make_request() -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[kv("service.name", AnyValue(string_value="checkout")), *every_any_value()],
                    dropped_attributes_count=9,
                    entity_refs=[
                        EntityRef(
                            schema_url="https://example.com/entity",
                            type="service",
                            id_keys=["service.name", "service.namespace"],
                            description_keys=["service.version"],
                        )
                    ],
                ),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(
                            name="lib.a",
                            version="1.2.3",
                            attributes=[kv("scope.attr", AnyValue(string_value="x"))],
                            dropped_attributes_count=1,
                        ),
                        spans=[make_span(1, root=True), make_span(2)],
                        schema_url="https://opentelemetry.io/schemas/1.24.0",
                    ),
                    ScopeSpans(scope=InstrumentationScope(name="lib.b"), spans=[make_span(3)]),
                    ScopeSpans(),  # an empty scope must survive too
                ],
                schema_url="https://opentelemetry.io/schemas/1.21.0",
            ),
            ResourceSpans(scope_spans=[ScopeSpans(spans=[make_span(4), Span(name="minimal")])]),
        ]
    )


_ID_KEYS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def ids_to_hex(node: Any, *, upper: bool = False) -> Any:
    """Rewrite base64 ids (as json_format emits them) into OTLP/JSON hex, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                digits = base64.b64decode(value).hex()
                node[key] = digits.upper() if upper else digits
            else:
                ids_to_hex(value, upper=upper)
    elif isinstance(node, list):
        for item in node:
            ids_to_hex(item, upper=upper)
    return node


def to_otlp_json(message: ExportTraceServiceRequest, *, proto_names: bool = False) -> dict[str, Any]:
    """OTLP/JSON as a dict: proto3 JSON, then hex ids and integer enums."""
    as_dict: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=proto_names, use_integers_for_enums=True
    )
    return ids_to_hex(as_dict)  # type: ignore[no-any-return]


def convert(document: Any) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(otlp_json_to_protobuf(json.dumps(document).encode()))
    return request


def first_span(request: ExportTraceServiceRequest) -> Span:
    span: Span = request.resource_spans[0].scope_spans[0].spans[0]
    return span


def first_value(request: ExportTraceServiceRequest) -> AnyValue:
    value: AnyValue = first_span(request).attributes[0].value
    return value


def one_span(**fields: Any) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": [fields]}]}]}


def one_value(value: Any) -> dict[str, Any]:
    return one_span(attributes=[{"key": "k", "value": value}])


def convert_error(document: Any) -> str:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    with pytest.raises(OtlpJsonError) as caught:
        otlp_json_to_protobuf(body)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 200, message
    return message


# --------------------------------------------------------------------------------------------------
# equivalence with the protobuf path


def test_rich_request_converts_to_identical_protobuf() -> None:
    original = make_request()
    body = json.dumps(to_otlp_json(original)).encode()

    encoded = otlp_json_to_protobuf(body)

    assert ExportTraceServiceRequest.FromString(encoded) == original
    assert encoded == original.SerializeToString()


def test_proto_field_names_give_identical_protobuf() -> None:
    original = make_request()
    snake = to_otlp_json(original, proto_names=True)
    assert "resource_spans" in snake and "resourceSpans" not in snake

    encoded = otlp_json_to_protobuf(json.dumps(snake).encode())

    assert ExportTraceServiceRequest.FromString(encoded) == original
    assert encoded == original.SerializeToString()


def test_camel_and_snake_case_keys_give_identical_output_even_when_mixed() -> None:
    original = make_request()
    camel = to_otlp_json(original)
    mixed = copy.deepcopy(camel)
    # Snake case below camel case: every level must accept either spelling.
    scope_spans = mixed["resourceSpans"][0].pop("scopeSpans")
    mixed["resourceSpans"][0]["scope_spans"] = scope_spans
    span = scope_spans[0]["spans"][1]
    span["trace_id"] = span.pop("traceId")
    span["parent_span_id"] = span.pop("parentSpanId")
    span["start_time_unix_nano"] = span.pop("startTimeUnixNano")
    link = span["links"][0]
    link["span_id"] = link.pop("spanId")
    link["dropped_attributes_count"] = link.pop("droppedAttributesCount")

    expected = otlp_json_to_protobuf(json.dumps(camel).encode())
    assert otlp_json_to_protobuf(json.dumps(mixed).encode()) == expected == original.SerializeToString()


def test_spec_example_with_hand_written_json() -> None:
    # The trace example from opentelemetry-proto (examples/trace.json), with upper-case hex ids.
    body = b"""{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]
          },
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "EEE19B7EC3C1B173",
            "name": "I'm a server span",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "kind": 2,
            "attributes": [
              {"key": "my.span.attr", "value": {"stringValue": "some value"}},
              {"key": "count", "value": {"intValue": "9007199254740993"}},
              {"key": "ratio", "value": {"doubleValue": 0.25}},
              {"key": "ok", "value": {"boolValue": true}},
              {"key": "raw", "value": {"bytesValue": "AAEC/w=="}},
              {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 2}]}}},
              {"key": "obj", "value": {"kvlistValue": {"values": [{"key": "n", "value": {"intValue": -3}}]}}}
            ],
            "links": [{"traceId": "00000000000000000000000000000001", "spanId": "00000000000000ff"}],
            "status": {"code": 2, "message": "failed"}
          }]
        }]
      }]
    }"""
    expected = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", AnyValue(string_value="my.service"))]),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(
                            name="my.library",
                            version="1.0.0",
                            attributes=[
                                kv("my.scope.attribute", AnyValue(string_value="some scope attribute"))
                            ],
                        ),
                        spans=[
                            Span(
                                trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"),
                                span_id=bytes.fromhex("eee19b7ec3c1b174"),
                                parent_span_id=bytes.fromhex("eee19b7ec3c1b173"),
                                name="I'm a server span",
                                start_time_unix_nano=1544712660000000000,
                                end_time_unix_nano=1544712661000000000,
                                kind=Span.SPAN_KIND_SERVER,
                                attributes=[
                                    kv("my.span.attr", AnyValue(string_value="some value")),
                                    kv("count", AnyValue(int_value=9007199254740993)),
                                    kv("ratio", AnyValue(double_value=0.25)),
                                    kv("ok", AnyValue(bool_value=True)),
                                    kv("raw", AnyValue(bytes_value=b"\x00\x01\x02\xff")),
                                    kv(
                                        "tags",
                                        AnyValue(
                                            array_value=ArrayValue(
                                                values=[AnyValue(string_value="a"), AnyValue(int_value=2)]
                                            )
                                        ),
                                    ),
                                    kv(
                                        "obj",
                                        AnyValue(
                                            kvlist_value=KeyValueList(
                                                values=[kv("n", AnyValue(int_value=-3))]
                                            )
                                        ),
                                    ),
                                ],
                                links=[
                                    Span.Link(
                                        trace_id=b"\x00" * 15 + b"\x01",
                                        span_id=b"\x00" * 7 + b"\xff",
                                    )
                                ],
                                status=Status(code=Status.STATUS_CODE_ERROR, message="failed"),
                            )
                        ],
                    )
                ],
            )
        ]
    )

    encoded = otlp_json_to_protobuf(body)

    assert ExportTraceServiceRequest.FromString(encoded) == expected
    assert encoded == expected.SerializeToString()


# --------------------------------------------------------------------------------------------------
# ids


def test_hex_trace_ids_become_raw_bytes() -> None:
    request = convert(
        one_span(
            traceId="0af7651916cd43dd8448eb211c80319c",
            spanId="b7ad6b7169203331",
            parentSpanId="00f067aa0ba902b7",
            links=[{"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00000000000000ff"}],
        )
    )
    span = first_span(request)
    assert span.trace_id == bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    assert span.span_id == bytes.fromhex("b7ad6b7169203331")
    assert span.parent_span_id == bytes.fromhex("00f067aa0ba902b7")
    assert span.links[0].trace_id == bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
    assert span.links[0].span_id == b"\x00" * 7 + b"\xff"


def test_hex_ids_are_case_insensitive() -> None:
    original = make_request()
    # MessageToDict's defaults also give enum names instead of numbers here.
    lower = ids_to_hex(json_format.MessageToDict(original))
    upper = ids_to_hex(json_format.MessageToDict(original), upper=True)
    assert json.dumps(lower) != json.dumps(upper)
    assert convert(upper) == convert(lower) == original


def test_empty_or_null_ids_mean_no_id() -> None:
    links = [{"traceId": "", "spanId": ""}]
    span = first_span(convert(one_span(traceId="", spanId=None, parentSpanId="", links=links)))
    assert span == Span(links=[Span.Link()])


def test_ids_are_not_read_as_base64() -> None:
    # 16 hex digits are also valid base64 (12 bytes); they must still be read as 8 bytes of hex.
    span = first_span(convert(one_span(spanId="0123456789abcdef")))
    assert span.span_id == bytes.fromhex("0123456789abcdef")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"traceId": "xyz"}, f'{SPAN_PATH}.traceId: invalid trace id "xyz" (expected 32 hex digits)'),
        ({"traceId": "ab" * 15}, f'{SPAN_PATH}.traceId: invalid trace id "{"ab" * 15}" (expected 32 hex'),
        ({"traceId": "a" * 31}, f"{SPAN_PATH}.traceId: invalid trace id"),
        ({"traceId": "ab" * 17}, f"{SPAN_PATH}.traceId: invalid trace id"),
        ({"traceId": "0g" * 16}, f"{SPAN_PATH}.traceId: invalid trace id"),
        ({"traceId": "ab cd" + "0" * 27}, f"{SPAN_PATH}.traceId: invalid trace id"),
        # Base64 of 16 bytes, as the plain proto3 JSON mapping would send it.
        ({"traceId": "AAAAAAAAAAAAAAAAAAAAAA=="}, f"{SPAN_PATH}.traceId: invalid trace id"),
        ({"traceId": 12}, f"{SPAN_PATH}.traceId: trace id must be a hex string, got number"),
        ({"traceId": ["ab"]}, f"{SPAN_PATH}.traceId: trace id must be a hex string, got array"),
        ({"spanId": "ab" * 16}, f"{SPAN_PATH}.spanId: invalid span id"),
        ({"span_id": "abc"}, f'{SPAN_PATH}.span_id: invalid span id "abc" (expected 16 hex digits)'),
        ({"parentSpanId": "0" * 15}, f"{SPAN_PATH}.parentSpanId: invalid parent span id"),
        ({"links": [{}, {"traceId": "00"}]}, f"{SPAN_PATH}.links[1].traceId: invalid trace id"),
        ({"links": [{"spanId": "zz" * 8}]}, f"{SPAN_PATH}.links[0].spanId: invalid span id"),
    ],
)
def test_malformed_ids_are_rejected_with_their_path(fields: dict[str, Any], expected: str) -> None:
    assert convert_error(one_span(**fields)).startswith(expected)


def test_id_error_path_counts_resources_scopes_and_spans() -> None:
    document = {
        "resourceSpans": [
            {},
            {"scopeSpans": [{"spans": [{}]}, {"spans": [{}, {}, {}, {"traceId": "xyz"}]}]},
        ]
    }
    assert convert_error(document) == (
        'resourceSpans[1].scopeSpans[1].spans[3].traceId: invalid trace id "xyz" (expected 32 hex digits)'
    )


def test_same_field_in_both_spellings_is_rejected() -> None:
    message = convert_error(one_span(traceId="ab" * 16, trace_id="ab" * 16))
    assert message == f'{SPAN_PATH}: both "traceId" and "trace_id" given'
    top = convert_error({"resourceSpans": [], "resource_spans": []})
    assert top == 'request: both "resourceSpans" and "resource_spans" given'


# --------------------------------------------------------------------------------------------------
# other field encodings


def test_int64_values_may_be_numbers_or_decimal_strings() -> None:
    as_strings = convert(one_span(startTimeUnixNano=str(BIG_U64), flags="7", droppedLinksCount="3"))
    as_numbers = convert(one_span(startTimeUnixNano=BIG_U64, flags=7, droppedLinksCount=3))
    span = first_span(as_strings)
    assert span.start_time_unix_nano == BIG_U64 and span.flags == 7 and span.dropped_links_count == 3
    assert as_numbers == as_strings


def test_int64_strings_above_2_pow_53_are_exact() -> None:
    value = convert(one_value({"intValue": str(2**53 + 1)}))
    assert first_value(value).int_value == 2**53 + 1


@pytest.mark.parametrize("written", [1000, 1000.0, 1e3, "1000", "1e3", "1000.0", "+1000"])
def test_integers_accept_the_proto3_json_spellings(written: Any) -> None:
    value = convert(one_value({"intValue": written}))
    assert first_value(value).int_value == 1000


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (2, Span.SPAN_KIND_SERVER),
        ("2", Span.SPAN_KIND_SERVER),
        ("SPAN_KIND_SERVER", Span.SPAN_KIND_SERVER),
        (5, Span.SPAN_KIND_CONSUMER),
        ("SPAN_KIND_CONSUMER", Span.SPAN_KIND_CONSUMER),
        # Open proto3 enum: an unknown number is kept, as the binary decoder keeps it.
        (42, 42),
    ],
)
def test_enums_accept_integers_and_names(written: Any, expected: int) -> None:
    span = first_span(convert(one_span(kind=written)))
    assert span.kind == expected


def test_status_code_accepts_integers_and_names() -> None:
    by_number = convert(one_span(status={"code": 1}))
    by_name = convert(one_span(status={"code": "STATUS_CODE_OK"}))
    assert by_number == by_name
    assert first_span(by_name).status.code == Status.STATUS_CODE_OK


# "\udc00" is there because upb's enum lookup raises SystemError for it if ParseDict ever sees it.
@pytest.mark.parametrize("name", ["SPAN_KIND_FROM_THE_FUTURE", "span_kind_server", "\udc00"])
def test_unknown_enum_names_are_ignored_like_unknown_fields(name: str) -> None:
    request = convert(one_span(kind=name, name="n", status={"code": name, "message": "m"}))
    assert first_span(request) == Span(name="n", status=Status(message="m"))


@pytest.mark.parametrize("written", ["AAEC/w==", "AAEC/w", "AAEC_w==", "AAEC_w"])
def test_bytes_values_stay_base64_in_either_alphabet(written: str) -> None:
    assert first_value(convert(one_value({"bytesValue": written}))).bytes_value == b"\x00\x01\x02\xff"


def test_double_values_accept_numbers_and_special_strings() -> None:
    values = [
        {"doubleValue": 1},
        {"doubleValue": "2.5"},
        {"doubleValue": "Infinity"},
        {"doubleValue": "-Infinity"},
        {"doubleValue": "NaN"},
        {"doubleValue": -0.0},
    ]
    document = one_span(attributes=[{"key": str(i), "value": value} for i, value in enumerate(values)])
    attributes = first_span(convert(document)).attributes
    doubles = [attribute.value.double_value for attribute in attributes]
    assert doubles[:4] == [1.0, 2.5, float("inf"), float("-inf")]
    assert doubles[4] != doubles[4]  # NaN
    assert str(doubles[5]) == "-0.0"


def test_null_fields_are_treated_as_absent() -> None:
    document = {
        "resourceSpans": [
            {
                "resource": None,
                "schemaUrl": None,
                "scopeSpans": [{"scope": None, "spans": [{"name": None, "status": None, "events": None}]}],
            }
        ]
    }
    assert convert(document) == ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[Span()])])]
    )


def test_null_oneof_member_does_not_count_as_set() -> None:
    value = convert(one_value({"stringValue": None, "intValue": 5}))
    assert first_value(value) == AnyValue(int_value=5)


def test_empty_object_is_an_empty_request() -> None:
    assert otlp_json_to_protobuf(b"{}") == b""
    assert otlp_json_to_protobuf(b' \n{"resourceSpans": []}\n ') == b""


def test_utf8_byte_order_mark_is_tolerated() -> None:
    assert (
        otlp_json_to_protobuf(b'\xef\xbb\xbf{"resourceSpans": [{}]}')
        == ExportTraceServiceRequest(resource_spans=[ResourceSpans()]).SerializeToString()
    )


def test_non_ascii_strings_survive() -> None:
    body = '{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"caf\u00e9 \U0001f600 \\ud83d\\ude00"}]}]}]}'
    request = ExportTraceServiceRequest.FromString(otlp_json_to_protobuf(body.encode()))
    assert first_span(request).name == "caf\u00e9 \U0001f600 \U0001f600"


# --------------------------------------------------------------------------------------------------
# unknown fields


def test_unknown_fields_are_ignored_at_every_level() -> None:
    original = make_request()
    document = to_otlp_json(original)
    junk: dict[str, Any] = {
        "futureField": {"nested": [1, "two", None, {"x": 0.5}]},
        "[looks.like.an.extension]": 1,  # ParseDict alone rejects these even with ignore_unknown_fields
        "lone": "\ud800",
        "instrumentationLibrarySpans": [{"spans": [{"traceId": "not hex at all"}]}],
    }
    document.update(junk)
    resource_spans = document["resourceSpans"][0]
    resource_spans.update(junk)
    resource_spans["resource"].update(junk)
    resource_spans["scopeSpans"][0].update(junk)
    resource_spans["scopeSpans"][0]["scope"].update(junk)
    span = resource_spans["scopeSpans"][0]["spans"][0]
    span.update(junk)
    span["events"][0].update(junk)
    span["links"][0].update(junk)
    span["status"].update(junk)
    span["attributes"][0].update(junk)
    span["attributes"][0]["value"].update(junk)

    assert otlp_json_to_protobuf(json.dumps(document).encode()) == original.SerializeToString()


def test_legacy_instrumentation_library_spans_are_ignored() -> None:
    document = {
        "resourceSpans": [
            {
                "instrumentationLibrarySpans": [{"spans": [{"name": "old"}]}],
                "scopeSpans": [{"spans": [{"name": "new"}]}],
            }
        ]
    }
    assert convert(document) == ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(name="new")])])]
    )


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff{}", "body is not valid UTF-8"),
        (b'{"resourceSpans": [{"schemaUrl": "\xc3"}]}', "body is not valid UTF-8"),
        # json.loads would accept UTF-16 on its own.
        ('{"resourceSpans": []}'.encode("utf-16"), "body is not valid UTF-8"),
        (b"", "body is not valid JSON: Expecting value (line 1, column 1)"),
        (b"{", "body is not valid JSON"),
        (b'{"resourceSpans": []} x', "body is not valid JSON: Extra data"),
        (b'{"a": NaN}', 'body is not valid JSON: NaN is not a JSON value (proto3 JSON spells it "NaN")'),
        (b'{"a": -Infinity}', "body is not valid JSON: -Infinity"),
        (b'{"a": ' + b"9" * 5000 + b"}", "body is not valid JSON"),
        (b"[" * 100_000, "body is nested too deeply to decode"),
        (b"[]", "body must be a JSON object, got array"),
        (b'"resourceSpans"', "body must be a JSON object, got string"),
        (b"null", "body must be a JSON object, got null"),
        (b"17", "body must be a JSON object, got number"),
    ],
)
def test_undecodable_bodies_are_rejected(body: bytes, expected: str) -> None:
    assert convert_error(body).startswith(expected)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"resourceSpans": {}}, "resourceSpans: expected an array, got object"),
        ({"resourceSpans": "x"}, "resourceSpans: expected an array, got string"),
        ({"resourceSpans": [[]]}, "resourceSpans[0]: expected an object, got array"),
        ({"resourceSpans": [None]}, "resourceSpans[0]: expected an object, got null"),
        (
            {"resourceSpans": [{"resource": "xyz"}]},
            "resourceSpans[0].resource: expected an object, got string",
        ),
        (
            {"resourceSpans": [{"scopeSpans": {}}]},
            "resourceSpans[0].scopeSpans: expected an array, got object",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": ["foo"]}]}]},
            f"{SPAN_PATH}: expected an object, got string",
        ),
        (
            {"resource_spans": [{"scope_spans": [{"spans": [1]}]}]},
            "resource_spans[0].scope_spans[0].spans[0]",
        ),
        (one_span(name=5), f"{SPAN_PATH}.name: expected a string, got number"),
        (one_span(status="ok"), f"{SPAN_PATH}.status: expected an object, got string"),
        (one_span(status={"code": 1.5}), f"{SPAN_PATH}.status.code: expected an integer, got 1.5"),
        (one_span(events={}), f"{SPAN_PATH}.events: expected an array, got object"),
        (one_span(events=[{"name": []}]), f"{SPAN_PATH}.events[0].name: expected a string, got array"),
        (one_span(attributes=[None]), f"{SPAN_PATH}.attributes[0]: expected an object, got null"),
        (one_span(attributes=[{"key": 1}]), f"{SPAN_PATH}.attributes[0].key: expected a string, got number"),
        (one_value("x"), f"{VALUE_PATH}: expected an object, got string"),
        (one_value({"boolValue": "true"}), f"{VALUE_PATH}.boolValue: expected true or false"),
        (one_value({"doubleValue": True}), f"{VALUE_PATH}.doubleValue: expected a number"),
        (one_value({"doubleValue": "nan"}), f'{VALUE_PATH}.doubleValue: invalid number "nan"'),
        (one_value({"intValue": 1.5}), f"{VALUE_PATH}.intValue: expected an integer, got 1.5"),
        (one_value({"intValue": "1.5"}), f'{VALUE_PATH}.intValue: expected an integer, got "1.5"'),
        (one_value({"intValue": "abc"}), f'{VALUE_PATH}.intValue: invalid integer "abc"'),
        (one_value({"intValue": " 1"}), f"{VALUE_PATH}.intValue: invalid integer"),
        (one_value({"intValue": ""}), f"{VALUE_PATH}.intValue: invalid integer"),
        (one_value({"intValue": True}), f"{VALUE_PATH}.intValue: expected an integer, got boolean"),
        (one_value({"bytesValue": "abcde"}), f'{VALUE_PATH}.bytesValue: invalid base64 "abcde"'),
        (one_value({"bytesValue": "!!!!"}), f"{VALUE_PATH}.bytesValue: invalid base64"),
        (one_value({"bytesValue": "QQ="}), f"{VALUE_PATH}.bytesValue: invalid base64"),
        (one_value({"bytesValue": 5}), f"{VALUE_PATH}.bytesValue: expected a base64 string"),
        (
            one_value({"arrayValue": {"values": [{"intValue": 1}, {"kvlistValue": {"values": {}}}]}}),
            f"{VALUE_PATH}.arrayValue.values[1].kvlistValue.values: expected an array",
        ),
        (
            one_value({"stringValue": "a", "intValue": 1}),
            f'{VALUE_PATH}: only one of "stringValue" and "intValue" may be set',
        ),
        (one_span(kind=[2]), f"{SPAN_PATH}.kind: expected an enum name or integer, got array"),
        (one_span(kind=1.5), f"{SPAN_PATH}.kind: expected an integer, got 1.5"),
        (one_span(kind=True), f"{SPAN_PATH}.kind: expected an enum name or integer, got boolean"),
    ],
)
def test_wrong_types_are_rejected_with_their_path(document: Any, expected: str) -> None:
    assert convert_error(document).startswith(expected)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"flags": 2**32}, f"{SPAN_PATH}.flags: 4294967296 is out of range for fixed32 (0 to 4294967295)"),
        ({"flags": -1}, f"{SPAN_PATH}.flags: -1 is out of range for fixed32"),
        ({"startTimeUnixNano": "-1"}, f'{SPAN_PATH}.startTimeUnixNano: "-1" is out of range for fixed64'),
        ({"endTimeUnixNano": str(2**64)}, f'{SPAN_PATH}.endTimeUnixNano: "{2**64}" is out of range'),
        ({"endTimeUnixNano": 1e300}, f"{SPAN_PATH}.endTimeUnixNano: 1e+300 is out of range for fixed64"),
        ({"endTimeUnixNano": "1e400"}, f'{SPAN_PATH}.endTimeUnixNano: "1e400" is out of range for fixed64'),
        ({"endTimeUnixNano": "9" * 5000}, f"{SPAN_PATH}.endTimeUnixNano: "),
        (
            {"droppedAttributesCount": 2**32},
            f"{SPAN_PATH}.droppedAttributesCount: 4294967296 is out of range",
        ),
        ({"kind": 2**31}, f"{SPAN_PATH}.kind: 2147483648 is out of range for int32"),
        (
            {"attributes": [{"key": "k", "value": {"intValue": str(2**63)}}]},
            f'{VALUE_PATH}.intValue: "9223372036854775808" is out of range for int64',
        ),
        (
            {"attributes": [{"key": "k", "value": {"intValue": -(2**63) - 1}}]},
            f"{VALUE_PATH}.intValue: -9223372036854775809 is out of range for int64",
        ),
        (
            {"attributes": [{"key": "k", "value": {"doubleValue": 10**400}}]},
            f"{VALUE_PATH}.doubleValue: 1000",
        ),
    ],
)
def test_out_of_range_numbers_are_rejected(fields: dict[str, Any], expected: str) -> None:
    message = convert_error(one_span(**fields))
    assert message.startswith(expected)
    assert "out of range" in message


def test_double_overflowing_to_infinity_is_rejected() -> None:
    # json.loads turns 1e400 into inf; proto3 JSON wants the string "Infinity" for that.
    body = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"events": [{"attributes": [{"key": "k",'
    body += b' "value": {"doubleValue": 1e400}}]}]}]}]}]}'
    assert convert_error(body) == (
        f"{SPAN_PATH}.events[0].attributes[0].value.doubleValue: inf is out of range for double"
    )


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (one_span(name="\ud800"), f"{SPAN_PATH}.name"),
        (one_span(traceState="ok \udfff"), f"{SPAN_PATH}.traceState"),
        (one_span(attributes=[{"key": "\udc00k"}]), f"{SPAN_PATH}.attributes[0].key"),
        (one_value({"stringValue": "x\ud83d"}), f"{VALUE_PATH}.stringValue"),
        ({"resourceSpans": [{"schemaUrl": "\ud800\ud800"}]}, "resourceSpans[0].schemaUrl"),
    ],
)
def test_lone_surrogates_are_rejected(document: Any, path: str) -> None:
    # json.dumps writes them as \\ud800 escapes, which json.loads accepts.
    body = json.dumps(document).encode()
    assert b"\\ud" in body
    assert convert_error(body) == f"{path}: string contains an unpaired UTF-16 surrogate"


def test_lone_surrogate_in_bytes_value_is_rejected() -> None:
    message = convert_error(one_value({"bytesValue": "\ud800"}))
    assert message == f'{VALUE_PATH}.bytesValue: invalid base64 "\\ud800"'


def nested_array(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(levels):
        value = {"arrayValue": {"values": [value]}}
    return one_value(value)


def test_deepest_nesting_accepted_also_decodes_as_protobuf() -> None:
    # Request > ResourceSpans > ScopeSpans > Span > KeyValue > AnyValue is 6 messages, and each array
    # level adds 2: 47 levels reach the 100-message limit, which the binary decoder enforces too.
    encoded = otlp_json_to_protobuf(json.dumps(nested_array(47)).encode())
    assert ExportTraceServiceRequest.FromString(encoded).SerializeToString() == encoded


def test_deeper_nesting_is_rejected() -> None:
    message = convert_error(nested_array(48))
    # The path is shortened in the middle to keep the message readable.
    assert message.startswith(f"{SPAN_PATH}.attr")
    assert message.endswith(".values[0].arrayValue: nested too deeply (more than 100 levels of messages)")
    assert "..." in message


def test_parse_errors_are_reworded_to_name_the_field() -> None:
    # The walk catches these before ParseDict does; the rewording is the safety net.
    def parse_error(document: dict[str, Any]) -> json_format.ParseError:
        with pytest.raises(json_format.ParseError) as caught:
            json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
        return caught.value

    with_path = _reword_parse_error(parse_error(one_span(flags=1.5)))
    assert str(with_path) == f"{SPAN_PATH}.flags: Couldn't parse integer: 1.5"

    # Some ParseDict errors only carry the field names, not the indices.
    without_path = str(_reword_parse_error(parse_error(one_span(flags=2**32))))
    assert without_path.startswith("resourceSpans.scopeSpans.spans.flags: ")
    assert "out of range" in without_path.lower() and "\n" not in without_path

    oneof = _reword_parse_error(parse_error(one_value({"stringValue": "a", "intValue": 1})))
    assert str(oneof).startswith(f"{VALUE_PATH}: Message type")


def test_random_corruption_raises_only_otlp_json_error() -> None:
    rng = random.Random(20240501)
    valid = to_otlp_json(make_request())
    replacements: list[Any] = [
        None, True, 0, -1, 1.5, 2**64, 1e308, "", "x", "\ud800", "NaN", "00", [], [None], [1], {}, {"a": 1},
    ]  # fmt: skip

    def locations(node: Any) -> list[tuple[Any, Any]]:
        found: list[tuple[Any, Any]] = []
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, child in items:
            found.append((node, key))
            found.extend(locations(child))
        return found

    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        document = copy.deepcopy(valid)
        spots = locations(document)
        for _ in range(rng.randint(1, 3)):
            parent, key = rng.choice(spots)
            parent[key] = copy.deepcopy(rng.choice(replacements))
        body = json.dumps(document).encode()
        if rng.random() < 0.1:
            body = body[: rng.randrange(len(body))]
        try:
            encoded = otlp_json_to_protobuf(body)
        except OtlpJsonError as err:
            message = str(err)
            assert message and "\n" not in message and len(message) < 200, message
            message.encode("utf-8")  # must be loggable
            outcomes["error"] += 1
        else:
            ExportTraceServiceRequest.FromString(encoded)
            outcomes["ok"] += 1
    assert outcomes["ok"] > 20 and outcomes["error"] > 20


# --------------------------------------------------------------------------------------------------
# responses


def parse_response(body: bytes) -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    json_format.Parse(body, response)
    return response


def test_export_response_is_empty_object_when_nothing_was_rejected() -> None:
    assert export_response_json() == b"{}"
    assert export_response_json(0, "") == b"{}"
    assert parse_response(export_response_json()) == ExportTraceServiceResponse()


def test_export_response_reports_rejected_spans_as_int64_string() -> None:
    body = export_response_json(3, "no trace id")
    assert body == b'{"partialSuccess":{"rejectedSpans":"3","errorMessage":"no trace id"}}'
    assert parse_response(body) == ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=3, error_message="no trace id")
    )


def test_export_response_omits_default_values_like_proto3_json() -> None:
    assert json.loads(export_response_json(2**62)) == {"partialSuccess": {"rejectedSpans": str(2**62)}}
    # A message with nothing rejected is a warning, which OTLP allows.
    assert export_response_json(0, "slow down") == b'{"partialSuccess":{"errorMessage":"slow down"}}'
    for rejected, message in [(2**62, ""), (0, "slow down"), (5, "x")]:
        expected = ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
        assert json.loads(export_response_json(rejected, message)) == json_format.MessageToDict(expected)


def test_export_response_message_is_valid_utf8_even_with_lone_surrogates() -> None:
    body = export_response_json(1, "bad name \ud800 \u00e9")
    assert parse_response(body).partial_success.error_message == "bad name ? \u00e9"


def test_export_response_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        export_response_json(-1)


# --------------------------------------------------------------------------------------------------
# the direct encoder against the reference converter (defined at the end of this file)


def outcome(convert_body: Any, body: bytes) -> tuple[str, bytes | str]:
    try:
        return ("ok", convert_body(body))
    except OtlpJsonError as err:
        return ("error", str(err))


def assert_same_as_reference(body: bytes) -> tuple[str, bytes | str]:
    expected = outcome(reference_otlp_json_to_protobuf, body)
    assert outcome(otlp_json_to_protobuf, body) == expected, body[:300]
    return expected


_texts = st.text(max_size=10)  # no lone surrogates: protobuf strings cannot hold them
_int64s = st.integers(-(2**63), 2**63 - 1)
_int32s = st.integers(-(2**31), 2**31 - 1)
_uint32s = st.integers(0, 2**32 - 1)
_uint64s = st.integers(0, 2**64 - 1)
# Any double JSON can carry; NaN only as float("nan"), the one NaN that proto3 JSON's "NaN" reads back as.
_doubles = st.floats(allow_nan=False) | st.just(math.nan)

_scalar_any_values = st.one_of(
    st.builds(lambda v: AnyValue(string_value=v), _texts),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.builds(lambda v: AnyValue(int_value=v), _int64s),
    st.builds(lambda v: AnyValue(double_value=v), _doubles),
    st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=7)),
    st.builds(lambda v: AnyValue(string_value_strindex=v), _int32s),
    st.just(AnyValue()),
)


def _key_value(key: str, value: AnyValue | None, strindex: int) -> KeyValue:
    return KeyValue(key=key, value=value, key_strindex=strindex)


_any_values = st.recursive(
    _scalar_any_values,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
        st.lists(st.builds(_key_value, _texts, children | st.none(), st.just(0)), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs))
        ),
    ),
    max_leaves=6,
)
_key_values = st.lists(
    st.builds(_key_value, _texts, _any_values | st.none(), st.just(0) | _int32s), max_size=4
)
_ids16 = st.just(b"") | st.binary(min_size=16, max_size=16)
_ids8 = st.just(b"") | st.binary(min_size=8, max_size=8)
# Known enum values mostly; any int32 is allowed (proto3 enums are open).
_span_kinds = st.integers(0, 5) | _int32s
_status_codes = st.integers(0, 2) | _int32s

_events = st.builds(
    Span.Event,
    time_unix_nano=_uint64s,
    name=_texts,
    attributes=_key_values,
    dropped_attributes_count=_uint32s,
)
_links = st.builds(
    Span.Link,
    trace_id=_ids16,
    span_id=_ids8,
    trace_state=_texts,
    attributes=_key_values,
    dropped_attributes_count=_uint32s,
    flags=_uint32s,
)
_spans = st.builds(
    Span,
    trace_id=_ids16,
    span_id=_ids8,
    trace_state=_texts,
    parent_span_id=_ids8,
    flags=_uint32s,
    name=_texts,
    kind=_span_kinds,
    start_time_unix_nano=_uint64s,
    end_time_unix_nano=_uint64s,
    attributes=_key_values,
    dropped_attributes_count=_uint32s,
    events=st.lists(_events, max_size=2),
    dropped_events_count=_uint32s,
    links=st.lists(_links, max_size=2),
    dropped_links_count=_uint32s,
    status=st.none() | st.builds(Status, message=_texts, code=_status_codes),
)
_scopes = st.builds(
    InstrumentationScope,
    name=_texts,
    version=_texts,
    attributes=_key_values,
    dropped_attributes_count=_uint32s,
)
_entity_refs = st.builds(
    EntityRef,
    schema_url=_texts,
    type=_texts,
    id_keys=st.lists(_texts, max_size=2),
    description_keys=st.lists(_texts, max_size=2),
)
_resources = st.builds(
    Resource,
    attributes=_key_values,
    dropped_attributes_count=_uint32s,
    entity_refs=st.lists(_entity_refs, max_size=2),
)
_requests = st.builds(
    ExportTraceServiceRequest,
    resource_spans=st.lists(
        st.builds(
            ResourceSpans,
            resource=st.none() | _resources,
            scope_spans=st.lists(
                st.builds(
                    ScopeSpans,
                    scope=st.none() | _scopes,
                    spans=st.lists(_spans, max_size=3),
                    schema_url=_texts,
                ),
                max_size=2,
            ),
            schema_url=_texts,
        ),
        max_size=2,
    ),
)

_INT64_KEYS = {"startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "intValue"}
_INT64_KEYS |= {"start_time_unix_nano", "end_time_unix_nano", "time_unix_nano", "int_value"}


def shuffle_and_number(node: Any, rng: random.Random, numbers: bool) -> Any:
    """The same document with every object's keys in a random order (senders use any order), and with
    64-bit integers as JSON numbers instead of strings if `numbers`."""
    if isinstance(node, dict):
        items = list(node.items())
        rng.shuffle(items)
        return {
            key: int(value)
            if numbers and key in _INT64_KEYS and isinstance(value, str)
            else shuffle_and_number(value, rng, numbers)
            for key, value in items
        }
    if isinstance(node, list):
        return [shuffle_and_number(item, rng, numbers) for item in node]
    return node


@st.composite
def json_spellings(draw: st.DrawFn) -> tuple[ExportTraceServiceRequest, bytes]:
    """A random request, and its OTLP/JSON as some SDK may spell it: either style of field names,
    enums by name (for the values the enums have: json_format writes others as numbers) or number, ids
    in upper or lower case, 64-bit numbers as strings or not, keys in any order."""
    request = draw(_requests)
    document = json_format.MessageToDict(
        request,
        preserving_proto_field_name=draw(st.booleans()),
        use_integers_for_enums=draw(st.booleans()),
    )
    document = ids_to_hex(document, upper=draw(st.booleans()))
    document = shuffle_and_number(document, random.Random(draw(st.integers(0, 2**32))), draw(st.booleans()))
    return request, json.dumps(document).encode()


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(spelled=json_spellings())
def test_random_requests_convert_to_their_canonical_encoding_like_the_reference(
    spelled: tuple[ExportTraceServiceRequest, bytes],
) -> None:
    request, body = spelled
    encoded = otlp_json_to_protobuf(body)

    assert encoded == request.SerializeToString()
    assert encoded == reference_otlp_json_to_protobuf(body)


# Values that have broken converters: wrong types, edges of every range, spellings proto3 JSON allows
# or not, integers beyond 64 bits (orjson reads those as floats), lone surrogates (orjson refuses them).
_HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63),
    -(2**63) - 1, 10**30, -(10**30), 1e19, 1.8446744073709552e19, -9.3e18, 1e300, "", "x", "\ud800",
    "a\udc00", "NaN", "Infinity", "-Infinity", "1e3", "1000.0", "+7", "-0", "00", " 1", "0x10",
    "18446744073709551615", "18446744073709551616", "-9223372036854775809", "ab" * 8, "AB" * 16,
    "0g" * 8, "AAEC/w==", "AAEC_w", "QQ=", "QR==", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", [], [None],
    [1], ["x"], [{}], {}, {"a": 1}, {"stringValue": "s"}, {"intValue": "5", "boolValue": True},
    {"key": "k", "value": {}}, {"key": "k", "value": {"doubleValue": 2}},
]  # fmt: skip


def documents_with(value: Any) -> list[Any]:
    """`value` at every kind of place in a request: each field of a span, attribute and value, and the
    other messages' numbers, strings and lists."""
    span_fields = [fd.json_name for fd in Span.DESCRIPTOR.fields] + ["trace_id", "start_time_unix_nano"]
    value_fields = [fd.json_name for fd in AnyValue.DESCRIPTOR.fields] + ["int_value", "bytes_value"]
    return [
        value,
        {"resourceSpans": value},
        {"resourceSpans": [value]},
        {
            "resourceSpans": [
                {"resource": {"droppedAttributesCount": value, "entityRefs": [{"idKeys": [value]}]}}
            ]
        },
        {"resourceSpans": [{"scopeSpans": [{"scope": {"version": value}, "schemaUrl": value}]}]},
        *[one_span(**{name: value}) for name in span_fields],
        *[one_value({name: value}) for name in value_fields],
        one_value(value),
        one_span(attributes=[value]),
        one_span(attributes=[{"key": value, "value": {"stringValue": "s"}}]),
        one_span(attributes=[{"key": "k", "value": {"intValue": 1}, "keyStrindex": value}]),
        one_span(status={"code": value, "message": value}),
        one_span(
            events=[{"timeUnixNano": value, "attributes": [{"key": "k", "value": {"doubleValue": value}}]}]
        ),
        one_span(links=[{"flags": value, "traceId": value, "droppedAttributesCount": value}]),
        one_value({"arrayValue": {"values": [value]}}),
        one_value({"kvlistValue": {"values": [{"key": "k", "value": {"intValue": value}}]}}),
    ]


def test_hostile_values_anywhere_give_the_same_bytes_or_the_same_error_as_the_reference() -> None:
    results = {"ok": 0, "error": 0}
    for value in _HOSTILE_VALUES:
        for document in documents_with(value):
            kind, _ = assert_same_as_reference(json.dumps(document).encode())
            results[kind] += 1
    assert results["ok"] > 400 and results["error"] > 1000, results


def locations(node: Any) -> list[tuple[Any, Any]]:
    found: list[tuple[Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found.append((node, key))
        found.extend(locations(child))
    return found


def corrupted_document(request: ExportTraceServiceRequest, proto_names: bool, data: st.DataObject) -> Any:
    """`request` as OTLP/JSON with 1 to 3 values replaced by hostile ones, or keys respelled or unknown."""
    document = ids_to_hex(
        json_format.MessageToDict(
            request, preserving_proto_field_name=proto_names, use_integers_for_enums=True
        )
    )
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        spots = locations(document)
        if not spots:
            document = data.draw(st.sampled_from(_HOSTILE_VALUES), label="document")
            break
        parent, key = data.draw(st.sampled_from(spots), label="where")
        if isinstance(parent, dict) and data.draw(st.booleans(), label="rename"):
            # The other spelling of the key, alongside or instead; or an unknown key.
            other = data.draw(st.sampled_from([camel_to_snake(key), snake_to_camel(key), "unknown"]))
            parent[other] = copy.deepcopy(parent[key])
            if data.draw(st.booleans(), label="drop original"):
                del parent[key]
        else:
            parent[key] = copy.deepcopy(data.draw(st.sampled_from(_HOSTILE_VALUES), label="value"))
    return document


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(request=_requests, proto_names=st.booleans(), data=st.data())
def test_corrupted_requests_give_the_same_bytes_or_the_same_error_as_the_reference(
    request: ExportTraceServiceRequest, proto_names: bool, data: st.DataObject
) -> None:
    document = corrupted_document(request, proto_names, data)
    body = json.dumps(document, ensure_ascii=data.draw(st.booleans(), label="ascii")).encode(
        "utf-8", "surrogatepass"
    )
    assert_same_as_reference(body)


def camel_to_snake(name: Any) -> Any:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name) if isinstance(name, str) else name


def snake_to_camel(name: Any) -> Any:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name) if isinstance(name, str) else name


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(request=_requests, data=st.data())
def test_damaged_bodies_give_the_same_bytes_or_the_same_error_as_the_reference(
    request: ExportTraceServiceRequest, data: st.DataObject
) -> None:
    body = bytearray(json.dumps(ids_to_hex(json_format.MessageToDict(request))).encode())
    damage = data.draw(st.sampled_from(["truncate", "byte", "bom", "insert"]), label="damage")
    if damage == "truncate":
        del body[data.draw(st.integers(0, len(body)), label="at") :]
    elif damage == "byte":
        body[data.draw(st.integers(0, len(body) - 1), label="at")] = data.draw(st.integers(0, 255))
    elif damage == "bom":
        body[0:0] = b"\xef\xbb\xbf" * data.draw(st.integers(1, 2), label="boms")
    else:
        insert = data.draw(st.sampled_from([b" ", b"\n", b",", b"\\ud800", b"\xc3", b"1e400", b"NaN"]))
        body[data.draw(st.integers(0, len(body)), label="at") : 0] = insert
    assert_same_as_reference(bytes(body))


def test_keys_in_the_javascript_exporters_order_give_the_canonical_encoding() -> None:
    # Status before links, parentSpanId before traceState: not field-number order.
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "eee19b7ec3c1b173",
        "traceState": "a=b",
        "name": "GET",
        "kind": 3,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}],
        "droppedAttributesCount": 0,
        "events": [],
        "droppedEventsCount": 0,
        "status": {"code": 2, "message": "boom"},
        "links": [{"traceId": "00000000000000000000000000000001", "spanId": "00000000000000ff"}],
        "droppedLinksCount": 1,
    }
    expected = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=bytes.fromhex(span["traceId"]),  # type: ignore[arg-type]
                                span_id=bytes.fromhex("eee19b7ec3c1b174"),
                                parent_span_id=bytes.fromhex("eee19b7ec3c1b173"),
                                trace_state="a=b",
                                name="GET",
                                kind=Span.SPAN_KIND_CLIENT,
                                start_time_unix_nano=1544712660000000000,
                                end_time_unix_nano=1544712661000000000,
                                attributes=[kv("http.method", AnyValue(string_value="GET"))],
                                status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
                                links=[
                                    Span.Link(trace_id=b"\x00" * 15 + b"\x01", span_id=b"\x00" * 7 + b"\xff")
                                ],
                                dropped_links_count=1,
                            )
                        ]
                    )
                ]
            )
        ]
    )
    assert otlp_json_to_protobuf(json.dumps(one_span(**span)).encode()) == expected.SerializeToString()


@pytest.mark.parametrize(
    "fields",
    [
        # Integer literals beyond 64 bits: orjson reads them as floats, -2**63 - 1 as exactly -2**63.
        {"attributes": [{"key": "k", "value": {"intValue": -(2**63) - 1}}]},
        {"endTimeUnixNano": 2**64},
        {"kind": -(2**63) - 1},
        # Float literals in 64-bit fields are valid when integral and in range.
        {"endTimeUnixNano": 1.8e19},
        {"startTimeUnixNano": 9.3e18, "attributes": [{"key": "k", "value": {"intValue": -9.2e18}}]},
        # Doubles written as integers, as JavaScript writes 2.0, however large.
        {
            "attributes": [
                {"key": "k", "value": {"doubleValue": 2}},
                {"key": "l", "value": {"doubleValue": 10**30}},
            ]
        },
    ],
)
def test_numbers_orjson_cannot_hold_exactly_are_read_as_before(fields: dict[str, Any]) -> None:
    assert_same_as_reference(json.dumps(one_span(**fields)).encode())


def nested_kvlist(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(levels):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return one_value(value)


# Six messages down to the first AnyValue, and each kvlist level adds three: 31 levels reach the limit.
@pytest.mark.parametrize("levels", [30, 31, 32])
def test_attributes_at_the_depth_limit_are_judged_as_before(levels: int) -> None:
    kind, _ = assert_same_as_reference(json.dumps(nested_kvlist(levels)).encode())
    assert kind == ("ok" if levels <= 31 else "error")


def test_attribute_keys_are_encoded_right_after_the_key_cache_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(otlp_json, "_fast_encode", None)  # the cache belongs to the Python walk
    monkeypatch.setattr(otlp_json, "_KEY_FIELDS", {})
    monkeypatch.setattr(otlp_json, "_KEY_FIELDS_CAP", 2)
    attributes = [{"key": f"key.{i}", "value": {"stringValue": f"v{i}"}} for i in range(5)]
    document = one_span(attributes=attributes * 2)
    expected = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                attributes=[kv(f"key.{i}", AnyValue(string_value=f"v{i}")) for i in range(5)]
                                * 2
                            )
                        ]
                    )
                ]
            )
        ]
    )
    assert otlp_json_to_protobuf(json.dumps(document).encode()) == expected.SerializeToString()
    assert list(otlp_json._KEY_FIELDS) == ["key.0", "key.1"]


# --------------------------------------------------------------------------------------------------
# reference: the converter as it was before the direct encoder (json.loads, a validating walk that
# rewrites ids to base64, then json_format.ParseDict and SerializeToString). The new one must give the
# same bytes or the same error for every body; tests/bench_json.py measures against it too.

# Same limit as protobuf's binary decoder (upb) and ParseDict, so anything accepted here also
# decodes on the protobuf path.
_REF_MAX_DEPTH: Final = 100

# Field name -> (decoded size in bytes, wording for errors).
_REF_ID_FIELDS: Final[dict[str, tuple[int, str]]] = {
    "trace_id": (16, "trace id"),
    "span_id": (8, "span id"),
    "parent_span_id": (8, "parent span id"),
}

_REF_INT_TYPES: Final[dict[int, tuple[str, int, int]]] = {
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

_REF_HEX_RE: Final = re.compile(r"[0-9a-fA-F]*")
_REF_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_REF_NUMBER_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Standard or URL-safe alphabet, padding optional (proto3 JSON accepts all of these).
_REF_BASE64_RE: Final = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
# json.loads joins escaped surrogate pairs, so any surrogate left in a str is unpaired.
_REF_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")
_REF_DOUBLE_WORDS: Final = frozenset({"NaN", "Infinity", "-Infinity"})
# Returned for values that are dropped (unknown enum names) instead of being handed to ParseDict.
_REF_OMIT: Final = object()


# A JSON path as a linked list (parent, key): building it costs one tuple per node, and it is
# only turned into text when something is wrong.
_RefPath: TypeAlias = "tuple[_RefPath, str | int] | None"


class _RefKind(enum.Enum):
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
class _RefField:
    name: str
    json_name: str
    kind: _RefKind
    repeated: bool
    oneof: str | None = None
    message: _RefMessage | None = None
    type_name: str = ""
    int_min: int = 0
    int_max: int = 0
    id_size: int = 0
    enum_names: frozenset[str] = frozenset()
    enum_numbers: frozenset[int] | None = None  # only for closed enums


class _RefMessage:
    __slots__ = ("fields",)

    def __init__(self) -> None:
        # Both spellings (lowerCamelCase and proto name) map to the same _RefField.
        self.fields: dict[str, _RefField] = {}


def _ref_is_repeated(fd: Any) -> bool:
    # FieldDescriptor.label is gone in protobuf 7, is_repeated is missing in older releases.
    is_repeated = getattr(fd, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


def _ref_build_message(descriptor: Any, cache: dict[str, _RefMessage]) -> _RefMessage:
    message = cache.get(descriptor.full_name)
    if message is None:
        message = cache[descriptor.full_name] = _RefMessage()  # registered first: AnyValue is recursive
        for fd in descriptor.fields:
            field = _ref_build_field(fd, cache)
            message.fields[field.json_name] = field
            message.fields[field.name] = field
    return message


def _ref_build_field(fd: Any, cache: dict[str, _RefMessage]) -> _RefField:
    name: str = fd.name
    common: dict[str, Any] = {
        "name": name,
        "json_name": fd.json_name,
        "repeated": _ref_is_repeated(fd),
        "oneof": fd.containing_oneof.name if fd.containing_oneof is not None else None,
    }
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type.GetOptions().map_entry:
            return _RefField(kind=_RefKind.PASS, **common)
        return _RefField(kind=_RefKind.MESSAGE, message=_ref_build_message(fd.message_type, cache), **common)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        if name in _REF_ID_FIELDS:
            size, label = _REF_ID_FIELDS[name]
            return _RefField(kind=_RefKind.ID, id_size=size, type_name=label, **common)
        return _RefField(kind=_RefKind.BYTES, **common)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _RefField(kind=_RefKind.STRING, **common)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return _RefField(kind=_RefKind.BOOL, **common)
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _RefField(kind=_RefKind.DOUBLE, **common)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum_type = fd.enum_type
        closed = bool(getattr(enum_type, "is_closed", False))
        return _RefField(
            kind=_RefKind.ENUM,
            type_name="int32",
            int_min=-(2**31),
            int_max=2**31 - 1,
            enum_names=frozenset(enum_type.values_by_name),
            enum_numbers=frozenset(enum_type.values_by_number) if closed else None,
            **common,
        )
    if fd.type in _REF_INT_TYPES:
        type_name, low, high = _REF_INT_TYPES[fd.type]
        return _RefField(kind=_RefKind.INT, type_name=type_name, int_min=low, int_max=high, **common)
    return _RefField(kind=_RefKind.PASS, **common)


_REF_REQUEST: Final = _ref_build_message(ExportTraceServiceRequest.DESCRIPTOR, {})


def reference_otlp_json_to_protobuf(body: bytes) -> bytes:
    """The converter as it was before the direct encoder: json.loads, a validating walk, ParseDict."""
    try:
        # OTLP/JSON is UTF-8; json.loads(bytes) would also guess UTF-16/32. A BOM is tolerated.
        text = str(body, "utf-8-sig")
    except UnicodeDecodeError as err:
        raise OtlpJsonError(f"body is not valid UTF-8 (bad byte at offset {err.start})") from None
    try:
        document = json.loads(text, parse_constant=_ref_reject_constant)
    except OtlpJsonError:
        raise
    except json.JSONDecodeError as err:
        raise OtlpJsonError(
            f"body is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from None
    except RecursionError:
        raise OtlpJsonError("body is nested too deeply to decode") from None
    except ValueError as err:  # e.g. an integer literal beyond int_max_str_digits
        raise OtlpJsonError(f"body is not valid JSON: {_ref_clip(str(err).split(';')[0])}") from None
    if not isinstance(document, dict):
        raise OtlpJsonError(f"body must be a JSON object, got {_ref_json_type(document)}")

    canonical = _ref_walk_message(document, _REF_REQUEST, None, 1)
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(
            canonical, message, ignore_unknown_fields=True, max_recursion_depth=_REF_MAX_DEPTH
        )
    except json_format.ParseError as err:
        # The walk should have caught everything ParseDict rejects; this keeps the contract if not.
        raise _reword_parse_error(err) from None
    except (ValueError, TypeError) as err:
        raise OtlpJsonError(f"request: {_ref_clip(str(err))}") from None
    result: bytes = message.SerializeToString()
    return result


def _ref_walk_message(obj: object, message: _RefMessage, path: _RefPath, depth: int) -> dict[str, object]:
    if not isinstance(obj, dict):
        _ref_fail(path, f"expected an object, got {_ref_json_type(obj)}")
    if depth > _REF_MAX_DEPTH:
        _ref_fail(path, f"nested too deeply (more than {_REF_MAX_DEPTH} levels of messages)")
    out: dict[str, object] = {}
    oneofs: dict[str, str] | None = None
    for key, value in obj.items():
        field = message.fields.get(key)
        # Unknown fields must be ignored; null means "not set" in proto3 JSON.
        if field is None or value is None:
            continue
        if field.json_name in out:
            _ref_fail(path, f'both "{field.json_name}" and "{field.name}" given')
        if field.oneof is not None:
            if oneofs is None:
                oneofs = {}
            other = oneofs.setdefault(field.oneof, key)
            if other != key:
                _ref_fail(path, f'only one of "{other}" and "{key}" may be set')
        field_path = (path, key)
        if field.repeated and field.kind is not _RefKind.PASS:
            if not isinstance(value, list):
                _ref_fail(field_path, f"expected an array, got {_ref_json_type(value)}")
            items = [
                _ref_walk_value(item, field, (field_path, index), depth) for index, item in enumerate(value)
            ]
            if field.kind is _RefKind.ENUM:
                items = [item for item in items if item is not _REF_OMIT]
            out[field.json_name] = items
        else:
            converted = _ref_walk_value(value, field, field_path, depth)
            if converted is not _REF_OMIT:
                out[field.json_name] = converted
    return out


def _ref_walk_value(value: object, field: _RefField, path: _RefPath, depth: int) -> object:
    kind = field.kind
    if kind is _RefKind.MESSAGE:
        assert field.message is not None
        return _ref_walk_message(value, field.message, path, depth + 1)
    if kind is _RefKind.STRING:
        if not isinstance(value, str):
            _ref_fail(path, f"expected a string, got {_ref_json_type(value)}")
        if not value.isascii() and _REF_SURROGATE_RE.search(value):
            _ref_fail(path, "string contains an unpaired UTF-16 surrogate")
        return value
    if kind is _RefKind.INT:
        return _ref_to_int(value, field, path)
    if kind is _RefKind.ID:
        return _ref_hex_id_to_base64(value, field, path)
    if kind is _RefKind.DOUBLE:
        return _ref_to_double(value, path)
    if kind is _RefKind.BOOL:
        if not isinstance(value, bool):
            _ref_fail(path, f"expected true or false, got {_ref_json_type(value)}")
        return value
    if kind is _RefKind.ENUM:
        return _ref_to_enum(value, field, path)
    if kind is _RefKind.BYTES:
        if not isinstance(value, str):
            _ref_fail(path, f"expected a base64 string, got {_ref_json_type(value)}")
        data_length = len(value.rstrip("="))
        if (
            not _REF_BASE64_RE.fullmatch(value)
            or data_length % 4 == 1
            or (data_length != len(value) and len(value) % 4)
        ):
            _ref_fail(path, f"invalid base64 {_ref_describe(value)}")
        return value
    return value


def _ref_hex_id_to_base64(value: object, field: _RefField, path: _RefPath) -> str:
    digits = 2 * field.id_size
    if not isinstance(value, str):
        _ref_fail(path, f"{field.type_name} must be a hex string, got {_ref_json_type(value)}")
    if (value and len(value) != digits) or not _REF_HEX_RE.fullmatch(value):
        _ref_fail(path, f"invalid {field.type_name} {_ref_describe(value)} (expected {digits} hex digits)")
    # ParseDict reads bytes fields as base64.
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _ref_to_int(value: object, field: _RefField, path: _RefPath) -> int:
    number: int
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _ref_fail(path, f"expected an integer, got {_ref_json_type(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _REF_INT_RE.fullmatch(value):
        try:
            number = int(value)
        except ValueError:  # beyond int_max_str_digits, so far out of range anyway
            _ref_fail(path, f"{_ref_describe(value)} is out of range for {field.type_name}")
    else:
        if isinstance(value, str):
            if not _REF_NUMBER_RE.fullmatch(value):
                _ref_fail(path, f"invalid integer {_ref_describe(value)}")
            # proto3 JSON also allows "1e3" and "5.0" for integers.
            as_float = float(value)
        else:
            as_float = value
        if not math.isfinite(as_float):
            _ref_fail(path, f"{_ref_describe(value)} is out of range for {field.type_name}")
        if not as_float.is_integer():
            _ref_fail(path, f"expected an integer, got {_ref_describe(value)}")
        number = int(as_float)
    if not field.int_min <= number <= field.int_max:
        _ref_fail(
            path,
            f"{_ref_describe(value)} is out of range for {field.type_name}"
            f" ({field.int_min} to {field.int_max})",
        )
    return number


def _ref_to_double(value: object, path: _RefPath) -> float | str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _ref_fail(path, f"expected a number, got {_ref_json_type(value)}")
    if isinstance(value, str):
        if value in _REF_DOUBLE_WORDS:
            return value  # ParseDict understands these spellings, not float('nan') and friends
        if not _REF_NUMBER_RE.fullmatch(value):
            _ref_fail(path, f"invalid number {_ref_describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # a huge JSON integer literal
        number = math.inf
    if not math.isfinite(number):  # e.g. 1e400, which json.loads turns into inf
        _ref_fail(path, f"{_ref_describe(value)} is out of range for double")
    return number


def _ref_to_enum(value: object, field: _RefField, path: _RefPath) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _ref_fail(path, f"expected an enum name or integer, got {_ref_json_type(value)}")
    if isinstance(value, str) and not _REF_INT_RE.fullmatch(value):
        if value in field.enum_names:
            return value
        # Unknown names are ignored like unknown fields, as ParseDict does with ignore_unknown_fields
        # (and it lets old receivers accept newer senders). They are dropped here rather than passed
        # on: upb's enum name lookup raises SystemError for a name with a lone surrogate.
        return _REF_OMIT
    number = _ref_to_int(value, field, path)
    if field.enum_numbers is not None and number not in field.enum_numbers:
        _ref_fail(path, f"unknown enum value {number}")
    return number


def _ref_reject_constant(name: str) -> NoReturn:
    raise OtlpJsonError(
        f'body is not valid JSON: {name} is not a JSON value (proto3 JSON spells it "{name}")'
    )


def _ref_fail(path: _RefPath, problem: str) -> NoReturn:
    raise OtlpJsonError(f"{_ref_render_path(path)}: {problem}")


def _ref_render_path(path: _RefPath) -> str:
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    text = "".join(reversed(parts)).lstrip(".") or "request"
    # Only deeply nested AnyValues get this long; the two ends are what locate the problem.
    return text if len(text) <= 120 else f"{text[:50]}...{text[-60:]}"


def _ref_json_type(value: object) -> str:
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


def _ref_describe(value: object) -> str:
    """A short, single-line, ASCII rendering of a JSON scalar for error messages."""
    if isinstance(value, str):
        # json.dumps escapes control characters and lone surrogates.
        return json.dumps(value) if len(value) <= 40 else json.dumps(value[:40])[:-1] + '..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _ref_clip(repr(value), 40)
    return _ref_json_type(value)


def _ref_clip(text: str, limit: int = 200) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
