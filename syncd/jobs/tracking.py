"""What one poll means for a tracked job: its next state, its next poll time, and what to store.

Pure functions over an in-memory ``TrackedJob``: no I/O, the clock and the random source passed in,
so every rule of issue 4 is unit-testable:

- Backoff between polls is exponential with full jitter (``initial * factor**attempts``, capped),
  where ``attempts`` counts polls since the job last showed progress; progress (a new state, a new
  vendor status or new progress figures) resets it.
- A ``Retry-After`` (429/503) is honoured as the delay before the next poll.
- Network errors, 5xx and unreadable bodies are recorded as ``last_error`` and retried; the job is
  never dropped for them.
- 404s count from the first one in a row: after ``not_found_grace`` the job is ``lost``.
- A job not ended ``deadline`` seconds after registration is ``expired``; polls are never scheduled
  past that instant, so expiry is on time however long the backoff has grown.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from syncd.backoff import full_jitter
from syncd.errors import SyncdError, UpstreamError
from syncd.jobs.ports import JobRef, NotFound, Observation
from syncd.jobs.states import JobState, advance
from syncd.store.jobs import JobRow, JobUpdate
from syncd.timeutil import NS_PER_S

_ERROR_MAX = 300


@dataclass(frozen=True, slots=True)
class Timing:
    """The poller's plain parameters (from ``[jobs]`` config), in seconds."""

    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    deadline: float = 86400.0
    not_found_grace: float = 300.0


@dataclass(slots=True)
class TrackedJob:
    """The poller's copy of one unfinished job; mirrors its row after every committed poll."""

    id: int
    provider: str
    job_id: str
    params: dict[str, str]
    state: JobState
    vendor_status: str | None
    job_type: str | None
    registered_ns: int
    next_poll_ns: int
    attempts: int = 0
    polls: int = 0
    not_found_since_ns: int | None = None
    last_error: str | None = None
    messages: tuple[str, ...] = ()
    failures: tuple[dict[str, Any], ...] = ()
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    busy: bool = False  # queued or being polled: never dispatched twice
    forgotten: bool = False

    @classmethod
    def from_row(cls, row: JobRow) -> TrackedJob:
        return cls(
            id=row.id,
            provider=row.provider,
            job_id=row.job_id,
            params=dict(row.params),
            state=JobState(row.state),
            vendor_status=row.vendor_status,
            job_type=row.job_type,
            registered_ns=row.registered_ns,
            next_poll_ns=row.next_poll_ns,
            attempts=row.attempts,
            polls=row.polls,
            not_found_since_ns=row.not_found_since_ns,
            last_error=row.last_error,
            messages=tuple(row.messages),
            failures=tuple(row.failures),
            progress=row.progress,
            result=row.result,
        )

    @property
    def ref(self) -> JobRef:
        return JobRef(self.id, self.provider, self.job_id, self.params)

    def deadline_ns(self, timing: Timing) -> int:
        return self.registered_ns + int(timing.deadline * NS_PER_S)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The decided result of one poll: the row update, and facts for logs, metrics and reactions."""

    job: TrackedJob
    update: JobUpdate
    kind: str  # "ok" | "not_found" | "error" | "expired"
    observation: Observation | None = None
    retry_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def new_state(self) -> JobState:
        return JobState(self.update.state)

    @property
    def transition(self) -> bool:
        return self.update.state != self.update.expected_state


def _delay(timing: Timing, attempts: int, rand: Callable[[], float]) -> float:
    return full_jitter(
        attempts,
        initial=timing.backoff_initial,
        factor=timing.backoff_factor,
        cap=timing.backoff_max,
        rand=rand,
    )


def _update(
    job: TrackedJob,
    *,
    state: JobState,
    now_ns: int,
    next_ns: int,
    attempts: int,
    vendor_status: str | None = None,
    job_type: str | None = None,
    not_found_since_ns: int | None = None,
    last_error: str | None = None,
    messages: tuple[str, ...] | None = None,
    failures: tuple[dict[str, Any], ...] | None = None,
    progress: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
    keep_observed: bool = False,
    timing: Timing,
) -> JobUpdate:
    """A JobUpdate with the next poll capped at the deadline (and at the 404 grace's end)."""
    finished = state.terminal
    next_ns = min(next_ns, job.deadline_ns(timing))
    if not_found_since_ns is not None:
        next_ns = min(next_ns, not_found_since_ns + int(timing.not_found_grace * NS_PER_S))
    return JobUpdate(
        id=job.id,
        expected_state=job.state.value,
        state=state.value,
        vendor_status=job.vendor_status if keep_observed else vendor_status,
        job_type=job.job_type if keep_observed else (job_type or job.job_type),
        attempts=attempts,
        polls=job.polls + (0 if state is JobState.EXPIRED else 1),
        next_poll_ns=max(next_ns, now_ns) if not finished else now_ns,
        not_found_since_ns=not_found_since_ns,
        last_error=last_error,
        messages=job.messages if keep_observed or messages is None else messages,
        failures=job.failures if keep_observed or failures is None else failures,
        progress=job.progress if keep_observed else progress,
        result=job.result if keep_observed else result,
        finished=finished,
    )


def observed(
    job: TrackedJob,
    obs: Observation,
    *,
    now_ns: int,
    timing: Timing,
    rand: Callable[[], float] = random.random,
    extra_result: dict[str, Any] | None = None,
) -> Outcome:
    """A 2xx answer: move forward if the vendor says so; reset the backoff on any progress."""
    state = advance(job.state, obs.state)
    progressed = (
        state is not job.state
        or obs.vendor_status != job.vendor_status
        or obs.progress != job.progress
    )
    attempts = 0 if progressed else job.attempts + 1
    result = obs.result
    if extra_result:
        result = {**(result or {}), **extra_result}
    update = _update(
        job,
        state=state,
        now_ns=now_ns,
        next_ns=now_ns + int(_delay(timing, attempts, rand) * NS_PER_S),
        attempts=attempts,
        vendor_status=obs.vendor_status,
        job_type=obs.job_type,
        messages=obs.messages,
        failures=obs.failures,
        progress=obs.progress,
        result=result,
        timing=timing,
    )
    return Outcome(job, update, "ok", observation=obs)


def not_found(
    job: TrackedJob,
    answer: NotFound,
    *,
    now_ns: int,
    timing: Timing,
    rand: Callable[[], float] = random.random,
) -> Outcome:
    """A 404: lost once 404s have lasted ``not_found_grace``; until then, poll with backoff."""
    since = job.not_found_since_ns if job.not_found_since_ns is not None else now_ns
    error = "HTTP 404" + (f": {answer.detail}" if answer.detail else "")
    lost = now_ns - since >= int(timing.not_found_grace * NS_PER_S)
    attempts = job.attempts + 1
    update = _update(
        job,
        state=JobState.LOST if lost else job.state,
        now_ns=now_ns,
        next_ns=now_ns + int(_delay(timing, attempts, rand) * NS_PER_S),
        attempts=attempts,
        not_found_since_ns=since,
        last_error=error[:_ERROR_MAX],
        keep_observed=True,
        timing=timing,
    )
    return Outcome(job, update, "not_found")


def failed_poll(
    job: TrackedJob,
    exc: BaseException,
    *,
    now_ns: int,
    timing: Timing,
    rand: Callable[[], float] = random.random,
) -> Outcome:
    """A failed request: keep the job, record the error, poll after Retry-After or backoff."""
    attempts = job.attempts + 1
    retry_after = exc.retry_after if isinstance(exc, UpstreamError) else None
    delay = retry_after if retry_after is not None else _delay(timing, attempts, rand)
    text = exc.message if isinstance(exc, SyncdError) else f"{type(exc).__name__}: {exc}"
    update = _update(
        job,
        state=job.state,
        now_ns=now_ns,
        next_ns=now_ns + int(delay * NS_PER_S),
        attempts=attempts,
        not_found_since_ns=job.not_found_since_ns,
        last_error=text[:_ERROR_MAX],
        keep_observed=True,
        timing=timing,
    )
    return Outcome(job, update, "error", retry_after=retry_after)


def expired(job: TrackedJob, *, now_ns: int, timing: Timing) -> Outcome:
    """The deadline passed before the job ended."""
    error = f"no end within jobs.deadline ({timing.deadline:g} s)"
    update = _update(
        job,
        state=JobState.EXPIRED,
        now_ns=now_ns,
        next_ns=now_ns,
        attempts=job.attempts,
        not_found_since_ns=job.not_found_since_ns,
        last_error=error,
        keep_observed=True,
        timing=timing,
    )
    return Outcome(job, update, "expired")


def apply(job: TrackedJob, update: JobUpdate) -> None:
    """Bring the in-memory copy in line with a committed update."""
    job.state = JobState(update.state)
    job.vendor_status = update.vendor_status
    job.job_type = update.job_type
    job.attempts = update.attempts
    job.polls = update.polls
    job.next_poll_ns = update.next_poll_ns
    job.not_found_since_ns = update.not_found_since_ns
    job.last_error = update.last_error
    job.messages = tuple(update.messages)
    job.failures = tuple(dict(f) for f in update.failures)
    job.progress = None if update.progress is None else dict(update.progress)
    job.result = None if update.result is None else dict(update.result)
