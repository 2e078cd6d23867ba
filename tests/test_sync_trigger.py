"""The trigger's loop: stop interrupts a pass in progress, and only stop's cancellation is taken
back (a cancellation from outside still ends the loop)."""

from __future__ import annotations

import asyncio

import pytest

from syncd.model import PassSummary
from syncd.sync.trigger import SyncTrigger


class _SlowPass:
    """A pass that blocks until cancelled, recording that it started and that it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> PassSummary:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable: the wait above never ends by itself")


async def _in_a_pass(slow: _SlowPass) -> tuple[SyncTrigger, asyncio.Event, asyncio.Task[None]]:
    """A trigger's loop in the background, once its first pass (``slow``) has started."""
    trigger = SyncTrigger(slow, interval=60, debounce=0, max_delay=0)
    stop = asyncio.Event()
    loop_task = asyncio.create_task(trigger.run(stop))
    async with asyncio.timeout(5):
        await slow.started.wait()
    return trigger, stop, loop_task


async def test_stop_interrupts_a_pass_and_the_loop_returns() -> None:
    slow = _SlowPass()
    trigger, stop, loop_task = await _in_a_pass(slow)
    stop.set()
    async with asyncio.timeout(5):
        await loop_task  # returns normally: stop's own cancellation is not an error
    assert slow.cancelled
    assert not loop_task.cancelled()
    assert trigger.last_error is None  # an interrupted pass is not a failed one


async def test_an_outside_cancellation_still_ends_the_loop_as_cancelled() -> None:
    slow = _SlowPass()
    _, _, loop_task = await _in_a_pass(slow)
    loop_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await loop_task
    assert slow.cancelled
    assert loop_task.cancelled()


async def test_stop_after_a_pass_ended_cancels_nothing_that_follows() -> None:
    """Stop set in the same loop turn as a pass ends: the pass's result stands, and the
    trigger's next step (here: the done hook) is not cancelled by a late stop callback."""
    stop = asyncio.Event()
    hook_ran = asyncio.Event()

    async def quick() -> PassSummary:
        stop.set()
        # One turn: stop's waiter wakes and its callbacks are queued behind this pass's return.
        await asyncio.sleep(0)
        return PassSummary(source="s", pass_id=1, kind="incremental", started_ns=0, finished_ns=1)

    async def done(_: int, __: PassSummary) -> None:
        await asyncio.sleep(0)  # a turn of the loop in which a stray cancel would land
        hook_ran.set()

    trigger = SyncTrigger(quick, interval=60, debounce=0, max_delay=0, on_pass_done=done)
    async with asyncio.timeout(5):
        await trigger.run(stop)
    assert trigger.passes == 1
    assert trigger.last_success is not None
    assert hook_ran.is_set()
