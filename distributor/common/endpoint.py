"""A listen address: host and port."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """`host:port`, `[v6]:port` or `:port` (all interfaces); port 0 picks a free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"invalid listen address {text!r} (expected host:port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {text!r}") from None
    elif ":" in host:
        raise ValueError(f"invalid listen address {text!r} (write IPv6 addresses as [addr]:port)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {text!r} (expected 0-65535)")
    return Endpoint(host or "0.0.0.0", int(port_text))
