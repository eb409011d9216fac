"""A randomized model test of channel delivery across real processes (hypothesis stateful).

The host sends numbered messages on one shared channel; two receiving children take
some, close their ends, or are killed with SIGKILL and restarted; a third child (the
spare) always receives. At the end every end drains, and the outcome is checked against
the rules: nothing lost; nothing delivered twice unless a receiver died (at-least-once
at that boundary only); each receiving end sees its messages in send order, except that
a batch handed back by an end that closed or died may reach another end after later
messages (each batch in order itself; see docs/RELIABILITY.md).

CI runs a few examples (``LITEYUKI_MODEL_EXAMPLES``, default 4); a longer run:
``LITEYUKI_MODEL_EXAMPLES=50 python -m pytest tests/reliability/test_model.py``.
"""

from __future__ import annotations

import bisect
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liteyuki import LiteyukiBot
from liteyuki.comm import Channel, get_channel, set_channel

from .. import delivery_targets as dt
from ..conftest import unique

EXAMPLES = int(os.environ.get("LITEYUKI_MODEL_EXAMPLES", "4"))


class Delivery(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.channel = unique("model")
        set_channel(self.channel, Channel(self.channel))
        self.kids = [unique("ra"), unique("rb")]
        self.spare = unique("spare")
        self.bot = LiteyukiBot(pyproject=None, restart_backoff=0.05, stop_grace=2.0, log_level="WARNING")
        self.restarted: dict[str, threading.Event] = {k: threading.Event() for k in self.kids}
        self.bot.on_after_restart(lambda n: self.restarted[n].set() if n in self.restarted else None)
        for name in [*self.kids, self.spare]:
            self.bot.process_manager.add_target(name, dt.model_receiver, (self.channel,))
        self.ctx = self.bot.running()
        self.ctx.__enter__()
        self._wait_receivers(3)
        self.sent = 0
        self.got: dict[int, list[int]] = {}  # pid (one incarnation) -> messages in arrival order
        self.open = {k: True for k in self.kids}
        self.kills = 0
        self.closes = 0

    def _wait_receivers(self, n: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = [s for s in self.bot.hub.channel_stats() if s["name"] == self.channel]
            if stats and len(stats[0]["receivers"]) == n:
                return
            time.sleep(0.01)  # polling the hub's table with a deadline
        raise AssertionError(f"{n} receiving ends did not appear")

    def _ask(self, name: str, *cmd: Any) -> Any:
        get_channel(f"{name}-passive").send(cmd)
        return get_channel(f"{name}-active").receive(timeout=20)

    def _record(self, pid: int, messages: list[int]) -> None:
        self.got.setdefault(pid, []).extend(messages)

    @rule(n=st.integers(1, 300))
    def send(self, n: int) -> None:
        chan = get_channel(self.channel)
        for i in range(self.sent, self.sent + n):
            chan.send(i, timeout=10)
        self.sent += n

    @rule(i=st.integers(0, 1), k=st.integers(1, 200))
    def receive(self, i: int, k: int) -> None:
        kid = self.kids[i]
        if self.open[kid]:
            pid, messages = self._ask(kid, "recv", k)
            self._record(pid, messages)

    @rule(i=st.integers(0, 1))
    def close(self, i: int) -> None:
        kid = self.kids[i]
        if self.open[kid]:
            pid, closed, taken = self._ask(kid, "close")
            assert closed == "closed"
            self._record(pid, taken)
            self.open[kid] = False
            self.closes += 1

    @precondition(lambda self: self.kills < 2)
    @rule(i=st.integers(0, 1))
    def kill(self, i: int) -> None:
        kid = self.kids[i]
        pid = self.bot.process_manager.pid(kid)
        self.restarted[kid].clear()
        os.kill(pid, signal.SIGKILL)
        assert self.restarted[kid].wait(20)
        self.kills += 1
        self.open[kid] = True  # its successor has a fresh end
        # The successor's first receive (which declares its end) may have taken a message
        # already: record it now, before a later kill could take it away unreported. (A
        # message a process consumed is delivered; dying afterwards does not undo that.)
        pid, messages = self._ask(kid, "recv", 0)
        self._record(pid, messages)

    @invariant()
    def nothing_received_twice_without_a_death(self) -> None:
        if self.kills == 0:
            counts = Counter(m for got in self.got.values() for m in got)
            assert not counts or max(counts.values()) == 1

    def teardown(self) -> None:
        try:
            # Every end drains (the spare and the open ones); whatever is left waits in the host.
            for name in [*self.kids, self.spare]:
                if name == self.spare or self.open[name]:
                    pid, messages = self._ask(name, "drain")
                    self._record(pid, messages)
            counts = Counter(m for got in self.got.values() for m in got)
            missing = sorted(set(range(self.sent)) - set(counts))
            assert not missing, f"lost: {missing[:20]} ({len(missing)})"
            assert set(counts) == set(range(self.sent))
            if self.kills == 0:
                assert not counts or max(counts.values()) == 1, "a message arrived twice without a receiver dying"
            for pid, got in self.got.items():
                # In send order, except that a batch handed back by an end that closed or died
                # goes to the front of the queue: each such batch is in order itself, so an end's
                # messages are at most 1 + (closes + deaths) increasing runs interleaved.
                runs = _increasing_runs_needed(got)
                assert runs <= 1 + self.closes + self.kills, f"receiver {pid} saw messages out of order: {got[:50]}"
        finally:
            self.ctx.__exit__(None, None, None)


def _increasing_runs_needed(seq: list[int]) -> int:
    """The fewest increasing subsequences that cover ``seq`` (its longest decreasing run)."""
    tails: list[int] = []  # patience sorting on the negated values
    for x in seq:
        i = bisect.bisect_left(tails, -x)
        if i == len(tails):
            tails.append(-x)
        else:
            tails[i] = -x
    return len(tails)


Delivery.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(600)
def test_delivery_model() -> None:
    Delivery.TestCase().runTest()
