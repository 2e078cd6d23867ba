"""When passes run: coalesced pokes (debounce + maximum delay) and the periodic safety-net pass.

A burst of pokes (e.g. 1,000 webhooks in a second) collapses into one or two passes: after the first poke
the trigger waits until pokes stop for ``debounce`` seconds, but never longer than ``max_delay`` after the
first poke. With no poke at all a pass still runs every ``interval`` seconds, measured from the start of the
previous pass so the schedule does not drift. A poke that arrives while a pass runs schedules another pass
right after it, because that pass may have started before the change was visible upstream.
``on_pass_done(started_ns, summary)`` runs after each successful pass with the wall-clock time the pass
started, so the webhook inbox can mark what that pass covered.
Setting ``stop`` also interrupts a pass in progress between two units of work (its page transaction in
flight commits, its watermarks stay), so a shutdown never waits for a long pass to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from syncd.backoff import full_jitter
from syncd.metrics import SYNC_POKES
from syncd.model import PassSummary
from syncd.sync.sleeper import Sleeper
from syncd.timeutil import now_ns

log = structlog.get_logger("syncd.trigger")

PassFn = Callable[[], Awaitable[PassSummary]]
DoneFn = Callable[[int, PassSummary], Awaitable[None]]


class SyncTrigger:
    """Owns the loop that decides when ``run_pass`` is called."""

    def __init__(
        self,
        run_pass: PassFn,
        *,
        interval: float,
        debounce: float,
        max_delay: float,
        retry_initial: float = 1.0,
        retry_max: float | None = None,
        on_pass_done: DoneFn | None = None,
        source: str = "",
    ) -> None:
        self._run_pass = run_pass
        self.source = source  # the ``source`` label of the pokes metric
        self._pokes = SYNC_POKES.labels(source=source)  # looked up once: a webhook pokes each time
        self.interval = interval
        self.debounce = debounce
        self.max_delay = max_delay
        self._retry_initial = retry_initial
        self._retry_max = retry_max if retry_max is not None else interval
        self._on_pass_done = on_pass_done
        self._poked = False  # a pass was asked for since the last one started
        self._sleeper = Sleeper()  # the sleep between passes, which a poke ends
        self._debouncer = Sleeper()  # the debounce's sleep, which nothing but stop ends
        self._first_poke: float | None = None
        self._last_poke = 0.0
        self._failures = 0
        self.passes = 0
        # For readiness (/readyz): monotonic time the last successful pass finished, and the error
        # of the last failed one (None after a success).
        self.last_success: float | None = None
        self.last_error: str | None = None

    def poke(self) -> None:
        """Ask for a pass soon. Cheap and safe to call thousands of times a second."""
        now = time.monotonic()
        self._pokes.inc()
        self._last_poke = now
        if self._first_poke is None:
            self._first_poke = now
        self._ask()

    def run_soon(self) -> None:
        """Ask for a pass as soon as the loop is free, without debouncing (e.g. at start, for webhook
        events a crash left unprocessed)."""
        self._ask()

    def _ask(self) -> None:
        """Note that a pass is wanted, and end the sleep in progress."""
        self._poked = True
        self._sleeper.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Run passes until ``stop`` is set. A failing pass is retried with backoff, never fatal.

        One wait on ``stop`` serves every sleep and pass of the loop (a sleeping source costs a
        timer and its wake-up, issue 11)."""
        next_due = time.monotonic()
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await self._wait(next_due, stopping)
                if stop.is_set():
                    return
                await self._debounce(stopping)
                started = time.monotonic()
                ok = await self._one_pass(stopping)
                next_due = (
                    started + self.interval
                    if ok
                    else time.monotonic()
                    + full_jitter(
                        self._failures - 1,
                        initial=self._retry_initial,
                        factor=2.0,
                        cap=self._retry_max,
                    )
                )
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping

    async def _wait(self, due: float, stopping: asyncio.Future[Any]) -> None:
        """Sleep until ``due``, a poke, or stop (``stopping`` is done)."""
        timeout = due - time.monotonic()
        if timeout <= 0 or self._poked or stopping.done():
            return
        await self._sleeper.sleep(timeout, stopping)

    async def _debounce(self, stopping: asyncio.Future[Any]) -> None:
        """If poked: wait for a quiet gap of ``debounce``, at most ``max_delay`` after the first poke.
        Pokes meanwhile do not end this sleep (``_debouncer`` is woken by nothing): the gap is
        measured again when it ends."""
        if self._first_poke is None:
            return
        deadline = self._first_poke + self.max_delay
        while not stopping.done():
            now = time.monotonic()
            quiet_at = min(self._last_poke + self.debounce, deadline)
            if now >= quiet_at:
                break
            await self._debouncer.sleep(quiet_at - now, stopping)

    async def _one_pass(self, stopping: asyncio.Future[Any]) -> bool:
        # Clear before starting: pokes that arrive during the pass schedule the next one.
        self._poked = False
        self._first_poke = None
        started_ns = now_ns()
        self.passes += 1
        try:
            summary = await _unless_stopped(self._run_pass, stopping)
            if summary is None:
                return False
        except Exception as exc:  # the loop must survive anything a pass throws
            self._failures += 1
            self.last_error = str(exc) or type(exc).__name__
            log.error(
                "sync_pass_crashed",
                error=str(exc),
                error_type=type(exc).__name__,
                failures=self._failures,
            )
            return False
        if summary.ok:
            if self._failures:
                log.info("sync_recovered", failures=self._failures)
            self._failures = 0
            self.last_success = time.monotonic()
            self.last_error = None
            if self._on_pass_done is not None:
                try:
                    await self._on_pass_done(started_ns, summary)
                except Exception as exc:  # bookkeeping after a pass must not stop the loop
                    log.error(
                        "sync_pass_done_hook_failed", error=str(exc), error_type=type(exc).__name__
                    )
            return True
        self._failures += 1
        self.last_error = summary.error
        return False


async def _unless_stopped(run_pass: PassFn, stopping: asyncio.Future[Any]) -> PassSummary | None:
    """Run a pass to its end, or until ``stopping`` is done: then cancel it and return None
    (none starts once it is).

    The pass runs in the caller's task (no task and no ``asyncio.wait`` per pass, issue 11): stop
    cancels that task, and only that cancellation is taken back (``uncancel``); any other one
    propagates. Cancellation lands between units of work: the page transaction in flight still
    commits, and the interrupted pass leaves its partitions' watermarks where they were, so the
    next run repairs.
    """
    task = asyncio.current_task()
    assert task is not None  # a coroutine awaited by the trigger's loop
    if stopping.done():
        return None
    running = True
    stopped = False

    def on_stop(_: asyncio.Future[Any]) -> None:
        nonlocal stopped
        if running:  # a callback scheduled before the pass ended must not cancel what follows
            stopped = True
            task.cancel()

    stopping.add_done_callback(on_stop)
    try:
        return await run_pass()
    except asyncio.CancelledError:
        if stopped and task.uncancel() == 0:
            return None
        raise
    finally:
        running = False
        stopping.remove_done_callback(on_stop)
