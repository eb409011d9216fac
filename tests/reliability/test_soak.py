"""Soak: 8 children x 3 threads mixing incr, set/get, publish/subscribe and channel traffic.

``LITEYUKI_SOAK_SECONDS`` sets the length (default 10, for CI); the documented full run is
``LITEYUKI_SOAK_SECONDS=60 python -m pytest tests/reliability -m soak``.
"""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from liteyuki.comm import Channel, get_channel, set_channel
from liteyuki.comm.storage import shared_memory

from ..conftest import unique
from . import rtargets

SECONDS = float(os.environ.get("LITEYUKI_SOAK_SECONDS", "10"))
CHILDREN = 8
PACE = 0.02  # s between rounds of each child thread: modest load, 8 children share 2 cores


def _usage(procs: list[psutil.Process]) -> tuple[int, int]:
    """(open fds, RSS bytes) summed over the host and its children."""
    fds = rss = 0
    for p in procs:
        with p.oneshot():
            fds += p.num_fds()
            rss += p.memory_info().rss
    return fds, rss


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + 240)
def test_soak(start_host):
    names = [unique("soak") for _ in range(CHILDREN)]
    cond = threading.Condition()
    got = {"data": {n: 0 for n in names}, "publishes": 0}
    disorder: list[str] = []
    last: dict[str, int] = {}

    def in_order(stream: str, seq: int) -> None:
        if last.get(stream, -1) != seq - 1:
            disorder.append(f"{stream}: {seq} after {last.get(stream)}")
        last[stream] = seq

    def on_data(message: tuple[str, int]) -> None:
        with cond:
            in_order(f"data from {message[0]}", message[1])
            got["data"][message[0]] += 1
            cond.notify_all()

    def on_publish(message: tuple[str, int]) -> None:
        with cond:
            in_order(f"publish from {message[0]}", message[1])
            got["publishes"] += 1
            cond.notify_all()

    def setup(bot):  # before the children start: they look the data channel up at once
        data = Channel(rtargets.SOAK_DATA)
        set_channel(data.name, data)
        data.on_receive()(on_data)
        shared_memory.on_subscriber_receive(rtargets.SOAK_TOPIC)(on_publish)

    peers = {name: names[(i + 1) % CHILDREN] for i, name in enumerate(names)}
    children = {name: (rtargets.soak_worker, (peers[name], PACE)) for name in names}
    bot = start_host(children, setup=setup, call_timeout=30.0)
    procs = [psutil.Process(), *(psutil.Process(bot.process_manager.pid(n)) for n in names)]
    passive = {name: get_channel(f"{name}-passive") for name in names}
    active = {name: get_channel(f"{name}-active") for name in names}
    pings = {name: 0 for name in names}
    done = threading.Event()

    def pinger() -> None:  # host -> child channel traffic, also paced
        while not done.wait(PACE):
            for name in names:
                passive[name].send(("ping", pings[name]))
                pings[name] += 1

    for name in names:  # every child subscribed before anyone publishes
        assert active[name].receive(timeout=60) == ("armed", name)
    for name in names:
        passive[name].send(("go",))
    started = time.monotonic()
    ping_thread = threading.Thread(target=pinger)
    ping_thread.start()
    samples: list[tuple[float, int, int]] = []
    while (now := time.monotonic() - started) < SECONDS:
        samples.append((now, *_usage(procs)))
        done.wait(min(1.0, max(0.0, SECONDS - now)))  # the sampling interval, not a synchronisation
    done.set()
    ping_thread.join()
    for name in names:
        passive[name].send(("stop",))
    produced = {}
    for name in names:
        kind, who, counts, errors = active[name].receive(timeout=60)
        assert (kind, who, errors) == ("produced", name, [])
        produced[name] = counts
    samples.append((time.monotonic() - started, *_usage(procs)))

    # Everything sent has arrived: the host's own view ...
    publishes = sum(c["published"] for c in produced.values())
    with cond:
        assert cond.wait_for(
            lambda: got["publishes"] >= publishes and all(got["data"][n] >= produced[n]["data"] for n in names), 60
        ), got
    assert got["publishes"] == publishes and got["data"] == {n: produced[n]["data"] for n in names}
    assert disorder == []
    # ... and every child's: every publish, its predecessor's messages, the host's pings.
    for name in names:
        predecessor = names[names.index(name) - 1]
        passive[name].send(("final", publishes, produced[predecessor]["peer"], pings[name]))
    for name in names:
        kind, who, child_got, errors = active[name].receive(timeout=90)
        assert (kind, who, errors) == ("report", name, [])
        predecessor = names[names.index(name) - 1]
        assert child_got == {"publishes": publishes, "peer": produced[predecessor]["peer"], "pings": pings[name]}
    # Zero lost updates.
    for name in names:
        assert shared_memory.get(f"soak-incr-{name}") == produced[name]["incr"]
    assert shared_memory.get("soak-incr-total") == sum(c["incr"] for c in produced.values())

    # No growth of fds or RSS between the first and the last stretch of the run.
    window = min(10.0, SECONDS / 3)
    first = [s for s in samples if s[0] <= window]
    final = [s for s in samples if s[0] >= samples[-1][0] - window]
    fds_first, fds_last = max(s[1] for s in first), max(s[1] for s in final)
    rss_first, rss_last = max(s[2] for s in first), max(s[2] for s in final)
    ops = sum(c["incr"] * 2 + c["kv"] * 2 + c["data"] + c["peer"] + c["published"] for c in produced.values())
    print(
        f"\nsoak {SECONDS:.0f} s, {CHILDREN} children x 3 threads: {ops} operations from children "
        f"({ops / SECONDS:.0f}/s), {publishes} publishes x {CHILDREN + 1} subscribers, "
        f"{sum(pings.values())} host pings; lost 0; "
        f"fds {fds_first} -> {fds_last}, RSS {rss_first / 2**20:.1f} -> {rss_last / 2**20:.1f} MiB "
        f"(max of the first / last {window:.0f} s, host + children)"
    )
    assert fds_last <= fds_first
    assert rss_last <= rss_first * 1.05 + 8 * 2**20
