"""The daemon in-process: periodic passes, clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from syncd.config import Settings
from syncd.daemon import Daemon, DaemonCrashed
from syncd.simulator import SimulatorConfig, serve
from syncd.sync.trigger import SyncTrigger
from tests.conftest import running_daemon
from tests.helpers import assert_log_invariants, mirror


async def test_daemon_syncs_periodically_and_stops_cleanly(
    make_settings: Callable[..., Settings],
) -> None:
    """The daemon runs a first (full) pass at start, then one every poll_interval, then stops on
    request with the store closed and the log consistent."""
    settings = make_settings(square={"poll_interval": 0.05})
    async with (
        serve(SimulatorConfig(locations=2, items=30)) as (sim, url),
        running_daemon(settings, url) as daemon,
    ):
        assert daemon.trigger is not None
        async with asyncio.timeout(5):
            while daemon.trigger.passes < 1 or len(mirror(settings.database)) < 60:
                await asyncio.sleep(0.01)
        changed = sim.mutate(5)
        async with asyncio.timeout(5):
            while any(
                mirror(settings.database)[(c["catalog_object_id"], c["location_id"], c["state"])][
                    "quantity"
                ]
                != c["quantity"]
                for c in changed
            ):
                await asyncio.sleep(0.01)
    assert_log_invariants(settings.database)


async def test_a_crashed_background_task_stops_the_daemon_non_zero(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a background task dies on its own (here: the sync trigger loop, made to raise, since nothing
    real crashes it on demand), the daemon logs it, drains, closes the store and raises DaemonCrashed
    so the process exits non-zero and systemd restarts it — instead of running on half-dead."""

    async def broken_run(self: SyncTrigger, stop: asyncio.Event) -> None:
        raise RuntimeError("trigger loop broke")

    monkeypatch.setattr(SyncTrigger, "run", broken_run)
    settings = make_settings()
    async with serve(SimulatorConfig(locations=1, items=5)) as (_, url):
        daemon = Daemon(settings, base_url=url)
        with pytest.raises(DaemonCrashed):
            async with asyncio.timeout(10):
                await daemon.serve()
    assert daemon.store is not None
    assert daemon.store.closed
