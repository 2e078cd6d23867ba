"""Heartbeats and lifecycle entries with real processes (issue 14): `python -m syncd run` against
the simulator, with a real redis-server. A consumer tells "nothing changed" from "syncd is stale"
on every delivery path: heartbeats in SQL, `syncd changes`, long-poll, SSE and the Redis stream
during silence; a source that turns unauthorized or stale gets its entry (the stale one within
the staleness limit), then its recovery; and replaying the count entries still gives the mirror."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from syncd.simulator import SimulatorConfig, serve
from syncd.timeutil import NS_PER_S, parse_ns
from tests.helpers import assert_log_invariants, changes
from tests.process_kit import (
    SyncdProcess,
    clean_env,
    integrity,
    query,
    run_cli,
    syncd,
    write_config,
)
from tests.redis_kit import RedisServer, assert_stream_equals_log, stream_messages

pytestmark = pytest.mark.slow

STREAM = "syncd:changes:square"
HEARTBEAT = 0.3  # changelog.heartbeat_interval of these daemons
STALE_AFTER = 1.5  # http.ready_max_staleness of the second test (the first: the default)


def entries_of(db: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in changes(db) if e["kind"] == kind]


async def until_entries(db: Path, kind: str, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The first ``n`` entries of ``kind`` in the log (SQL, read-only), waiting for them."""
    async with asyncio.timeout(timeout):
        while len(found := entries_of(db, kind)) < n:
            await asyncio.sleep(0.02)
    return found[:n]


async def sse_events(
    http: aiohttp.ClientSession, url: str, n: int, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """The first ``n`` records of an SSE stream (``data:`` lines), then the stream is closed."""
    records: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout), http.get(url) as resp:
        assert resp.status == 200
        while len(records) < n:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                records.append(orjson.loads(line.removeprefix("data: ")))
    return records


@asynccontextmanager
async def daemon_on(
    tmp_path: Path,
    url: str,
    *,
    redis_url: str | None = None,
    poll: float = 300,
    stale_after: float = 600,
) -> AsyncIterator[tuple[SyncdProcess, dict[str, Any]]]:
    """A `syncd run` process with fast heartbeats, passes every ``poll`` seconds and the
    staleness limit ``stale_after``, its first pass done; yields it and its daemon_started event
    (the listeners' URLs)."""
    extra = f"[changelog]\nheartbeat_interval = {HEARTBEAT}\n"
    if redis_url is not None:
        extra += f'[publish.redis]\nurl = "{redis_url}"\nretry_backoff_max = 0.1\n'
    config = write_config(tmp_path, url, extra=extra)
    text = config.read_text()
    text = text.replace("poll_interval = 300\n", f"poll_interval = {poll}\n", 1)
    text = text.replace(
        '[http]\nlisten = "127.0.0.1:0"\n',
        f'[http]\nlisten = "127.0.0.1:0"\nready_max_staleness = {stale_after}\n',
        1,
    )
    assert f"poll_interval = {poll}\n" in text
    assert f"ready_max_staleness = {stale_after}\n" in text
    config.write_text(text)
    async with syncd("run", "--config", str(config), env=clean_env()) as daemon:
        started = await daemon.event("daemon_started")
        await daemon.event("sync_pass", outcome="ok")
        yield daemon, started


async def test_heartbeats_reach_every_reader_during_silence(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Scenario: a daemon syncs 60 counts, then nothing changes (no poll due, no webhook).
    Heartbeats follow each silence of heartbeat_interval, and reach
    1. SQL: `heartbeat` entries of source _syncd, each an interval after the entry before it,
       naming the head before it and the source as ok;
    2. `syncd changes --kind heartbeat` (another process), and a long-poll waiting past the head;
    3. an SSE stream asked for heartbeats only;
    4. the Redis stream, as flat fields with the record as payload.
    After a SIGTERM the stream equals the log, and replaying the count entries is the mirror."""
    db = tmp_path / "syncd.db"
    async with (
        serve(SimulatorConfig(locations=2, items=30)) as (_, url),
        daemon_on(tmp_path, url, redis_url=redis_server.url) as (daemon, started),
        aiohttp.ClientSession() as http,
    ):
        admin = started["admin_url"]
        beats = await until_entries(db, "heartbeat", 3)
        for beat in beats:
            assert beat["source"] == "_syncd"
            assert beat["new"]["head_seq"] == beat["seq"] - 1
            assert beat["new"]["interval_s"] == HEARTBEAT
            assert beat["new"]["sources"]["square"]["status"] == "ok"

        code, out, err = await run_cli("changes", "--database", str(db), "--kind", "heartbeat")
        assert code == 0, err
        printed = [orjson.loads(line) for line in out.splitlines()]
        assert len(printed) >= 3
        assert {p["kind"] for p in printed} == {"heartbeat"}
        assert [p["seq"] for p in printed[:3]] == [b["seq"] for b in beats]

        head = len(changes(db))
        async with http.get(f"{admin}/changes?after={head}&wait=20") as resp:
            body = await resp.json()
        assert [c["kind"] for c in body["changes"]][:1] == ["heartbeat"]
        assert body["changes"][0]["seq"] > head

        live = await sse_events(http, f"{admin}/changes/stream?kind=heartbeat&after={head}", 2)
        assert [r["kind"] for r in live] == ["heartbeat", "heartbeat"]
        assert all(r["seq"] > head for r in live)

        async with asyncio.timeout(15):
            while True:
                published = [
                    fields
                    for _, fields in await stream_messages(redis_server.url, STREAM)
                    if fields[b"kind"] == b"heartbeat"
                ]
                if len(published) >= 3:
                    break
                await asyncio.sleep(0.05)
        first = published[0]
        assert (first[b"source"], first[b"key"]) == (b"_syncd", b"")
        assert orjson.loads(first[b"payload"])["new"]["head_seq"] == int(first[b"seq"]) - 1
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    entries = changes(db)
    at = {e["seq"]: e for e in entries}
    assert [e["kind"] for e in entries[:60]] == ["count.updated"] * 60
    assert [e["kind"] for e in entries[60:62]] == ["pass.completed", "pass.full_completed"]
    assert {e["kind"] for e in entries[62:]} == {"heartbeat"}
    times = {s: parse_ns(r) for s, r in _recorded_at(db).items()}
    for seq in at:
        if at[seq]["kind"] == "heartbeat":
            assert times[seq] - times[seq - 1] >= HEARTBEAT * NS_PER_S
    assert integrity(db) == "ok"
    assert_log_invariants(db)
    assert await assert_stream_equals_log(redis_server.url, STREAM, db) == len(entries)


def _recorded_at(db: Path) -> dict[int, str]:
    return dict(query(db, "SELECT seq, recorded_at FROM changes"))


async def test_unauthorized_and_stale_sources_are_logged_then_recovered(tmp_path: Path) -> None:
    """Scenario, with passes every 0.2 s and a staleness limit of 1.5 s:
    1. the upstream answers 401: the first failing pass writes source.unauthorized (once,
       however many passes fail); it recovers when the upstream accepts the token again;
    2. the upstream answers 503: no entry until the last good pass is older than the limit,
       then source.stale within the limit's monitor tick; heartbeats meanwhile say "stale";
       `/readyz` says stale too;
    3. the upstream answers again: source.recovered right after the pass's pass.completed.
    Replaying the count entries (the simulator keeps changing meanwhile) is the mirror."""
    db = tmp_path / "syncd.db"
    async with (
        serve(SimulatorConfig(locations=1, items=20, mutation_rate=4)) as (sim, url),
        daemon_on(tmp_path, url, poll=0.2, stale_after=STALE_AFTER) as (daemon, started),
        aiohttp.ClientSession() as http,
    ):
        sim.fail_for(401, 60)
        [refused] = await until_entries(db, "source.unauthorized", 1)
        assert refused["old"] == {"status": "ok"}
        assert "401" in refused["new"]["last_error"]
        for _ in range(3):  # more passes fail on the refused token
            await daemon.wait_for(
                lambda e: e.get("event") == "sync_pass" and e.get("outcome") == "failed",
                after=len(daemon.events),
            )
        sim.fail_for(401, 0)
        [back] = await until_entries(db, "source.recovered", 1)
        assert back["old"] == {"status": "unauthorized"}
        assert [e["kind"] for e in changes(db) if e["kind"].startswith("source.")] == [
            "source.unauthorized",
            "source.recovered",
        ], "logged once, not once per pass"

        sim.fail_for(503, 60)
        [stale] = await until_entries(db, "source.stale", 1, timeout=STALE_AFTER + 15)
        last_good = max(
            parse_ns(e["new"]["finished_at"])
            for e in entries_of(db, "pass.completed")
            if e["seq"] < stale["seq"]
        )
        assert stale["new"]["last_success_at"] is not None
        assert parse_ns(stale["new"]["last_success_at"]) == last_good
        assert stale["new"]["max_staleness_s"] == STALE_AFTER
        assert stale["new"]["age_s"] > STALE_AFTER
        late = parse_ns(_recorded_at(db)[stale["seq"]]) - last_good
        # written once the limit had passed, and within a limit of that
        assert STALE_AFTER * NS_PER_S < late <= 2 * STALE_AFTER * NS_PER_S
        async with http.get(f"{started['public_url']}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["reason"] == "stale"
        beat = (await until_entries(db, "heartbeat", 1 + _beats_before(db, stale["seq"])))[-1]
        assert beat["seq"] > stale["seq"]
        assert beat["new"]["sources"]["square"]["status"] == "stale"
        sim.fail_for(503, 0)
        [_, recovered] = await until_entries(db, "source.recovered", 2)
        completed = changes(db)[recovered["seq"] - 2]
        assert (completed["kind"], completed["seq"]) == ("pass.completed", recovered["seq"] - 1)
        assert recovered["old"] == {"status": "stale"}
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    statuses = [e["kind"] for e in changes(db) if e["kind"].startswith("source.")]
    assert statuses == [
        "source.unauthorized",
        "source.recovered",
        "source.stale",
        "source.recovered",
    ]
    assert_log_invariants(db)


def _beats_before(db: Path, seq: int) -> int:
    return sum(1 for e in entries_of(db, "heartbeat") if e["seq"] < seq)
