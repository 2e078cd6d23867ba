"""The change log on the admin listener: long-poll, Server-Sent Events with Last-Event-ID, gaps, and
/metrics in the Prometheus format; against an in-process daemon and the simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.simulator import Simulator, SimulatorConfig, serve
from syncd.store.retention import prune_batch
from tests.conftest import running_daemon

ITEMS = 20  # one location, one state: the first (full) pass writes seqs 1..20
HEAD = ITEMS + 2  # then its pass.completed and pass.full_completed (21, 22)


@asynccontextmanager
async def admin(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Daemon, Simulator, aiohttp.ClientSession, str]]:
    """A daemon whose first pass has landed, its simulator, a client session and the admin URL."""
    settings = make_settings(square={"poll_interval": 300})
    async with (
        serve(SimulatorConfig(locations=1, items=ITEMS)) as (sim, url),
        running_daemon(settings, url) as daemon,
        aiohttp.ClientSession() as http,
    ):
        assert daemon.store is not None
        assert daemon.trigger is not None
        async with asyncio.timeout(5):
            # The entries land page by page; the pass (watermark, counters) ends after them.
            while daemon.store.changelog_head.head < HEAD or daemon.trigger.last_success is None:
                await asyncio.sleep(0.01)
        assert daemon.admin_url is not None
        yield daemon, sim, http, daemon.admin_url


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def another_change(daemon: Daemon, sim: Simulator) -> None:
    """Change one count upstream and ask for a pass, as a webhook would."""
    assert daemon.trigger is not None
    sim.mutate(1)
    daemon.trigger.poke()


async def test_batches_and_long_poll(make_settings: Callable[..., Settings]) -> None:
    """GET /changes pages through the log; with `wait` and nothing new it answers empty when the
    wait runs out, and at once when an entry commits meanwhile."""
    async with admin(make_settings) as (daemon, sim, http, base):
        status, body = await get_json(http, f"{base}/changes?after=5&limit=3")
        assert status == 200
        assert [c["seq"] for c in body["changes"]] == [6, 7, 8]
        assert body["next_after"] == 8
        assert body["head_seq"] == HEAD
        assert set(body["changes"][0]) >= {"seq", "kind", "source", "old", "new", "recorded_at"}

        t0 = time.monotonic()
        status, body = await get_json(http, f"{base}/changes?after={HEAD}&wait=0.2")
        assert (status, body["changes"], body["next_after"]) == (200, [], HEAD)
        assert 0.2 <= time.monotonic() - t0 < 1.0

        waiting = asyncio.create_task(get_json(http, f"{base}/changes?after={HEAD}&wait=30"))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        t0 = time.monotonic()
        await another_change(daemon, sim)
        async with asyncio.timeout(5):
            status, body = await waiting
        assert status == 200
        # The change's page commits before the pass's end (its pass.completed, HEAD + 2).
        assert [c["seq"] for c in body["changes"]][:1] == [HEAD + 1]
        assert body["changes"][0]["kind"] == "count.updated"
        assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("after=-1", "after must be between"),
        ("limit=0", "limit must be between"),
        ("limit=5000", "limit must be between"),
        ("wait=abc", "wait must be a number"),
        ("after=1.5", "whole number"),
        ("wait=9999", "wait must be between"),
    ],
)
async def test_bad_parameters_are_400(
    make_settings: Callable[..., Settings], query: str, why: str
) -> None:
    """Out-of-range or malformed parameters get 400 in the error envelope, saying which and why."""
    async with admin(make_settings) as (_, _, http, base):
        status, body = await get_json(http, f"{base}/changes?{query}")
    assert status == 400
    assert body["error"]["code"] == "bad_request"
    assert why in body["error"]["message"]


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, str]]:
    """The next ``n`` SSE events (comments skipped) as {field: value}."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(5):
        while len(events) < n:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if not line:
                if fields:
                    events.append(fields)
                    fields = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
    return events


async def test_sse_streams_live_and_resumes_with_last_event_id(
    make_settings: Callable[..., Settings],
) -> None:
    """GET /changes/stream sends one event per entry with id = seq, then new entries as they commit;
    a client that reconnects with Last-Event-ID continues right after that event."""
    async with admin(make_settings) as (daemon, sim, http, base):
        async with http.get(f"{base}/changes/stream?after=0") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            first = await read_events(resp, 5)
            assert [e["id"] for e in first] == ["1", "2", "3", "4", "5"]
            assert '"seq":1' in first[0]["data"]
        async with http.get(
            f"{base}/changes/stream?after=0", headers={"Last-Event-ID": "5"}
        ) as resp:
            rest = await read_events(resp, HEAD - 5)
            assert [int(e["id"]) for e in rest] == list(range(6, HEAD + 1))
            await another_change(daemon, sim)
            live = await read_events(resp, 1)
            assert live[0]["id"] == str(HEAD + 1)


async def test_kind_filters_batches_long_polls_and_streams(
    make_settings: Callable[..., Settings],
) -> None:
    """?kind=GLOB (repeated or a comma list) on /changes and /changes/stream: only matching
    entries; next_after passes the skipped ones; a long-poll for pass entries is not answered by
    the count entry that commits first, but by the pass.completed after it; a bad pattern is 400."""
    async with admin(make_settings) as (daemon, sim, http, base):
        status, body = await get_json(http, f"{base}/changes?kind=pass.*")
        assert status == 200
        assert [(c["seq"], c["kind"]) for c in body["changes"]] == [
            (ITEMS + 1, "pass.completed"),
            (ITEMS + 2, "pass.full_completed"),
        ]
        status, body = await get_json(http, f"{base}/changes?kind=count.*&kind=heartbeat&after=18")
        assert [c["seq"] for c in body["changes"]] == [19, 20]
        assert body["next_after"] == HEAD
        status, body = await get_json(http, f"{base}/changes?kind=count.*&after={ITEMS}&wait=0.1")
        assert (status, body["changes"], body["next_after"]) == (200, [], HEAD)

        waiting = asyncio.create_task(
            get_json(http, f"{base}/changes?kind=source.*,pass.completed&after={HEAD}&wait=30")
        )
        async with http.get(f"{base}/changes/stream?kind=pass.completed&after=0") as resp:
            [first] = await read_events(resp, 1)
            assert first["id"] == str(ITEMS + 1)
            await another_change(daemon, sim)
            [live] = await read_events(resp, 1)
            assert live["id"] == str(HEAD + 2)  # HEAD + 1, the count, was skipped
        async with asyncio.timeout(5):
            status, body = await waiting
        assert status == 200
        assert [(c["seq"], c["kind"]) for c in body["changes"]] == [(HEAD + 2, "pass.completed")]

        for query in ("kind=[^c]*", "kind=", "kind=count.*,,pass.*"):
            for path in ("/changes", "/changes/stream"):
                status, body = await get_json(http, f"{base}{path}?{query}")
                assert status == 400, (path, query)
                assert body["error"]["message"].startswith("kind: "), body


async def test_streams_end_when_the_daemon_stops(make_settings: Callable[..., Settings]) -> None:
    """An open SSE stream and a long-poll both let go as soon as the daemon starts stopping, so the
    shutdown is not held up by clients."""
    async with (
        admin(make_settings) as (daemon, _, http, base),
        http.get(f"{base}/changes/stream?after={HEAD}") as resp,
    ):
        poll = asyncio.create_task(get_json(http, f"{base}/changes?after={HEAD}&wait=30"))
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        daemon.handle_exit()
        async with asyncio.timeout(2):
            assert await resp.content.read() == b""
            status, body = await poll
        assert (status, body["changes"]) == (200, [])
        assert time.monotonic() - t0 < 1.0


async def test_gap_is_410_for_batches_and_streams(make_settings: Callable[..., Settings]) -> None:
    """After retention pruned the front of the log, asking from before it gets 410 changelog_gap
    with the way out, for GET /changes and for the stream (also via Last-Event-ID)."""
    async with admin(make_settings) as (daemon, _, http, base):
        assert daemon.store is not None
        await daemon.store.write(lambda conn: prune_batch(conn, cutoff=None, max_rows=5, batch=100))
        for url, headers in (
            (f"{base}/changes?after=3", {}),
            (f"{base}/changes/stream?after=0", {}),
            (f"{base}/changes/stream", {"Last-Event-ID": "2"}),
        ):
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 410, url
                body = await resp.json()
            assert body["error"]["code"] == "changelog_gap"
            assert f"oldest kept is {HEAD - 4}" in body["error"]["message"]
            assert "re-read the mirror" in body["error"]["message"]
        status, body = await get_json(http, f"{base}/changes?after={HEAD - 5}")
        assert status == 200
        assert [c["seq"] for c in body["changes"]] == list(range(HEAD - 4, HEAD + 1))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in values.items()
        if n == name and all((k, x) in ls for k, x in labels.items())
    )


async def test_metrics_parse_and_move(make_settings: Callable[..., Settings]) -> None:
    """GET /metrics parses with prometheus_client's parser, carries the state gauges, and its
    counters move when a pass syncs a change."""
    async with admin(make_settings) as (daemon, sim, http, base):
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            before = samples(await resp.text())
        for name in (
            "syncd_sync_passes_total",
            "syncd_sync_pass_duration_seconds_bucket",
            "syncd_upstream_requests_total",
            "syncd_changes_written_total",
            "syncd_changelog_head_seq",
            "syncd_watermark_lag_seconds",
            "syncd_build_info",
            "process_resident_memory_bytes",
        ):
            assert total(before, name) > 0, name
        assert total(before, "syncd_changelog_head_seq") == HEAD
        assert total(before, "syncd_watermark_lag_seconds", source="square", partition="*") >= 0
        assert daemon.trigger is not None
        succeeded = daemon.trigger.last_success
        await another_change(daemon, sim)
        async with asyncio.timeout(5):
            # Wait for the pass to end, not just start: its counters move at its end.
            while daemon.trigger.last_success == succeeded:
                await asyncio.sleep(0.01)
            assert daemon.store is not None
            while daemon.store.changelog_head.head < HEAD + 2:
                await asyncio.sleep(0.01)
        async with http.get(f"{base}/metrics") as resp:
            after = samples(await resp.text())
    for name, labels in (
        ("syncd_sync_passes_total", {"outcome": "ok"}),
        ("syncd_changes_written_total", {"kind": "count.updated"}),
        ("syncd_upstream_requests_total", {"status": "200"}),
        ("syncd_sync_pages_total", {}),
        ("syncd_sync_counts_total", {}),
        ("syncd_sync_pokes_total", {}),
    ):
        assert total(after, name, **labels) > total(before, name, **labels), name
    assert total(after, "syncd_changelog_head_seq") == HEAD + 2  # the change, its pass.completed
    assert total(after, "syncd_changes_written_total", kind="pass.completed") > total(
        before, "syncd_changes_written_total", kind="pass.completed"
    )
