"""Per-thread lanes for sync storage calls (issue 12): fences, fork, Ctrl+C, thread exit, restarts."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from liteyuki.comm import get_channel, lowlevel
from liteyuki.comm.storage import shared_memory

from . import delivery_targets as dt
from .conftest import unique


def _ask(name: str, *cmd: object, timeout: float = 30) -> object:
    get_channel(f"{name}-passive").send(cmd)
    return get_channel(f"{name}-active").receive(timeout=timeout)


def _lane_threads(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == f"liteyuki-lane-{name}")


@pytest.mark.timeout(60)
def test_a_sync_call_after_an_async_set_sees_it(host):
    name = unique()
    host({name: dt.lane_agent})
    assert _ask(name, "fence", unique("k"), 300) == ("fence", 0)


@pytest.mark.timeout(60)
def test_a_forked_child_gets_its_own_lane(host):
    name, key = unique(), unique("k")
    host({name: dt.lane_agent})
    shared_memory.set(key, "value")
    assert _ask(name, "fork_and_get", key) == ("value", "value", True)


@pytest.mark.timeout(60)
def test_malformed_requests_on_a_lane_are_answered_with_errors_and_the_lane_goes_on(host):
    # Get and Set have a path of their own in the host (the hot one); what it cannot take goes the
    # general way, which names what was wrong, and the lane stays in step.
    name, key = unique(), unique("k")
    host({name: dt.lane_agent}, max_message_size=100_000)
    shared_memory.set(key, "value")
    assert _ask(name, "raw_requests", key, 100_000) == [
        ("RESULT", "'value'"),
        ("FAILURE", "TypeError"),
        ("FAILURE", "TypeError"),
        ("RESULT", "'value'"),  # a list of one field unpacks as the tuple does
        ("FAILURE", "TypeError"),
        ("FAILURE", "SerializationError"),
        ("FAILURE", "RemoteError"),
        ("RESULT", "None"),
        ("RESULT", "'set'"),
        ("RESULT", "None"),
        ("FAILURE", "ValueError"),
        ("FAILURE", "TypeError"),
        ("FAILURE", "MessageTooLargeError"),
        ("FAILURE", "MessageTooLargeError"),
        ("FAILURE", "MessageTooLargeError"),
        ("after", "'two fields'"),
    ]


@pytest.mark.timeout(60)
def test_ctrl_c_in_the_middle_of_calls_drops_the_lane_and_the_next_call_works(host):
    name, key = unique(), unique("k")
    host({name: (dt.interrupted_calls, (key, 40))}, setup=lambda bot: shared_memory.set(key, 42))
    interrupts, after = get_channel(f"{name}-active").receive(timeout=30)
    assert interrupts > 0 and after == 42


@pytest.mark.timeout(60)
def test_a_thread_that_ends_releases_its_lane(host):
    name, key = unique(), unique("k")
    host({name: dt.lane_agent})
    shared_memory.set(key, 7)
    results, lanes_left = _ask(name, "threads", key, 60)  # more threads than the cap of 32
    assert results == [7] * 60
    assert lanes_left <= 2  # the worker thread of to_thread may still hold one
    deadline = time.monotonic() + 10
    while _lane_threads(name) > 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the host's lane threads with a deadline
    assert _lane_threads(name) <= 2


@pytest.mark.timeout(60)
def test_lanes_die_with_their_child(host):
    name, key = unique(), unique("k")
    restarted = threading.Event()
    bot = host({name: dt.lane_agent}, restart_backoff=0.1)
    bot.on_after_restart(lambda n: restarted.set() if n == name else None)
    shared_memory.set(key, 1)
    assert _ask(name, "threads", key, 3)[0] == [1, 1, 1]
    os.kill(bot.process_manager.pid(name), signal.SIGKILL)
    assert restarted.wait(20)
    deadline = time.monotonic() + 10
    while _lane_threads(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _lane_threads(name) == 0
    assert _ask(name, "threads", key, 2)[0] == [1, 1]


@pytest.mark.timeout(90)
def test_threads_hammering_sync_calls_starve_neither_the_channels_nor_each_other(host):
    # 40 threads: 32 on lanes, the rest over the main link, with channel messages both ways
    # on that link. Every echo must come back, and every thread must have got answers.
    name, key = unique(), unique("k")
    host({name: (dt.lane_hammer, (name, key, 40))}, setup=lambda bot: shared_memory.set(key, 1))
    to_child, from_child = get_channel(f"{name}-passive"), get_channel(f"{name}-active")
    for i in range(200):
        to_child.send(("echo", i))
        assert from_child.receive(timeout=20) == ("echo", i)
    to_child.send("stop")
    label, counts = from_child.receive(timeout=30)
    assert label == "counts" and len(counts) == 40
    print(f"\nper-thread sync calls during 200 echoes: min {min(counts)}, max {max(counts)}")
    assert min(counts) > 0, counts


def _loop_agent(host: Any) -> tuple[str, Any, Any]:
    name = unique()
    host({name: (dt.loop_lane_agent, (name,))})
    to_child, from_child = get_channel(f"{name}-passive"), get_channel(f"{name}-active")
    assert from_child.receive(timeout=30) == "ready"
    return name, to_child, from_child


@pytest.mark.timeout(60)
def test_gathered_async_calls_on_a_loop_are_all_answered_on_its_one_lane(host):
    _, to_child, from_child = _loop_agent(host)
    key = unique("k")
    shared_memory.set(key, "v")
    to_child.send(("gather", key, 300))
    label, values, stored, new_lanes = from_child.receive(timeout=30)
    assert label == "gather" and values == ["v"] * 300 and stored == list(range(300))
    assert new_lanes <= 1  # the loop's lane (made by the first call), nothing per call


@pytest.mark.timeout(60)
def test_a_cancelled_async_call_leaves_the_loop_lane_in_step(host):
    _, to_child, from_child = _loop_agent(host)
    key = unique("k")
    shared_memory.set(key, 7)
    to_child.send(("cancel", key))
    assert from_child.receive(timeout=30) == ("cancel", True, 7, 7)


@pytest.mark.timeout(60)
def test_async_calls_on_a_loop_lane_time_out_each_at_its_own_deadline_and_the_lane_stays_in_step(host):
    # The lane keeps one timer at the earliest deadline: a later call with a shorter timeout
    # re-arms it earlier, and each call still fails at its own time. The host answers nothing
    # while this test holds its store's lock; the late answers are dropped afterwards.
    _, to_child, from_child = _loop_agent(host)
    key = unique("k")
    shared_memory.set(key, "late")
    # 600 answered calls first: their deadlines are still in the lane's heap, so the next
    # call rebuilds it (the path where a lost entry would leave a call with no timeout).
    to_child.send(("gather", key, 300))
    assert from_child.receive(timeout=30)[0] == "gather"
    store = lowlevel.current().store
    with store._lock:
        to_child.send(("timeouts", key, [1.2, 0.3, 0.6]))
        label, results = from_child.receive(timeout=30)
    assert label == "timeouts"
    assert results == [("timeout", 1.2, True), ("timeout", 0.3, True), ("timeout", 0.6, True)], results
    shared_memory.set(key, "in step")
    to_child.send(("get", key))
    assert from_child.receive(timeout=30) == ("get", "in step")


@pytest.mark.timeout(60)
def test_a_blocked_loop_holds_up_neither_other_threads_calls_nor_channel_messages(host):
    # Answers to the loop's calls travel on its own lane: while a callback blocks the loop,
    # another thread's storage calls and channel sends go through (no head-of-line wait).
    _, to_child, from_child = _loop_agent(host)
    key = unique("k")
    shared_memory.set(key, 0)
    to_child.send(("block", key))
    assert from_child.receive(timeout=30) == ("other", "from another thread")
    assert from_child.receive(timeout=30) == ("blocked", True)


@pytest.mark.timeout(60)
def test_a_fresh_loop_per_call_does_not_pile_up_lanes(host):
    # asyncio.run() in a thread: every call on a new loop, each closed after it. A closed
    # loop's lane is dropped when the next is made: no more than the cap, ever, and the
    # calls keep working past it.
    _, to_child, from_child = _loop_agent(host)
    key = unique("k")
    shared_memory.set(key, "v")
    to_child.send(("runs", key, 80))  # more than the cap of 32 lanes
    label, values, lanes = from_child.receive(timeout=45)
    assert label == "runs" and values == ["v"] * 80
    assert lanes <= 3, lanes  # the last loop's lane, the worker thread's, the dispatch loop's


@pytest.mark.timeout(60)
def test_async_calls_on_a_uvloop_loop_use_its_lane(host):
    name, key = unique(), unique("k")
    host({name: (dt.uvloop_calls, (name, key))}, setup=lambda bot: shared_memory.set(key, "v"))
    assert get_channel(f"{name}-active").receive(timeout=30) == ("v", True, "set on uvloop")


@pytest.mark.timeout(90)
def test_threads_over_the_cap_taking_lanes_freed_by_ended_threads_never_fail(host):
    # 48 threads, ending one by one: those over the cap of 32 try for a lane at every call,
    # so a lane freed by a thread that ended is handed over again at once, before the host's
    # lane thread has seen the old one close. The host used to close that new lane unread:
    # the call on it failed with BrokenPeerError while the host was healthy. Every call must
    # succeed, once.
    name, key = unique(), unique("k")
    threads, calls = 48, 100
    host({name: (dt.lanes_over_the_cap, (name, key, threads, calls))})
    ok, failed, errors = get_channel(f"{name}-active").receive(timeout=80)
    assert (failed, errors) == (0, [])
    assert ok == threads * calls + threads * (threads - 1) // 2
    assert shared_memory.get(key) == ok


@pytest.mark.timeout(60)
def test_calls_on_lanes_the_host_refuses_go_over_the_main_link(host, monkeypatch):
    # The host's count of a child's lanes can be ahead of the child's (see the test above).
    # Here the host (this process; the child is spawned with the real cap) refuses every
    # lane: each call, sync or gathered on a loop, must be made once, over the main link.
    monkeypatch.setattr("liteyuki.comm._lanes.MAX_LANES", 0)
    name, key = unique(), unique("k")
    host({name: (dt.calls_on_refused_lanes, (name, key))})
    report = get_channel(f"{name}-active").receive(timeout=30)
    assert not isinstance(report, str), report
    synced, got, stored, lanes = report
    assert synced == [1, 2, 3, 4, 5]
    assert got == [25] * 5 and stored == 25
    assert lanes == 0
    assert _lane_threads(name) == 0
