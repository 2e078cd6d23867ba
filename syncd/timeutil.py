"""Time: RFC 3339 parsing to exact integer nanoseconds, formatting, and the clock.

Upstream timestamps carry up to nanosecond precision and any UTC offset. Comparing them as strings is wrong
("...Z" vs "...+00:00"), and ``datetime`` drops nanoseconds, so values are compared as integer ns since the
epoch.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC

# ASCII digits only (``\d`` would take any Unicode digit, and int() reads them) and nothing after
# the offset (``$`` would allow a trailing newline): such text is not RFC 3339 (issue 6).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
NS_PER_S = 1_000_000_000


class TimestampError(ValueError):
    """Not an RFC 3339 timestamp."""


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm; no datetime)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


_DAYS: dict[str, int] = {}
"""Memo of ``parse_ns``: a timestamp's first 10 characters (``YYYY-MM-DD``, shape already checked)
-> the seconds since the epoch of that day, once the date was checked. A sync reads counts of few
distinct days (a page of 1,000 upstream counts spans a day or two, but hundreds of minutes: a memo
per minute, as before, missed most of the time on a first sync), so most calls skip the calendar
arithmetic."""
_DAYS_MAX = 4096
_CLOCK = {f"{h:02d}:{m:02d}": h * 3600 + m * 60 for h in range(24) for m in range(60)}
"""Every valid ``HH:MM`` -> its seconds into the day: one lookup checks and converts both."""
_SECONDS = {f"{s:02d}": s for s in range(61)}
_FRAC_SCALE = tuple(10 ** (9 - digits) for digits in range(10))


def _day_seconds(text: str, m: re.Match[str]) -> int:
    """Seconds since the epoch of the day ``m`` names (UTC, before the offset), checked."""
    y, mo, d = m.group(1, 2, 3)
    year, month, day = int(y), int(mo), int(d)
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        raise TimestampError(f"not a valid date/time: {text!r}")
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        raise TimestampError(f"not a valid date/time: {text!r}")
    return _days_from_civil(year, month, day) * 86400


def parse_ns(text: str) -> int:
    """Parse an RFC 3339 timestamp into integer nanoseconds since the Unix epoch (UTC).

    Exact to the nanosecond; a leap second (``:60``) is read as the last instant of ``:59``. This runs
    for every count synced, so it does integer arithmetic instead of building datetimes, and the
    date comes from a memo (``_DAYS``).
    """
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise TimestampError(f"not an RFC 3339 timestamp: {text!r}")
    prefix = text[:10]
    day = _DAYS.get(prefix)
    if day is None:
        day = _day_seconds(text, m)
        if len(_DAYS) >= _DAYS_MAX:
            _DAYS.clear()
        _DAYS[prefix] = day
    # The regex fixed where HH:MM and SS are (the date before them has a fixed width).
    clock, second = _CLOCK.get(text[11:16]), _SECONDS.get(text[17:19])
    if clock is None or second is None:
        raise TimestampError(f"not a valid date/time: {text!r}")
    minutes = day + clock
    frac, offset = m.group(7, 8)
    if second == 60:  # the last instant of :59, whatever the fraction
        ns = (minutes + 60) * NS_PER_S - 1
    else:
        ns = (minutes + second) * NS_PER_S + (int(frac) * _FRAC_SCALE[len(frac)] if frac else 0)
    if offset not in ("Z", "z"):
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            raise TimestampError(f"bad UTC offset in {text!r}")
        ns -= (1 if offset[0] == "+" else -1) * (oh * 3600 + om * 60) * NS_PER_S
    return ns


@functools.lru_cache(maxsize=8192)
def parse_stored_ns(text: str) -> int:
    """``parse_ns`` for a timestamp read again and again, as a partition's stored watermark and
    last success are on every pass of its source (memoised: an idle pass parses none anew).

    Sized for many sources: each pass reads about three instants per partition and two of its
    OAuth token, and writes new ones, so 200 sources of 4 locations polled every 60 s need some
    3,000 entries alive between a source's passes. 1,024 was cycled through before a source
    came back (every read a miss); 8,192 entries take about 1.6 MB (measured)."""
    return parse_ns(text)


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01 (the inverse of ``_days_from_civil``)."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


# The instants RFC 3339 can write in UTC: years 0000 to 9999 (to the microsecond format_ns keeps).
MIN_NS = _days_from_civil(0, 1, 1) * 86400 * NS_PER_S
MAX_NS = _days_from_civil(10000, 1, 1) * 86400 * NS_PER_S - 1000


def format_ns(ns: int) -> str:
    """Format integer ns since the epoch as RFC 3339 UTC with microseconds, e.g. 2026-01-02T03:04:05.123456Z.

    Sub-microsecond digits are truncated towards the past, so a formatted watermark never lies after the
    instant it came from. Total: the year always has four digits, and an instant outside years
    0000-9999 is written as the nearest one inside (an upstream may send any year, and the overlap or
    a retention cutoff subtracted from it must still format; issue 6), so the text always parses.
    """
    global _last_second
    seconds, rem = divmod(min(max(ns, MIN_NS), MAX_NS), NS_PER_S)
    last = _last_second  # one tuple: read whole, whatever thread formats too
    if last[0] == seconds:
        return f"{last[1]}.{rem // 1000:06d}Z"
    days, secs = divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(secs, 3600)
    minute, second = divmod(rest, 60)
    prefix = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    _last_second = (seconds, prefix)
    return f"{prefix}.{rem // 1000:06d}Z"


# The second format_ns formatted last and its text up to the seconds: most instants formatted in a
# row fall in the same second (every webhook stamps its receipt; issue 13).
_last_second: tuple[int, str] = (MIN_NS // NS_PER_S - 1, "")  # no second yet


def now_ns() -> int:
    """Wall-clock time in ns since the epoch."""
    return time.time_ns()


def now_rfc3339() -> str:
    """Wall-clock time as RFC 3339 UTC."""
    return format_ns(now_ns())


def parse_http_date_ns(value: str | None) -> int | None:
    """Parse an HTTP ``Date`` header (RFC 9110 IMF-fixdate) into ns, or None if absent or unparsable.

    Memoised (``_http_date_ns``): the header changes once a second, and every response of that
    second carries the same text."""
    if not value:
        return None
    return _http_date_ns(value)


@functools.lru_cache(maxsize=64)
def _http_date_ns(value: str) -> int | None:
    from email.utils import parsedate_to_datetime

    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * NS_PER_S
