"""The relay (syncd.publish.relay) against a real redis-server: the change log published in order,
exactly once, through crashes, outages, restarts from the AOF and lost writes; consumer groups."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from syncd.metrics import REGISTRY
from syncd.publish.redis_target import RedisStreamTarget
from syncd.publish.relay import Relay, RelayOptions
from syncd.store import Store, changelog, identity, outbox
from syncd.store.changelog import NewChange
from syncd.store.retention import prune_batch
from tests.redis_kit import (
    BlackHole,
    RedisServer,
    assert_stream_equals_log,
    stream_info,
    stream_messages,
)

STREAM = "syncd:changes:square"
T = TypeVar("T")


def entries(n: int, start: int = 0) -> list[NewChange]:
    """``n`` count entries, plus a removal and a job transition every 50th, like a real log."""
    out = []
    for i in range(start, start + n):
        if i % 50 == 49:
            out.append(
                NewChange(
                    kind="job.succeeded",
                    source="inventory",
                    job_id=i,
                    old={"state": "running"},
                    new={"state": "succeeded"},
                )
            )
        elif i % 50 == 25:
            out.append(
                NewChange(
                    kind="count.removed",
                    source="square",
                    catalog_object_id=f"ITEM{i}",
                    location_id="L1",
                    state="IN_STOCK",
                    old={"quantity": "1"},
                    new=None,
                )
            )
        else:
            out.append(
                NewChange(
                    kind="count.updated",
                    source="square",
                    catalog_object_id=f"ITEM{i}",
                    location_id="L1",
                    state="IN_STOCK",
                    old=None,
                    new={"quantity": str(i), "calculated_at": "2026-01-01T00:00:00Z"},
                )
            )
    return out


async def append(store: Store, n: int, *, per_commit: int = 1000) -> int:
    """Commit ``n`` entries in transactions of ``per_commit``; return the head seq."""
    head = store.changelog_head.head
    for start in range(0, n, per_commit):
        batch = entries(min(per_commit, n - start), head + start)
        await store.write(lambda conn, b=batch: changelog.append(conn, b, "2026-01-01T00:00:00Z"))
    return store.changelog_head.head


def options(**overrides: Any) -> RelayOptions:
    """Fast test defaults: small batches, millisecond backoff, no checkpoint delay."""
    base: dict[str, Any] = {
        "stream": STREAM,
        "batch_size": 100,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "checkpoint_interval": 0.0,
    }
    return RelayOptions(**{**base, **overrides})


@asynccontextmanager
async def running_relay(
    store: Store, url: str, *, maxlen: int = 0, timeout: float = 2.0, **overrides: Any
) -> AsyncIterator[Relay]:
    """A relay publishing ``store`` to ``url`` in this loop until the block ends."""
    target = RedisStreamTarget.from_url(url, maxlen=maxlen, timeout=timeout)
    relay = Relay(store, target, options(**overrides))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
        await target.aclose()


async def caught_up(relay: Relay, store: Store, timeout: float = 10.0) -> None:
    """Wait until the relay has published everything committed so far."""
    try:
        async with asyncio.timeout(timeout):
            while relay.position < store.changelog_head.head:
                await relay.published.wait_past(relay.position)
    except TimeoutError:
        state = {
            "position": relay.position,
            "head": store.changelog_head.head,
            "stream_last": relay.stream_last,
            "reconciled": relay.reconciled,
            "failures": relay.failures,
        }
        raise AssertionError(f"the relay did not catch up: {state}") from None


async def stored_offset(store: Store) -> int | None:
    return await store.read(lambda conn: outbox.published(conn, "redis", STREAM))


def sample(name: str) -> float:
    """The current value of a publishing metric (target ``redis``) as a scrape shows it."""
    value = REGISTRY.get_sample_value(name, {"target": "redis"})
    return 0.0 if value is None else value


def lag_gauge() -> float:
    return sample("syncd_publish_lag_entries")


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(url)
    try:
        yield redis
    finally:
        await redis.aclose()


def _conforms(target: RedisStreamTarget) -> Any:
    """Static check (mypy): the Redis adapter implements the relay's port."""
    from syncd.publish.ports import StreamTarget

    checked: StreamTarget = target
    return checked


async def test_publishes_the_change_log_in_order(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """1,234 committed entries (counts, removals, job transitions) come out of XRANGE exactly as
    the change log: IDs <seq>-0 in order, the flat fields and the JSON payload of each; the offset
    is checkpointed at the head and the lag is 0."""
    head = await append(store, 1234, per_commit=300)
    async with running_relay(store, redis_server.url) as relay:
        await caught_up(relay, store)
        assert relay.lag() == 0
    assert await assert_stream_equals_log(redis_server.url, STREAM, db_path) == head == 1234
    assert await stored_offset(store) == head
    first = (await stream_messages(redis_server.url, STREAM))[0][1]
    assert first[b"key"] == b"ITEM0|L1|IN_STOCK"
    job = (await stream_messages(redis_server.url, STREAM))[49][1]
    assert (job[b"kind"], job[b"source"], job[b"key"]) == (b"job.succeeded", b"inventory", b"49")


async def test_new_commits_wake_the_relay_and_idle_costs_nothing(
    store: Store, db_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caught up, the relay waits on the store's commit signal: no query while idle; a new commit
    is published at once (well under 100 ms here)."""
    reads = 0
    real_read = store.read

    async def counting_read(query: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        nonlocal reads
        reads += 1
        return await real_read(query)

    monkeypatch.setattr(store, "read", counting_read)
    await append(store, 10)
    async with running_relay(store, redis_server.url) as relay:
        await caught_up(relay, store)
        idle_from = reads
        await asyncio.sleep(0.3)
        assert reads == idle_from, "the relay polled while nothing was committed"
        loop = asyncio.get_running_loop()
        started = loop.time()
        head = await append(store, 3)
        await caught_up(relay, store, timeout=1.0)
        assert loop.time() - started < 0.5
        assert relay.position == head == 13
    await assert_stream_equals_log(redis_server.url, STREAM, db_path)


async def test_a_crash_between_batch_and_checkpoint_duplicates_nothing(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """Scenario: the relay published 300 entries but its offset in SQLite still says 120 (it
    crashed before the checkpoint), or has no row at all. A new relay takes the stream's last ID
    (the max), re-sends nothing and goes on after it."""
    await append(store, 300)
    async with running_relay(store, redis_server.url) as relay:
        await caught_up(relay, store)
    for stale in (120, None):
        if stale is None:
            await store.write(lambda conn: conn.execute("DELETE FROM publish_offsets"))
        else:
            await store.write(lambda conn, s=stale: outbox.record(conn, "redis", STREAM, s, "x"))
        await append(store, 50)
        with capture_logs() as logs:
            async with running_relay(store, redis_server.url) as relay:
                await caught_up(relay, store)
        reconciled = next(e for e in logs if e["event"] == "publish_reconciled")
        assert reconciled["offset"] == (stale or 0)
        assert reconciled["stream_last"] == store.changelog_head.head - 50
        assert not [e for e in logs if e["event"] in ("publish_refused", "publish_failed")]
    assert await assert_stream_equals_log(redis_server.url, STREAM, db_path) == 400


async def test_a_stream_that_lost_entries_gets_them_again(
    store: Store, db_path: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Scenario: Redis fails over to a replica that never got the last 100 entries (simulated with
    a second server holding the first 200), then someone deletes the key. Each time the relay
    notices (at start, or when its next batch finds the stream moved) and publishes the missing
    entries again under their IDs: the stream ends equal to the log."""
    await append(store, 300)
    async with running_relay(store, redis_server.url) as relay:
        await caught_up(relay, store)
    replica = RedisServer(tmp_path / "replica")
    await replica.start()
    try:
        async with client(replica.url) as redis:
            for entry_id, fields in (await stream_messages(redis_server.url, STREAM))[:200]:
                await redis.xadd(STREAM, fields, id=entry_id)  # type: ignore[arg-type]
        with capture_logs() as logs:
            async with running_relay(store, replica.url) as relay:
                await caught_up(relay, store)
                assert await assert_stream_equals_log(replica.url, STREAM, db_path) == 300
                async with client(replica.url) as redis:
                    await redis.delete(STREAM)
                await append(store, 10)
                async with asyncio.timeout(10), client(replica.url) as redis:
                    while await redis.xlen(STREAM) < 310:
                        await asyncio.sleep(0.01)
        behind = [e for e in logs if e["event"] == "publish_stream_behind"]
        assert behind[0]["republish"] == 100
        assert await assert_stream_equals_log(replica.url, STREAM, db_path) == 310
    finally:
        await replica.kill()


async def _load(store: Store, stop: asyncio.Event, commits: list[float]) -> None:
    """Commit 5 entries every 5 ms until ``stop``, recording each commit's duration."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await append(store, 5)
        commits.append(loop.time() - started)
        await asyncio.sleep(0.005)


async def test_redis_outage_under_load_catches_up_without_loss_or_duplicates(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """Scenario: commits keep coming; Redis stops for 0.6 s and starts again (same port, its AOF).
    Commits never wait on Redis; the lag grows during the outage; the relay retries with backoff,
    logs the failure once (rate-limited) and `publish_recovered`, catches up, and the stream equals
    the log."""
    stop_load = asyncio.Event()
    commits: list[float] = []
    with capture_logs() as logs:
        async with running_relay(store, redis_server.url, error_log_interval=60) as relay:
            load = asyncio.create_task(_load(store, stop_load, commits))
            async with asyncio.timeout(5):
                while relay.position < 100:
                    await asyncio.sleep(0.01)
            await redis_server.stop()
            during = len(commits)
            await asyncio.sleep(0.6)
            assert len(commits) - during > 20, "commits stalled while Redis was down"
            assert lag_gauge() > 0
            assert relay.failures > 1
            await redis_server.start()
            await asyncio.sleep(0.3)
            stop_load.set()
            await load
            await caught_up(relay, store)
    assert max(commits) < 1.0
    failed = [e for e in logs if e["event"] == "publish_failed"]
    recovered = [e for e in logs if e["event"] == "publish_recovered"]
    assert len(failed) == 1, "repeated failures must be rate-limited"
    assert failed[0]["log_level"] == "error"
    assert len(recovered) == 1
    assert recovered[0]["failures"] > 1
    assert await assert_stream_equals_log(redis_server.url, STREAM, db_path) > 100


async def test_redis_killed_and_restarted_from_its_aof(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    """Scenario: under load, Redis is SIGKILLed mid-publish and restarted from its AOF
    (appendfsync always). The relay reconciles with the reloaded stream: no entry twice, none
    missing."""
    server = RedisServer(tmp_path / "aof", appendfsync="always")
    await server.start()
    try:
        stop_load = asyncio.Event()
        commits: list[float] = []
        async with running_relay(store, server.url, batch_size=20) as relay:
            load = asyncio.create_task(_load(store, stop_load, commits))
            for _ in range(2):  # twice: at a random point of a batch each time
                floor = relay.position + 60
                async with asyncio.timeout(5):
                    while relay.position < floor:
                        await asyncio.sleep(0.001)
                await server.kill()
                await asyncio.sleep(0.1)
                await server.start()
            stop_load.set()
            await load
            await caught_up(relay, store)
        assert (server.directory / "appendonlydir").is_dir()
        assert await assert_stream_equals_log(server.url, STREAM, db_path) > 120
    finally:
        await server.kill()


async def test_consumer_group_with_two_consumers_sees_each_entry_once(
    store: Store, redis_server: RedisServer
) -> None:
    """Two consumers of one group (XREADGROUP ... '>' then XACK) read while the relay publishes:
    together they get every entry exactly once, and nothing is left pending."""
    async with client(redis_server.url) as redis:
        await redis.xgroup_create(STREAM, "tools", id="0", mkstream=True)
    await append(store, 500)
    seen: dict[str, list[bytes]] = {"c1": [], "c2": []}
    done = asyncio.Event()

    async def consume(name: str) -> None:
        async with client(redis_server.url) as redis:
            while True:
                reply = await redis.xreadgroup("tools", name, {STREAM: ">"}, count=7, block=50)
                if not reply:
                    if done.is_set():
                        return
                    continue
                ids = [entry_id for entry_id, _ in reply[0][1]]
                seen[name].extend(ids)
                await redis.xack(STREAM, "tools", *ids)
                await asyncio.sleep(0)

    consumers = [asyncio.create_task(consume(n)) for n in seen]
    async with running_relay(store, redis_server.url) as relay:
        await append(store, 500)  # more while they read
        await caught_up(relay, store)
    async with asyncio.timeout(10):
        while len(seen["c1"]) + len(seen["c2"]) < 1000:
            await asyncio.sleep(0.01)
        done.set()
        await asyncio.gather(*consumers)
    both = seen["c1"] + seen["c2"]
    assert sorted(both, key=lambda i: int(i.split(b"-")[0])) == [
        f"{seq}-0".encode() for seq in range(1, 1001)
    ]
    assert seen["c1"], "both consumers should have had a share"
    assert seen["c2"], "both consumers should have had a share"
    async with client(redis_server.url) as redis:
        assert (await redis.xpending(STREAM, "tools"))["pending"] == 0


async def test_a_hung_redis_never_blocks_commits(store: Store) -> None:
    """Scenario: Redis accepts connections but never answers. Commits go on at full speed; the
    relay times out, backs off and logs; the lag counts every committed entry."""
    commits: list[float] = []
    with capture_logs() as logs:
        async with BlackHole() as hole, running_relay(store, hole.url, timeout=0.2) as relay:
            loop = asyncio.get_running_loop()
            for _ in range(40):
                started = loop.time()
                await append(store, 5)
                commits.append(loop.time() - started)
            async with asyncio.timeout(5):
                while relay.failures < 1:
                    await asyncio.sleep(0.01)
            assert relay.lag() == 200
            assert lag_gauge() == 200
    assert max(commits) < 0.5
    failed = [e for e in logs if e["event"] == "publish_failed"]
    assert failed
    assert failed[0]["redis_error"] == "TimeoutError"


async def test_entries_pruned_before_publishing_are_a_logged_gap(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """Retention pruned seqs 1..40 before the relay could publish them: it logs `publish_gap`
    (40 skipped), counts them, and publishes 41..100."""
    await append(store, 100)
    await store.write(lambda conn: prune_batch(conn, cutoff=None, max_rows=60, batch=1000))
    before = sample("syncd_publish_skipped_total")
    with capture_logs() as logs:
        async with running_relay(store, redis_server.url) as relay:
            await caught_up(relay, store)
    gap = next(e for e in logs if e["event"] == "publish_gap")
    assert (gap["after"], gap["skipped"], gap["next_seq"]) == (0, 40, 41)
    assert sample("syncd_publish_skipped_total") - before == 40
    ids = [i for i, _ in await stream_messages(redis_server.url, STREAM)]
    assert ids == [f"{seq}-0".encode() for seq in range(41, 101)]


async def test_a_stream_ahead_of_the_log_is_left_alone(
    store: Store, redis_server: RedisServer
) -> None:
    """The stream already holds an ID beyond this log's head (another database publishes to the
    same key): the relay refuses to publish, logs why with a hint, and keeps retrying."""
    async with client(redis_server.url) as redis:
        await redis.xadd(STREAM, {"seq": "999999"}, id="999999-0")
    await append(store, 10)
    with capture_logs() as logs:
        async with running_relay(store, redis_server.url) as relay:
            async with asyncio.timeout(5):
                while relay.failures < 2:
                    await asyncio.sleep(0.01)
    failed = next(e for e in logs if e["event"] == "publish_failed")
    assert failed["stream_last"] == 999999
    assert "another database" in failed["hint"]
    assert (await stream_info(redis_server.url, STREAM))["length"] == 1


async def test_maxlen_trims_approximately(store: Store, redis_server: RedisServer) -> None:
    """With maxlen 100 the stream is trimmed as it grows (MAXLEN ~): about 100 entries stay, the
    newest, and the last ID is still the head."""
    await append(store, 2000)
    async with running_relay(store, redis_server.url, maxlen=100) as relay:
        await caught_up(relay, store)
    info = await stream_info(redis_server.url, STREAM)
    assert 100 <= info["length"] < 400
    assert info["last-generated-id"] == b"2000-0"
    assert info["entries-added"] == 2000


async def test_target_refuses_ids_it_already_has(redis_server: RedisServer) -> None:
    """The Redis target adds nothing when the stream's last ID is not the expected one, and counts
    IDs not above the last one as already published instead of adding them twice."""
    from syncd.errors import PublishError
    from syncd.publish.ports import Message

    target = RedisStreamTarget.from_url(redis_server.url)
    try:
        batch = [Message(seq, {b"seq": str(seq).encode()}) for seq in (1, 2, 3)]
        assert await target.claim(STREAM, "db-1") == "db-1"
        assert await target.append(STREAM, batch, expect_last=0, owner="db-1") == 0
        assert await target.last_seq(STREAM) == 3
        with pytest.raises(PublishError, match="moved"):
            await target.append(STREAM, [Message(4, {b"seq": b"4"})], expect_last=2, owner="db-1")
        again = [Message(seq, {b"seq": str(seq).encode()}) for seq in (2, 3, 4)]
        assert await target.append(STREAM, again, expect_last=3, owner="db-1") == 2
        assert [i for i, _ in await stream_messages(redis_server.url, STREAM)] == [
            b"1-0",
            b"2-0",
            b"3-0",
            b"4-0",
        ]
        assert await target.last_seq("no-such-stream") == 0
    finally:
        await target.aclose()
        await target.aclose()  # idempotent


async def test_a_redis_user_limited_to_the_stream_commands_is_enough(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """The relay needs only XADD, XINFO STREAM, WATCH/UNWATCH, MULTI/EXEC on its stream and GET/SET
    on its claim KEY:owner (and AUTH): an ACL user with just those publishes the log
    (docs/changelog.md names them)."""
    async with client(redis_server.url) as admin:
        await admin.execute_command(
            "ACL",
            "SETUSER",
            "relay",
            "on",
            ">s3cret",
            "~syncd:changes:*",
            "resetchannels",
            "-@all",
            "+xadd",
            "+xinfo|stream",
            "+watch",
            "+unwatch",
            "+multi",
            "+exec",
            "+get",
            "+set",
        )
    url = f"redis://relay:s3cret@127.0.0.1:{redis_server.port}/0"
    await append(store, 250)
    async with running_relay(store, url) as relay:
        await caught_up(relay, store)
    assert await assert_stream_equals_log(redis_server.url, STREAM, db_path) == 250


async def test_a_graceful_stop_publishes_what_was_committed_until_then(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """Entries committed just before the stop are still published before `run` returns (the
    stop-drain), and the offset is checkpointed at the head."""
    target = RedisStreamTarget.from_url(redis_server.url)
    relay = Relay(store, target, options())
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await append(store, 10)
        await caught_up(relay, store)
        await append(store, 990)
        stop.set()
        async with asyncio.timeout(10):
            await task
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await target.aclose()
    assert await assert_stream_equals_log(redis_server.url, STREAM, db_path) == 1000
    assert await stored_offset(store) == 1000


# --- one database per stream (issue 11) ---------------------------------------------------------

OWNER = STREAM + ":owner"


def conflict_gauge(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "syncd_publish_stream_conflict", {"target": "redis", "reason": reason}
    )
    return 0.0 if value is None else value


async def refused_column(store: Store) -> str | None:
    [row] = await store.read(outbox.all_offsets)
    refused: str | None = row["refused"]
    return refused


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_a_stream_claimed_by_another_database_gets_nothing(
    store: Store, db_path: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Database A publishes 100 entries and owns the stream. Database B, with 300 entries (its
    seqs are beyond the stream's, so the "ahead" check alone would let it write 101..300), is
    refused by the claim: `publish_stream_owned` names both ids and the reset command, the conflict
    gauge is 1 and `publish_offsets.refused` says why; nothing of B's reaches the stream while A
    goes on publishing. After the operator resets the stream (DEL KEY KEY:owner), B claims it and
    publishes its own log, and A is the one refused."""
    a_id = await store.read(identity.database_id)
    await append(store, 100)
    other = await Store.open(tmp_path / "other.db")
    try:
        b_id = await other.read(identity.database_id)
        assert a_id is not None
        assert b_id is not None
        assert a_id != b_id
        await append(other, 300)
        async with running_relay(store, redis_server.url) as a:
            await caught_up(a, store)
            async with client(redis_server.url) as redis:
                assert await redis.get(OWNER) == a_id.encode()
            with capture_logs() as logs:
                async with running_relay(other, redis_server.url) as b:
                    await wait_for(lambda: b.failures >= 3)
                    assert conflict_gauge("owned") == 1
                    assert b.conflict is not None
                    assert b.conflict.reason == "owned"
                    assert "belongs to database " + a_id in (await refused_column(other) or "")
                    await append(store, 40)  # A goes on meanwhile
                    await caught_up(a, store)
            owned = [e for e in logs if e["event"] == "publish_stream_owned"]
            assert len(owned) == 1, "one line per refusal, not one per retry"
            assert (owned[0]["owner"], owned[0]["database_id"]) == (a_id, b_id)
            assert owned[0]["stream"] == STREAM
            assert f"redis-cli DEL {STREAM} {OWNER}" in owned[0]["hint"]
            assert "{instance}" in owned[0]["hint"]
            assert not [e for e in logs if e["event"] == "publish_failed"]
            assert await assert_stream_equals_log(redis_server.url, STREAM, db_path) == 140

            async with client(redis_server.url) as redis:
                await redis.delete(STREAM, OWNER)
            async with running_relay(other, redis_server.url) as b:
                await caught_up(b, other)
                assert conflict_gauge("owned") == 0
                assert await refused_column(other) is None
                await append(store, 1)  # A's next batch finds the stream taken over
                await wait_for(lambda: a.conflict is not None)
                assert a.conflict is not None
                assert a.conflict.context["owner"] == b_id
        assert (
            await assert_stream_equals_log(redis_server.url, STREAM, tmp_path / "other.db") == 300
        )
    finally:
        await other.aclose()


async def test_a_claim_taken_over_mid_run_stops_the_next_batch(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """While the relay runs, the claim is replaced by another database's id (a reset and a claim
    by another syncd between two batches): the next batch checks the claim under its WATCH and
    adds nothing; the refusal names the new owner with the reset hint."""
    await append(store, 50)
    with capture_logs() as logs:
        async with running_relay(store, redis_server.url) as relay:
            await caught_up(relay, store)
            async with client(redis_server.url) as redis:
                await redis.set(OWNER, "someone-else")
            await append(store, 25)
            await wait_for(lambda: relay.conflict is not None)
    owned = next(e for e in logs if e["event"] == "publish_stream_owned")
    assert owned["owner"] == "someone-else"
    assert f"redis-cli DEL {STREAM} {OWNER}" in owned["hint"]
    assert (await stream_info(redis_server.url, STREAM))["last-generated-id"] == b"50-0"


async def test_a_deleted_claim_is_taken_again_and_nothing_is_lost(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """Only KEY:owner is deleted while the relay runs: its next batch notices the claim is gone,
    reconciles, claims the stream again (its seqs still fit this log) and goes on."""
    await append(store, 50)
    async with running_relay(store, redis_server.url) as relay:
        await caught_up(relay, store)
        async with client(redis_server.url) as redis:
            await redis.delete(OWNER)
        await append(store, 50)
        await caught_up(relay, store)
        async with client(redis_server.url) as redis:
            assert await redis.get(OWNER) == (await store.read(identity.database_id) or "").encode()
    assert await assert_stream_equals_log(redis_server.url, STREAM, db_path) == 100


async def test_a_stream_from_before_claims_is_claimed_when_it_fits_the_log(
    store: Store, db_path: Path, redis_server: RedisServer
) -> None:
    """A stream published by a syncd without claims (no KEY:owner) whose last ID is within this
    log is claimed at the first connection, logged with its last ID, and continued."""
    await append(store, 80)
    async with running_relay(store, redis_server.url) as relay:
        await caught_up(relay, store)
    async with client(redis_server.url) as redis:
        await redis.delete(OWNER)
    await append(store, 20)
    with capture_logs() as logs:
        async with running_relay(store, redis_server.url) as relay:
            await caught_up(relay, store)
    claimed = next(e for e in logs if e["event"] == "publish_stream_claimed")
    assert claimed["stream_last"] == 80
    assert claimed["database_id"] == await store.read(identity.database_id)
    assert await assert_stream_equals_log(redis_server.url, STREAM, db_path) == 100


async def test_two_databases_claiming_at_once_one_wins(redis_server: RedisServer) -> None:
    """Claims race: of many claims sent together for one stream, one wins and every caller is
    told the same owner."""
    targets = [RedisStreamTarget.from_url(redis_server.url) for _ in range(8)]
    try:
        owners = await asyncio.gather(*(t.claim(STREAM, f"db-{i}") for i, t in enumerate(targets)))
        assert len(set(owners)) == 1
        assert await targets[0].owner(STREAM) == owners[0]
        assert await targets[0].owner("no-such-stream") is None
    finally:
        for target in targets:
            await target.aclose()


def backup(source: Path, dest: Path) -> None:
    """An online backup of the database file (sqlite3's backup API), as an operator takes one."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


async def test_a_restored_backup_keeps_its_claim(
    store: Store, db_path: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A backup taken with the stream at its head, restored (the file copied back: same
    database_id), publishes on into the same stream: its claim holds."""
    await append(store, 60)
    async with running_relay(store, redis_server.url) as relay:
        await caught_up(relay, store)
    copy = tmp_path / "restored.db"
    backup(db_path, copy)
    restored = await Store.open(copy)
    try:
        assert await restored.read(identity.database_id) == await store.read(identity.database_id)
        await append(restored, 15)
        with capture_logs() as logs:
            async with running_relay(restored, redis_server.url) as relay:
                await caught_up(relay, restored)
        assert not [e for e in logs if e["event"] in ("publish_stream_owned", "publish_failed")]
    finally:
        await restored.aclose()
    assert await assert_stream_equals_log(redis_server.url, STREAM, copy) == 75


async def test_a_backup_older_than_its_stream_is_refused_until_its_log_moves_past(
    store: Store, db_path: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The backup was taken at seq 60, the stream got to 90 before the database was lost. The
    restored database owns the stream (same id) but its next seqs 61.. would reuse IDs consumers
    have seen: refused as "ahead", with the hint to move its log past the stream. Done as the hint
    says (sqlite_sequence, syncd stopped), it publishes on from 91: no seq reused."""
    await append(store, 60)
    copy = tmp_path / "restored.db"
    backup(db_path, copy)
    await append(store, 30)
    async with running_relay(store, redis_server.url) as relay:
        await caught_up(relay, store)
    first_90 = await stream_messages(redis_server.url, STREAM)
    restored = await Store.open(copy)
    try:
        with capture_logs() as logs:
            async with running_relay(restored, redis_server.url) as relay:
                await wait_for(lambda: relay.failures >= 2)
                assert conflict_gauge("ahead") == 1
                assert "ahead of this change log" in (await refused_column(restored) or "")
        failed = next(e for e in logs if e["event"] == "publish_failed")
        assert (failed["reason"], failed["stream_last"], failed["head"]) == ("ahead", 90, 60)
        assert "restored from a backup" in failed["hint"]
        assert "UPDATE sqlite_sequence SET seq = 90 WHERE name = 'changes'" in failed["hint"]
    finally:
        await restored.aclose()
    conn = sqlite3.connect(copy)
    try:
        with conn:
            conn.execute("UPDATE sqlite_sequence SET seq = 90 WHERE name = 'changes'")
    finally:
        conn.close()
    restored = await Store.open(copy)
    try:
        await append(restored, 10)
        async with running_relay(restored, redis_server.url) as relay:
            await caught_up(relay, restored)
            assert conflict_gauge("ahead") == 0
        assert await refused_column(restored) is None
    finally:
        await restored.aclose()
    got = await stream_messages(redis_server.url, STREAM)
    assert got[:90] == first_90
    assert [i for i, _ in got[90:]] == [f"{seq}-0".encode() for seq in range(91, 101)]
