"""What the Usage Attribution API refuses, and why. The HTTP adapter chooses the status of each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distributor.common.errors import DistributorError

if TYPE_CHECKING:
    from distributor.attribution.keys import RateLimitWindow


class AttributionError(DistributorError):
    """A request the Usage Attribution API does not answer with usage."""


class InvalidParameter(AttributionError):
    """A query parameter at fault: its name, and what is wrong with its value."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem


class Forbidden(AttributionError):
    """No key pair with the usage_read scope. One message whatever is wrong, so that a caller learns
    nothing about which keys or orgs exist."""

    def __init__(self) -> None:
        super().__init__("Forbidden")


class RateLimited(AttributionError):
    """The key pair used every request of its current window."""

    def __init__(self, window: RateLimitWindow) -> None:
        super().__init__("Too many requests")
        self.window = window


class AuthFailuresLimited(RateLimited):
    """The client address failed to authenticate as often as its current window allows."""
