"""The job poller: one due-time heap, one lane per provider, one recorder committing poll results.

- **Schedule.** Every unfinished job sits in a heap keyed by its ``next_poll_ns`` (rebuilt from the
  ``jobs_due`` index on start). The scheduler pops only what is due and then sleeps until the next
  due time or until a registration wakes it: no tick, no scan of all jobs, no CPU while waiting.
- **Lanes.** A provider's due jobs queue in its lane, served by ``concurrency`` workers (so never
  more requests in flight) that each take a start from the provider's ``RateLimiter`` (so never
  more than ``rate_per_second`` starts per second), however many jobs are due. A 429/503 with
  ``Retry-After`` pauses the whole lane.
- **Recorder.** Workers hand each decided ``Outcome`` to one recorder task, which commits whatever
  has queued up in one transaction (group commit: a transition and its change entry always share
  it), then updates the in-memory copy, re-arms the job in the heap and runs the post-commit
  reactions. ``next_poll_ns`` and ``attempts`` are in SQLite after every poll, so a restart resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from syncd import metrics
from syncd.errors import StoreClosed, UpstreamError
from syncd.jobs.limiter import RateLimiter
from syncd.jobs.ports import JobProvider, NotFound
from syncd.jobs.reactions import DownloadFailed, Reactions
from syncd.jobs.states import advance
from syncd.jobs.tracking import (
    Outcome,
    Timing,
    TrackedJob,
    apply,
    expired,
    failed_poll,
    not_found,
    observed,
)
from syncd.store import Store
from syncd.store import jobs as jobs_store
from syncd.store.jobs import JobRow
from syncd.timeutil import NS_PER_S, now_ns

log = structlog.get_logger("syncd.jobs.poller")

_PAUSE_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """A provider's limits: requests in flight at once, and request starts per second."""

    concurrency: int = 4
    rate_per_second: float = 5.0


@dataclass(frozen=True, slots=True)
class PollerOptions:
    """The poller's plain parameters. ``batch_max`` caps the outcomes committed together;
    ``coalesce`` (seconds) dispatches jobs due that soon along with those due now;
    ``error_log_interval`` (seconds) spaces a failing provider's ``job_poll_failed`` lines."""

    timing: Timing = field(default_factory=Timing)
    batch_max: int = 500
    coalesce: float = 0.001
    error_log_interval: float = 60.0


@dataclass(slots=True)
class _Lane:
    provider: JobProvider
    limits: ProviderLimits
    limiter: RateLimiter
    queue: asyncio.Queue[TrackedJob] = field(default_factory=asyncio.Queue)
    in_flight: int = 0
    max_in_flight: int = 0
    failures: int = 0  # failed polls since the provider last answered
    failures_logged_at: float | None = None


class _Stop:
    """Queued after the last outcome at shutdown: the recorder commits everything before it."""


class JobPoller:
    """Polls every registered job of the configured providers until it ends."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, tuple[JobProvider, ProviderLimits]],
        options: PollerOptions | None = None,
        *,
        reactions: Reactions | None = None,
        clock: Callable[[], int] = now_ns,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._lanes = {
            name: _Lane(provider, limits, RateLimiter(limits.rate_per_second))
            for name, (provider, limits) in providers.items()
        }
        self.options = options or PollerOptions()
        self._timing = self.options.timing
        self._reactions = reactions
        self._clock = clock
        self._rand = rand
        self._jobs: dict[int, TrackedJob] = {}
        self._heap: list[tuple[int, int, int]] = []
        self._tie = itertools.count()
        self._wake = asyncio.Event()
        self._results: asyncio.Queue[Outcome | _Stop] = asyncio.Queue()
        self._unknown_seen: set[tuple[str, str]] = set()
        self._tracked: dict[str, int] = dict.fromkeys(self._lanes, 0)
        self.polls = 0
        self.commits = 0
        self.started = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # --- registration side ----------------------------------------------------------------------

    def track(self, rows: Iterable[JobRow]) -> None:
        """Start polling committed registrations (unknown providers and finished jobs skipped)."""
        for row in rows:
            if row.finished_at is None and row.provider in self._lanes and row.id not in self._jobs:
                job = TrackedJob.from_row(row)
                self._jobs[job.id] = job
                self._idle.clear()
                self._count(job.provider, +1)
                self._push(job)

    def forget(self, id_: int) -> None:
        """Stop polling a job whose row was deleted; an in-flight poll's result is discarded."""
        job = self._jobs.pop(id_, None)
        if job is not None:
            job.forgotten = True
            self._count(job.provider, -1)
            if not self._jobs:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no unfinished job is tracked (every one ended or was forgotten)."""
        await self._idle.wait()

    @property
    def tracked(self) -> int:
        """Unfinished jobs being polled."""
        return len(self._jobs)

    def lane_stats(self, provider: str) -> tuple[int, int]:
        """(requests in flight now, most ever in flight) for one provider."""
        lane = self._lanes[provider]
        return lane.in_flight, lane.max_in_flight

    # --- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; then stop the lanes and commit every decided outcome."""
        await self._load()
        async with asyncio.TaskGroup() as group:
            workers = [
                group.create_task(self._worker(lane), name=f"job-lane-{name}-{i}")
                for name, lane in self._lanes.items()
                for i in range(lane.limits.concurrency)
            ]
            recorder = group.create_task(self._recorder(), name="job-recorder")
            waker = group.create_task(self._wake_on(stop), name="job-stop-waker")
            self.started.set()
            try:
                await self._schedule(stop)
            finally:
                for task in (*workers, waker):
                    task.cancel()
                await asyncio.wait([*workers, waker])
                self._results.put_nowait(_Stop())
                await asyncio.wait([recorder])
        log.info("job_poller_stopped", tracked=len(self._jobs), polls=self.polls)

    async def _load(self) -> None:
        rows = await self._store.read(jobs_store.unfinished)
        skipped: dict[str, int] = {}
        for row in rows:
            if row.provider not in self._lanes:
                skipped[row.provider] = skipped.get(row.provider, 0) + 1
        self.track(rows)
        for provider, count in skipped.items():
            log.warning(
                "job_provider_unknown",
                provider=provider,
                jobs=count,
                hint=f"configure [jobs.providers.{provider}] or forget these jobs",
            )
        log.info("job_poller_started", tracked=len(self._jobs), providers=sorted(self._lanes))

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _schedule(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        coalesce_ns = int(self.options.coalesce * NS_PER_S)
        heap = self._heap
        while not stop.is_set():
            horizon = self._clock() + coalesce_ns
            while heap and heap[0][0] <= horizon:
                due, _, id_ = heapq.heappop(heap)
                job = self._jobs.get(id_)
                if job is None or job.busy or job.next_poll_ns != due:
                    continue  # forgotten, already queued, or superseded
                job.busy = True
                self._lanes[job.provider].queue.put_nowait(job)
            self._wake.clear()
            timer = None
            if heap:
                delay = max((heap[0][0] - self._clock()) / NS_PER_S, 0.0)
                timer = loop.call_later(delay, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _push(self, job: TrackedJob) -> None:
        heapq.heappush(self._heap, (job.next_poll_ns, next(self._tie), job.id))
        if self._heap[0][2] == job.id:
            self._wake.set()  # the new soonest job: the scheduler's timer is too late

    # --- lanes ----------------------------------------------------------------------------------

    async def _worker(self, lane: _Lane) -> None:
        while True:
            job = await lane.queue.get()
            if job.forgotten:
                continue
            try:
                outcome = await self._poll(lane, job)
            except Exception as exc:  # an adapter bug must not stop the lane or lose the job
                log.exception(
                    "job_poll_crashed",
                    provider=job.provider,
                    id=job.id,
                    job_id=job.job_id,
                    error_type=type(exc).__name__,
                )
                outcome = failed_poll(
                    job, exc, now_ns=self._clock(), timing=self._timing, rand=self._rand
                )
            self._results.put_nowait(outcome)

    async def _poll(self, lane: _Lane, job: TrackedJob) -> Outcome:
        timing = self._timing
        if self._clock() >= job.deadline_ns(timing):
            return expired(job, now_ns=self._clock(), timing=timing)
        await lane.limiter.acquire()
        lane.in_flight += 1
        lane.max_in_flight = max(lane.max_in_flight, lane.in_flight)
        started = time.monotonic()
        try:
            answer = await lane.provider.fetch(job.ref)
        except UpstreamError as exc:
            if exc.retry_after is not None and exc.status in _PAUSE_STATUSES:
                lane.limiter.pause(exc.retry_after)
            return failed_poll(job, exc, now_ns=self._clock(), timing=timing, rand=self._rand)
        finally:
            lane.in_flight -= 1
            metrics.JOB_POLL_SECONDS.labels(job.provider).observe(time.monotonic() - started)
        if isinstance(answer, NotFound):
            return not_found(job, answer, now_ns=self._clock(), timing=timing, rand=self._rand)
        extra = None
        reactions = self._reactions
        if (
            reactions is not None
            and answer.result_link
            and reactions.wants_download(advance(job.state, answer.state), answer)
        ):
            await lane.limiter.acquire()
            lane.in_flight += 1
            try:
                extra = await reactions.download(lane.provider, job.ref, answer.result_link)
            except DownloadFailed as exc:
                return failed_poll(
                    job, exc.cause, now_ns=self._clock(), timing=timing, rand=self._rand
                )
            finally:
                lane.in_flight -= 1
        return observed(
            job, answer, now_ns=self._clock(), timing=timing, rand=self._rand, extra_result=extra
        )

    # --- recorder -------------------------------------------------------------------------------

    async def _recorder(self) -> None:
        queue = self._results
        batch_max = self.options.batch_max
        while True:
            first = await queue.get()
            if isinstance(first, _Stop):
                return
            batch = [first]
            stop = False
            while len(batch) < batch_max and not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, _Stop):
                    stop = True
                    break
                batch.append(item)
            await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[Outcome]) -> None:
        now = self._clock()
        updates = [o.update for o in batch]
        try:
            applied = await self._store.write(lambda conn: jobs_store.record(conn, updates, now))
        except StoreClosed:
            raise
        except Exception as exc:  # e.g. disk full: keep every job, try again after a backoff
            log.error(
                "job_record_failed",
                outcomes=len(batch),
                error=str(exc),
                error_type=type(exc).__name__,
            )
            retry_ns = now + int(self._timing.backoff_max * NS_PER_S)
            for outcome in batch:
                outcome.job.busy = False
                if not outcome.job.forgotten:
                    outcome.job.next_poll_ns = retry_ns
                    self._push(outcome.job)
            return
        self.commits += 1
        for outcome, ok in zip(batch, applied, strict=True):
            self._after(outcome, ok)

    def _after(self, outcome: Outcome, ok: bool) -> None:
        job = outcome.job
        job.busy = False
        if not ok:  # forgotten (row deleted) while the poll was in flight
            log.debug("job_update_skipped", provider=job.provider, id=job.id)
            self.forget(job.id)
            return
        old_state = job.state
        apply(job, outcome.update)
        jlog = log.bind(provider=job.provider, id=job.id, job_id=job.job_id)
        if outcome.kind != "expired":
            self.polls += 1
            metrics.JOB_POLLS.labels(job.provider, outcome.kind).inc()
        obs = outcome.observation
        if obs is not None and not obs.known:
            metrics.JOB_UNKNOWN_STATUS.labels(job.provider).inc()
            key = (job.provider, obs.vendor_status)
            if key not in self._unknown_seen:  # once per status, not once per poll
                self._unknown_seen.add(key)
                jlog.warning(
                    "job_unknown_status",
                    vendor_status=obs.vendor_status,
                    treated_as=obs.state.value,
                )
        jlog.debug(
            "job_poll",
            outcome=outcome.kind,
            vendor_status=job.vendor_status,
            state=job.state.value,
            attempt=job.attempts,
        )
        self._provider_health(outcome)
        if outcome.transition:
            state = job.state
            metrics.JOB_TRANSITIONS.labels(job.provider, state.value).inc()
            jlog.info(
                "job_transition",
                old=old_state.value,
                new=state.value,
                vendor_status=job.vendor_status,
                polls=job.polls,
                error=job.last_error,
            )
        if job.forgotten:
            return
        if job.state.terminal:
            self.forget(job.id)
            if self._reactions is not None:
                self._reactions.after_commit(self._lanes[job.provider].provider, job.state)
        else:
            self._push(job)

    def _provider_health(self, outcome: Outcome) -> None:
        """Failed polls are logged at most once per ``error_log_interval`` per provider (with the
        count), and the first answer after failures logs ``job_provider_recovered``."""
        job = outcome.job
        lane = self._lanes[job.provider]
        if outcome.kind == "error":
            lane.failures += 1
            now = time.monotonic()
            if (
                lane.failures_logged_at is None
                or now - lane.failures_logged_at >= self.options.error_log_interval
            ):
                lane.failures_logged_at = now
                log.warning(
                    "job_poll_failed",
                    provider=job.provider,
                    id=job.id,
                    job_id=job.job_id,
                    attempt=job.attempts,
                    error=job.last_error,
                    failures=lane.failures,
                    backoff_s=round((job.next_poll_ns - self._clock()) / NS_PER_S, 3),
                )
        elif outcome.kind in ("ok", "not_found") and lane.failures:
            log.info("job_provider_recovered", provider=job.provider, failures=lane.failures)
            lane.failures = 0
            lane.failures_logged_at = None

    def _count(self, provider: str, delta: int) -> None:
        if provider in self._tracked:
            self._tracked[provider] += delta
            metrics.JOBS_TRACKED.labels(provider).set(self._tracked[provider])


@contextlib.asynccontextmanager
async def running(poller: JobPoller, stop: asyncio.Event | None = None) -> AsyncIterator[JobPoller]:
    """Run ``poller`` in a task for the block's duration (tests and the benchmark)."""
    stop = stop or asyncio.Event()
    task = asyncio.create_task(poller.run(stop), name="job-poller")
    try:
        started = asyncio.ensure_future(poller.started.wait())
        done, _ = await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            started.cancel()
            task.result()
        yield poller
    finally:
        stop.set()
        await task
