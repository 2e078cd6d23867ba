"""The fake Square upstream: faithful batch-retrieve semantics over a real loopback socket."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from syncd.model import InventoryCount, parse_quantity
from syncd.simulator import (
    BATCH_RETRIEVE_PATH,
    Simulator,
    SimulatorConfig,
    build_app,
    format_calculated_at,
    run_forever,
    serve,
)
from syncd.timeutil import format_ns, parse_ns

Key = tuple[str, str, str]
MakeServer = Callable[..., Awaitable[tuple[Simulator, TestClient[Any, Any]]]]
FROZEN_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def key(row: dict[str, str]) -> Key:
    return (row["catalog_object_id"], row["location_id"], row["state"])


def by_key(rows: list[dict[str, str]]) -> dict[Key, dict[str, str]]:
    return {key(r): r for r in rows}


@pytest.fixture(name="make_server")
async def fixture_make_server() -> AsyncIterator[MakeServer]:
    """Factory: a Simulator behind a real server on 127.0.0.1, port 0; all stop at teardown."""
    clients: list[TestClient[Any, Any]] = []

    async def make(
        config: SimulatorConfig | None = None, **kwargs: Any
    ) -> tuple[Simulator, TestClient[Any, Any]]:
        sim = Simulator(config or SimulatorConfig(), **kwargs)
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(sim), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return sim, client

    yield make
    for client in clients:
        await client.close()


async def call(
    client: TestClient[Any, Any], body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = await client.post(BATCH_RETRIEVE_PATH, data=data, headers=headers)
    return resp.status, orjson.loads(await resp.read())


async def chain(
    client: TestClient[Any, Any],
    body: dict[str, Any],
    between: Callable[[], None] | None = None,
) -> tuple[list[dict[str, str]], list[tuple[int, bool]]]:
    """Follow one cursor chain; returns all rows and (rows, had_cursor) per page."""
    rows: list[dict[str, str]] = []
    pages: list[tuple[int, bool]] = []
    cursor = None
    while True:
        status, out = await call(client, {**body, "cursor": cursor})
        assert status == 200, out
        page = out.get("counts", [])
        rows += page
        cursor = out.get("cursor")
        pages.append((len(page), cursor is not None))
        if cursor is None:
            return rows, pages
        assert len(pages) < 10_000, "chain does not end"
        if between is not None:
            between()


def errors_of(out: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(e["category"], e["code"], e.get("field")) for e in out["errors"]]


@pytest.mark.parametrize("short_pages", [False, True])
async def test_full_listing_across_pages_equals_snapshot(
    make_server: MakeServer, short_pages: bool
) -> None:
    """Following the cursor chain yields every count exactly once, equal to the snapshot; only the
    last page lacks a cursor, and with short_pages some non-final pages are short (even empty)."""
    config = SimulatorConfig(
        locations=3, items=40, states=("IN_STOCK", "WASTE"), short_pages=short_pages, seed=7
    )
    sim, client = await make_server(config)
    rows, pages = await chain(client, {"limit": 7})
    assert len(rows) == len(by_key(rows)) == sim.count_total() == 240
    assert by_key(rows) == by_key(sim.snapshot())
    assert [has for _, has in pages] == [True] * (len(pages) - 1) + [False]
    short_with_cursor = [n for n, has in pages if has and n < 7]
    if short_pages:
        assert short_with_cursor
    else:
        assert not short_with_cursor
        assert len(pages) == 35  # ceil(240 / 7): the last page is not followed by an empty one


async def test_counts_are_newest_first_with_stable_ties(make_server: MakeServer) -> None:
    """Rows come newest calculated_at first; rows sharing an instant keep one stable order, also
    when the tie straddles page boundaries (none lost, none repeated)."""
    sim, client = await make_server(SimulatorConfig(items=30))
    tied = sim.mutate(6, same_instant=True)
    assert len({r["calculated_at"] for r in tied}) == 1
    rows, _ = await chain(client, {"limit": 4})
    instants = [parse_ns(r["calculated_at"]) for r in rows]
    assert instants == sorted(instants, reverse=True)
    assert {key(r) for r in rows[:6]} == {key(r) for r in tied}
    again, _ = await chain(client, {"limit": 1000})
    assert [key(r) for r in again] == [key(r) for r in rows]


async def test_counts_follow_the_schema(make_server: MakeServer) -> None:
    """Each count has the InventoryCount fields: ITEM_VARIATION, a decimal-string quantity (some
    fractional, some whole), calculated_at in RFC 3339 UTC with ms or µs; the Date header is set."""
    sim, client = await make_server(SimulatorConfig(items=200))
    sim.mutate(20)
    resp = await client.post(BATCH_RETRIEVE_PATH, data=b"{}")
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers.get("Date")
    rows = orjson.loads(await resp.read())["counts"]
    assert len(rows) == 600
    fields = {"catalog_object_id", "catalog_object_type", "state", "location_id", "quantity"}
    for row in rows:
        assert set(row) == fields | {"calculated_at"}
        assert row["catalog_object_type"] == "ITEM_VARIATION"
        parse_quantity(row["quantity"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{3}|\d{6})Z", row["calculated_at"])
        InventoryCount.from_api(row)
    quantities = [r["quantity"] for r in rows]
    assert any("." in q for q in quantities)
    assert any("." not in q for q in quantities)
    assert {len(r["calculated_at"]) for r in rows} == {24, 27}  # ms (generated) and µs (mutated)


async def test_location_filter(make_server: MakeServer) -> None:
    """location_ids restricts rows to those locations, one or several (merged newest first)."""
    sim, client = await make_server(SimulatorConfig(locations=4, items=25))
    one = sim.location_ids[:1]
    two = sim.location_ids[1:3]
    for wanted in (one, two, [*two, "NO_SUCH_LOCATION"]):
        rows, _ = await chain(client, {"location_ids": wanted, "limit": 9})
        expected = [r for r in sim.snapshot() if r["location_id"] in wanted]
        assert [key(r) for r in rows] == [key(r) for r in expected]
    rows, _ = await chain(client, {"location_ids": ["NO_SUCH_LOCATION"]})
    assert rows == []


async def test_catalog_object_filter(make_server: MakeServer) -> None:
    """catalog_object_ids restricts rows to those objects, across locations, newest first."""
    sim, client = await make_server(SimulatorConfig(locations=3, items=50))
    ids = sorted({r["catalog_object_id"] for r in sim.snapshot()})[:5]
    rows, pages = await chain(client, {"catalog_object_ids": ids, "limit": 4})
    expected = [r for r in sim.snapshot() if r["catalog_object_id"] in ids]
    assert [key(r) for r in rows] == [key(r) for r in expected]
    assert len(rows) == 15
    assert len(pages) == 4


async def test_states_filter(make_server: MakeServer) -> None:
    """states restricts rows to those InventoryStates."""
    config = SimulatorConfig(items=20, states=("IN_STOCK", "WASTE", "IN_TRANSIT"))
    sim, client = await make_server(config)
    rows, _ = await chain(client, {"states": ["WASTE", "IN_TRANSIT"], "limit": 11})
    expected = [r for r in sim.snapshot() if r["state"] in ("WASTE", "IN_TRANSIT")]
    assert [key(r) for r in rows] == [key(r) for r in expected]
    assert len(rows) == 120


async def test_filters_combine(make_server: MakeServer) -> None:
    """All filters apply together (logical AND), including updated_after."""
    config = SimulatorConfig(locations=3, items=30, states=("IN_STOCK", "WASTE"))
    sim, client = await make_server(config)
    snapshot = sim.snapshot()
    ids = sorted({r["catalog_object_id"] for r in snapshot})[:10]
    middle = sorted(parse_ns(r["calculated_at"]) for r in snapshot)[len(snapshot) // 2]
    body = {
        "catalog_object_ids": ids,
        "location_ids": sim.location_ids[:2],
        "states": ["WASTE"],
        "updated_after": format_ns(middle),
        "limit": 2,
    }
    rows, _ = await chain(client, body)
    expected = [
        r
        for r in snapshot
        if r["catalog_object_id"] in ids
        and r["location_id"] in sim.location_ids[:2]
        and r["state"] == "WASTE"
        and parse_ns(r["calculated_at"]) > middle
    ]
    assert expected
    assert [key(r) for r in rows] == [key(r) for r in expected]


async def test_updated_after_is_strictly_after_with_any_offset(make_server: MakeServer) -> None:
    """updated_after returns counts calculated strictly after it, whatever its offset or precision:
    a count exactly at that instant is left out."""
    sim, client = await make_server(SimulatorConfig(items=0))
    sim.set_count("A", "L1", "IN_STOCK", "1", "2026-01-26T02:25:33.999999Z")
    sim.set_count("B", "L1", "IN_STOCK", "2", "2026-01-26T02:25:34Z")
    sim.set_count("C", "L1", "IN_STOCK", "3", "2026-01-26T02:25:34.000001Z")
    sim.set_count("D", "L2", "IN_STOCK", "4", "2026-01-26T03:00:00.5Z")
    for same_instant in (
        "2026-01-26T02:25:34Z",
        "2026-01-25T18:25:34-08:00",
        "2026-01-26T07:55:34.000000000+05:30",
    ):
        status, out = await call(client, {"updated_after": same_instant})
        assert status == 200
        assert [r["catalog_object_id"] for r in out["counts"]] == ["D", "C"]


async def test_limit_bounds_and_default(make_server: MakeServer) -> None:
    """limit outside 1..1000 answers 400 VALUE_TOO_LOW / VALUE_TOO_HIGH on field "limit"; a
    non-integer is EXPECTED_INTEGER; without limit a page holds 1000 rows."""
    _, client = await make_server(SimulatorConfig(items=400, locations=3))
    for limit, code in ((0, "VALUE_TOO_LOW"), (-5, "VALUE_TOO_LOW"), (1001, "VALUE_TOO_HIGH")):
        status, out = await call(client, {"limit": limit})
        assert status == 400
        assert errors_of(out) == [("INVALID_REQUEST_ERROR", code, "limit")]
    for bad in ("5", 2.5, True):
        status, out = await call(client, {"limit": bad})
        assert (status, errors_of(out)) == (
            400,
            [("INVALID_REQUEST_ERROR", "EXPECTED_INTEGER", "limit")],
        )
    status, out = await call(client, {})
    assert status == 200
    assert len(out["counts"]) == 1000
    assert "cursor" in out
    status, out = await call(client, {"limit": 1000, "cursor": out["cursor"]})
    assert status == 200
    assert len(out["counts"]) == 200
    assert "cursor" not in out


async def test_max_limit_is_configurable(make_server: MakeServer) -> None:
    """max_limit lowers the accepted maximum and the default page size."""
    _, client = await make_server(SimulatorConfig(items=100, max_limit=50))
    status, out = await call(client, {"limit": 51})
    assert status == 400
    assert errors_of(out)[0][1] == "VALUE_TOO_HIGH"
    status, out = await call(client, {})
    assert status == 200
    assert len(out["counts"]) == 50


async def test_unknown_state_is_invalid_enum_value(make_server: MakeServer) -> None:
    """A states entry that is no InventoryState answers 400 INVALID_ENUM_VALUE naming the entry."""
    _, client = await make_server()
    status, out = await call(client, {"states": ["IN_STOCK", "ON_THE_MOON"]})
    assert status == 400
    assert errors_of(out) == [("INVALID_REQUEST_ERROR", "INVALID_ENUM_VALUE", "states[1]")]


async def test_untracked_states_in_filter_are_ignored(make_server: MakeServer) -> None:
    """NONE, SOLD and UNLINKED_RETURN in states are ignored: with IN_STOCK they filter as IN_STOCK
    alone (and share its cursors); alone they leave no filter at all."""
    sim, client = await make_server(SimulatorConfig(items=20, states=("IN_STOCK", "WASTE")))
    plain, _ = await chain(client, {"states": ["IN_STOCK"]})
    noisy, _ = await chain(client, {"states": ["SOLD", "IN_STOCK", "NONE"]})
    assert noisy == plain
    assert {r["state"] for r in plain} == {"IN_STOCK"}
    only_untracked, _ = await chain(client, {"states": ["UNLINKED_RETURN", "SOLD"]})
    assert len(only_untracked) == sim.count_total() == 120
    _, first = await call(client, {"states": ["IN_STOCK"], "limit": 5})
    status, _ = await call(client, {"states": ["IN_STOCK", "SOLD"], "cursor": first["cursor"]})
    assert status == 200


async def test_malformed_bodies_answer_square_errors(make_server: MakeServer) -> None:
    """Non-JSON, non-object and wrongly typed bodies answer 400 with a Square errors array; unknown
    fields are refused; null fields count as not set."""
    _, client = await make_server(SimulatorConfig(items=5))
    for raw in (b"not json", b"[]", b"", b'"x"'):
        status, out = await call(client, raw)
        assert (status, errors_of(out)) == (
            400,
            [("INVALID_REQUEST_ERROR", "EXPECTED_JSON_BODY", None)],
        )
    status, out = await call(
        client,
        {"location_ids": "L1", "catalog_object_ids": [1], "updated_after": "yesterday", "x": 1},
    )
    assert status == 400
    assert sorted(errors_of(out)) == [
        ("INVALID_REQUEST_ERROR", "EXPECTED_ARRAY", "location_ids"),
        ("INVALID_REQUEST_ERROR", "EXPECTED_STRING", "catalog_object_ids[0]"),
        ("INVALID_REQUEST_ERROR", "INVALID_TIME", "updated_after"),
        ("INVALID_REQUEST_ERROR", "UNKNOWN_BODY_PARAMETER", "x"),
    ]
    nulls = dict.fromkeys(
        ("catalog_object_ids", "location_ids", "updated_after", "cursor", "states", "limit")
    )
    status, out = await call(client, nulls)
    assert status == 200
    assert len(out["counts"]) == 15


async def test_access_token_is_required_when_configured(make_server: MakeServer) -> None:
    """With access_token set, a missing or wrong bearer token answers 401 AUTHENTICATION_ERROR /
    UNAUTHORIZED (the spec's example body); the right one is served."""
    sim, client = await make_server(SimulatorConfig(items=3, access_token="s3cret"))
    unauthorized = {
        "errors": [
            {
                "category": "AUTHENTICATION_ERROR",
                "code": "UNAUTHORIZED",
                "detail": "A general authorization error occurred.",
            }
        ]
    }
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        assert await call(client, {}, headers) == (401, unauthorized)
    status, out = await call(client, {}, {"Authorization": "Bearer s3cret"})
    assert status == 200
    assert len(out["counts"]) == 9
    assert sim.requests == 4
    assert sim.status_counts == {401: 3, 200: 1}


async def test_square_version_header_format(make_server: MakeServer) -> None:
    """A Square-Version header must read YYYY-MM-DD, else 400 INVALID_SQUARE_VERSION_FORMAT."""
    _, client = await make_server(SimulatorConfig(items=1))
    status, _ = await call(client, {}, {"Square-Version": "2025-08-20"})
    assert status == 200
    status, out = await call(client, {}, {"Square-Version": "2025-8-20"})
    assert status == 400
    assert errors_of(out)[0][1] == "INVALID_SQUARE_VERSION_FORMAT"


async def test_cursor_with_other_filters_or_garbage_is_invalid(make_server: MakeServer) -> None:
    """A cursor only continues its own query: other filters, a tampered cursor or one from another
    simulator answer 400 INVALID_CURSOR; a different limit is fine."""
    sim, client = await make_server(SimulatorConfig(items=20))
    body = {"location_ids": sim.location_ids[:1], "limit": 3}
    _, first = await call(client, body)
    cursor = first["cursor"]
    invalid = ("INVALID_REQUEST_ERROR", "INVALID_CURSOR", "cursor")
    for other in (
        {"location_ids": sim.location_ids[1:2]},
        {"location_ids": sim.location_ids[:1], "states": ["WASTE"]},
        {"location_ids": sim.location_ids[:1], "updated_after": "2020-01-01T00:00:00Z"},
        {},
    ):
        status, out = await call(client, {**other, "cursor": cursor})
        assert (status, errors_of(out)) == (400, [invalid])
    for garbage in ("nope", cursor[:-4], "e30"):
        status, out = await call(client, {**body, "cursor": garbage})
        assert (status, errors_of(out)) == (400, [invalid])
    _, other_client = await make_server(SimulatorConfig(items=20))
    status, out = await call(other_client, {**body, "cursor": cursor})
    assert (status, errors_of(out)) == (400, [invalid])
    status, out = await call(client, {**body, "limit": 10, "cursor": cursor})
    assert status == 200
    assert len(out["counts"]) == 10


async def test_expired_cursor_is_invalid(make_server: MakeServer) -> None:
    """With cursor_ttl, a cursor older than the TTL answers 400 INVALID_CURSOR; younger ones do."""
    clock = [1000.0]
    _, client = await make_server(
        SimulatorConfig(items=20, cursor_ttl=30.0), monotonic=lambda: clock[0]
    )
    _, first = await call(client, {"limit": 5})
    clock[0] += 29.0
    status, second = await call(client, {"limit": 5, "cursor": first["cursor"]})
    assert status == 200
    clock[0] += 31.0
    status, out = await call(client, {"limit": 5, "cursor": second["cursor"]})
    assert (status, errors_of(out)) == (
        400,
        [("INVALID_REQUEST_ERROR", "INVALID_CURSOR", "cursor")],
    )


async def test_mutate_then_incremental_query_returns_exactly_the_changes(
    make_server: MakeServer,
) -> None:
    """After POST /_sim/mutate, updated_after = the previous newest calculated_at returns exactly
    the mutated counts with their new values, newest first."""
    sim, client = await make_server(SimulatorConfig(items=100))
    watermark = sim.snapshot()[0]["calculated_at"]
    before = by_key(sim.snapshot())
    resp = await client.post("/_sim/mutate", json={"n": 7})
    changed = (await resp.json())["changed"]
    assert len(changed) == 7
    for row in changed:
        assert row["quantity"] != before[key(row)]["quantity"]
        assert parse_ns(row["calculated_at"]) > parse_ns(watermark)
    rows, _ = await chain(client, {"updated_after": watermark, "limit": 3})
    assert rows == sorted(changed, key=lambda r: parse_ns(r["calculated_at"]), reverse=True)


async def test_mutation_clock_is_strictly_monotonic() -> None:
    """Mutations get calculated_at later than any issued before, even with a stopped wall clock;
    same_instant shares one instant on request."""
    sim = Simulator(SimulatorConfig(items=50), wall_ns=lambda: FROZEN_NS)
    newest = max(parse_ns(r["calculated_at"]) for r in sim.snapshot())
    sim.set_count("FUTURE", sim.location_ids[0], "IN_STOCK", "1", format_ns(FROZEN_NS + 10**9))
    instants = [parse_ns(r["calculated_at"]) for r in sim.mutate(5)]
    assert instants == sorted(set(instants))
    assert instants[0] > FROZEN_NS + 10**9 > newest
    shared = {r["calculated_at"] for r in sim.mutate(4, same_instant=True)}
    assert len(shared) == 1
    assert parse_ns(shared.pop()) > instants[-1]


async def test_set_count_with_an_older_calculated_at(make_server: MakeServer) -> None:
    """POST /_sim/set may move a count back in time: the listing shows the older value in its place,
    and an incremental query from the old watermark does not return it."""
    sim, client = await make_server(SimulatorConfig(items=30))
    snapshot = sim.snapshot()
    watermark = snapshot[0]["calculated_at"]
    newest = snapshot[0]
    old_at = "2001-02-03T04:05:06.789-02:00"
    resp = await client.post(
        "/_sim/set",
        json={
            **{f: newest[f] for f in ("catalog_object_id", "location_id", "state")},
            "quantity": "12.5",
            "calculated_at": old_at,
        },
    )
    count = (await resp.json())["count"]
    assert count["quantity"] == "12.5"
    assert count["calculated_at"] == "2001-02-03T06:05:06.789Z"
    rows, _ = await chain(client, {"limit": 7})
    assert rows[-1] == count
    assert len(rows) == 90
    status, out = await call(client, {"updated_after": watermark})
    assert (status, out) == (200, {})
    created = sim.set_count("NEW", "ELSEWHERE", "WASTE", "-3", None, "ITEM")
    status, out = await call(client, {"location_ids": ["ELSEWHERE"]})
    assert out["counts"] == [created]
    assert created["catalog_object_type"] == "ITEM"


async def test_remove_makes_counts_vanish(make_server: MakeServer) -> None:
    """POST /_sim/remove and remove_count make counts vanish from listings and the snapshot."""
    sim, client = await make_server(SimulatorConfig(items=20))
    resp = await client.post("/_sim/remove", json={"n": 4})
    removed = (await resp.json())["removed"]
    one = sim.snapshot()[0]
    assert sim.remove_count(*key(one)) == one
    assert sim.remove_count(*key(one)) is None
    rows, _ = await chain(client, {"limit": 9})
    gone = {key(r) for r in [*removed, one]}
    assert len(gone) == 5
    assert sim.count_total() == len(rows) == 55
    assert not gone & {key(r) for r in rows}
    resp = await client.post("/_sim/remove", json={"catalog_object_id": one["catalog_object_id"]})
    assert (await resp.json()) == {"removed": []}


async def test_chain_read_during_mutations_never_repeats_a_row(make_server: MakeServer) -> None:
    """Mutations, removals and backdated set_counts between the pages of one chain never make it
    yield a key twice, and every count left untouched during the chain is yielded."""
    sim, client = await make_server(SimulatorConfig(items=100, locations=3))
    touched: set[Key] = set()
    returned_so_far: list[dict[str, str]] = []

    def churn() -> None:
        touched.update(key(r) for r in sim.mutate(4))
        touched.update(key(r) for r in sim.mutate(2, same_instant=True))
        touched.update(key(r) for r in sim.remove(1))
        victim = sim.snapshot()[-1]  # an old row, then pushed even older: must not come back
        sim.set_count(*key(victim), "7", "2000-01-01T00:00:00Z")
        touched.add(key(victim))

    start = by_key(sim.snapshot())
    rows: list[dict[str, str]] = []
    cursor = None
    while True:
        status, out = await call(client, {"limit": 6, "cursor": cursor})
        assert status == 200
        rows += out.get("counts", [])
        returned_so_far.extend(out.get("counts", []))
        cursor = out.get("cursor")
        if cursor is None:
            break
        churn()
        # Also push an already-returned row back in time, behind the cursor.
        back = returned_so_far[0]
        if sim.get(*key(back)) is not None:
            sim.set_count(*key(back), "8", "1999-01-01T00:00:00Z")
            touched.add(key(back))
    keys = [key(r) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(start) - touched <= set(keys)


async def test_heavy_churn_keeps_listings_exact_and_indexes_compact(
    make_server: MakeServer,
) -> None:
    """Thousands of changes (forward, backdated, removals, far-future instants) leave the listing
    equal to the snapshot in newest-first order, and stale index entries get compacted away."""
    sim, client = await make_server(SimulatorConfig(items=100, locations=3))
    for i in range(40):
        sim.mutate(100)
        sim.remove(1)
        victim = sim.snapshot()[i]
        sim.set_count(*key(victim), "1.25", f"2001-01-01T00:00:{i:02d}.5+01:00")
    far = sim.set_count("FAR", sim.location_ids[0], "IN_STOCK", "9", "2999-12-31T23:59:59.999Z")
    # Mixed ms/µs spellings: only value comparison is right ("...999001Z" < "...999Z" as text).
    assert parse_ns(sim.mutate(1)[0]["calculated_at"]) > parse_ns(far["calculated_at"])
    rows, _ = await chain(client, {"limit": 13})
    assert rows == sim.snapshot()
    assert len(rows) == sim.count_total() == 261
    rows, _ = await chain(client, {"location_ids": sim.location_ids[:2], "limit": 13})
    assert rows == [r for r in sim.snapshot() if r["location_id"] in sim.location_ids[:2]]
    assert rows[0]["catalog_object_id"] != "FAR"
    stats = sim.stats()
    assert isinstance(stats["index_entries"], int)
    assert stats["index_entries"] < 261 + 2 * 1024 < 40 * 102


async def test_control_routes(make_server: MakeServer) -> None:
    """GET /_sim/counts returns the snapshot, GET /_sim/stats the counters; bad control input is a
    plain 400."""
    sim, client = await make_server(SimulatorConfig(items=10))
    await call(client, {"limit": 0})
    await call(client, {})
    resp = await client.get("/_sim/counts")
    assert (await resp.json())["counts"] == sim.snapshot()
    resp = await client.get("/_sim/stats")
    stats = await resp.json()
    assert stats["requests"] == 2
    assert stats["by_status"] == {"200": 1, "400": 1}
    assert stats["counts"] == 30
    assert stats["locations"] == sim.location_ids
    for path, body in (("/_sim/mutate", {"n": -1}), ("/_sim/set", {"quantity": "x"})):
        resp = await client.post(path, json=body)
        assert resp.status == 400
    resp = await client.post("/_sim/mutate", data=b"[1]")
    assert resp.status == 400


async def test_scripted_faults(make_server: MakeServer) -> None:
    """POST /_sim/fail makes the next calls answer the spec's error responses (with Retry-After when
    asked), then normal service resumes."""
    sim, client = await make_server(SimulatorConfig(items=2))
    await client.post("/_sim/fail", json={"status": 429, "times": 2, "retry_after": 1.5})
    sim.fail_next(503)
    for expected, code in (
        (429, "RATE_LIMITED"),
        (429, "RATE_LIMITED"),
        (503, "SERVICE_UNAVAILABLE"),
    ):
        resp = await client.post(BATCH_RETRIEVE_PATH, data=b"{}")
        body = await resp.json()
        assert resp.status == expected
        assert body["errors"][0]["code"] == code
        assert resp.headers.get("Retry-After") == ("1.5" if expected == 429 else None)
    status, _ = await call(client, {})
    assert status == 200
    with pytest.raises(ValueError, match="cannot script"):
        sim.fail_next(418)


async def test_outage_for_seconds(make_server: MakeServer) -> None:
    """POST /_sim/fail with ``seconds``: every batch-retrieve answers that status until the window
    ends (scripted answers first), then normal service resumes; ``seconds`` 0 ends it early."""
    clock = [100.0]
    sim, client = await make_server(SimulatorConfig(items=2), monotonic=lambda: clock[0])
    resp = await client.post("/_sim/fail", json={"status": 500, "seconds": 60})
    assert await resp.json() == {"queued": 0, "outage_seconds": 60.0}
    sim.fail_next(429)
    assert (await call(client, {}))[0] == 429
    for _ in range(3):
        status, body = await call(client, {})
        assert (status, body["errors"][0]["code"]) == (500, "INTERNAL_SERVER_ERROR")
    clock[0] += 59.9
    assert (await call(client, {}))[0] == 500
    clock[0] += 0.1
    assert (await call(client, {}))[0] == 200
    assert sim.outage is None
    await client.post("/_sim/fail", json={"status": 503, "seconds": 10, "retry_after": 2})
    resp = await client.post(BATCH_RETRIEVE_PATH, data=b"{}")
    assert (resp.status, resp.headers.get("Retry-After")) == (503, "2")
    await client.post("/_sim/fail", json={"status": 503, "seconds": 0})
    assert (await call(client, {}))[0] == 200
    resp = await client.post("/_sim/fail", json={"status": 418, "seconds": 5})
    assert resp.status == 400
    with pytest.raises(ValueError, match="cannot script"):
        sim.fail_for(500, -1)


async def test_unknown_route_or_method_answers_square_envelope(make_server: MakeServer) -> None:
    """The API side answers 404/405 in Square's error envelope."""
    _, client = await make_server(SimulatorConfig(items=1))
    resp = await client.get(BATCH_RETRIEVE_PATH)
    assert resp.status == 405
    assert (await resp.json())["errors"][0]["code"] == "METHOD_NOT_ALLOWED"
    resp = await client.post("/v2/inventory/nothing", data=b"{}")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "NOT_FOUND"


async def test_empty_result_is_an_empty_object(make_server: MakeServer) -> None:
    """Like Square, an empty final page is ``{}`` (no counts key); omit_empty_counts=False sends
    ``{"counts": []}``."""
    _, client = await make_server(SimulatorConfig(items=3))
    future = {"updated_after": "2999-01-01T00:00:00Z"}
    assert await call(client, future) == (200, {})
    _, client = await make_server(SimulatorConfig(items=3, omit_empty_counts=False))
    assert await call(client, future) == (200, {"counts": []})


async def test_page_delay_slows_each_answer(make_server: MakeServer) -> None:
    """page_delay adds latency before each batch-retrieve answer."""
    _, client = await make_server(SimulatorConfig(items=1, page_delay=0.05))
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _ = await call(client, {})
    assert status == 200
    assert loop.time() - started >= 0.045  # asyncio may wake a clock tick early


def test_catalog_is_deterministic_per_seed() -> None:
    """The same seed and wall clock generate the same catalog; another seed does not."""

    def make(seed: int) -> list[dict[str, str]]:
        return Simulator(SimulatorConfig(items=50, seed=seed), wall_ns=lambda: FROZEN_NS).snapshot()

    assert make(1) == make(1) != make(2)


def test_config_is_validated() -> None:
    """Impossible configurations raise ValueError at construction."""
    for bad in (
        {"states": ("SOLD",)},
        {"states": ("IN_STOCK", "IN_STOCK")},
        {"states": ("BOGUS",)},
        {"max_limit": 0},
        {"cursor_ttl": 0.0},
        {"mutation_rate": -1.0},
        {"items": -1},
    ):
        with pytest.raises(ValueError, match="must"):
            SimulatorConfig(**bad)


def test_calculated_at_formatting_round_trips() -> None:
    """format_calculated_at writes ms for whole milliseconds, else µs, and parses back exactly."""
    for ns in (0, FROZEN_NS, FROZEN_NS + 123_000_000, FROZEN_NS + 123_456_000, -1_500_000_000):
        text = format_calculated_at(ns)
        assert parse_ns(text) == ns
        assert text in (format_ns(ns), format_ns(ns)[:-4] + "Z")
    assert format_calculated_at(FROZEN_NS + 5_000_000) == "2026-01-01T00:00:00.005Z"


async def test_serve_on_a_real_socket_with_background_mutations() -> None:
    """serve() listens on 127.0.0.1 port 0, runs the mutation task, and stops both on exit."""
    config = SimulatorConfig(items=20, mutation_rate=2000.0, mutation_interval=0.01)
    async with serve(config) as (sim, url):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + BATCH_RETRIEVE_PATH, data=b"{}") as resp,
        ):
            assert resp.status == 200
            assert len((await resp.json())["counts"]) == 60
        async with asyncio.timeout(5):
            while sim.mutations == 0:
                await asyncio.sleep(0.01)
    done = sim.mutations
    await asyncio.sleep(0.05)
    assert sim.mutations == done
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.post(url + BATCH_RETRIEVE_PATH, data=b"{}")


async def test_run_forever_logs_its_url_and_stops() -> None:
    """run_forever() logs simulator_started with the URL, serves until stop is set, then stops."""
    stop = asyncio.Event()
    stop.set()
    with capture_logs() as logs:
        await run_forever(SimulatorConfig(items=1), "127.0.0.1", 0, stop=stop)
    events = [e["event"] for e in logs]
    assert events == ["simulator_started", "simulator_stopping", "simulator_stopped"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", logs[0]["url"])
    assert logs[0]["counts"] == 3
