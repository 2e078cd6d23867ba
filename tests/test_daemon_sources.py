"""Sources in one daemon are independent: a failing or stalled source never holds the pass slot
of a healthy one. Real daemon, real simulator and a real stalling upstream on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.daemon_sources import SourceRunner
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon
from tests.helpers import mirror


@dataclass
class Stall:
    """An upstream that answers 500 while ``failing``, and otherwise holds every request open
    until ``release`` is set (a stalled connection); ``held`` counts the requests it holds."""

    failing: bool = True
    held: int = 0
    ended: int = 0  # held requests that have ended (released, or given up by the client)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, _: web.Request) -> web.Response:
        if self.failing:
            return web.json_response({"errors": [{"category": "API_ERROR"}]}, status=500)
        self.held += 1
        try:
            await self.release.wait()
        finally:
            self.held -= 1
            self.ended += 1
        return web.json_response({"errors": [{"category": "API_ERROR"}]}, status=500)


@asynccontextmanager
async def stalling_upstream(stall: Stall) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stall.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        stall.release.set()
        await runner.cleanup()


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def runner(daemon: Daemon, name: str) -> SourceRunner:
    found = daemon.runner(name)
    assert found is not None
    return found


async def test_a_stalled_source_never_holds_a_healthy_sources_slot(
    make_settings: Callable[..., Settings],
) -> None:
    """One pass slot for healthy sources. Source ``down`` fails its first pass (500s), so its
    next passes run on the failing slot; then its upstream stalls and holds the connection. A
    change of source ``up`` still reaches the mirror while ``down``'s request is held."""
    stall = Stall()
    async with (
        serve(SimulatorConfig(locations=1, items=5)) as (sim, up_url),
        stalling_upstream(stall) as down_url,
    ):
        settings = make_settings(
            sources={
                "up": {"base_url": up_url},
                "down": {"base_url": down_url, "request_timeout": 60},
            },
            source_defaults={"access_token": "t", "max_retries": 0, "poll_interval": 300},
            sync={"max_concurrent_passes": 1, "max_failing_passes": 1},
        )
        async with running_daemon(settings, None) as daemon:
            up, down = runner(daemon, "up"), runner(daemon, "down")
            await until(lambda: up.trigger.last_success is not None)
            await until(lambda: down.trigger.last_error is not None)
            stall.failing = False
            await until(lambda: stall.held > 0)  # down's retry pass, stalled, holds its slot
            ended = stall.ended
            [changed] = sim.mutate(1)
            up.trigger.poke()
            key = (changed["catalog_object_id"], changed["location_id"], changed["state"])
            await until(
                lambda: mirror(settings.database, "up")[key]["quantity"] == changed["quantity"],
                timeout=5,
            )
            assert (stall.held, stall.ended) == (1, ended), "up waited for down's stalled pass"
            assert down.trigger.last_success is None
