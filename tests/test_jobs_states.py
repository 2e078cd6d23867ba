"""The normalised job lifecycle: forward-only transitions and the terminal set."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.jobs.states import KINDS, TERMINAL, JobState, advance, can_move, parse_state

P, R, S, F, PA, L, E = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.PARTIAL,
    JobState.LOST,
    JobState.EXPIRED,
)


def test_terminal_set() -> None:
    """Exactly the five end states are terminal."""
    assert {s for s in JobState if s.terminal} == TERMINAL == {S, F, PA, L, E}


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        (P, R, True),
        (P, S, True),
        (P, F, True),
        (P, PA, True),
        (P, L, True),
        (P, E, True),
        (R, S, True),
        (R, F, True),
        (R, PA, True),
        (R, L, True),
        (R, E, True),
        (R, P, False),
        (P, P, False),
        (R, R, False),
        (S, F, False),
        (F, S, False),
        (PA, R, False),
        (L, R, False),
        (E, S, False),
        (S, S, False),
    ],
)
def test_only_forward_moves(old: JobState, new: JobState, allowed: bool) -> None:
    """pending -> running -> an end state; nothing moves back, nothing leaves an end state."""
    assert can_move(old, new) is allowed


@given(st.lists(st.sampled_from(list(JobState)), max_size=20))
def test_advance_never_goes_back(observations: list[JobState]) -> None:
    """Whatever a vendor reports, in any order, the state never moves back or leaves an end."""
    rank = {P: 0, R: 1}
    state = P
    for observed in observations:
        new = advance(state, observed)
        assert rank.get(new, 2) >= rank.get(state, 2)
        if state.terminal:
            assert new is state
        state = new


def test_kinds_and_parsing() -> None:
    """Each state has its change kind; state names parse in any case, unknown ones are refused."""
    assert KINDS == (
        "job.pending",
        "job.running",
        "job.succeeded",
        "job.failed",
        "job.partial",
        "job.lost",
        "job.expired",
    )
    assert parse_state(" Running ") is R
    with pytest.raises(ValueError, match="expected one of pending"):
        parse_state("done")
