"""The per-provider rate limiter, on a simulated clock whose sleeps wake up late."""

from __future__ import annotations

import random

import pytest

from syncd.jobs.limiter import RateLimiter


class LateClock:
    """A manual clock; every sleep overshoots by up to ``late`` seconds (a busy event loop)."""

    def __init__(self, late: float, seed: int = 1) -> None:
        self.now = 100.0
        self.late = late
        self.rand = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.rand.random() * self.late


def most_in_window(starts: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while starts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.parametrize(
    ("rate", "late"), [(5, 0.0), (5, 0.05), (200, 0.002), (20, 0.3), (2.5, 0.1), (0.5, 0.2)]
)
async def test_never_more_than_the_rate_and_close_to_it(rate: float, late: float) -> None:
    """However late the wake-ups, no 1-second window (n/rate for fractional rates) holds more
    than the limit, and the achieved rate stays close to it."""
    clock = LateClock(late)
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(int(rate * 20) + 2):
        await limiter.acquire()
        starts.append(clock.now)
        clock.now += 0.0001  # the request itself
    n = max(1, int(rate))
    assert most_in_window(starts, n / rate) <= n
    achieved = (len(starts) - 1) / (starts[-1] - starts[0])
    assert achieved <= rate
    if late < 1 / rate:
        assert achieved >= rate * 0.9


async def test_pause_holds_every_start() -> None:
    """Retry-After pauses the provider: no start before it has passed."""
    clock = LateClock(0.0)
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    limiter.pause(2.0)
    await limiter.acquire()
    assert clock.now >= 102.0


async def test_idle_provider_gets_no_burst() -> None:
    """After an idle spell the schedule restarts: two starts are still a slot apart."""
    clock = LateClock(0.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 60
    await limiter.acquire()
    first = clock.now
    await limiter.acquire()
    assert clock.now - first == pytest.approx(0.1 * 1.01)  # one slot, with the 1 % headroom
