"""Retry delays: exponential backoff with full jitter, and ``Retry-After`` parsing. Pure functions."""

from __future__ import annotations

import random
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from syncd.timeutil import NS_PER_S, now_ns


def full_jitter(
    attempt: int,
    *,
    initial: float,
    factor: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number ``attempt`` (0-based): uniform in [0, min(cap, initial * factor**attempt)].

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads retries of many clients
    so they do not hammer a recovering upstream in lockstep.
    """
    ceiling = min(cap, initial * (factor ** min(attempt, 64)))
    return ceiling * rand()


def parse_retry_after(value: str | None, *, now: int | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = (now if now is not None else now_ns()) / NS_PER_S
    return max(0.0, min(when.timestamp() - current, 86_400.0))
