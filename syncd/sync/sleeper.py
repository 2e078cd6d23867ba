"""A sleep that a timer, a wake-up call or stop ends, on one future.

No task and no ``asyncio.wait`` per sleep: with 200 sources, 400 triggers and the heartbeat sleep
between their passes, and each sleep costs a timer and its wake-up only (issue 11's idle CPU).
"""

from __future__ import annotations

import asyncio
from typing import Any


class Sleeper:
    """Sleeps one at a time; ``wake`` ends the sleep in progress (if any) at once."""

    def __init__(self) -> None:
        self._wake: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """End the sleep in progress; a no-op when none is."""
        if self._wake is not None:
            _settle(self._wake)

    async def sleep(self, seconds: float | None, stopping: asyncio.Future[Any]) -> None:
        """Until ``seconds`` passed (None: no limit), ``wake``, or ``stopping`` is done."""
        if stopping.done():
            return
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()

        def on_stop(_: asyncio.Future[Any]) -> None:
            _settle(wake)

        timer = None if seconds is None else loop.call_later(seconds, _settle, wake)
        stopping.add_done_callback(on_stop)
        self._wake = wake
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()
            stopping.remove_done_callback(on_stop)


def _settle(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)
