"""Spawn targets for the reliability tests: each runs in a real child process of the host."""

from __future__ import annotations

import threading
from typing import Any

from liteyuki.comm import active_channel, passive_channel


def stream_sink(total: int, every: int) -> None:
    """Counts a stream of ints on the passive channel; reports on the active one.

    ("first", pid, seq) for the first message this incarnation gets, ("progress",
    pid, seq) every ``every`` messages, ("done", pid, first, count, in_order) at
    ``total - 1``. Each incarnation starts from scratch.
    """
    import os

    pid = os.getpid()
    state = {"first": None, "last": None, "count": 0, "in_order": True}

    @passive_channel.on_receive()
    def on_seq(message: tuple[int, bytes]) -> None:
        seq = message[0]
        if state["first"] is None:
            state["first"] = seq
            active_channel.send(("first", pid, seq))
        elif seq != state["last"] + 1:
            state["in_order"] = False
        state["last"] = seq
        state["count"] += 1
        if state["count"] % every == 0:
            active_channel.send(("progress", pid, seq))
        if seq == total - 1:
            active_channel.send(("done", pid, state["first"], state["count"], state["in_order"]))

    threading.Event().wait()


def _unused(*_: Any) -> None:
    pass
