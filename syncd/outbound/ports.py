"""What the deliverer needs from an HTTP endpoint (the port), and what an attempt answers.

``http_target`` implements it with aiohttp; the deliverer core knows nothing of HTTP clients, so
its tests and the daemon share one loop of logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Answer:
    """The endpoint answered: its status, ``Retry-After`` in seconds (None if absent or
    unreadable), and the start of its body for the log."""

    status: int
    retry_after: float | None = None
    detail: str = ""


class AttemptFailed(Exception):
    """No answer: ``reason`` is ``timeout`` or ``connection`` (refused, reset, DNS, TLS)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Endpoint(Protocol):
    """One outbound HTTP endpoint; one request at a time."""

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` with ``headers``; the answer, or AttemptFailed without one."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        ...
