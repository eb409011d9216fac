"""How the passive drains on one event loop share it: one slice of the loop per turn.

A drain runs a backlog's callbacks a chunk at a time and lets its loop run other work
between slices. Per end, a loop with K backlogged channels ran K slices back to back (a
5 ms ticker on it waited 766 ms with 8 channels); here the K ends split one slice, and
all of them resume together once the loop has had its turn.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

TYPE_CHECKING = False  # (a plain child imports this module: typing stays out of it)
if TYPE_CHECKING:
    from typing import Any

SLICE = 0.05  # what the backlogged drains of one loop run, together, between two turns of the loop
# The pause is a timer, not a place in the ready queue: queued with call_soon, a drain ran
# again before the work it had made wait, and before each step that work then scheduled
# (a task sleeping on a timer got a turn every third slice, ~165 ms).
PAUSE = 0.001


class _Turn:
    __slots__ = ("backlogged", "paused", "timer")

    def __init__(self) -> None:
        self.backlogged = 0  # ends of this loop with a backlog their drain paused
        self.paused: list[Callable[[], None]] = []
        self.timer: Any = None


_turns: weakref.WeakKeyDictionary[Any, _Turn] = weakref.WeakKeyDictionary()


def share(loop: Any, counted: bool) -> float:
    """How long a drain on ``loop`` may run before it pauses (``counted``: its end is one of
    the backlogged ends already)."""
    turn = _turns.get(loop)
    n = turn.backlogged if turn is not None else 0
    return SLICE / (n if counted and n else n + 1)


def count(loop: Any) -> None:
    """One more backlogged end on ``loop``."""
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = _Turn()
    turn.backlogged += 1


def uncount(loop: Any) -> None:
    """A backlogged end of ``loop`` drained its backlog (or closed)."""
    turn = _turns.get(loop)
    if turn is not None and turn.backlogged > 0:
        turn.backlogged -= 1


def pause(loop: Any, drain: Callable[[], None]) -> None:
    """Run ``drain`` again once ``loop`` has had its turn: PAUSE after the last drain of this
    turn paused. (Timed from each drain's own pause, the first of K was due again before the
    last had run, and ran again before a task whose timer was due.)"""
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = _Turn()
    turn.paused.append(drain)
    if turn.timer is not None:
        turn.timer.cancel()
    turn.timer = loop.call_later(PAUSE, _resume, loop, turn)


def _resume(loop: Any, turn: _Turn) -> None:
    paused, turn.paused, turn.timer = turn.paused, [], None
    for drain in paused:
        loop.call_soon(drain)
