"""The webhook fast path (issue 14): the counts an ``inventory.count.updated`` event carries reach
the mirror and the log at once, under the pass's stale-write guard, while batch-retrieve fails;
the pass then confirms them and logs nothing; replayed, invalid and out-of-scope counts change
nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import SecretStr

from syncd.config import Settings
from syncd.metrics import REGISTRY
from syncd.simulator import Simulator, SimulatorConfig
from syncd.sync.fast_path import FastPath
from syncd.upstream.square import parse_count_event
from tests.helpers import assert_log_invariants, changes, mirror
from tests.webhook_kit import Rig, event, inbox_rows, rig, signed
from tests.webhook_kit import webhook_settings as settings_with_webhooks


def _metric(name: str, source: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(name, {"source": source, "outcome": outcome}) or 0.0


def _counts(outcome: str) -> float:
    return _metric("syncd_fast_path_counts_total", "square", outcome)


def _events(outcome: str) -> float:
    return _metric("syncd_fast_path_events_total", "square", outcome)


def _fast_path(r: Rig) -> FastPath:
    assert r.daemon.sources is not None
    runner = r.daemon.sources.get("square")
    assert runner is not None
    assert runner.parts.fast_path is not None
    return runner.parts.fast_path


def _key(count: dict[str, Any]) -> tuple[str, str, str]:
    return (count["catalog_object_id"], count["location_id"], count["state"])


def _entries_for(r: Rig, key: tuple[str, str, str], after: int) -> list[dict[str, Any]]:
    return [e for e in changes(r.settings.database) if e["seq"] > after and e["key"] == key]


async def _until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.005)


def _head(r: Rig) -> int:
    return max((e["seq"] for e in changes(r.settings.database)), default=0)


async def test_counts_reach_the_mirror_while_batch_retrieve_fails(
    make_settings: Callable[..., Settings],
) -> None:
    """batch-retrieve answers 503 throughout: the webhook's counts (a move between two states,
    as Square sends it) are in the mirror and the log anyway, one entry each. Once the upstream
    is back, the pass the webhook triggered confirms them and logs nothing more."""
    settings = settings_with_webhooks(make_settings)
    async with rig(settings) as r:
        await r.first_pass()
        head = _head(r)
        r.sim.fail_for(503, 60)
        moved = r.sim.mutate(2)
        body = event(counts=moved)
        status, answer = await r.post(body)
        assert (status, answer["duplicate"]) == (200, False)
        await _until(
            lambda: all(
                mirror(settings.database)[_key(c)]["quantity"] == c["quantity"] for c in moved
            )
        )
        for c in moved:
            [entry] = _entries_for(r, _key(c), head)
            assert entry["kind"] == "count.updated"
            assert entry["new"]["quantity"] == c["quantity"]
            assert entry["new"]["calculated_at"] == c["calculated_at"]
        assert inbox_rows(settings.database)[-1]["processed_at"] is None  # no pass got through
        failing = r.sim.status_counts.get(503, 0)
        await _until(lambda: r.sim.status_counts.get(503, 0) > failing)  # the pass did try
        r.sim.fail_for(503, 0)
        await r.all_processed()  # a pass that started after the event has now succeeded
        for c in moved:
            assert len(_entries_for(r, _key(c), head)) == 1
    assert_log_invariants(settings.database)


async def test_a_replayed_older_event_changes_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    """Square retries for 72 hours with no ordering: an older count arriving after a newer one
    (under a new event_id) is stale and writes nothing; a redelivered event_id is a duplicate and
    never reaches the fast path at all."""
    settings = settings_with_webhooks(make_settings)
    async with rig(settings) as r:
        await r.first_pass()
        r.sim.fail_for(503, 60)  # only the fast path writes
        [older] = r.sim.mutate(1)
        [newer] = [
            r.sim.set_count(older["catalog_object_id"], older["location_id"], older["state"], "777")
        ]
        head = _head(r)
        newer_body = event(counts=[newer])
        assert (await r.post(newer_body))[0] == 200
        await _until(lambda: mirror(settings.database)[_key(newer)]["quantity"] == "777")
        stale = _counts("stale")
        assert (await r.post(event(counts=[older])))[0] == 200
        await _until(lambda: _counts("stale") > stale)
        applied = _events("applied")
        status, answer = await r.post(newer_body)
        assert (status, answer["duplicate"]) == (200, True)
        await _fast_path(r).wait_idle()
        assert _events("applied") == applied
        assert mirror(settings.database)[_key(newer)]["quantity"] == "777"
        [entry] = _entries_for(r, _key(newer), head)
        assert entry["new"]["quantity"] == "777"
        r.sim.fail_for(503, 0)
        await r.all_processed()
        assert len(_entries_for(r, _key(newer), head)) == 1
    assert_log_invariants(settings.database)


async def test_counts_that_fail_validation_are_stored_and_left_to_the_pull(
    make_settings: Callable[..., Settings],
) -> None:
    """An event whose counts are malformed is stored and answered 200 (Square would retry a 400
    for 72 hours), counted as invalid, and the pass it triggers brings the real change."""
    settings = settings_with_webhooks(make_settings)
    async with rig(settings) as r:
        await r.first_pass()
        [changed] = r.sim.mutate(1)
        bad = {**changed, "quantity": "lots"}
        invalid = _events("invalid")
        status, _ = await r.post(event("EV-BAD", counts=[bad]))
        assert status == 200
        assert [row["event_id"] for row in inbox_rows(settings.database)] == ["EV-BAD"]
        await r.all_processed()
        assert _events("invalid") == invalid + 1  # parsed in the fast path's batch
        assert mirror(settings.database)[_key(changed)]["quantity"] == changed["quantity"]
    assert_log_invariants(settings.database)


async def test_counts_outside_the_sources_filters_are_left_alone(
    make_settings: Callable[..., Settings],
) -> None:
    """A source that mirrors one location and one state applies only those counts of an event;
    the others (which the pull would not return, and the next full pass would remove) are
    counted out of scope and never written."""
    config = SimulatorConfig(locations=2, items=20)
    here, there = Simulator(config).location_ids[:2]  # the seed's locations, as served below
    settings = settings_with_webhooks(
        make_settings, square={"location_ids": [here], "states": ["IN_STOCK"]}
    )
    async with rig(settings, config) as r:
        await r.first_pass()
        r.sim.fail_for(503, 60)
        stored = mirror(settings.database)
        template = next(iter(stored))
        counts = [
            {
                "catalog_object_id": template[0],
                "catalog_object_type": "ITEM_VARIATION",
                "location_id": location,
                "state": state,
                "quantity": "4242",
                "calculated_at": "2099-01-01T00:00:00Z",
            }
            for location, state in ((here, "IN_STOCK"), (there, "IN_STOCK"), (here, "WASTE"))
        ]
        out = _counts("out_of_scope")
        assert (await r.post(event(counts=counts)))[0] == 200
        await _fast_path(r).wait_idle()
        await _until(lambda: _counts("out_of_scope") == out + 2)
        now = mirror(settings.database)
        assert now[(template[0], here, "IN_STOCK")]["quantity"] == "4242"
        assert (template[0], there, "IN_STOCK") not in now
        assert (template[0], here, "WASTE") not in now


async def test_a_late_event_never_brings_back_a_count_a_full_pass_removed(
    make_settings: Callable[..., Settings],
) -> None:
    """A count disappears upstream and a full pass removes it (count.removed); then an event from
    before the removal arrives late (Square retries for 72 hours). The fast path updates only
    counts the mirror holds, so it leaves this one to the pull, and the mirror keeps it removed."""
    settings = settings_with_webhooks(make_settings)
    async with rig(settings) as r:
        await r.first_pass()
        assert r.daemon.engine is not None
        oldest = min(mirror(settings.database).items(), key=lambda kv: kv[1]["calculated_at"])
        key, stored = oldest
        removed = r.sim.remove_count(*key)
        assert removed is not None
        await r.daemon.engine.run_pass(full=True)
        assert key not in mirror(settings.database)
        [gone] = [e for e in changes(settings.database) if e["kind"] == "count.removed"]
        assert gone["key"] == key
        head = _head(r)
        unknown = _counts("unknown")
        r.sim.fail_for(503, 60)  # only the fast path could write now
        late = {**removed, "quantity": stored["quantity"], "calculated_at": stored["calculated_at"]}
        assert (await r.post(event(counts=[late])))[0] == 200
        await _until(lambda: _counts("unknown") > unknown)
        assert key not in mirror(settings.database)
        assert _head(r) == head
        r.sim.fail_for(503, 0)
    assert_log_invariants(settings.database)


async def test_a_batch_parses_each_event_and_skips_only_the_invalid_ones(
    make_settings: Callable[..., Settings],
) -> None:
    """Events queued together are parsed in the drain's batch: a malformed one is counted invalid
    and dropped, the valid ones beside it are applied (one entry for the real change)."""
    settings = settings_with_webhooks(make_settings)
    async with rig(settings) as r:
        await r.first_pass()
        head = max((c["seq"] for c in changes(settings.database)), default=0)
        [changed] = r.sim.mutate(1)
        bad = {**changed, "quantity": "lots"}
        invalid, applied = _events("invalid"), _events("applied")
        fast = _fast_path(r)
        for counts in ([bad], [changed]):
            body = orjson.loads(event(counts=counts))
            fast.submit_event(body, parse_count_event)
        await fast.wait_idle()
        assert _events("invalid") == invalid + 1
        assert _events("applied") == applied + 1
        assert mirror(settings.database)[_key(changed)]["quantity"] == changed["quantity"]
        assert len(_entries_for(r, _key(changed), head)) == 1
    assert_log_invariants(settings.database)


async def test_the_webhook_source_follows_apply_counts_and_new_keys(
    make_settings: Callable[..., Settings],
) -> None:
    """The routing keeps one WebhookSource per source, rebuilt when apply_counts or the source's
    keys change (SIGHUP): new keys verify at once, the fast path stops when turned off."""
    settings = settings_with_webhooks(make_settings)
    async with rig(settings) as r:
        sources = r.daemon.sources
        assert sources is not None
        first = sources.webhook_source("square")
        assert first is not None
        assert first.on_counts is not None
        assert sources.webhook_source("square") is first
        sources.apply_counts = False
        off = sources.webhook_source("square")
        assert off is not None
        assert off.on_counts is None
        runner = sources.get("square")
        assert runner is not None
        conf = runner.parts.conf.model_copy(update={"webhook_signature_keys": [SecretStr("k2")]})
        sources.apply_live("square", conf)
        body = event("EV-NEW-KEY")
        status, _ = await r.post(body, signed(body, key="k2"))
        assert status == 200
        status, _ = await r.post(event("EV-OLD-KEY"))
        assert status == 401
