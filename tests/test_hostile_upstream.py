"""Hostile upstream responses (issue 6): quantities like "1e9999", "NaN", "-0" or 30-digit decimals,
timestamps with odd offsets, precision and years. Each value is either stored exactly as sent or
rejected with a logged reason; a rejected page fails its pass cleanly (watermark and mirror
unchanged), the daemon keeps running, and it recovers once the upstream is fixed."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from syncd import timeutil
from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.model import InvalidCount, InventoryCount, parse_quantity
from syncd.store import Store
from syncd.store import counts as counts_store
from syncd.timeutil import MAX_NS, MIN_NS, NS_PER_S, TimestampError, format_ns, parse_ns
from tests.conftest import running_daemon
from tests.helpers import assert_log_invariants, mirror
from tests.soak.report import PropertyRun

DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


# --- values --------------------------------------------------------------------------------------

quantities = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[+-]?[0-9]{0,28}(\.[0-9]{0,10})?", fullmatch=True),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.sampled_from(
        [
            "1e9999",
            "NaN",
            "nan",
            "Infinity",
            "-Infinity",
            "-0",
            "+0",
            "0.",
            ".5",
            "1" * 30,
            "0." + "0" * 29 + "1",
            "12345678901234567890123.45",
            "\u0665",
            "\uff15",
            "5\n",
            " 5",
            "5 ",
            "1_000",
            "0x10",
            "1,5",
            "--1",
            "+-1",
            "",
            ".",
            "1e3",
        ]
    ),
)


@pytest.mark.property
def test_quantity_is_a_plain_decimal_or_refused() -> None:
    """Property: a quantity is accepted only as an ASCII decimal string of at most 26 characters
    (no exponent, NaN, Infinity, other scripts' digits, whitespace or separators), and then its
    value is exactly the Decimal of that text; anything else is InvalidCount naming the field."""
    run = PropertyRun("upstream quantities (hypothesis)")

    @given(text=quantities)
    @example(text="1" * 26)
    def one(text: str) -> None:
        run.count()
        check_quantity(text)

    run.run(one)
    run.record()


def check_quantity(text: str) -> None:
    plain = DECIMAL.fullmatch(text) is not None and len(text) <= 26
    try:
        value = parse_quantity(text)
    except InvalidCount as exc:
        reason = str(exc)
        assert not plain, text
        assert reason.startswith("quantity ")
        return
    assert plain, text
    assert text.isascii()
    assert value.is_finite()
    assert value == Decimal(text)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[str, int | None]:
    """RFC 3339-shaped text with any year, fraction (0-12 digits), offset and separator, plus the
    instant it names by an independent computation (None where it is not valid RFC 3339)."""
    year = draw(st.integers(0, 9999))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = (
        draw(st.integers(0, 25)),
        draw(st.integers(0, 61)),
        draw(st.integers(0, 61)),
    )
    digits = draw(st.integers(0, 12))
    frac = draw(st.text(alphabet="0123456789", min_size=digits, max_size=digits))
    sign = draw(st.sampled_from("+-"))
    oh, om = draw(st.integers(0, 25)), draw(st.integers(0, 61))
    zone = draw(st.sampled_from(["Z", "z", f"{sign}{oh:02d}:{om:02d}"]))
    sep = draw(st.sampled_from(["T", "t", " ", "_"]))
    text = (
        f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}"
        + (f".{frac}" if frac else "")
        + zone
    )
    ns: int | None = None
    try:
        if sep != "_" and digits <= 9 and second <= 60 and oh <= 23 and om <= 59:
            base = datetime(max(year, 1), month, day, hour, minute, min(second, 59), tzinfo=UTC)
            shift = 0 if zone in ("Z", "z") else (1 if sign == "+" else -1) * (oh * 60 + om)
            epoch = datetime(1970, 1, 1, tzinfo=UTC)
            whole = int((base - epoch - timedelta(minutes=shift)).total_seconds())
            if year == 0:  # datetime has no year 0 (a leap year): the same date in year 1, less
                whole -= (366 if month <= 2 else 365) * 86400  # the days between the two
            ns = whole * NS_PER_S + (int(frac) * 10 ** (9 - digits) if frac else 0)
            if second == 60:  # a leap second reads as the last instant of :59
                ns = whole * NS_PER_S + NS_PER_S - 1
    except ValueError:
        ns = None
    return text, ns


@pytest.mark.property
def test_timestamps_parse_exactly_and_always_format_back() -> None:
    """Property: an RFC 3339 timestamp with any offset (to +/-23:59), 1-9 fractional digits, a
    lower-case t/z or a space is read as the exact instant; anything else is TimestampError. And
    whatever instant is read, format_ns writes RFC 3339 text that parses back to it (to the
    microsecond, clamped to years 0000-9999): a watermark made from it can never poison later
    passes."""
    run = PropertyRun("upstream timestamps (hypothesis)")

    @given(case=timestamps())
    @example(case=("0001-01-01T00:00:00Z", -62135596800 * NS_PER_S))
    @example(case=("9999-12-31T23:59:60.999999999-23:59", None))
    def one(case: tuple[str, int | None]) -> None:
        run.count(checks=2)
        check_timestamp(*case)

    run.run(one)
    run.record()


def check_timestamp(text: str, want: int | None) -> None:
    try:
        got = parse_ns(text)
    except TimestampError:
        assert want is None, text
        return
    if want is not None:
        assert got == want, text
    written = format_ns(got)
    assert re.fullmatch(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z", written
    ), written
    assert parse_ns(written) == min(max(got, MIN_NS), MAX_NS) // 1000 * 1000


def test_a_memoised_day_still_checks_the_rest_of_each_timestamp() -> None:
    """parse_ns remembers each day it has read; a later timestamp of that day is still checked in
    full (time of day, fraction, offset), and a date that is not valid is never remembered: the
    memo changes the speed, not the answers."""
    minute = "2031-03-04T05:06"
    assert parse_ns(f"{minute}:07.5Z") - parse_ns(f"{minute}:00Z") == 7_500_000_000
    assert parse_ns(f"{minute}:60.25Z") == parse_ns(f"{minute}:59.999999999Z")
    assert parse_ns(f"{minute}:00+01:30") == parse_ns(f"{minute}:00Z") - 5400 * NS_PER_S
    assert parse_ns("2031-03-04T23:59:59Z") - parse_ns("2031-03-04T00:00:00Z") == 86399 * NS_PER_S
    for bad in (
        f"{minute}:61Z",
        f"{minute}:00+24:00",
        f"{minute}:00+01:60",
        f"{minute}:00",
        "2031-03-04T24:00:00Z",
        "2031-03-04T05:60:00Z",
    ):
        with pytest.raises(TimestampError):
            parse_ns(bad)
    for _ in range(2):  # the second time would hit the memo if the first had filled it
        with pytest.raises(TimestampError):
            parse_ns("2031-02-29T00:00:00Z")
    assert timeutil._DAYS.get("2031-02-29") is None


@pytest.mark.property
def test_any_text_is_read_as_an_instant_or_refused() -> None:
    """Property: arbitrary text never crashes the parser, and only ASCII RFC 3339 is accepted
    (regression: other scripts' digits and a trailing newline used to pass the pattern)."""
    run = PropertyRun("upstream timestamp text (hypothesis)")

    @given(text=st.text(max_size=40))
    @example(text="2026-01-01T00:00:00Z\n")
    @example(text="\uff12\uff10\uff12\uff16-01-01T00:00:00Z")  # fullwidth digits
    @example(text="2026-01-01T00:00:00.\u0661Z")  # an Arabic-Indic digit
    def one(text: str) -> None:
        run.count()
        check_text(text)

    run.run(one)
    run.record()


def check_text(text: str) -> None:
    try:
        parse_ns(text)
    except TimestampError:
        return
    assert text.isascii()
    assert "\n" not in text


# --- stored exactly ------------------------------------------------------------------------------

accepted_quantities = st.sampled_from(
    [
        "-0",
        "+0",
        "0.",
        ".5",
        "-.5",
        "1" * 26,
        "-" + "9" * 25,
        "0." + "0" * 24,
        "12345678901234567890.12345",
        "007",
    ]
)
accepted_times = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "0000-06-01T00:00:00+00:00",
        "2026-01-01t00:00:00.1z",
        "2026-01-01 00:00:00+14:00",
        "2026-01-01T00:00:00.123456789-23:59",
        "2016-12-31T23:59:60Z",
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:60.999999999-23:59",
        "1969-12-31T23:59:59.999999999+00:00",
        "2026-06-30T12:00:00.5-00:00",
    ]
)
ids = st.text(min_size=1, max_size=100).filter(lambda s: "\x00" not in s)


@pytest.mark.property
def test_odd_but_valid_values_are_stored_exactly() -> None:
    """Property: counts with odd but valid quantities and timestamps (and any unicode id) are
    stored exactly as sent, logged once, replay to the mirror, and applying the page again logs
    nothing."""
    run = PropertyRun("upstream values stored exactly (hypothesis)")

    @settings(deadline=None)
    @given(
        rows=st.lists(st.tuples(ids, accepted_quantities, accepted_times), min_size=1, max_size=8)
    )
    def one(rows: list[tuple[str, str, str]]) -> None:
        run.count(checks=4)
        check_stored_exactly(rows)

    run.run(one)
    run.record()


def check_stored_exactly(rows: list[tuple[str, str, str]]) -> None:
    page = [
        InventoryCount.from_api(
            {
                "catalog_object_id": obj,
                "location_id": "L1",
                "state": "IN_STOCK",
                "catalog_object_type": "ITEM_VARIATION",
                "quantity": q,
                "calculated_at": t,
            }
        )
        for obj, q, t in rows
    ]
    newest = {}
    for c in page:  # the newest per key wins; on a tie the later row
        if c.catalog_object_id not in newest or (
            c.calculated_at_ns >= newest[c.catalog_object_id].calculated_at_ns
        ):
            newest[c.catalog_object_id] = c

    async def run(db: Path) -> None:
        store = await Store.open(db)
        try:
            for expected_changes in (len(newest), 0):
                result = await store.write(
                    lambda conn: counts_store.apply_page(
                        conn, "square", page, pass_id=1, recorded_at=format_ns(0)
                    )
                )
                assert result.changes == expected_changes
        finally:
            await store.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "syncd.db"
        asyncio.run(run(db))
        stored = mirror(db)
        assert {k[0]: (v["quantity"], v["calculated_at"]) for k, v in stored.items()} == {
            obj: (c.quantity, c.calculated_at) for obj, c in newest.items()
        }
        assert_log_invariants(db)


# --- a daemon against a hostile upstream ---------------------------------------------------------


@dataclass
class MutableUpstream:
    """An upstream answering every batch-retrieve with the current ``rows`` (one page, no cursor)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        return web.Response(
            body=orjson.dumps({"counts": self.rows}), content_type="application/json"
        )


@asynccontextmanager
async def mutable_upstream() -> AsyncIterator[MutableUpstream]:
    upstream = MutableUpstream()
    app = web.Application()
    app.router.add_post("/v2/inventory/counts/batch-retrieve", upstream.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        upstream.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield upstream
    finally:
        await runner.cleanup()


def row(
    obj: str, quantity: Any = "5", at: Any = "2026-01-01T00:00:00Z", **extra: Any
) -> dict[str, Any]:
    return {
        "catalog_object_id": obj,
        "location_id": "L1",
        "state": "IN_STOCK",
        "catalog_object_type": "ITEM_VARIATION",
        "quantity": quantity,
        "calculated_at": at,
        **extra,
    }


async def passes_after(daemon: Daemon, n: int) -> None:
    """Wait until ``n`` more passes have ended (ok or not)."""
    trigger = daemon.trigger
    assert trigger is not None
    target = trigger.passes + n + 1  # the pass running now may have read the old rows
    async with asyncio.timeout(10):
        while (
            trigger.passes < target or daemon.engine is None or daemon.engine.last_summary is None
        ):
            await asyncio.sleep(0.01)


def watermark(db: Path) -> str | None:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = conn.execute("SELECT watermark FROM sync_state").fetchone()
    finally:
        conn.close()
    return found[0] if found else None


REJECTED = [
    ("quantity", "1e9999"),
    ("quantity", "NaN"),
    ("quantity", "Infinity"),
    ("quantity", "1" * 30),
    ("quantity", "0." + "0" * 29 + "1"),
    ("quantity", "\u0665"),
    ("quantity", "5\n"),
    ("quantity", 5),
    ("quantity", None),
    ("calculated_at", "2026-13-01T00:00:00Z"),
    ("calculated_at", "2026-01-01T00:00:00.1234567891Z"),
    ("calculated_at", "2026-01-01T00:00:00"),
    ("calculated_at", "2026-01-01T00:00:00+24:00"),
    ("calculated_at", "\uff12\uff10\uff12\uff16-01-01T00:00:00Z"),
    ("calculated_at", 1767225600),
    ("location_id", None),
    ("catalog_object_id", "x" * 101),
    ("is_estimated", "yes"),
]


@pytest.fixture(name="fast_settings")
def fixture_fast_settings(make_settings: Callable[..., Settings]) -> Callable[[str], Settings]:
    def make(url: str) -> Settings:
        return make_settings(
            square={
                "base_url": url,
                "poll_interval": 0.02,
                "max_retries": 0,
                "retry_backoff_initial": 0.001,
                "retry_backoff_max": 0.005,
                "full_resync_interval": 0.2,
            }
        )

    return make


async def test_rejected_values_fail_passes_cleanly_and_the_daemon_recovers(
    fast_settings: Callable[[str], Settings],
) -> None:
    """Each malformed value fails the passes that read it with a logged reason naming the field
    (sync_partition_failed), the watermark and the mirror stay as they were, the daemon keeps
    running, and the first pass after the upstream is fixed succeeds and takes the fixed value."""
    async with mutable_upstream() as upstream:
        upstream.rows = [row("GOOD", "1")]
        settings = fast_settings(upstream.url)
        db = settings.database
        async with running_daemon(settings, upstream.url) as daemon:
            await passes_after(daemon, 1)
            assert mirror(db)[("GOOD", "L1", "IN_STOCK")]["quantity"] == "1"
            for n, (name, bad) in enumerate(REJECTED):
                marks = watermark(db)
                before = mirror(db)
                upstream.rows = [row("GOOD", "2"), row(f"BAD{n}", **{name: bad})]
                with capture_logs() as logs:
                    await passes_after(daemon, 2)
                failed = [e for e in logs if e["event"] == "sync_partition_failed"]
                assert failed, (name, bad)
                assert name in failed[-1]["field"], (failed[-1], name)
                assert mirror(db) == before, (name, bad)
                assert watermark(db) == marks
                engine = daemon.engine
                assert engine is not None
                assert engine.last_summary is not None
                assert not engine.last_summary.ok
                upstream.rows = [row("GOOD", str(10 + n), f"2026-01-02T00:00:{n:02d}Z")]
                with capture_logs() as logs:
                    await passes_after(daemon, 2)
                assert engine.last_summary.ok, engine.last_summary.error
                assert mirror(db)[("GOOD", "L1", "IN_STOCK")]["quantity"] == str(10 + n)
                assert not [e for e in logs if e["event"] == "sync_pass_crashed"]
            serving = daemon.ready.is_set() and not daemon.stop_event.is_set()
            assert serving
        assert_log_invariants(db)


@pytest.mark.parametrize(
    "at",
    [
        "0001-01-01T00:00:00Z",  # Go's zero time: the one value a buggy upstream is likely to send
        "0000-06-01T00:00:00Z",
        "0001-01-01T00:00:30+00:01",
        "9999-12-31T23:59:60.999999999-23:59",
        "1969-12-31T23:59:59.999999999Z",
    ],
)
async def test_extreme_years_are_stored_and_never_poison_the_watermark(
    fast_settings: Callable[[str], Settings], at: str
) -> None:
    """Regression: when a partition's only count was from year 1 (or 0), the watermark was
    formatted as "1-01-01T..." (strftime pads no year below 1000) or raised OverflowError (year
    0), and from then on every pass crashed (sync_pass_crashed) — the daemon never recovered.
    Now the value is stored exactly, the watermark is RFC 3339, and later passes (full and
    incremental) succeed and take new values."""
    async with mutable_upstream() as upstream:
        upstream.rows = [row("OLD", "3", at)]
        settings = fast_settings(upstream.url)
        db = settings.database
        with capture_logs() as logs:
            async with running_daemon(settings, upstream.url) as daemon:
                await passes_after(daemon, 3)
                assert mirror(db)[("OLD", "L1", "IN_STOCK")]["calculated_at"] == at
                mark = watermark(db)
                assert mark is not None
                parse_ns(mark)
                upstream.rows = [
                    row("OLD", "3", at),
                    row("NEW", "4", format_ns(parse_ns("2026-01-01T00:00:00Z"))),
                ]
                await passes_after(daemon, 3)
                engine = daemon.engine
                assert engine is not None
                assert engine.last_summary is not None
                assert engine.last_summary.ok, engine.last_summary.error
                assert ("NEW", "L1", "IN_STOCK") in mirror(db)
        assert not [e for e in logs if e["event"] in ("sync_pass_crashed", "task_crashed")]
        assert_log_invariants(db)
