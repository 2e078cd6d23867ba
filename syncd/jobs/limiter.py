"""Per-provider request pacing: at most ``rate`` request starts per second, and Retry-After pauses.

Two rules together (issue 4: "never exceeded, however many jobs are due"):

- **Spacing.** Starts follow a theoretical schedule ``1/rate`` apart (GCRA). A start that wakes a
  little late does not push the schedule back, so the achieved rate stays at the limit instead of
  losing every timer's overshoot; after an idle spell the schedule restarts from now (no burst).
- **Window.** The last ``n = max(1, floor(rate))`` actual starts are remembered, and a new start
  waits until the oldest of them is ``n / rate`` seconds old (one second for rates of 1/s and
  more). However late or early the loop wakes up, no window of that length ever holds more than
  ``n`` starts: at most ``rate`` per second for whole-number rates, ``ceil(rate)`` otherwise.

Both run ``headroom`` (1 %) slow, so that the provider, which counts *arrivals*, still sees no more
than ``rate`` in a second when network delivery jitter bunches two requests by a few milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

DEFAULT_HEADROOM = 0.01


class RateLimiter:
    """Paces request starts for one provider; waiters are served first come, first served."""

    def __init__(
        self,
        rate_per_second: float,
        *,
        headroom: float = DEFAULT_HEADROOM,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be > 0")
        self.rate = rate_per_second
        self._n = max(1, math.floor(rate_per_second))
        self._window = self._n / rate_per_second * (1.0 + headroom)
        self._interval = self._window / self._n
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._tat = 0.0  # theoretical time of the next start
        self._starts: deque[float] = deque(maxlen=self._n)
        self._paused_until = 0.0
        self.waited = 0.0  # total seconds spent waiting, for the benchmark

    async def acquire(self) -> None:
        """Wait until one more request may start now."""
        async with self._lock:
            starts = self._starts
            while True:
                now = self._clock()
                while starts and starts[0] <= now - self._window:
                    starts.popleft()  # out of the window: no longer constrains anything
                ready = max(self._tat, self._paused_until)
                if len(starts) == self._n:
                    ready = max(ready, starts[0] + self._window)
                if ready <= now:
                    break
                self.waited += ready - now
                await self._sleep(ready - now)
            # Behind by less than a slot: keep the schedule (make up for a late wake-up);
            # further behind: the provider was idle, start the schedule afresh.
            base = self._tat if now - self._tat < self._interval else now
            self._tat = base + self._interval
            starts.append(now)

    def pause(self, seconds: float) -> None:
        """Hold every start for ``seconds`` (a 429/503 ``Retry-After`` applies to the provider)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
