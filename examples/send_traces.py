"""Send realistic sample traces to the distributor's OTLP/HTTP receiver.

The services are those of the example in Tempo's usage-tracker documentation: a `shop-backend`
calls `auth-service`, `article-service`, `cart-service` and `billing-service`, which all query
`postgres`. Each service has its own TracerProvider (so its own Resource: `service.name`,
`k8s.namespace.name` and `team`), and the spans of one trace are linked across services, as real
context propagation would link them. A few spans set a span-level `team` attribute that overrides the
resource's, which shows the difference between the `resource.team`, `span.team` and `team` dimensions.

    .venv/bin/distributor --config config/distributor.yaml &
    .venv/bin/python examples/send_traces.py --traces 20
    curl http://localhost:3200/usage_metrics
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

DEFAULT_ENDPOINT = "http://127.0.0.1:4318/v1/traces"
ORG_ID_HEADER = "X-Scope-OrgID"
INSTRUMENTATION_SCOPE = "examples.send_traces"


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    namespace: str
    team: str
    version: str


SERVICES: tuple[ServiceInfo, ...] = (
    ServiceInfo("shop-backend", "shop", "storefront", "2.14.0"),
    ServiceInfo("article-service", "shop", "catalog", "1.8.3"),
    ServiceInfo("auth-service", "identity", "identity", "3.2.1"),
    ServiceInfo("billing-service", "payments", "payments", "1.21.0"),
    ServiceInfo("cart-service", "shop", "storefront", "1.5.7"),
    ServiceInfo("postgres", "databases", "platform", "16.3"),
)


class CountingExporter(SpanExporter):
    """Wraps an exporter and counts the spans it exported successfully and those it failed to send."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class Clock:
    """Simulated time for one trace: spans get plausible durations without the script sleeping."""

    def __init__(self, start_ns: int) -> None:
        self.now_ns = start_ns

    def advance_ms(self, low: float, high: float, rng: random.Random) -> None:
        self.now_ns += int(rng.uniform(low, high) * 1_000_000)


class TraceBuilder:
    """Builds one trace across the services' tracers, with explicit timestamps and parents."""

    def __init__(self, tracers: dict[str, trace.Tracer], rng: random.Random, start_ns: int) -> None:
        self._tracers = tracers
        self._rng = rng
        self.clock = Clock(start_ns)
        self.spans = 0

    @contextmanager
    def span(
        self,
        service: str,
        name: str,
        kind: SpanKind,
        parent: Context | None,
        attributes: Attributes = None,
    ) -> Iterator[tuple[trace.Span, Context]]:
        """Start a span of `service` as a child of `parent`; yields it and the context for its children."""
        span = self._tracers[service].start_span(
            name, context=parent, kind=kind, attributes=attributes, start_time=self.clock.now_ns
        )
        self.spans += 1
        self.clock.advance_ms(0.05, 0.4, self._rng)
        try:
            yield span, trace.set_span_in_context(span)
        finally:
            self.clock.advance_ms(0.05, 0.6, self._rng)
            span.end(end_time=self.clock.now_ns)

    @contextmanager
    def http_call(
        self,
        caller: str,
        callee: str,
        method: str,
        route: str,
        path: str,
        parent: Context,
        status: int = 200,
        server_extra: Attributes = None,
    ) -> Iterator[Context]:
        """A CLIENT span in `caller` and the matching SERVER span in `callee`; yields the server context."""
        port = 8080
        client_attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.full": f"http://{callee}:{port}{path}",
            "server.address": callee,
            "server.port": port,
            "http.response.status_code": status,
        }
        server_attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "url.scheme": "http",
            "server.address": callee,
            "server.port": port,
            "network.protocol.version": "1.1",
            "user_agent.original": f"{caller}/internal",
            "http.response.status_code": status,
            **dict(server_extra or {}),
        }
        name = f"{method} {route}"
        with (
            self.span(caller, name, SpanKind.CLIENT, parent, client_attributes) as (client, client_ctx),
            self.span(callee, name, SpanKind.SERVER, client_ctx, server_attributes) as (server, server_ctx),
        ):
            if status >= 500:
                server.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                client.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            yield server_ctx

    def query(self, caller: str, operation: str, table: str, statement: str, parent: Context) -> None:
        """A database CLIENT span in `caller` and the SERVER span `postgres` records for it."""
        attributes: dict[str, AttributeValue] = {
            "db.system.name": "postgresql",
            "db.namespace": "shop",
            "db.operation.name": operation,
            "db.collection.name": table,
            "db.query.text": statement,
            "server.address": "postgres.databases.svc.cluster.local",
            "server.port": 5432,
        }
        name = f"{operation} shop.{table}"
        with (
            self.span(caller, name, SpanKind.CLIENT, parent, attributes) as (_, client_ctx),
            self.span("postgres", name, SpanKind.SERVER, client_ctx, attributes) as (server, _),
        ):
            self.clock.advance_ms(0.3, 8.0, self._rng)
            server.set_attribute("db.response.returned_rows", self._rng.randint(0, 50))


FLOWS = ("browse", "cart", "checkout")


def pick_flow(index: int, rng: random.Random) -> str:
    """The first three traces take each flow once, so that every service appears; then at random."""
    if index < len(FLOWS):
        return FLOWS[index]
    return rng.choices(FLOWS, weights=[5, 3, 2])[0]


def build_trace(builder: TraceBuilder, flow: str, rng: random.Random) -> None:
    """One user request through the shop: an article page (browse), adding to the cart, or a checkout."""
    user_id = f"user-{rng.randint(1000, 9999)}"
    article = rng.randint(1, 500)
    method, route, path = {
        "browse": ("GET", "/api/articles/{id}", f"/api/articles/{article}"),
        "cart": ("POST", "/api/cart/items", "/api/cart/items"),
        "checkout": ("POST", "/api/checkout", "/api/checkout"),
    }[flow]
    root_attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "http.route": route,
        "url.path": path,
        "url.scheme": "https",
        "server.address": "shop.example.com",
        "client.address": f"203.0.113.{rng.randint(1, 254)}",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "enduser.id": user_id,
    }
    root_name = f"{method} {route}"
    extra: dict[str, AttributeValue]  # a span-level `team` and other attributes of INTERNAL spans
    with builder.span("shop-backend", root_name, SpanKind.SERVER, None, root_attributes) as (root, root_ctx):
        status = 200

        # Every request is authenticated first.
        verify = "/v1/token/verify"
        with builder.http_call("shop-backend", "auth-service", "POST", verify, verify, root_ctx) as ctx:
            sql = "SELECT user_id, expires_at FROM sessions WHERE token_hash = $1"
            builder.query("auth-service", "SELECT", "sessions", sql, ctx)

        if flow == "browse":
            url = f"/articles/{article}"
            with builder.http_call(
                "shop-backend", "article-service", "GET", "/articles/{id}", url, root_ctx
            ) as ctx:
                sql = "SELECT id, title, price_cents, stock FROM articles WHERE id = $1"
                builder.query("article-service", "SELECT", "articles", sql, ctx)
                # Recommendations are owned by another team: a span-level `team` overrides the resource's.
                extra = {"team": "recommendations", "recommendations.count": 8}
                with builder.span(
                    "article-service", "recommendations.compute", SpanKind.INTERNAL, ctx, extra
                ):
                    builder.clock.advance_ms(1.0, 12.0, rng)

        elif flow == "cart":
            url = f"/carts/{user_id}/items"
            with builder.http_call(
                "shop-backend", "cart-service", "POST", "/carts/{user}/items", url, root_ctx
            ) as ctx:
                sql = "INSERT INTO cart_items (cart_id, article_id, quantity) VALUES ($1, $2, $3)"
                builder.query("cart-service", "INSERT", "cart_items", sql, ctx)
                # Promotions are run by marketing, inside the cart service.
                extra = {
                    "team": "marketing",
                    "promotion.code": rng.choice(["SPRING10", "FREESHIP"]),
                }
                with builder.span("cart-service", "promotions.apply", SpanKind.INTERNAL, ctx, extra):
                    builder.clock.advance_ms(0.2, 2.0, rng)

        else:
            url = f"/carts/{user_id}"
            with builder.http_call(
                "shop-backend", "cart-service", "GET", "/carts/{user}", url, root_ctx
            ) as ctx:
                sql = "SELECT article_id, quantity FROM cart_items WHERE cart_id = $1"
                builder.query("cart-service", "SELECT", "cart_items", sql, ctx)
            status = 502 if rng.random() < 0.1 else 200
            payment = {"payment.method": rng.choice(["card", "paypal"])}
            pay = "/v1/payments"
            with builder.http_call(
                "shop-backend", "billing-service", "POST", pay, pay, root_ctx, status, payment
            ) as ctx:
                sql = "INSERT INTO payments (order_id, amount_cents, currency) VALUES ($1, $2, $3)"
                builder.query("billing-service", "INSERT", "payments", sql, ctx)
                # Fraud screening belongs to the risk team although it runs in billing-service.
                extra = {"team": "risk", "fraud.score": round(rng.random(), 3)}
                screening = builder.span("billing-service", "fraud.screen", SpanKind.INTERNAL, ctx, extra)
                with screening as (fraud, _):
                    builder.clock.advance_ms(2.0, 20.0, rng)
                    if status >= 500:
                        error = {
                            "exception.type": "TimeoutError",
                            "exception.message": "risk model did not answer",
                        }
                        fraud.add_event("exception", error, timestamp=builder.clock.now_ns)

        root.set_attribute("http.response.status_code", status)
        if status >= 500:
            root.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))


class _NoShutdown(SpanExporter):
    """Lets several BatchSpanProcessors share one exporter that is shut down once, by its owner."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export(spans)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def make_providers(endpoint: str, tenant: str | None) -> tuple[dict[str, TracerProvider], CountingExporter]:
    headers = {ORG_ID_HEADER: tenant} if tenant else None
    exporter = CountingExporter(OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=10))
    providers: dict[str, TracerProvider] = {}
    for service in SERVICES:
        resource = Resource.create(
            {
                "service.name": service.name,
                "service.namespace": "shop",
                "service.version": service.version,
                "deployment.environment.name": "production",
                "k8s.namespace.name": service.namespace,
                "k8s.pod.name": f"{service.name}-7d9f8b6c5-{zlib.crc32(service.name.encode()) % 100000:05d}",
                "team": service.team,
            }
        )
        provider = TracerProvider(resource=resource)
        # One exporter shared by all providers: it is stateless per request and counts for them all.
        # Shutting the providers down would shut it down several times, so it is shut down once, below.
        provider.add_span_processor(BatchSpanProcessor(_NoShutdown(exporter)))
        providers[service.name] = provider
    return providers, exporter


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Send sample traces to the distributor over OTLP/HTTP.")
    parser.add_argument(
        "--endpoint", default=DEFAULT_ENDPOINT, help=f"OTLP/HTTP traces URL (default {DEFAULT_ENDPOINT})"
    )
    parser.add_argument(
        "--tenant",
        default=None,
        help=f"tenant id, sent as the {ORG_ID_HEADER} header (ignored unless multitenancy is enabled)",
    )
    parser.add_argument(
        "--server",
        default=None,
        help="the distributor's server port, for the usage link printed at the end "
        "(default: the endpoint's host, port 3200)",
    )
    parser.add_argument("--traces", type=int, default=20, help="number of traces to send (default 20)")
    args = parser.parse_args(argv)
    if args.server is None:
        endpoint = urlsplit(args.endpoint)
        args.server = f"{endpoint.scheme or 'http'}://{_host(endpoint.hostname or '127.0.0.1')}:3200"
    if args.traces < 1:
        parser.error("--traces must be at least 1")
    return args


def _host(hostname: str) -> str:
    return f"[{hostname}]" if ":" in hostname else hostname  # an IPv6 address, bracketed in a URL


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    providers, exporter = make_providers(args.endpoint, args.tenant)
    tracers = {
        name: provider.get_tracer(INSTRUMENTATION_SCOPE, "1.0.0") for name, provider in providers.items()
    }
    rng = random.Random()
    created = 0
    start_ns = time.time_ns() - args.traces * 1_000_000_000  # spread the traces over the last seconds
    try:
        for i in range(args.traces):
            builder = TraceBuilder(tracers, rng, start_ns + i * 1_000_000_000)
            build_trace(builder, pick_flow(i, rng), rng)
            created += builder.spans
    finally:
        flushed = all([provider.force_flush(timeout_millis=30_000) for provider in providers.values()])
        for provider in providers.values():
            provider.shutdown()
        exporter.shutdown()

    header = f"{ORG_ID_HEADER}: {args.tenant}" if args.tenant else f"no {ORG_ID_HEADER} header"
    print(f"sent {exporter.exported} of {created} spans ({args.traces} traces) to {args.endpoint}, {header}")
    if exporter.failed or not flushed:
        print(f"error: {exporter.failed} spans could not be exported", file=sys.stderr)
        return 1
    print(f"see what they were attributed to: curl {args.server.rstrip('/')}/usage_metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
