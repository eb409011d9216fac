"""How the passive drains on one event loop share it: one slice of the loop per turn.

A drain runs a backlog's callbacks a chunk at a time. The drains that run in one turn
of the loop (one pass over its ready queue) share one 50 ms slice: the first runs at
least one chunk, and a drain that finds the slice spent pauses, with nothing run, until
the loop has had its turn. Per end, a loop with K backlogged channels ran K slices back
to back (a 5 ms ticker on it waited 766 ms with 8 channels), and backlogs each shorter
than a slice never paused at all (50 channels of 40 ms held a loop 2 s).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

TYPE_CHECKING = False  # (a plain child imports this module: typing stays out of it)
if TYPE_CHECKING:
    from typing import Any

SLICE = 0.05  # what the drains of one loop run, together, between two turns of the loop
# The pause is a timer, not a place in the ready queue: queued with call_soon, a drain ran
# again before the work it had made wait, and before each step that work then scheduled
# (a task sleeping on a timer got a turn every third slice, ~165 ms).
PAUSE = 0.001


class _Turn:
    __slots__ = ("began", "ran", "timer", "waiting")

    def __init__(self) -> None:
        self.began: float | None = None  # when this turn's first drain started
        self.waiting: list[Callable[[], None]] = []  # paused with nothing run: first next turn
        self.ran: list[Callable[[], None]] = []  # paused after running their share
        self.timer: Any = None


_turns: weakref.WeakKeyDictionary[Any, _Turn] = weakref.WeakKeyDictionary()


def _turn(loop: Any) -> _Turn:
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = _Turn()
    return turn


def begin(loop: Any) -> float:
    """A drain starts on ``loop``: when the turn it runs in began (the first drain of a turn
    starts it; it ends when the loop runs what was queued meanwhile)."""
    turn = _turn(loop)
    if turn.began is None:
        turn.began = time.perf_counter()
        loop.call_soon(_end_turn, turn)  # runs after every drain already in the ready queue
    return turn.began


def spent(loop: Any) -> bool:
    """Whether the drains of this turn of ``loop`` have run their slice."""
    turn = _turns.get(loop)
    return turn is not None and turn.began is not None and time.perf_counter() - turn.began > SLICE


def pause(loop: Any, drain: Callable[[], None], ran: bool) -> None:
    """Run ``drain`` again once ``loop`` has had its turn: PAUSE after the last drain of this
    turn paused, those that ran nothing first. (Timed from each drain's own pause, the first
    of K was due again before the last had run, and ran again before a task whose timer was
    due; resumed in pause order, the first ate the slice every turn.)"""
    turn = _turn(loop)
    (turn.ran if ran else turn.waiting).append(drain)
    if turn.timer is not None:
        turn.timer.cancel()
    turn.timer = loop.call_later(PAUSE, _resume, loop, turn)


def _end_turn(turn: _Turn) -> None:
    turn.began = None


def _resume(loop: Any, turn: _Turn) -> None:
    paused = turn.waiting + turn.ran
    turn.waiting, turn.ran, turn.timer, turn.began = [], [], None, None
    for drain in paused:
        loop.call_soon(drain)
