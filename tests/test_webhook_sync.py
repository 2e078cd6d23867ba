"""From webhook to mirror: pokes coalesce, inbox rows are marked processed only by a pass that
started after them, pending rows are synced at start, and the simulator's signed webhooks drive the
change log exactly."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from syncd.config import Settings
from syncd.daemon_sources import inbox_marker
from syncd.model import PassSummary
from syncd.simulator import SimulatorConfig, WebhookTarget, serve
from syncd.store import Store
from syncd.store.inbox import Inbox, InboxEvent
from syncd.sync.trigger import SyncTrigger
from syncd.timeutil import now_ns
from tests.conftest import running_daemon
from tests.helpers import assert_log_invariants, changes, count_changes, mirror
from tests.webhook_kit import KEY, NOTIFICATION_URL, OLD_KEY, event, inbox_rows, rig, signed
from tests.webhook_kit import webhook_settings as settings_with_webhooks


async def test_500_concurrent_webhooks_coalesce_into_few_passes(
    make_settings: Callable[..., Settings],
) -> None:
    """500 webhooks posted at once (default debounce 0.2 s, max delay 1 s): all answered 200,
    committed in shared transactions, synced by one to three passes, and every row ends
    processed."""
    settings = settings_with_webhooks(make_settings, webhooks={"debounce": 0.2, "max_delay": 1.0})
    async with rig(settings) as r:
        await r.first_pass()
        assert r.daemon.trigger is not None
        assert r.daemon.inbox is not None
        passes = r.daemon.trigger.passes
        commits = r.daemon.inbox.commits
        bodies = [event(f"EV-{i:03d}") for i in range(500)]
        t0 = time.monotonic()
        results = await asyncio.gather(*(r.post(body) for body in bodies))
        burst = time.monotonic() - t0  # ~0.3 s; longer only on a loaded machine
        assert [status for status, _ in results] == [200] * 500
        rows = await r.all_processed()
        assert len(rows) == 500
        # One pass per max_delay while the burst lasts, plus the one after it: 1 to 3 normally.
        assert 1 <= r.daemon.trigger.passes - passes <= 2 + int(burst / 1.0)
        assert r.daemon.inbox.commits - commits <= 100  # 500 requests, far fewer transactions


async def test_row_received_during_a_pass_waits_for_the_next(store: Store, db_path: Path) -> None:
    """A webhook that arrives while a pass runs is not marked processed by that pass (it may have
    read the upstream before the change), only by the next one, which its poke schedules."""
    inbox = Inbox(store, window=0)
    await inbox.start()
    started: asyncio.Queue[int] = asyncio.Queue()
    release: asyncio.Queue[None] = asyncio.Queue()

    async def fake_pass() -> PassSummary:
        n = started.qsize() + 1
        await started.put(n)
        await release.get()
        return PassSummary(
            source="square", pass_id=n, kind="incremental", started_ns=0, finished_ns=now_ns()
        )

    trigger = SyncTrigger(
        fake_pass,
        interval=300,
        debounce=0,
        max_delay=0,
        on_pass_done=inbox_marker(inbox, "square"),
    )
    stop = asyncio.Event()
    loop = asyncio.create_task(trigger.run(stop))
    try:
        async with asyncio.timeout(10):
            await started.get()  # pass 1 is running
            await inbox.add(
                InboxEvent("EV-1", "square", "inventory.count.updated", None, None, now_ns(), b"{}")
            )
            trigger.poke()
            await release.put(None)  # pass 1 completes (after the row was received)
            await started.get()  # pass 2 runs, so pass 1's bookkeeping is done
            assert [r["processed_at"] for r in inbox_rows(db_path)] == [None]
            await release.put(None)
            while inbox_rows(db_path)[0]["processed_at"] is None:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await release.put(None)
        await loop
        await inbox.aclose()


async def test_pending_rows_at_start_are_synced(make_settings: Callable[..., Settings]) -> None:
    """Rows acknowledged before a stop but never covered by a pass are reported at start and
    synced at once, though no webhook arrives and debounce and poll interval are long."""
    settings = settings_with_webhooks(
        make_settings, square={"poll_interval": 300}, webhooks={"debounce": 60, "max_delay": 60}
    )
    async with serve(SimulatorConfig(locations=2, items=10)) as (sim, url):
        async with running_daemon(settings, url) as daemon:
            assert daemon.trigger is not None
            async with asyncio.timeout(10):
                while daemon.trigger.last_success is None:
                    await asyncio.sleep(0.01)
        [changed] = sim.mutate(1)
        conn = sqlite3.connect(settings.database)  # what a crash after the ack leaves behind
        with conn:
            conn.execute(
                "INSERT INTO webhook_events (event_id, source, type, received_at,"
                " received_ns, body) VALUES ('EV-1', 'square', 'inventory.count.updated',"
                " '2026-01-01T00:00:00.000000Z', ?, x'7b7d')",
                (now_ns(),),
            )
        conn.close()
        key = (changed["catalog_object_id"], changed["location_id"], changed["state"])
        assert mirror(settings.database)[key]["quantity"] != changed["quantity"]
        with capture_logs() as logs:
            async with running_daemon(settings, url):
                async with asyncio.timeout(10):
                    while inbox_rows(settings.database)[0]["processed_at"] is None:
                        await asyncio.sleep(0.01)
    assert mirror(settings.database)[key]["quantity"] == changed["quantity"]
    [pending] = [e for e in logs if e["event"] == "webhook_inbox_pending"]
    assert pending["events"] == 1


async def test_simulator_webhooks_drive_exactly_their_changes(
    make_settings: Callable[..., Settings],
) -> None:
    """End to end: the simulator mutates counts and sends one signed inventory.count.updated per
    change (signed with the old key during a rotation, over the proxy's notification URL); the
    daemon, with polling out of the way, syncs, and the change log gains exactly those changes."""
    settings = settings_with_webhooks(make_settings, square={"poll_interval": 300})
    async with rig(settings, SimulatorConfig(locations=3, items=30)) as r:
        await r.first_pass()
        head = max(e["seq"] for e in changes(settings.database))
        r.sim.webhooks.target = WebhookTarget(
            url=r.webhook_url, signature_key=OLD_KEY, notification_url=NOTIFICATION_URL
        )
        made: list[dict[str, str]] = []
        for _ in range(4):
            made += r.sim.mutate(5)
            async with asyncio.timeout(10):
                await r.sim.webhooks.drain()
            await r.all_processed()
        assert r.sim.webhooks.sent == 20
        assert r.sim.webhooks.failed == 0
        rows = inbox_rows(settings.database)
        assert sorted(row["event_id"] for row in rows) == sorted(r.sim.webhooks.event_ids)
    logged = [
        (e["key"], e["new"]["quantity"], e["new"]["calculated_at"])
        for e in count_changes(settings.database)
        if e["seq"] > head
    ]
    expected = [
        ((c["catalog_object_id"], c["location_id"], c["state"]), c["quantity"], c["calculated_at"])
        for c in made
    ]
    assert sorted(logged) == sorted(expected)
    assert_log_invariants(settings.database)


async def test_webhook_poke_beats_the_poll_interval(make_settings: Callable[..., Settings]) -> None:
    """With a 300 s poll interval, one signed webhook gets its change into the mirror at once:
    the webhook, not the safety-net poll, triggered the pass (the fast path is off, so the pass
    alone brings the change)."""
    settings = settings_with_webhooks(
        make_settings, square={"poll_interval": 300}, webhooks={"apply_counts": False}
    )
    async with rig(settings) as r:
        await r.first_pass()
        [changed] = r.sim.mutate(1)
        body = event(counts=[changed])
        assert (await r.post(body, signed(body, key=KEY)))[0] == 200
        key = (changed["catalog_object_id"], changed["location_id"], changed["state"])
        async with asyncio.timeout(3):  # ~0.05 s normally; the poll would take 300 s
            while mirror(settings.database)[key]["quantity"] != changed["quantity"]:
                await asyncio.sleep(0.01)
