"""Send browser-like RUM traffic to the distributor's OTLP/HTTP receiver, as OTLP/JSON.

Each visit is one browser session of a storefront web app: a few page loads, each an OTLP/JSON request of
a few spans (a document load, resource fetches, a click), every span carrying the semantic-convention
`session.id`, and the resource carrying `service.name`, `browser.name` and the visitor's `department` (the
attribute a RUM SDK's global context adds). Some sessions span several requests, and a few come back
later, so the distinct count is smaller than the number of requests.

    make run &
    .venv/bin/python examples/send_rum_sessions.py --sessions 40
    open http://localhost:3200/usage/      # sign in with the keys config/distributor.yaml names

With `cost_attribution.distinct_counts.sessions.enabled` for the tenant (config/overrides.yaml turns it on
for `single-tenant`), the ledger counts the distinct sessions per hour and label values, read back as
`rum_browser_mobile_sessions_usage`.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_ENDPOINT = "http://127.0.0.1:4318/v1/traces"
ORG_ID_HEADER = "X-Scope-OrgID"
DEPARTMENTS = ("marketing", "sales", "support", "engineering")
APPS = ("storefront-web", "storefront-mobile")
PAGES = ("/", "/search", "/product/42", "/cart", "/checkout")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="OTLP/HTTP traces URL")
    parser.add_argument("--tenant", default=None, help=f"sent as {ORG_ID_HEADER} (multitenancy only)")
    parser.add_argument("--sessions", type=int, default=40, help="distinct sessions to send (default 40)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for the same sessions again")
    return parser.parse_args(argv)


def _attribute(key: str, value: str) -> dict[str, object]:
    return {"key": key, "value": {"stringValue": value}}


def page_load(app: str, department: str, session: str, page: str, rng: random.Random) -> bytes:
    """One OTLP/JSON request: the spans a browser exports for one page load of `session`."""
    trace_id = secrets.token_hex(16)
    start = time.time_ns()
    spans = []
    names = ["documentLoad", "resourceFetch", "resourceFetch", "click"]
    parent = ""
    for index, name in enumerate(names[: rng.randint(2, len(names))]):
        span_id = secrets.token_hex(8)
        begin = start + index * 2_000_000
        spans.append(
            {
                "traceId": trace_id,
                "spanId": span_id,
                "parentSpanId": parent,
                "name": name,
                "kind": 1,
                "startTimeUnixNano": str(begin),
                "endTimeUnixNano": str(begin + rng.randint(1_000_000, 90_000_000)),
                "attributes": [
                    _attribute("session.id", session),
                    _attribute("http.url", f"https://shop.example.com{page}"),
                ],
            }
        )
        parent = parent or span_id
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        _attribute("service.name", app),
                        _attribute("browser.name", rng.choice(("Chrome", "Firefox", "Safari"))),
                        _attribute("department", department),
                    ]
                },
                "scopeSpans": [
                    {"scope": {"name": "@opentelemetry/instrumentation-document-load"}, "spans": spans}
                ],
            }
        ]
    }
    return json.dumps(document).encode()


def send(endpoint: str, body: bytes, tenant: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if tenant:
        headers[ORG_ID_HEADER] = tenant
    request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def visits(sessions: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """(app, department, session id) per request: each session 1-4 page loads, a few sessions again later."""
    planned = [
        (rng.choice(APPS), rng.choice(DEPARTMENTS), f"{secrets.token_hex(4)}-{index:04d}")
        for index in range(sessions)
    ]
    loads = [visit for visit in planned for _ in range(rng.randint(1, 4))]
    loads += rng.sample(planned, k=min(len(planned), max(1, sessions // 5)))  # visitors who come back
    return loads


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    loads = visits(args.sessions, rng)
    failed = 0
    for app, department, session in loads:
        try:
            send(args.endpoint, page_load(app, department, session, rng.choice(PAGES), rng), args.tenant)
        except (urllib.error.URLError, OSError) as err:
            failed += 1
            print(f"could not send to {args.endpoint}: {err}", file=sys.stderr)
    sent = len(loads) - failed
    print(f"sent {sent} page loads of {args.sessions} distinct sessions to {args.endpoint}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
