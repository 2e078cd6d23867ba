"""Outbound webhooks (issue 14): Standard Webhooks signing checked by the ``standardwebhooks``
package, and the deliverer against real aiohttp receivers on 127.0.0.1 over a real SQLite store:
order, batching, retries with backoff and Retry-After, 410 and the failure window, filters,
restarts with the batch in flight, replays, gaps, and endpoints that never slow each other."""

from __future__ import annotations

import asyncio
import base64
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from syncd.errors import ChangelogGap, ReplayRefused
from syncd.metrics import REGISTRY
from syncd.outbound import signing
from syncd.outbound.deliverer import Deliverer, DelivererOptions, message_id
from syncd.outbound.http_target import HttpEndpoint
from syncd.store import Store, changelog, outbound
from syncd.store.changelog import NewChange
from syncd.store.outbound import Filter
from syncd.store.retention import prune_batch
from tests.outbound_kit import Receiver, Reply, always, fail_first, receiving

SECRET = signing.new_secret()
KEY = signing.parse_secret(SECRET)


# --- signing -------------------------------------------------------------------------------------


def test_signatures_verify_with_the_standardwebhooks_package() -> None:
    """Our headers verify with the reference library; a changed body, id, timestamp or secret
    does not; and our signature equals the library's own for the same message."""
    body = b'{"type":"syncd.changes","data":{"changes":[]}}'
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers(KEY, "syncd-abc-0-1-2", now, body)
    assert Webhook(SECRET).verify(body, headers) == orjson.loads(body)
    expected = Webhook(SECRET).sign("syncd-abc-0-1-2", datetime.fromtimestamp(now, UTC), body)
    assert headers["webhook-signature"] == expected
    for bad_body, bad_headers in (
        (body + b" ", headers),
        (body, {**headers, "webhook-id": "syncd-abc-0-1-3"}),
        (body, {**headers, "webhook-timestamp": str(now + 1)}),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(bad_body, bad_headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)


def test_secrets_must_be_standard_webhooks_secrets() -> None:
    assert len(signing.parse_secret(signing.new_secret(24))) == 24
    assert signing.parse_secret("whsec_" + base64.b64encode(b"k" * 64).decode()) == b"k" * 64
    for bad, why in (
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
        ("whsec_not base64!", "valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24..64 bytes"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "24..64 bytes"),
    ):
        with pytest.raises(ValueError, match=why):
            signing.parse_secret(bad)


# --- a store with entries ------------------------------------------------------------------------


def entry(i: int) -> NewChange:
    """Entry ``i``: mostly count updates of source square, a removal every 10th, a job
    transition every 25th, and a count of source other every 7th."""
    if i % 25 == 24:
        return NewChange(
            kind="job.succeeded",
            source="warehouse",
            job_id=i,
            old={"state": "running"},
            new={"state": "succeeded"},
        )
    kind, new = ("count.removed", None) if i % 10 == 9 else ("count.updated", {"quantity": str(i)})
    return NewChange(
        kind=kind,
        source="other" if i % 7 == 6 else "square",
        catalog_object_id=f"ITEM{i}",
        location_id="L1",
        state="IN_STOCK",
        old=None,
        new=new,
    )


async def append(store: Store, n: int, *, per_commit: int = 50) -> int:
    """Commit ``n`` more entries; return the head seq."""
    head = store.changelog_head.head
    for start in range(0, n, per_commit):
        batch = [entry(head + start + j) for j in range(min(per_commit, n - start))]
        await store.write(lambda conn, b=batch: changelog.append(conn, b, "2026-01-01T00:00:00Z"))
    return store.changelog_head.head


async def prune(store: Store, n: int) -> None:
    """Retention removes the oldest ``n`` entries."""
    keep = store.changelog_head.head - n
    await store.write(lambda conn: prune_batch(conn, cutoff=None, max_rows=keep, batch=n))


def options(name: str = "rx", **overrides: Any) -> DelivererOptions:
    """Fast test defaults: small batches, millisecond backoff, every failure logged."""
    base: dict[str, Any] = {
        "name": name,
        "key": KEY,
        "batch_size": 20,
        "backoff_initial": 0.005,
        "max_backoff": 0.02,
        "error_log_interval": 0.0,
        "checkpoint_interval": 0.0,
        "stop_grace": 0.2,
    }
    return DelivererOptions(**{**base, **overrides})


@asynccontextmanager
async def delivering(
    store: Store, url: str, *, timeout: float = 5.0, **overrides: Any
) -> AsyncIterator[Deliverer]:
    """A deliverer to ``url`` running in this loop until the block ends."""
    endpoint = HttpEndpoint(url, timeout=timeout)
    deliverer = Deliverer(store, endpoint, options(**overrides))
    stop = asyncio.Event()
    task = asyncio.create_task(deliverer.run(stop))
    try:
        yield deliverer
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
        await endpoint.aclose()


async def acked_up_to(deliverer: Deliverer, seq: int, timeout: float = 10.0) -> None:
    """Until the deliverer's position reaches ``seq``."""
    async with asyncio.timeout(timeout):
        while deliverer.position < seq:
            await deliverer.delivered.wait_past(deliverer.delivered.head)


def stored(db: Path, name: str = "rx") -> dict[str, Any]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM outbound_endpoints WHERE name = ?", (name,)).fetchone()
        return {} if row is None else dict(row)
    finally:
        conn.close()


def metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def assert_in_order(receiver: Receiver, head: int) -> None:
    """Every seq 1..head reached the receiver with a 2xx exactly once, in order, and every
    POST (also the failed ones) carried ascending seqs that never went back before the last
    acknowledged one."""
    assert receiver.accepted_seqs() == list(range(1, head + 1))
    last_acked = 0
    for delivery in receiver.deliveries:
        assert list(delivery.seqs) == sorted(set(delivery.seqs))
        assert delivery.seqs[0] == last_acked + 1, (delivery.webhook_id, last_acked)
        assert delivery.verified
        if 200 <= delivery.status < 300:
            last_acked = delivery.seqs[-1]


# --- delivery ------------------------------------------------------------------------------------


async def test_delivers_every_entry_in_order_in_signed_batches(store: Store, db_path: Path) -> None:
    """95 entries in batches of 20: five POSTs, each verified, ids naming the database, epoch
    and seq range, bodies of the documented shape; the position is stored."""
    head = await append(store, 95)
    async with receiving(SECRET) as receiver, delivering(store, receiver.url) as deliverer:
        await acked_up_to(deliverer, head)
        assert_in_order(receiver, head)
        assert [d.seqs[0] for d in receiver.deliveries] == [1, 21, 41, 61, 81]
        dbid = deliverer.database_id
        assert [d.webhook_id for d in receiver.deliveries][:2] == [
            message_id(dbid, 0, 1, 20),
            message_id(dbid, 0, 21, 40),
        ]
        assert receiver.deliveries[0].webhook_id == f"syncd-{dbid[:16]}-0-1-20"
        body = receiver.deliveries[0].body
        assert body["type"] == "syncd.changes"
        assert body["data"]["endpoint"] == "rx"
        assert (body["data"]["first_seq"], body["data"]["last_seq"]) == (1, 20)
        first = body["data"]["changes"][0]
        assert first["seq"] == 1
        assert first["kind"] == "count.updated"
        assert first["new"] == {"quantity": "0"}
        assert body["timestamp"] == body["data"]["changes"][-1]["recorded_at"]
        # Entries committed later are delivered as they come (woken by the commit).
        head = await append(store, 5)
        await acked_up_to(deliverer, head)
    assert_in_order(receiver, head)
    row = stored(db_path)
    assert row["acked_seq"] == head
    assert row["pending_last"] is None
    assert row["state"] == "active"
    assert metric("syncd_outbound_lag_entries", endpoint="rx") == 0


async def test_retries_the_same_batch_until_a_2xx(store: Store, db_path: Path) -> None:
    """Three 500s, a timeout-free connection reset... then 200: every attempt carries the same
    webhook-id and the same body, fresh timestamps are signed, and the failure streak is
    recorded while it lasts and cleared after."""
    head = await append(store, 30)
    attempts_before = metric(
        "syncd_outbound_attempts_total", endpoint="retry", outcome="http_error"
    )
    async with (
        receiving(SECRET, fail_first(3)) as receiver,
        delivering(store, receiver.url, name="retry") as deliverer,
    ):
        await receiver.wait_for(lambda r: len(r.deliveries) >= 3)
        assert stored(db_path, "retry")["failing_since"] is not None
        assert "HTTP 500" in stored(db_path, "retry")["last_error"]
        await acked_up_to(deliverer, head)
    first_four = receiver.deliveries[:4]
    assert [d.status for d in first_four] == [500, 500, 500, 200]
    assert len({d.webhook_id for d in first_four}) == 1
    assert len({orjson.dumps(d.body) for d in first_four}) == 1
    assert_in_order(receiver, head)
    row = stored(db_path, "retry")
    assert row["failing_since"] is None
    assert row["last_error"] is None
    assert (
        metric("syncd_outbound_attempts_total", endpoint="retry", outcome="http_error")
        - attempts_before
        == 3
    )


async def test_retry_after_is_honoured(store: Store) -> None:
    """A 503 with Retry-After: 1 holds the next attempt back for a second, although the backoff
    would allow the next one after 20 ms."""
    head = await append(store, 5)
    script = fail_first(1, Reply(503, headers={"Retry-After": "1"}))
    async with (
        receiving(SECRET, script) as receiver,
        delivering(store, receiver.url, name="later") as deliverer,
    ):
        await acked_up_to(deliverer, head)
    first, second = receiver.deliveries[:2]
    assert second.at - first.at >= 0.95
    assert first.webhook_id == second.webhook_id


async def test_a_410_disables_the_endpoint_until_it_is_replayed(
    store: Store, db_path: Path
) -> None:
    """410 Gone: disabled at once (stored with its reason, the gauge is 1), nothing more is sent,
    also for entries committed afterwards; a replay without --from resumes with the same batch
    and webhook-id; everything then arrives once, in order."""
    head = await append(store, 10)
    gone = {"yes": True}

    def script(_: int) -> Reply:
        return Reply(410, body="endpoint deleted") if gone["yes"] else Reply()

    async with (
        receiving(SECRET, script) as receiver,
        delivering(store, receiver.url, name="gone") as deliverer,
    ):
        async with asyncio.timeout(10):
            while deliverer.disabled is None:
                await asyncio.sleep(0.01)
        assert "410" in deliverer.disabled
        assert "endpoint deleted" in deliverer.disabled
        row = stored(db_path, "gone")
        assert row["state"] == "disabled"
        assert "410 Gone" in row["disabled_reason"]
        assert row["disabled_at"] is not None
        assert metric("syncd_outbound_disabled", endpoint="gone") == 1
        head = await append(store, 10)
        gone["yes"] = False
        replayed = await deliverer.replay(None)
        assert replayed.state == "active"
        assert replayed.acked_seq == 0
        await acked_up_to(deliverer, head)
    assert [d.status for d in receiver.deliveries[:2]] == [410, 200]
    assert receiver.deliveries[0].webhook_id == receiver.deliveries[1].webhook_id
    assert_in_order(receiver, head)
    assert metric("syncd_outbound_disabled", endpoint="gone") == 0
    assert stored(db_path, "gone")["disabled_reason"] is None


async def test_failing_longer_than_disable_after_disables(store: Store, db_path: Path) -> None:
    """An endpoint that answers 500 without a break for disable_after (0.3 s) is disabled, with
    the window and the last error as the reason; the streak's start is kept in the database."""
    await append(store, 5)
    async with (
        receiving(SECRET, always(Reply(500, body="boom"))) as receiver,
        delivering(store, receiver.url, name="flaky", disable_after=0.3) as deliverer,
    ):
        async with asyncio.timeout(10):
            while deliverer.disabled is None:
                await asyncio.sleep(0.01)
        attempts = len(receiver.deliveries)
    assert attempts >= 2
    reason = stored(db_path, "flaky")["disabled_reason"]
    assert "disable_after 0.3 s" in reason
    assert "HTTP 500: boom" in reason
    assert stored(db_path, "flaky")["failing_since"] is not None
    assert stored(db_path, "flaky")["acked_seq"] == 0


async def test_a_dead_endpoint_keeps_its_failure_window_over_a_restart(
    store: Store, db_path: Path
) -> None:
    """Connection refused (nothing listens): failures are counted as connection errors, the
    streak's start is stored, and a new deliverer (a restart) continues the same window
    instead of starting a new one."""
    await append(store, 5)
    async with receiving(SECRET) as receiver:
        url = receiver.url  # a port nothing listens on once the block ends
    async with delivering(store, url, name="dead", disable_after=3600) as deliverer:
        async with asyncio.timeout(10):
            while stored(db_path, "dead").get("failing_since") is None:
                await asyncio.sleep(0.01)
    since = stored(db_path, "dead")["failing_since"]
    assert metric("syncd_outbound_attempts_total", endpoint="dead", outcome="connection") >= 1
    async with delivering(store, url, name="dead", disable_after=3600) as deliverer:
        async with asyncio.timeout(10):
            while deliverer.failures < 2:
                await asyncio.sleep(0.01)
        assert deliverer.failing_since is not None
    assert stored(db_path, "dead")["failing_since"] == since


async def test_no_reordering_under_random_failures(store: Store) -> None:
    """A seeded mix of 2xx, 5xx, 429s and slow answers over 400 entries in batches of 7:
    every seq arrives acknowledged exactly once, in order, with no POST ever skipping ahead."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    replies = [
        rng.choice(
            [Reply(), Reply(), Reply(), Reply(500), Reply(429), Reply(202), Reply(delay=0.01)]
        )
        for _ in range(2000)
    ]
    head = await append(store, 400)
    async with (
        receiving(SECRET, lambda i: replies[i % len(replies)]) as receiver,
        delivering(store, receiver.url, name="mixed", batch_size=7) as deliverer,
    ):
        await acked_up_to(deliverer, head, timeout=30)
    assert_in_order(receiver, head)


async def test_filters_by_kind_and_source(store: Store, db_path: Path) -> None:
    """kinds = count.removed and job.*, sources = square and warehouse: only those entries, in
    order, and the position still moves to the head past everything else."""
    head = await append(store, 200)
    flt = Filter(kinds=("count.removed", "job.*"), sources=("square", "warehouse"))
    async with (
        receiving(SECRET) as receiver,
        delivering(store, receiver.url, name="picky", filter=flt, batch_size=5) as deliverer,
    ):
        async with asyncio.timeout(10):
            while stored(db_path, "picky").get("acked_seq", 0) < head:
                await asyncio.sleep(0.01)
        assert deliverer.position == head
    expected = [
        i + 1
        for i in range(200)
        if (e := entry(i)).source in ("square", "warehouse")
        and (e.kind == "count.removed" or e.kind.startswith("job."))
    ]
    assert receiver.accepted_seqs() == expected
    kinds = {c["kind"] for d in receiver.deliveries for c in d.body["data"]["changes"]}
    assert kinds == {"count.removed", "job.succeeded"}


async def test_a_slow_endpoint_never_slows_another(store: Store) -> None:
    """Endpoint slow holds every request for 30 s; endpoint fast gets all 300 entries meanwhile,
    and commits go on, while slow still waits on its first answer."""
    head = await append(store, 150)
    async with (
        receiving(SECRET, always(Reply(delay=30))) as slow_rx,
        receiving(SECRET) as fast_rx,
        delivering(store, slow_rx.url, name="slow", timeout=60) as slow,
        delivering(store, fast_rx.url, name="fast") as fast,
    ):
        await slow_rx.wait_for(lambda r: len(r.deliveries) == 1)
        head = await append(store, 150)
        await acked_up_to(fast, head)
        assert slow.position == 0
        assert len(slow_rx.deliveries) == 1
    assert_in_order(fast_rx, head)


async def test_a_restart_resends_the_batch_in_flight_under_the_same_id(
    store: Store, db_path: Path
) -> None:
    """A deliverer stopped hard while its POST is held (no answer) leaves the batch's range in
    the database; the next one, with more entries committed meanwhile, sends exactly the same
    entries under the same webhook-id first, then the rest. Deduped by webhook-id, the
    receiver has every entry once."""
    head = await append(store, 12)
    hold = {"on": True}
    async with receiving(SECRET, lambda _: Reply(delay=30) if hold["on"] else Reply()) as rx:
        endpoint = HttpEndpoint(rx.url, timeout=60)
        first = Deliverer(store, endpoint, options(batch_size=20))
        task = asyncio.create_task(first.run(asyncio.Event()))
        await rx.wait_for(lambda r: len(r.deliveries) == 1)
        task.cancel()  # like SIGKILL: no answer, nothing acknowledged
        with pytest.raises(asyncio.CancelledError):
            await task
        await endpoint.aclose()
        assert stored(db_path)["pending_last"] == head
        hold["on"] = False
        head = await append(store, 30)
        async with delivering(store, rx.url) as second:
            await acked_up_to(second, head)
    held, again = rx.deliveries[0], rx.deliveries[1]
    assert held.seqs == again.seqs == tuple(range(1, 13))
    assert held.webhook_id == again.webhook_id
    unique = {d.webhook_id: d.seqs for d in rx.deliveries}
    assert [seq for seqs in unique.values() for seq in seqs] == list(range(1, head + 1))


def crash_image(db: Path, copy: Path) -> None:
    """What a SIGKILL would leave: the committed state of ``db``, copied (SQLite backup)."""
    source, target = sqlite3.connect(db), sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


async def test_a_crash_before_the_position_is_written_resends_the_same_batches(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    """The position is written at most every checkpoint_interval (60 s here): a crash after
    several acknowledged full batches leaves an older position, and a restart forms the same
    full batches from it again, under the same webhook-ids."""
    head = await append(store, 45)
    crashed = tmp_path / "crashed.db"
    script = lambda i: Reply(delay=30) if i == 3 else Reply()  # noqa: E731
    async with receiving(SECRET, script) as rx:
        async with delivering(store, rx.url, batch_size=10, checkpoint_interval=60) as first:
            await rx.wait_for(lambda r: len(r.deliveries) == 4)
            assert first.position == 30
            crash_image(db_path, crashed)
        rx.script = lambda _: Reply()
        restarted = await Store.open(crashed)
        try:
            assert await restarted.read(lambda c: outbound.load(c, "rx")) is not None
            async with delivering(restarted, rx.url, batch_size=10) as second:
                await acked_up_to(second, head)
        finally:
            await restarted.aclose()
    assert stored(crashed)["acked_seq"] == head
    ids: dict[str, tuple[int, ...]] = {}
    for d in rx.deliveries:
        assert ids.setdefault(d.webhook_id, d.seqs) == d.seqs
    assert [d.seqs[0] for d in rx.deliveries] == [1, 11, 21, 31, 11, 21, 31, 41]
    assert [s for seqs in ids.values() for s in seqs] == list(range(1, head + 1))


async def test_replay_from_a_seq_sends_again_under_new_ids(store: Store, db_path: Path) -> None:
    """After everything was delivered, a replay from seq 31 sends 31.. again, in order, under
    new webhook-ids (epoch 1); replays beyond the head + 1 or into pruned entries are refused."""
    head = await append(store, 60)
    async with receiving(SECRET) as rx, delivering(store, rx.url, name="again") as deliverer:
        await acked_up_to(deliverer, head)
        first_ids = {d.webhook_id for d in rx.deliveries}
        row = await deliverer.replay(31)
        assert (row.acked_seq, row.epoch, row.state) == (30, 1, "active")
        await acked_up_to(deliverer, head)
        with pytest.raises(ReplayRefused):
            await deliverer.replay(head + 2)
        await prune(store, 10)
        with pytest.raises(ChangelogGap):
            await deliverer.replay(5)
        row = await deliverer.replay(head + 1)  # skip to the head: nothing more to send
        assert row.acked_seq == head
    replayed = rx.deliveries[3:]
    assert [s for d in replayed for s in d.seqs] == list(range(31, head + 1))
    assert not first_ids & {d.webhook_id for d in replayed}
    assert all(d.webhook_id.split("-")[2] == "1" for d in replayed)
    assert stored(db_path, "again")["epoch"] == 2


async def test_entries_pruned_before_delivery_are_skipped_and_counted(store: Store) -> None:
    """Retention pruned seqs 1..40 before the endpoint's first start: delivery starts at 41,
    and the 40 are counted as skipped."""
    head = await append(store, 60)
    await prune(store, 40)
    before = metric("syncd_outbound_skipped_total", endpoint="late")
    async with receiving(SECRET) as rx, delivering(store, rx.url, name="late") as deliverer:
        await acked_up_to(deliverer, head)
    assert rx.accepted_seqs() == list(range(41, head + 1))
    assert metric("syncd_outbound_skipped_total", endpoint="late") - before == 40


async def test_a_new_endpoint_can_start_at_the_head(store: Store) -> None:
    """start = head: a new endpoint gets only what is committed after its first start."""
    old = await append(store, 25)
    async with receiving(SECRET) as rx, delivering(store, rx.url, name="new", from_head=True) as d:
        async with asyncio.timeout(10):
            while not d.loaded:
                await asyncio.sleep(0.005)
        assert d.position == old
        head = await append(store, 5)
        await acked_up_to(d, head)
    assert rx.accepted_seqs() == list(range(old + 1, head + 1))


async def test_redirects_are_failures_not_followed(store: Store, db_path: Path) -> None:
    """A 307 is not followed (the body is signed for this URL): it is a failed attempt."""
    await append(store, 3)
    script = always(Reply(307, headers={"Location": "http://127.0.0.1:1/elsewhere"}))
    async with (
        receiving(SECRET, script) as rx,
        delivering(store, rx.url, name="moved") as deliverer,
    ):
        await rx.wait_for(lambda r: len(r.deliveries) >= 2)
        assert deliverer.position == 0
    assert "HTTP 307" in stored(db_path, "moved")["last_error"]


async def test_endpoint_rows_on_a_fresh_database(store: Store) -> None:
    """The store functions alone: ensure creates at 0 (or the head), replay of a new endpoint
    creates it, and all_endpoints lists by name."""
    await append(store, 3)
    at = "2026-01-01T00:00:00Z"
    created = await store.write(lambda c: outbound.ensure(c, "b", from_head=True, at=at))
    assert created.acked_seq == 3
    row = await store.write(lambda c: outbound.replay(c, "a", 2, from_head=False, at=at))
    assert (row.acked_seq, row.epoch) == (1, 1)
    names = [r.name for r in await store.read(outbound.all_endpoints)]
    assert names == ["a", "b"]
