"""One pass over a trace export request: validate it, measure it, attribute it.

The compiled core (`distributor.ingest._core`, C) does this without building protobuf objects; the
reference (`scan_reference`, the protobuf runtime's decode) does the same from decoded messages. The
core is used whenever it was built; the reference where it was not, and for the rare encodings the core
declines (a singular field repeated in one message, whose decoded meaning needs protobuf's merging).
Both give identical results: the differential tests hold them to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distributor.common.errors import DistributorError
from distributor.ingest.scan_reference import Keys, ScanResult, scan_decoded

log = logging.getLogger(__name__)


def _load_core() -> ModuleType | None:
    try:
        from distributor.ingest import _core  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _core  # type: ignore[no-any-return]


CORE: ModuleType | None = _load_core()


class InvalidTraces(DistributorError):
    """The body is not a valid ExportTraceServiceRequest: refused as a whole, nothing accounted."""


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """A tenant's dimensions as the scan reads them: per output label (sorted), the attribute keys to
    try at resource and at span level, in configuration order."""

    resource_keys: Keys
    span_keys: Keys
    missing: str


def scan(payload: bytes, plan: ScanPlan | None, max_attribute_bytes: int) -> tuple[ScanResult, Any]:
    """The scan of `payload`, and the decoded request when the reference path had to build it (else
    None); raises InvalidTraces where the protobuf runtime would refuse the payload."""
    resource_keys = plan.resource_keys if plan is not None else None
    span_keys = plan.span_keys if plan is not None else None
    missing = plan.missing if plan is not None else ""
    if CORE is not None:
        try:
            result: ScanResult | None = CORE.scan(
                payload, resource_keys, span_keys, missing, max_attribute_bytes
            )
        except ValueError as err:
            raise InvalidTraces(f"invalid protobuf ExportTraceServiceRequest: {err}") from None
        if result is not None:
            return result, None
    try:
        request = ExportTraceServiceRequest.FromString(payload)
    except DecodeError as err:
        raise InvalidTraces(f"invalid protobuf ExportTraceServiceRequest: {err}") from None
    return scan_decoded(request, resource_keys, span_keys, missing, max_attribute_bytes), request
