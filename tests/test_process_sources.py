"""Many sellers in one `syncd run` process (issue 11, "Done when"): a real subprocess daemon, the
simulator's marketplace (one Square app, several sellers, OAuth, signed webhooks) on 127.0.0.1 in
the test process, and the real SQLite file, read like another tool would. Every wait is on a
condition with a bound; every server stops with its block."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from syncd.simulator import (
    Marketplace,
    OAuthConfig,
    Simulator,
    SimulatorConfig,
    serve,
    serve_marketplace,
)
from syncd.simulator.webhooks import WebhookTarget
from syncd.store import Store
from syncd.store.inbox import UNKNOWN_SOURCE
from syncd.store.migrations import SCHEMA_VERSION
from syncd.sync.engine import EngineOptions, SyncEngine
from syncd.timeutil import NS_PER_S, parse_ns
from syncd.upstream.http import RetryPolicy
from syncd.upstream.square import SquareCounts, SquareOptions
from tests.helpers import (
    assert_log_invariants,
    changes,
    count_changes,
    kinds,
    mirror,
    project_to_schema,
)
from tests.process_kit import Event, SyncdProcess, query, syncd
from tests.webhook_kit import KEY, inbox_rows

pytestmark = pytest.mark.slow

APP_URL = "https://syncd.example.com/webhooks"  # the app's notification URL, as registered
Key = tuple[str, str, str]


# --- config and process ----------------------------------------------------------------------


def source_table(name: str, body: str) -> str:
    return f"[sources.{name}]\n{body}\n"


def oauth_source(refresh_token: str, extra: str = "") -> str:
    """The body of a ``[sources.NAME]`` table for an OAuth seller of the app."""
    return f'oauth = {{ refresh_token = "{refresh_token}" }}\n{extra}'


def write_app_config(
    path: Path,
    db: Path,
    upstream: str,
    sources: Mapping[str, str],
    *,
    extra: str = "",
) -> Path:
    """A config of one app in front of ``upstream``: the app's OAuth client, webhook key and URL in
    ``[source_defaults]`` (fast retries, no polling to speak of), one ``[sources.NAME]`` table per
    entry of ``sources`` (name -> table body), listeners on free ports, JSON logs."""
    tables = "\n".join(source_table(name, body) for name, body in sources.items())
    path.write_text(f"""
database = "{db}"
shutdown_timeout = 5

[source_defaults]
base_url = "{upstream}"
notification_url = "{APP_URL}"
webhook_signature_keys = ["{KEY}"]
poll_interval = 300
catalog_sync = false
overlap = 1
clock_margin = 0
retry_backoff_initial = 0.01
retry_backoff_max = 0.05
max_retries = 2
request_timeout = 5

[source_defaults.oauth]
client_id = "sim-client"
client_secret = "sim-secret"

{tables}

[webhooks]
debounce = 0.02
max_delay = 0.1

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "info"

{extra}
""")
    return path


@dataclass
class Running:
    """A `syncd run` process and the URLs it logged at start."""

    proc: SyncdProcess
    db: Path
    public_url: str
    admin_url: str

    def at(self) -> int:
        """A position in the log: later waits look only at what comes after it."""
        return len(self.proc.events)

    async def next(self, name: str, *, after: int, timeout: float = 10.0, **fields: Any) -> Event:
        """The first event ``name`` after position ``after`` whose fields include ``fields``."""
        return await self.proc.wait_for(
            lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items()),
            after=after,
            timeout=timeout,
        )

    def passes(self, source: str, *, after: int = 0) -> list[Event]:
        """The ``sync_pass`` lines of ``source`` after ``after`` (the field is bound per pass)."""
        return [
            e
            for e in self.proc.events[after:]
            if e.get("event") == "sync_pass" and e.get("source") == source
        ]

    async def readyz(self, query_string: str = "") -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{self.public_url}/readyz{query_string}") as resp,
        ):
            return resp.status, orjson.loads(await resp.read())

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the admin listener's ``/metrics``: (name, sorted labels) -> value."""
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{self.admin_url}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def reload(self, write: Callable[[], object]) -> int:
        """Rewrite the config file, send SIGHUP; the log position before the signal."""
        write()
        mark = self.at()
        self.proc.signal(signal.SIGHUP)
        return mark


def sample(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(
        value
        for (n, have), value in samples.items()
        if n == name and set(labels.items()) <= set(have)
    )


@asynccontextmanager
async def running(config: Path, db: Path) -> AsyncIterator[Running]:
    """`syncd run --config CONFIG`, until its ``daemon_started`` line; stopped with the block
    (SIGTERM, and it must exit 0)."""
    async with syncd("run", "--config", str(config)) as proc:
        started = await proc.event("daemon_started")
        handle = Running(proc, db, str(started["public_url"]), str(started["admin_url"]))
        yield handle
        proc.signal(signal.SIGTERM)
        assert await proc.wait(15) == 0, proc.stderr.decode(errors="replace")


def subscribe(market: Marketplace, daemon: Running) -> None:
    """Point the app's webhook subscription at the daemon's one URL (``POST /webhooks``)."""
    market.webhooks.target = WebhookTarget(
        url=f"{daemon.public_url}/webhooks",
        signature_key=KEY,
        notification_url=APP_URL,
        retry_delay=0.02,
    )


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check`` (a cheap read of the database or the log) until it holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def key_of(row: Mapping[str, str]) -> Key:
    return (row["catalog_object_id"], row["location_id"], row["state"])


def mirrors(db: Path, source: str, row: Mapping[str, str]) -> bool:
    """Whether ``source``'s mirror holds ``row``'s quantity."""
    return mirror(db, source).get(key_of(row), {}).get("quantity") == row["quantity"]


def upstream_view(market: Marketplace, merchant_id: str) -> dict[Key, str]:
    """What the seller holds upstream: key -> quantity."""
    return {key_of(r): r["quantity"] for r in market.seller(merchant_id).snapshot()}


def mirrored(db: Path, source: str) -> dict[Key, str]:
    """What the daemon mirrors of ``source``: key -> quantity."""
    return {k: v["quantity"] for k, v in mirror(db, source).items()}


def sellers(n: int, *, items: int = 8) -> list[SimulatorConfig]:
    """``n`` small sellers (2 locations, ``items`` items), seeds 0.. so their ids differ."""
    return [SimulatorConfig(locations=2, items=items, seed=seed) for seed in range(n)]


async def first_passes(daemon: Running, names: list[str]) -> None:
    """Every named source has completed a good pass."""
    for name in names:
        await daemon.next("sync_pass", after=0, source=name, outcome="ok")


# --- 1 and 2: several sellers, one log; webhooks routed by merchant ---------------------------


async def test_three_sellers_one_log_and_a_webhook_pokes_its_sellers_source_only(
    tmp_path: Path,
) -> None:
    """Three sellers of one app in one daemon: each source mirrors exactly its seller's counts,
    under its own name, in one change log whose seq strictly increases across sources, and
    replaying that log gives each source's mirror. Then seller B changes a count: the app's
    signed webhook at ``/webhooks`` names B's merchant, the daemon routes it to source b, and
    only b runs a pass (log ``sync_pass`` by source, and ``syncd_sync_passes_total``)."""
    async with serve_marketplace(sellers(3)) as (market, url):
        ids = list(market.sellers)
        names = ["a", "b", "c"]
        db = tmp_path / "syncd.db"
        config = write_app_config(
            tmp_path / "syncd.toml",
            db,
            url,
            {name: oauth_source(market.grant(mid)) for name, mid in zip(names, ids, strict=True)},
        )
        async with running(config, db) as daemon:
            subscribe(market, daemon)
            await first_passes(daemon, names)
            for name, mid in zip(names, ids, strict=True):
                assert mirrored(db, name) == upstream_view(market, mid)
            assert {r[0] for r in query(db, "SELECT DISTINCT source FROM inventory_counts")} == {
                "a",
                "b",
                "c",
            }
            entries = changes(db)
            seqs = [e["seq"] for e in entries]
            assert seqs == sorted(set(seqs))
            assert {e["source"] for e in entries} == {"a", "b", "c"}
            counts = count_changes(db)
            assert len(counts) == sum(len(upstream_view(market, mid)) for mid in ids)
            for name in names:  # each seller's counts, then its first (full) pass completed
                own = [e["kind"] for e in entries if e["source"] == name]
                assert set(own[:-2]) == {"count.updated"}
                assert own[-2:] == ["pass.completed", "pass.full_completed"]
            for name in names:
                assert_log_invariants(db, name)

            before = await daemon.metrics()
            mark = daemon.at()
            [changed] = market.seller(ids[1]).mutate(1)
            async with asyncio.timeout(5):
                await market.webhooks.drain()
            assert market.webhooks.statuses == {200: 1}
            await daemon.next("webhook_events_processed", after=mark, source="b")
            await until(partial(mirrors, db, "b", changed))
            after = await daemon.metrics()
            webhook = await daemon.next("webhook", after=mark)
            assert (webhook["source"], webhook["merchant_id"], webhook["outcome"]) == (
                "b",
                ids[1],
                "new",
            )
            assert [p["outcome"] for p in daemon.passes("b", after=mark)] == ["ok"]
            assert daemon.passes("a", after=mark) == daemon.passes("c", after=mark) == []
            passes = "syncd_sync_passes_total"
            assert sample(after, passes, source="b") == sample(before, passes, source="b") + 1
            for name in ("a", "c"):
                assert sample(after, passes, source=name) == sample(before, passes, source=name)
            accepted = "syncd_webhooks_accepted_total"
            assert sample(after, accepted, source="b", outcome="new") == 1
            assert sample(after, accepted, source="a") == sample(after, accepted, source="c") == 0
        [row] = inbox_rows(db)
        assert (row["source"], row["merchant_id"]) == ("b", ids[1])
        assert row["processed_at"] is not None
        for name in names:
            assert_log_invariants(db, name)


# --- 2 and 4: an unknown merchant's event kept and adopted; SIGHUP adds and removes sources -----


async def test_unknown_merchant_adopted_by_a_source_added_on_sighup_and_a_removed_source_stops(
    tmp_path: Path,
) -> None:
    """Sources a, b, c for three of the app's four sellers. Seller D's webhook (a merchant no
    source claims) is answered 200, stored under ``_unknown``, counted, and pokes nobody. A 4th
    source d for seller D is written to the config and SIGHUP sent: d starts, syncs, learns its
    merchant from the token endpoint and adopts the stored event (processed by its pass). Then a
    is taken out of the config and SIGHUP sent: a stops (``source_removed``), its rows stay,
    the registry marks it removed, and a change of seller A reaches no source any more."""
    async with serve_marketplace(sellers(4)) as (market, url):
        ids = list(market.sellers)
        grants = {name: market.grant(mid) for name, mid in zip("abcd", ids, strict=True)}
        db = tmp_path / "syncd.db"
        path = tmp_path / "syncd.toml"

        def configure(*names: str) -> Path:
            return write_app_config(
                path, db, url, {name: oauth_source(grants[name]) for name in names}
            )

        async with running(configure("a", "b", "c"), db) as daemon:
            subscribe(market, daemon)
            await first_passes(daemon, ["a", "b", "c"])

            mark = daemon.at()
            market.seller(ids[3]).mutate(1)
            async with asyncio.timeout(5):
                await market.webhooks.drain()
            assert market.webhooks.statuses == {200: 1}
            webhook = await daemon.next("webhook", after=mark)
            assert (webhook["source"], webhook["merchant_id"]) == (UNKNOWN_SOURCE, ids[3])
            assert (webhook["outcome"], webhook["acted_on"]) == ("unknown_merchant", False)
            [row] = inbox_rows(db)
            assert (row["source"], row["merchant_id"], row["processed_at"]) == (
                UNKNOWN_SOURCE,
                ids[3],
                None,
            )
            samples = await daemon.metrics()
            assert (
                sample(
                    samples,
                    "syncd_webhooks_accepted_total",
                    source=UNKNOWN_SOURCE,
                    outcome="unknown_merchant",
                )
                == 1
            )
            assert all(daemon.passes(name, after=mark) == [] for name in "abc")

            mark = await daemon.reload(lambda: configure("a", "b", "c", "d"))
            await daemon.next("source_added", after=mark, source="d")
            await daemon.next("sync_pass", after=mark, source="d", outcome="ok")
            adopted = await daemon.next("source_merchant", after=mark, source="d")
            assert (adopted["merchant_id"], adopted["adopted_events"]) == (ids[3], 1)
            await until(lambda: inbox_rows(db)[0]["processed_at"] is not None)
            assert inbox_rows(db)[0]["source"] == "d"
            await until(lambda: mirrored(db, "d") == upstream_view(market, ids[3]))
            assert all(daemon.passes(name, after=mark) == [] for name in "abc")

            rows_of_a = mirror(db, "a")
            mark = await daemon.reload(lambda: configure("b", "c", "d"))
            removed = await daemon.next("source_removed", after=mark)
            assert removed["source"] == "a"
            await daemon.next("source_stopped", after=mark, source="a")
            [(removed_at,)] = query(db, "SELECT removed_at FROM sources WHERE source = 'a'")
            assert removed_at is not None
            status, body = await daemon.readyz()
            assert status == 200
            assert sorted(body["sources"]) == ["b", "c", "d"]

            mark = daemon.at()
            [changed] = market.seller(ids[0]).mutate(1)
            async with asyncio.timeout(5):
                await market.webhooks.drain()
            webhook = await daemon.next("webhook", after=mark)
            assert (webhook["source"], webhook["outcome"]) == (UNKNOWN_SOURCE, "unknown_merchant")
            assert daemon.passes("a", after=mark) == []
            assert mirror(db, "a") == rows_of_a
            assert mirrored(db, "a")[key_of(changed)] != changed["quantity"]
        assert mirror(db, "a") == rows_of_a
        for name in "abcd":
            assert_log_invariants(db, name)


# --- 3: a revoked grant isolates one source -----------------------------------------------------


async def test_a_revoked_grant_marks_only_its_source_unauthorized(tmp_path: Path) -> None:
    """Seller B revokes the app's grant; the app's ``oauth.authorization.revoked`` webhook makes
    source b refresh at once, which is refused: b is marked unauthorized (log, metric, database,
    ``/readyz?source=b`` 503 ``unauthorized``) while ``/readyz`` stays 200 naming b as not ready.
    Changes of sellers A and C keep reaching the mirror; b's passes fail without calling the
    upstream again."""
    async with serve_marketplace(sellers(3)) as (market, url):
        ids = list(market.sellers)
        names = ["a", "b", "c"]
        db = tmp_path / "syncd.db"
        config = write_app_config(
            tmp_path / "syncd.toml",
            db,
            url,
            {name: oauth_source(market.grant(mid)) for name, mid in zip(names, ids, strict=True)},
        )
        async with running(config, db) as daemon:
            subscribe(market, daemon)
            await first_passes(daemon, names)
            status, body = await daemon.readyz("?strict=1")
            assert (status, body["not_ready"]) == (200, [])

            mark = daemon.at()
            assert market.revoke(ids[1])  # the revocation webhook is queued
            await daemon.next("oauth_revocation_announced", after=mark, source="b")
            await daemon.next("source_unauthorized", after=mark, source="b")
            status, body = await daemon.readyz("?source=b")
            assert (status, body["status"], body["reason"]) == (503, "not_ready", "unauthorized")
            status, body = await daemon.readyz()
            assert (status, body["status"], body["not_ready"]) == (200, "ready", ["b"])
            assert body["sources"]["b"]["reason"] == "unauthorized"
            assert body["sources"]["a"]["reason"] == body["sources"]["c"]["reason"] == "ready"
            assert (await daemon.readyz("?strict=1"))[0] == 503
            for name in ("a", "c"):
                assert (await daemon.readyz(f"?source={name}"))[0] == 200
            samples = await daemon.metrics()
            assert sample(samples, "syncd_source_unauthorized", source="b") == 1
            assert sample(samples, "syncd_source_unauthorized", source="a") == 0
            assert query(db, "SELECT source, status FROM source_credentials ORDER BY 1") == [
                ("a", "ok"),
                ("b", "unauthorized"),
                ("c", "ok"),
            ]

            refused, b_requests = market.status_counts[401], market.seller(ids[1]).requests
            mark = daemon.at()
            changed = {mid: market.seller(mid).mutate(1)[0] for mid in ids}
            for name, mid in (("a", ids[0]), ("c", ids[2])):
                row = changed[mid]
                await until(partial(mirrors, db, name, row))
            failed = await daemon.next("sync_pass", after=mark, source="b", outcome="failed")
            assert "unauthorized" in failed["error"]
            assert mirrored(db, "b")[key_of(changed[ids[1]])] != changed[ids[1]]["quantity"]
            assert market.status_counts[401] == refused  # no refresh tried again
            assert market.seller(ids[1]).requests == b_requests
            assert (await daemon.readyz())[0] == 200
        for name in names:
            assert_log_invariants(db, name)


# --- 5: a source that is down does not delay the others ----------------------------------------


@dataclass
class Broken:
    """An upstream that answers every request with a 500 after ``delay`` seconds (a seller's
    API having a bad hour: each attempt takes its time, then fails)."""

    delay: float
    requests: int = 0
    in_flight: int = 0

    async def handle(self, _: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.json_response(
            {"errors": [{"category": "API_ERROR", "code": "INTERNAL_SERVER_ERROR"}]}, status=500
        )


@asynccontextmanager
async def broken_upstream(broken: Broken) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broken.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def logged_at(db: Path, source: str, row: Mapping[str, str]) -> bool:
    """Whether the change log has ``row``'s new quantity for ``source``."""
    return bool(
        query(
            db,
            "SELECT 1 FROM changes WHERE source = ? AND catalog_object_id = ? AND location_id = ?"
            " AND state = ? AND json_extract(new, '$.quantity') = ?",
            (source, *key_of(row), row["quantity"]),
        )
    )


async def test_a_source_answering_500s_does_not_delay_the_other_sources(tmp_path: Path) -> None:
    """Source ``down`` points at an upstream that answers 500 after 0.5 s to every request, so
    each of its passes takes its retries (about 1.5 s) and fails, and it keeps retrying. One
    shared pass slot (``max_concurrent_passes = 1``): while down's attempt is in flight, a change
    of seller A or B still reaches the change log within 1 s (webhook, pass) each time."""
    broken = Broken(delay=0.5)
    async with (
        serve_marketplace(sellers(2)) as (market, url),
        broken_upstream(broken) as down_url,
    ):
        ids = list(market.sellers)
        db = tmp_path / "syncd.db"
        config = write_app_config(
            tmp_path / "syncd.toml",
            db,
            url,
            {
                "a": oauth_source(market.grant(ids[0])),
                "b": oauth_source(market.grant(ids[1])),
                "down": f'base_url = "{down_url}"\naccess_token = "t"\nlocation_ids = ["L1"]',
            },
            extra="[sync]\nmax_concurrent_passes = 1\nmax_failing_passes = 1",
        )
        async with running(config, db) as daemon:
            subscribe(market, daemon)
            await first_passes(daemon, ["a", "b"])
            await daemon.next("sync_pass", after=0, source="down", outcome="failed")
            tried = broken.requests
            for round_, (name, mid) in enumerate([("a", ids[0]), ("b", ids[1])] * 2):
                await until(lambda: broken.in_flight > 0)  # down is mid-attempt
                t0 = time.monotonic()
                [row] = market.seller(mid).mutate(1)
                await until(partial(logged_at, db, name, row), timeout=5)
                took = time.monotonic() - t0
                assert took < 1.0, f"round {round_}: {name}'s change took {took:.2f}s"
            assert broken.requests > tried  # down kept trying (and failing) meanwhile
            assert {p["outcome"] for p in daemon.passes("down")} == {"failed"}
            assert {p["outcome"] for p in daemon.passes("a") + daemon.passes("b")} == {"ok"}
            status, body = await daemon.readyz()
            assert (status, body["not_ready"]) == (200, ["down"])
            assert body["sources"]["down"]["reason"] == "first_pass_pending"
        for name in ("a", "b"):
            assert mirrored(db, name) == upstream_view(market, ids["ab".index(name)])
            assert_log_invariants(db, name)
        assert mirror(db, "down") == {}


# --- 6: OAuth tokens refreshed before they expire, and once on a 401 ---------------------------


async def test_tokens_are_refreshed_before_expiry_and_once_on_a_401(tmp_path: Path) -> None:
    """The app's access tokens live 4 s (refresh tokens rotate, PKCE style), sources poll every
    0.3 s. Seller A's token is expired upstream: a's next pass meets the 401, refreshes once
    (however many of its requests were refused) and goes on. Seller B's token is never refused:
    b refreshes it before it expires, once half its lifetime is gone (a token this short is
    always within ``EXPIRY_MARGIN`` of its expiry), not earlier and not on every pass, with the
    rotated refresh token, and its passes stay good throughout."""
    oauth = OAuthConfig(access_token_ttl=4, rotate_refresh_tokens=True)
    async with serve_marketplace(sellers(2, items=4), oauth) as (market, url):
        ids = list(market.sellers)
        db = tmp_path / "syncd.db"
        fast = "poll_interval = 0.3"
        config = write_app_config(
            tmp_path / "syncd.toml",
            db,
            url,
            {
                name: oauth_source(market.grant(mid), fast)
                for name, mid in zip("ab", ids, strict=True)
            },
        )

        def refreshes(source: str, after: int = 0) -> list[Event]:
            return [
                e
                for e in daemon.proc.events[after:]
                if e.get("event") == "oauth_token_refreshed" and e.get("source") == source
            ]

        async with running(config, db) as daemon:
            await first_passes(daemon, ["a", "b"])
            [first_b] = refreshes("b")
            assert market.status_counts[401] == 0

            mark = daemon.at()
            assert market.expire(ids[0]) == 1
            refreshed = await daemon.next("oauth_token_refreshed", after=mark, source="a")
            assert refreshed["refresh_token_rotated"] is True
            await daemon.next(
                "sync_pass", after=daemon.proc.events.index(refreshed), source="a", outcome="ok"
            )
            # One 401 per request that was in flight with the expired token (a pass reads its
            # two locations' partitions at once); one refresh between them.
            rejected = market.status_counts[401]
            assert 1 <= rejected <= len(market.seller(ids[0]).location_ids)
            assert len(refreshes("a", mark)) == 1

            second_b = await daemon.next(
                "oauth_token_refreshed",
                after=daemon.proc.events.index(first_b) + 1,
                source="b",
                timeout=6,
            )
            first_at, expires = parse_ns(str(first_b["ts"])), parse_ns(str(first_b["expires_at"]))
            half_life = (expires - first_at) // 2
            at_ns = parse_ns(str(second_b["ts"]))
            assert first_at + half_life - NS_PER_S // 10 <= at_ns < expires
            assert second_b["refresh_token_rotated"] is True
            assert parse_ns(str(second_b["expires_at"])) > parse_ns(str(first_b["expires_at"]))
            # Meanwhile b's passes used the stored token: no refresh on each pass.
            start, end = daemon.proc.events.index(first_b), daemon.proc.events.index(second_b)
            used = [
                e["event"] for e in daemon.proc.events[start + 1 : end] if e.get("source") == "b"
            ]
            assert used.count("sync_pass") >= 3
            assert "oauth_token_refreshed" not in used
            assert market.status_counts[401] == rejected  # b's token was never refused
            assert {p["outcome"] for p in daemon.passes("b")} == {"ok"}
            stats = market.stats()["sellers"]
            assert isinstance(stats, dict)
            assert stats[ids[1]]["token_refreshes"] == len(refreshes("b"))
        for name in "ab":
            assert_log_invariants(db, name)


# --- 7: a single-source database of the previous schema migrates with its log intact ------------

LEGACY_TOKEN = "legacy-static-token"
CHANGES_RAW = (  # text as hex, so the comparison is byte for byte
    "SELECT seq, typeof(seq), hex(recorded_at), hex(kind), hex(source), hex(catalog_object_id),"
    " hex(location_id), hex(state), job_id, hex(old), typeof(old), hex(new), typeof(new)"
    " FROM changes ORDER BY seq"
)


async def sync_at_schema_5(db: Path, sim: Simulator, url: str) -> None:
    """A database as the single-source syncd left it: schema 5 (before sources and credentials),
    built by the real migrations, holding what the engine wrote through the real Square adapter
    (projected onto schema 5's columns): a full pass, an incremental one after changes, and a
    full one that logs removals."""
    written = db.with_name("written-today.db")
    store = await Store.open(written)
    try:
        async with aiohttp.ClientSession() as session:
            options = SquareOptions(
                base_url=url,
                access_token=LEGACY_TOKEN,
                api_version="2025-08-20",
                policy=RetryPolicy(max_retries=1, backoff_initial=0.0, backoff_max=0.0),
            )
            engine = SyncEngine(
                store,
                SquareCounts(session, options),
                EngineOptions(source="square", overlap=1, clock_margin=0),
            )
            assert (await engine.run_pass()).ok
            sim.mutate(4)
            assert (await engine.run_pass()).changes == 4
            sim.remove(2)
            assert (await engine.run_pass(full=True)).removed == 2
    finally:
        await store.aclose()
    await project_to_schema(written, db, 5)


async def test_a_schema_5_single_source_database_migrates_in_place_under_a_legacy_config(
    tmp_path: Path,
) -> None:
    """A schema-5 database with its change log (updates and removals) and the legacy ``[square]``
    table: the current daemon logs ``config_deprecated``, migrates the file in place to the
    current schema, rewrites and renumbers no change entry (byte for byte, and the AUTOINCREMENT
    high-water mark), registers the source, and goes on syncing: new entries follow the old
    ones, and replaying the whole log still gives the mirror."""
    async with serve(SimulatorConfig(locations=2, items=10, access_token=LEGACY_TOKEN)) as (
        sim,
        url,
    ):
        db = tmp_path / "syncd.db"
        await sync_at_schema_5(db, sim, url)
        assert query(db, "PRAGMA user_version") == [(5,)]
        before = query(db, CHANGES_RAW)
        assert len(count_changes(db)) == 20 + 4 + 2
        # each pass's entries: a full one, an incremental one, a full one
        assert kinds(db, "pass.") == [
            "pass.completed",
            "pass.full_completed",
            "pass.completed",
            "pass.completed",
            "pass.full_completed",
        ]
        [(high_water,)] = query(db, "SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
        mirror_before = mirror(db)
        assert_log_invariants(db)

        config = tmp_path / "syncd.toml"
        config.write_text(f"""
database = "{db}"
shutdown_timeout = 5

[square]
base_url = "{url}"
access_token = "{LEGACY_TOKEN}"
poll_interval = 0.3
catalog_sync = false
overlap = 1
clock_margin = 0
retry_backoff_initial = 0.01
retry_backoff_max = 0.05

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[log]
format = "json"
""")
        async with running(config, db) as daemon:
            deprecated = await daemon.next("config_deprecated", after=0)
            assert "[sources.square]" in str(deprecated["detail"])
            first = await daemon.next("sync_pass", after=0, source="square", outcome="ok")
            assert first["changes"] == 0  # the same data: nothing logged again
            assert query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
            assert query(db, CHANGES_RAW)[: len(before)] == before
            # since then: the passes' own entries, no change of the mirror
            assert set(kinds(db)[len(before) :]) <= {"pass.completed", "pass.full_completed"}
            assert "pass.completed" in kinds(db)[len(before) :]
            assert mirror(db) == mirror_before
            assert query(db, "SELECT source, removed_at FROM sources") == [("square", None)]

            changed = sim.mutate(3)
            for row in changed:
                await until(partial(logged_at, db, "square", row))
        after = query(db, CHANGES_RAW)
        assert after[: len(before)] == before
        assert len(count_changes(db)) == 20 + 4 + 2 + 3
        assert all(entry[0] > high_water for entry in after[len(before) :])
        assert_log_invariants(db)
        assert mirrored(db, "square") == {key_of(r): r["quantity"] for r in sim.snapshot()}
