"""Spawn targets for the multi-host Redis tests (children of tests/redis_host.py)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from liteyuki.comm import Channel
from liteyuki.comm.storage import shared_memory

INCRS = 300  # incr calls per child
CAS_WINS = 50  # successful compare_and_set per child
BIG = 2**64  # beyond Redis's 64-bit INCRBY: the exact slow path


def _wait_for(key: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # polls a real condition: the key exists in the shared store
        value = shared_memory.get(key)
        if value is not None:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"{key!r} did not appear within {timeout} s")


def mesh_worker(me: str, other_host: str) -> None:
    """Every shared-state race at once, then a cross-host read and a publish."""

    @shared_memory.on_subscriber_receive("news")
    def got(data: Any) -> None:
        shared_memory.incr(f"got:{me}")
        shared_memory.set(f"news:{me}", data)

    shared_memory.set(f"subscribed:{me}", os.getpid())
    for _ in range(INCRS):
        shared_memory.incr("counter")
    shared_memory.incr("big", BIG)
    shared_memory.incr("float", 0.5)
    shared_memory.setdefault("cas", 0)
    wins = tries = 0
    while wins < CAS_WINS:
        tries += 1
        value = shared_memory.get("cas")
        if shared_memory.compare_and_set("cas", value, value + 1):
            wins += 1
    shared_memory.set(f"cas-tries:{me}", tries)
    shared_memory.set(f"first:{me}", shared_memory.setdefault("first", me))
    prize = shared_memory.pop("prize", None)
    if prize is not None:
        shared_memory.set(f"prize:{me}", prize)
    shared_memory.set(f"read:{me}", _wait_for(f"hello-from:{other_host}"))
    if me.endswith("-0") and me.startswith("A"):
        _wait_for("publish-now")
        shared_memory.publish("news", f"from {me}")
    shared_memory.set(f"done:{me}", True)
    threading.Event().wait()


def cluster_receiver(me: str, stall_after: int) -> None:
    """Handle cluster-channel messages; the first process to reach ``stall_after`` stalls forever (to be killed)."""
    chan = Channel("work", cluster=True)
    handled = 0

    @chan.on_receive()
    def handle(i: int) -> None:
        nonlocal handled
        handled += 1
        if handled == stall_after and shared_memory.compare_and_set("stalled-pid", None, os.getpid()):
            shared_memory.set("stalled-on", i)
            threading.Event().wait()  # a consumer that hangs mid-message, until kill -9
        shared_memory.incr(f"got:{i}")
        shared_memory.incr(f"by:{me}")

    shared_memory.set(f"ready:{me}", os.getpid())
    threading.Event().wait()


def resilient_worker(me: str) -> None:
    """Beats into the store every 50 ms, and says on its active channel when the store went away."""
    from liteyuki.comm import StorageUnavailableError, active_channel

    jobs = Channel("jobs-after-restart", cluster=True)

    @jobs.on_receive()
    def job(i: int) -> None:
        shared_memory.incr(f"job:{i}")

    @shared_memory.on_subscriber_receive("ping")
    def ping(n: int) -> None:
        shared_memory.set(f"pong:{me}", n)

    down = False
    pace = threading.Event()
    while True:
        try:
            shared_memory.incr(f"beat:{me}")
            down = False
        except StorageUnavailableError:
            if not down:
                active_channel.send(("down", me))
                down = True
        pace.wait(0.05)  # the beat's pace, not a synchronisation
