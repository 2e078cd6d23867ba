"""The normalised job lifecycle: states, forward-only transitions between them, the terminal set.

``pending -> running -> succeeded | failed | partial``, plus ``lost`` (the provider answered 404 for
longer than ``jobs.not_found_grace``) and ``expired`` (no end before ``jobs.deadline``). A job never
moves backwards: a vendor that reports "pending" after "running" leaves the job running, and nothing
leaves a terminal state (issue 4).
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a tracked job is in its life; the change-log kind is ``job.<value>``."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"
    LOST = "lost"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """True when the job has ended and is no longer polled."""
        return self in TERMINAL

    @property
    def change_kind(self) -> str:
        """The change-log kind written when a job enters this state."""
        return f"job.{self.value}"


TERMINAL: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.PARTIAL, JobState.LOST, JobState.EXPIRED}
)
# Rank along the lifecycle: a move is allowed only to a strictly higher rank.
_RANK: dict[JobState, int] = {JobState.PENDING: 0, JobState.RUNNING: 1}
KINDS: tuple[str, ...] = tuple(state.change_kind for state in JobState)


def can_move(old: JobState, new: JobState) -> bool:
    """Whether ``old -> new`` is a forward transition (never from a terminal state)."""
    if old in TERMINAL:
        return False
    return _RANK.get(new, 2) > _RANK[old]


def advance(old: JobState, observed: JobState) -> JobState:
    """The state after observing ``observed``: the observation if it moves forward, else ``old``."""
    return observed if can_move(old, observed) else old


def parse_state(text: str) -> JobState:
    """A state from its name (any case); ValueError naming the allowed values otherwise."""
    try:
        return JobState(text.strip().lower())
    except ValueError:
        allowed = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown job state {text!r}; expected one of {allowed}") from None
