"""Time: RFC 3339 parsing to exact integer nanoseconds, formatting, and the clock.

Upstream timestamps carry up to nanosecond precision and any UTC offset. Comparing them as strings is wrong
("...Z" vs "...+00:00"), and ``datetime`` drops nanoseconds, so values are compared as integer ns since the
epoch.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
NS_PER_S = 1_000_000_000


class TimestampError(ValueError):
    """Not an RFC 3339 timestamp."""


def parse_ns(text: str) -> int:
    """Parse an RFC 3339 timestamp into integer nanoseconds since the Unix epoch (UTC)."""
    m = _RFC3339.match(text) if isinstance(text, str) else None
    if m is None:
        raise TimestampError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    offset = m.group(8)
    try:
        if second == 60:  # leap second: clamp, as datetime cannot hold it
            second = 59
        base = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise TimestampError(f"not a valid date/time: {text!r}") from exc
    ns = int(base.timestamp()) * NS_PER_S + (int(frac.ljust(9, "0")) if frac else 0)
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        hh, mm = int(offset[1:3]), int(offset[4:6])
        if hh > 23 or mm > 59:
            raise TimestampError(f"bad UTC offset in {text!r}")
        ns -= sign * (hh * 3600 + mm * 60) * NS_PER_S
    return ns


def format_ns(ns: int) -> str:
    """Format integer ns since the epoch as RFC 3339 UTC with microseconds, e.g. 2026-01-02T03:04:05.123456Z.

    Sub-microsecond digits are truncated towards the past, so a formatted watermark never lies after the
    instant it came from.
    """
    seconds, rem = divmod(ns, NS_PER_S)
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{rem // 1000:06d}Z"


def now_ns() -> int:
    """Wall-clock time in ns since the epoch."""
    return time.time_ns()


def now_rfc3339() -> str:
    """Wall-clock time as RFC 3339 UTC."""
    return format_ns(now_ns())


def parse_http_date_ns(value: str | None) -> int | None:
    """Parse an HTTP ``Date`` header (RFC 9110 IMF-fixdate) into ns, or None if absent or unparsable."""
    if not value:
        return None
    from email.utils import parsedate_to_datetime

    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * NS_PER_S
