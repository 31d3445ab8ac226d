"""The C encoder of OTLP/JSON (distributor.receivers._otlp_json) against the Python walk it stands in for:
otlp_json_to_protobuf gives the same bytes or the same error with it and without it, it encodes every
plainly valid request itself, and whatever it encodes the walk encodes to the same bytes."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.receivers import otlp_json
from distributor.receivers.otlp_json import OtlpJsonError, otlp_json_to_protobuf
from tests import test_otlp_json as cases
from tests.support.extensions import load_build
from tests.test_otlp_json import (
    _HOSTILE_VALUES,
    _requests,
    corrupted_document,
    documents_with,
    json_spellings,
    nested_array,
    nested_kvlist,
    one_span,
    one_value,
)


def load_encoder() -> ModuleType:
    """The C encoder: the build OTLP_JSON_ENCODER_PATH names (`make sanitize` points it at a build with
    the sanitizers), else the installed one. Under CI=true a missing build fails the tests, elsewhere it
    skips them."""
    path = os.environ.get("OTLP_JSON_ENCODER_PATH")
    if path:
        return load_build("distributor.receivers._otlp_json", path)
    if os.environ.get("CI") == "true":
        return importlib.import_module("distributor.receivers._otlp_json")
    return pytest.importorskip("distributor.receivers._otlp_json")


_otlp_json = load_encoder()
fast_encode: Any = _otlp_json.encode


@pytest.fixture(autouse=True)
def encoder_under_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The converter uses the encoder under test (the same object as the installed one unless
    OTLP_JSON_ENCODER_PATH names another build)."""
    monkeypatch.setattr(otlp_json, "_fast_encode", fast_encode)


def test_the_fast_path_is_enabled_when_built() -> None:
    # It is built here, and the schema it carries matches the installed descriptors.
    if os.environ.get("OTLP_JSON_ENCODER_PATH"):
        assert os.path.samefile(_otlp_json.__file__, os.environ["OTLP_JSON_ENCODER_PATH"])
    else:
        assert otlp_json._load_fast_encoder() is fast_encode


def outcome(body: bytes, *, fast: bool) -> tuple[str, bytes | str]:
    with pytest.MonkeyPatch.context() as patch:
        if not fast:
            patch.setattr(otlp_json, "_fast_encode", None)
        try:
            return ("ok", otlp_json_to_protobuf(body))
        except OtlpJsonError as err:
            return ("error", str(err))


def assert_same_with_and_without_fast_path(body: bytes) -> tuple[str, bytes | str]:
    without = outcome(body, fast=False)
    assert outcome(body, fast=True) == without, body[:300]
    return without


def assert_fast_agrees_with_walk(document: Any) -> bool:
    """On the objects themselves (also ones orjson never returns, such as lone surrogates or NaN): the C
    encoder either declines or gives exactly what the walk gives, which then must not fail. True when the
    C encoder encoded it."""
    encoded = fast_encode(document)
    if encoded is None:
        return False
    assert type(encoded) is bytes
    assert bytes(otlp_json._encode_request(document, otlp_json._REQUEST)) == encoded, repr(document)[:300]
    return True


def body_of(document: Any) -> bytes:
    return json.dumps(document).encode()


# --------------------------------------------------------------------------------------------------
# valid requests: the C encoder must take them itself


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(spelled=json_spellings())
def test_valid_requests_are_encoded_by_the_fast_path_to_their_canonical_bytes(
    spelled: tuple[ExportTraceServiceRequest, bytes],
) -> None:
    request, body = spelled
    encoded = fast_encode(orjson.loads(body))

    assert encoded is not None
    assert encoded == request.SerializeToString()
    assert assert_same_with_and_without_fast_path(body) == ("ok", encoded)


@pytest.mark.parametrize(
    "value",
    [
        {"doubleValue": "NaN"},
        {"doubleValue": "Infinity"},
        {"doubleValue": "-Infinity"},
        {"doubleValue": -0.0},
        {"doubleValue": 0.0},
        {"doubleValue": 2},
        {"doubleValue": 2**64 - 1},
        {"intValue": "-9223372036854775808"},
        {"intValue": "+7"},
        {"intValue": "-0"},
        {"intValue": -1},
        {"boolValue": False},
        {"stringValue": ""},
        {"bytesValue": ""},
        {"bytesValue": "QR=="},
        {"bytesValue": "QUJ"},
        {"bytesValue": "-_-_"},
        {"stringValueStrindex": -5},
        {"stringValueStrindex": "-5"},
        {"arrayValue": {}},
        {"kvlistValue": {"values": [{"key": "", "value": {}}]}},
        {},
    ],
)
def test_edge_values_are_encoded_by_the_fast_path(value: dict[str, Any]) -> None:
    body = body_of(one_value(value))
    assert fast_encode(orjson.loads(body)) is not None
    assert assert_same_with_and_without_fast_path(body)[0] == "ok"


def test_long_messages_get_multi_byte_lengths() -> None:
    attributes = [{"key": f"k{i}", "value": {"stringValue": "v" * i}} for i in range(300)]
    span = {"name": "s" * 20000, "flags": 2**32 - 1, "attributes": attributes}
    body = body_of({"resourceSpans": [{"scopeSpans": [{"spans": [span] * 3}]}] * 2})
    assert fast_encode(orjson.loads(body)) is not None
    assert_same_with_and_without_fast_path(body)


@pytest.mark.parametrize("levels", [30, 31, 32])
def test_kvlists_at_the_depth_limit(levels: int) -> None:
    document = nested_kvlist(levels)
    assert (fast_encode(document) is not None) == (levels <= 31)
    assert_same_with_and_without_fast_path(body_of(document))


@pytest.mark.parametrize("levels", [46, 47, 48])
def test_arrays_at_the_depth_limit(levels: int) -> None:
    document = nested_array(levels)
    assert (fast_encode(document) is not None) == (levels <= 47)
    assert_same_with_and_without_fast_path(body_of(document))


# --------------------------------------------------------------------------------------------------
# everything else: the same result either way


def parametrized_values() -> Iterator[Any]:
    """Every argument of every parametrized test of test_otlp_json (malformed documents, bodies and
    fields, and the spellings it accepts)."""
    for name in dir(cases):
        for mark in getattr(getattr(cases, name), "pytestmark", []):
            if mark.name != "parametrize":
                continue
            for argument in mark.args[1]:
                yield from argument if isinstance(argument, tuple) else [argument]


def documents_from(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield value
        yield one_value(value)
        if all(type(key) is str for key in value):
            yield one_span(**value)
    yield from documents_with(value)


def test_malformed_and_accepted_cases_of_the_converter_tests_give_the_same_result() -> None:
    seen = 0
    for value in parametrized_values():
        if isinstance(value, bytes):
            assert_same_with_and_without_fast_path(value)
            seen += 1
            continue
        for document in documents_from(value):
            assert_fast_agrees_with_walk(document)
            assert_same_with_and_without_fast_path(body_of(document))
            seen += 1
    assert seen > 1000


def test_hostile_values_anywhere_give_the_same_result() -> None:
    encoded = 0
    for value in [*_HOSTILE_VALUES, math.nan, math.inf, -math.inf, 1e-300, "\ud800" * 16, "é" * 16]:
        for document in documents_with(value):
            encoded += assert_fast_agrees_with_walk(document)
            # json.dumps writes NaN and Infinity unquoted, which is not JSON: either parser refuses it.
            assert_same_with_and_without_fast_path(body_of(document))
    assert encoded > 300


@pytest.mark.parametrize(
    "document",
    [
        one_value({"stringValue": "a", "intValue": 1}),
        one_value({"stringValue": "a", "string_value": "a"}),
        one_span(name="a", **{"trace_id": "00" * 16, "traceId": "00" * 16}),
        one_value({"stringValue": None, "intValue": 1}),
        one_value({"bytesValue": "QQ="}),
        one_value({"bytesValue": "QUJD=="}),
        one_value({"bytesValue": "Q==="}),
        one_value({"bytesValue": "Q"}),
        one_value({"bytesValue": "QQ==QQ=="}),
        one_value({"bytesValue": "Q Q="}),
        one_value({"bytesValue": "é"}),
        one_value({"intValue": "0" * 30 + "1"}),
        one_value({"intValue": "18446744073709551616"}),
        one_value({"intValue": "9223372036854775808"}),
        one_value({"intValue": "-9223372036854775809"}),
        one_value({"intValue": "--1"}),
        one_value({"intValue": "+"}),
        one_value({"intValue": "1_000"}),
        one_value({"intValue": "\u0661"}),  # ARABIC-INDIC DIGIT ONE
        one_span(traceId="0" * 31 + "g"),
        one_span(traceId=" " + "0" * 31),
        one_span(traceId="\uff10" * 32),  # FULLWIDTH DIGIT ZERO
        one_span(spanId="0" * 15),
        one_span(kind=2**31),
        one_span(kind=-(2**31)),
        one_span(kind=-(2**31) - 1),
        one_span(kind="SPAN_KIND_SERVER", status={"code": "STATUS_CODE_ERROR"}),
        one_span(kind="SPAN_KIND_UNSPECIFIED", status={"code": "STATUS_CODE_UNSET"}),
        one_span(traceId="", trace_id="00" * 16),
        one_span(kind="SPAN_KIND_NEW", status={"code": "STATUS_CODE_NEW"}),
        one_span(kind="span_kind_server"),
        one_span(kind="SPAN_KIND_SERVER\x00"),
        one_span(kind="\x00"),
        one_span(kind=""),
        one_span(kind="\u012b1"),
        one_span(kind="\ud800"),
        one_span(kind=" 2"),
        one_span(flags=-1),
        one_span(flags="-0"),
        one_span(startTimeUnixNano="18446744073709551615"),
        one_span(startTimeUnixNano=-1),
        one_span(startTimeUnixNano=True),
        one_span(droppedAttributesCount=2**32),
        one_span(name=5),
        {"resourceSpans": [{"resource": {"entityRefs": [{"idKeys": ["", "a", None]}]}}]},
        {"resourceSpans": [{"resource": {"entityRefs": [{"idKeys": ["", "a"]}]}}]},
        {"resourceSpans": [None]},
        {"resourceSpans": {}},
        {"unknown": [1, 2], "resourceSpans": [{"unknown": {"deep": None}}]},
        {"resourceSpans": [], "resource_spans": []},
    ],
)
def test_edges_give_the_same_result(document: Any) -> None:
    assert_fast_agrees_with_walk(document)
    assert_same_with_and_without_fast_path(body_of(document))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(request=_requests, proto_names=st.booleans(), data=st.data())
def test_corrupted_requests_give_the_same_result(
    request: ExportTraceServiceRequest, proto_names: bool, data: st.DataObject
) -> None:
    document = corrupted_document(request, proto_names, data)
    assert_fast_agrees_with_walk(document)
    assert_same_with_and_without_fast_path(
        json.dumps(document, ensure_ascii=data.draw(st.booleans(), label="ascii")).encode(
            "utf-8", "surrogatepass"
        )
    )
