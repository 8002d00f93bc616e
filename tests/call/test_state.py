"""Tests for telebridge.call.state: the moves a call may make, and the ones that raise."""

from __future__ import annotations

import pytest

from telebridge.call.state import CallLifecycle, CallState, InvalidTransition

S, E, D = CallState.STREAMING, CallState.ENDING, CallState.ENDED


def lifecycle_at(*path: CallState) -> CallLifecycle:
    lifecycle = CallLifecycle()
    for state in path:
        lifecycle.move_to(state)
    return lifecycle


def test_a_call_starts_streaming_and_ends_with_or_without_ending() -> None:
    assert CallLifecycle().state is S
    assert lifecycle_at(E).state is E
    assert lifecycle_at(E, D).state is D
    assert lifecycle_at(D).state is D


@pytest.mark.parametrize(
    ("path", "target"),
    [((), S), ((E,), E), ((E,), S), ((D,), S), ((D,), E), ((D,), D), ((E, D), D)],
)
def test_invalid_moves_raise_and_leave_the_state(
    path: tuple[CallState, ...], target: CallState
) -> None:
    lifecycle = lifecycle_at(*path)
    before = lifecycle.state
    with pytest.raises(InvalidTransition, match=f"from {before.value} to {target.value}"):
        lifecycle.move_to(target)
    assert lifecycle.state is before
