"""syncd.upstream.square: batch-retrieve requests, cursor chains and page parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from syncd.errors import UpstreamDataError, UpstreamError
from syncd.model import Page
from syncd.sync.ports import CountsSource
from syncd.timeutil import NS_PER_S
from syncd.upstream.http import RetryPolicy, make_session
from syncd.upstream.square import SquareCounts, SquareOptions, parse_count_event
from tests.fakes.square_scripted import Reply, ScriptedServer, count, run_scripted, square_error

TOKEN = "EAAAl-square-secret-token"
PATH = "/v2/inventory/counts/batch-retrieve"
SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "square-inventory.openapi.json"


def _conforms(source: SquareCounts) -> CountsSource:
    """Static conformance check: mypy rejects this if SquareCounts stops satisfying the Protocol."""
    return source


async def no_sleep(seconds: float) -> None:
    """Backoff without waiting."""


@pytest.fixture(name="session")
async def fixture_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session closed after the test."""
    session = make_session(request_timeout=5.0, connect_timeout=2.0, user_agent="syncd-test/0")
    yield session
    await session.close()


@pytest.fixture(name="default_logging")
def fixture_default_logging() -> Iterator[None]:
    """structlog's defaults (no level filter) for the test, whatever was configured before."""
    old = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.configure(**old)


def options(url: str, **overrides: Any) -> SquareOptions:
    """Options pointing at the scripted server, with fast retries."""
    values: dict[str, Any] = {
        "base_url": url,
        "access_token": TOKEN,
        "api_version": "2025-08-20",
        "states": ("IN_STOCK", "SOLD"),
        "catalog_object_ids": ("OBJ1", "OBJ2"),
        "location_ids": ("LOC1",),
        "page_limit": 2,
        "policy": RetryPolicy(max_retries=2),
    }
    values.update(overrides)
    return SquareOptions(**values)


async def collect(
    session: aiohttp.ClientSession,
    server: ScriptedServer,
    *,
    locations: list[str] | None = None,
    updated_after: str | None = None,
    **overrides: Any,
) -> list[Page]:
    """Run one cursor chain (``locations`` passed to pages()) to its end and return the pages."""
    source = SquareCounts(session, options(server.url, **overrides), sleep=no_sleep)
    return [p async for p in source.pages(location_ids=locations, updated_after=updated_after)]


def page(*counts: dict[str, Any], cursor: str | None = None, **headers: str) -> Reply:
    """A 200 batch-retrieve reply."""
    body: dict[str, Any] = {"counts": list(counts)}
    if cursor is not None:
        body["cursor"] = cursor
    return Reply(200, body, headers=dict(headers))


async def test_headers_body_and_cursor_on_the_second_page(session: aiohttp.ClientSession) -> None:
    """Page 1 sends token, Square-Version, JSON headers, filters, limit; page 2 adds the cursor."""
    script = [page(count("A"), count("B"), cursor="CUR-1"), page(count("C"))]
    async with run_scripted(script) as server:
        pages = await collect(session, server, updated_after="2025-01-01T00:00:00Z")
    assert [len(p.counts) for p in pages] == [2, 1]
    first, second = server.requests
    assert first.path == PATH
    assert first.method == "POST"
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["Square-Version"] == "2025-08-20"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Accept"] == "application/json"
    assert first.json == {
        "location_ids": ["LOC1"],
        "catalog_object_ids": ["OBJ1", "OBJ2"],
        "states": ["IN_STOCK", "SOLD"],
        "updated_after": "2025-01-01T00:00:00Z",
        "limit": 2,
    }
    assert second.json == {**first.json, "cursor": "CUR-1"}


async def test_location_argument_overrides_options_and_unset_fields_are_omitted(
    session: aiohttp.ClientSession,
) -> None:
    """pages(location_ids=...) wins; empty filters, no token and no updated_after are left out."""
    async with run_scripted([page(), page()]) as server:
        await collect(session, server, locations=["LOC9", "LOC8"])
        await collect(
            session,
            server,
            access_token=None,
            states=(),
            catalog_object_ids=(),
            location_ids=(),
        )
    with_arg, bare = server.requests
    assert with_arg.json["location_ids"] == ["LOC9", "LOC8"]
    assert "updated_after" not in with_arg.json
    assert bare.json == {"limit": 2}
    assert "Authorization" not in bare.headers


async def test_short_page_with_cursor_is_not_the_end(session: aiohttp.ClientSession) -> None:
    """A page shorter than the limit that still carries a cursor is followed."""
    script = [
        page(count("A"), count("B"), cursor="c1"),
        page(count("C"), cursor="c2"),
        page(cursor="c3"),
        page(count("D"), count("E")),
    ]
    async with run_scripted(script) as server:
        pages = await collect(session, server)
    assert [[c.catalog_object_id for c in p.counts] for p in pages] == [
        ["A", "B"],
        ["C"],
        [],
        ["D", "E"],
    ]
    assert [p.cursor for p in pages] == ["c1", "c2", "c3", None]
    assert [r.json.get("cursor") for r in server.requests] == [None, "c1", "c2", "c3"]


async def test_empty_cursor_string_ends_the_chain(session: aiohttp.ClientSession) -> None:
    """``"cursor": ""`` means the last page, like an absent cursor."""
    async with run_scripted([page(count("A"), cursor=""), page(count("B"))]) as server:
        pages = await collect(session, server)
    assert len(pages) == 1
    assert pages[0].cursor is None
    assert len(server.requests) == 1


async def test_counts_are_parsed_and_server_date_is_kept(session: aiohttp.ClientSession) -> None:
    """Rows become InventoryCount values; the Date header becomes server_date_ns."""
    row = count("A", quantity="12.50000", calculated_at="2025-01-02T03:04:05.123456789Z")
    async with run_scripted([page(row, Date="Thu, 02 Jan 2025 03:04:06 GMT")]) as server:
        (only,) = await collect(session, server)
    (c,) = only.counts
    assert (c.catalog_object_id, c.location_id, c.state) == ("A", "LOC1", "IN_STOCK")
    assert c.quantity == "12.50000"
    assert c.quantity_value == Decimal("12.5")
    assert c.calculated_at_ns % NS_PER_S == 123456789
    assert only.server_date_ns == 1735787046 * NS_PER_S
    assert only.skipped == 0


async def test_the_same_one_page_answer_gives_the_same_counts(
    session: aiohttp.ClientSession,
) -> None:
    """The same answer to the same one-page request as last time gives the very same counts
    (not parsed again: the engine knows them applied); another answer, another request or a
    chain of several pages is parsed as usual."""
    a, b = count("A", calculated_at="2025-01-02T03:04:05Z"), count("B")
    replies = [
        page(a, Date="Thu, 02 Jan 2025 03:04:06 GMT"),
        page(a, Date="Thu, 02 Jan 2025 03:05:06 GMT"),
        page(a, b),
        page(a, b),
        page(a, b),
        page(a, cursor="c1"),
        page(b),
        page(a, cursor="c1"),
        page(b),
    ]
    async with run_scripted(replies) as server:
        source = SquareCounts(session, options(server.url), sleep=no_sleep)

        async def chain(after: str = "2025-01-01T00:00:00Z") -> list[Page]:
            return [p async for p in source.pages(location_ids=None, updated_after=after)]

        [first], [again] = await chain(), await chain()
        assert again.counts is first.counts
        assert again.server_date_ns == first.server_date_ns + 60 * NS_PER_S
        [changed] = await chain()
        assert changed.counts is not first.counts
        assert [c.catalog_object_id for c in changed.counts] == ["A", "B"]
        [other_request] = await chain(after="2025-01-01T00:00:01Z")
        assert other_request.counts is not changed.counts
        assert other_request.counts == changed.counts
        [same] = await chain(after="2025-01-01T00:00:01Z")
        assert same.counts is other_request.counts
        one, two = await chain()
        three, four = await chain()
        assert one.counts == three.counts
        assert one.counts is not three.counts
        assert four.counts is not two.counts


async def test_estimated_rows_are_skipped_and_counted(session: aiohttp.ClientSession) -> None:
    """Counts with is_estimated true are dropped and reported in Page.skipped."""
    rows = [
        count("A", is_estimated=False),
        count("B", is_estimated=True),
        count("C"),
        count("D", is_estimated=True, quantity="n/a"),
    ]
    async with run_scripted([page(*rows)]) as server:
        (only,) = await collect(session, server)
    assert [c.catalog_object_id for c in only.counts] == ["A", "C"]
    assert only.skipped == 2


@pytest.mark.parametrize(
    ("row", "where"),
    [
        (count("A", quantity="twelve"), "counts[1].quantity"),
        (count("A", quantity=12), "counts[1].quantity"),
        ({k: v for k, v in count("A").items() if k != "location_id"}, "counts[1].location_id"),
        (count("A", calculated_at="yesterday"), "counts[1].calculated_at"),
        (count("A", is_estimated="yes"), "counts[1].is_estimated"),
        ("not-an-object", "counts[1]"),
    ],
)
async def test_malformed_row_is_a_data_error_naming_field_and_index(
    session: aiohttp.ClientSession, row: Any, where: str
) -> None:
    """A bad row raises UpstreamDataError with the field and index, never KeyError/TypeError."""
    async with run_scripted([page(count("OK"), row)]) as server:
        with pytest.raises(UpstreamDataError) as caught:
            await collect(session, server)
    assert caught.value.context["field"] == where
    assert caught.value.context["index"] == 1
    assert where in caught.value.message


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([count("A")], "$"),
        ({"counts": {"A": 1}}, "counts"),
        ({"counts": [], "cursor": 5}, "cursor"),
    ],
)
async def test_malformed_page_shape_is_a_data_error(
    session: aiohttp.ClientSession, body: Any, where: str
) -> None:
    """A body that is not an object, counts that are not a list, or a non-string cursor."""
    async with run_scripted([Reply(200, body)]) as server:
        with pytest.raises(UpstreamDataError) as caught:
            await collect(session, server)
    assert caught.value.context["field"] == where


async def test_bad_json_page_is_a_data_error(session: aiohttp.ClientSession) -> None:
    """A 200 with a truncated JSON body fails as UpstreamDataError without retrying."""
    async with run_scripted([Reply(200, raw=b'{"counts": [')]) as server:
        with pytest.raises(UpstreamDataError):
            await collect(session, server)
    assert len(server.requests) == 1


async def test_errors_array_on_200_is_a_data_error(session: aiohttp.ClientSession) -> None:
    """A 200 whose ``errors`` array is non-empty carries those vendor errors."""
    body = {"counts": [count("A")], **square_error("INTERNAL_SERVER_ERROR", category="API_ERROR")}
    async with run_scripted([Reply(200, body)]) as server:
        with pytest.raises(UpstreamDataError) as caught:
            await collect(session, server)
    assert caught.value.vendor_errors[0]["code"] == "INTERNAL_SERVER_ERROR"


async def test_empty_errors_array_and_missing_counts_are_fine(
    session: aiohttp.ClientSession,
) -> None:
    """``errors: []`` is not an error, and an absent ``counts`` is an empty page."""
    async with run_scripted([Reply(200, {"errors": []})]) as server:
        (only,) = await collect(session, server)
    assert only.counts == ()
    assert only.cursor is None


async def test_invalid_cursor_is_flagged_for_a_chain_restart(
    session: aiohttp.ClientSession,
) -> None:
    """A 400 INVALID_CURSOR on page 2 raises UpstreamError with cursor_invalid=True, not retried."""
    stale = Reply(400, square_error("INVALID_CURSOR", detail="cursor expired", field="cursor"))
    async with run_scripted([page(count("A"), cursor="old"), stale]) as server:
        source = SquareCounts(session, options(server.url), sleep=no_sleep)
        chain = source.pages(location_ids=None, updated_after=None)
        first = await anext(chain)
        with pytest.raises(UpstreamError) as caught:
            await anext(chain)
    assert first.cursor == "old"
    err = caught.value
    assert err.context["cursor_invalid"] is True
    assert err.status == 400
    assert err.retryable is False
    assert err.vendor_errors[0]["code"] == "INVALID_CURSOR"
    assert len(server.requests) == 2


async def test_other_400_is_not_flagged_as_cursor_invalid(session: aiohttp.ClientSession) -> None:
    """A 400 for another reason keeps the vendor hint and no cursor_invalid flag."""
    body = square_error("INVALID_ENUM_VALUE", detail="bad state", field="states[0]")
    async with run_scripted([Reply(400, body)]) as server:
        with pytest.raises(UpstreamError) as caught:
            await collect(session, server)
    assert "cursor_invalid" not in caught.value.context
    assert caught.value.hint == "bad state (field: states[0])"


async def test_cursor_that_does_not_advance_is_a_data_error(
    session: aiohttp.ClientSession,
) -> None:
    """The same cursor handed back twice would loop forever; it is reported instead."""
    async with run_scripted([page(cursor="same"), page(cursor="same")]) as server:
        with pytest.raises(UpstreamDataError) as caught:
            await collect(session, server)
    assert caught.value.context["field"] == "cursor"


@pytest.mark.usefixtures("default_logging")
async def test_retries_then_pages_and_token_never_logged(session: aiohttp.ClientSession) -> None:
    """Retries and pages are logged (pages at debug); a 401's error and the logs omit the token."""
    script = [Reply(503, {}), page(count("A"), cursor="c1"), Reply(action="reset"), page()]
    async with run_scripted(script) as server:
        with capture_logs() as logs:
            pages = await collect(session, server)
        async with run_scripted([Reply(401, square_error("UNAUTHORIZED"))]) as denied:
            with capture_logs() as denied_logs, pytest.raises(UpstreamError) as caught:
                await collect(session, denied)
    assert len(pages) == 2
    events = [e["event"] for e in logs]
    assert events == ["upstream_retry", "upstream_page", "upstream_retry", "upstream_page"]
    page_event = logs[1]
    assert page_event["op"] == "square.batch_retrieve_counts"
    assert page_event["rows"] == 1
    assert page_event["has_cursor"] is True
    assert page_event["duration_ms"] >= 0
    assert page_event["log_level"] == "debug"
    assert caught.value.hint is not None
    assert "square.access_token" in caught.value.hint
    everything = repr(logs) + repr(denied_logs) + repr(caught.value.fields()) + str(caught.value)
    assert TOKEN not in everything


def test_options_repr_hides_the_token() -> None:
    """SquareOptions' repr (e.g. in a config dump or traceback) never shows the access token."""
    text = repr(options("http://127.0.0.1:1"))
    assert TOKEN not in text
    assert "2025-08-20" in text


async def test_conformance_helper_returns_a_counts_source() -> None:
    """SquareCounts is usable wherever the engine expects a CountsSource."""
    session = make_session(request_timeout=1.0, connect_timeout=1.0, user_agent="syncd-test/0")
    try:
        source: CountsSource = _conforms(SquareCounts(session, options("http://127.0.0.1:1")))
        assert callable(source.pages)
    finally:
        await session.close()


# ---- inventory.count.updated bodies (the webhook fast path) ------------------------------------


def _spec_event() -> dict[str, Any]:
    """The example ``inventory.count.updated`` event of Square's own OpenAPI spec."""
    spec = orjson.loads(SPEC.read_bytes())
    schemas = spec["components"]["schemas"]
    [example] = [
        s["example"]
        for s in schemas.values()
        if isinstance(s.get("example"), dict)
        and s["example"].get("type") == "inventory.count.updated"
    ]
    return dict(example)


def test_count_event_of_the_spec_parses_like_a_page() -> None:
    """The spec's example event yields its one count, in the same shape batch-retrieve's do."""
    [parsed] = parse_count_event(_spec_event())
    assert (parsed.catalog_object_id, parsed.location_id, parsed.state) == (
        "FGQ5JJWT2PYTHF35CKZ2DSKP",
        "YYQR03DGCTXA4",
        "IN_STOCK",
    )
    assert (parsed.quantity, parsed.calculated_at) == ("10", "2019-10-29T18:38:45.10296Z")


def test_count_event_skips_estimated_counts() -> None:
    event = _spec_event()
    [first] = event["data"]["object"]["inventory_counts"]
    event["data"]["object"]["inventory_counts"] = [
        {**first, "is_estimated": True},
        {**first, "state": "WASTE"},
    ]
    assert [c.state for c in parse_count_event(event)] == ["WASTE"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("data"), "data.object.inventory_counts"),
        (
            lambda e: e["data"].update(object={"inventory_counts": "x"}),
            "data.object.inventory_counts",
        ),
        (
            lambda e: e["data"]["object"]["inventory_counts"][0].update(quantity="many"),
            "data.object.inventory_counts[0].quantity",
        ),
        (
            lambda e: e["data"]["object"]["inventory_counts"][0].pop("location_id"),
            "data.object.inventory_counts[0].location_id",
        ),
    ],
)
def test_count_event_errors_name_the_field(mutate: Any, field: str) -> None:
    event = _spec_event()
    mutate(event)
    with pytest.raises(UpstreamDataError) as caught:
        parse_count_event(event)
    assert caught.value.context["field"] == field
    assert caught.value.op == "square.webhook_counts"


def test_count_event_that_is_not_an_object_is_a_data_error() -> None:
    """The web layer answers 400 for a body that is not JSON; what reaches the parser decoded
    but of the wrong shape is a data error naming the field it looked for."""
    with pytest.raises(UpstreamDataError) as caught:
        parse_count_event(["not", "an", "event"])
    assert caught.value.context["field"] == "data.object.inventory_counts"
