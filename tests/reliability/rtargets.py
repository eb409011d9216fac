"""Spawn targets for the reliability tests: each runs in a real child process of the host."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import sys
import threading
from typing import Any

from liteyuki.comm import (
    BrokenPeerError,
    Channel,
    ChannelClosedError,
    ChannelFullError,
    CommTimeoutError,
    active_channel,
    get_channel,
    lowlevel,
    passive_channel,
)
from liteyuki.comm.storage import shared_memory
from tests import targets


def stream_sink(total: int, every: int) -> None:
    """Counts a stream of ints on the passive channel; reports on the active one.

    ("first", pid, seq) for the first message this incarnation gets, ("progress",
    pid, seq) every ``every`` messages, ("done", pid, first, count, in_order) at
    ``total - 1``. Each incarnation starts from scratch.
    """
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


# -- host death ------------------------------------------------------------------------
def say(*words: object) -> None:
    """One line on stdout (the host script's, which the test reads), in one write: a line
    from another process or thread can never land in the middle of it."""
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def idle() -> None:
    say("STATE idle", os.getpid())
    threading.Event().wait()


def busy() -> None:
    """Burns CPU in Python code on its main thread."""
    say("STATE busy", os.getpid())
    n = 0
    while True:
        n = (n * 31 + 7) % 1_000_003


def backpressured() -> None:
    """Sends to a host end that nobody reads: its own outbox fills and send() waits, again and again."""
    said = False
    while True:
        try:
            active_channel.send(b"x" * 1000)
        except ChannelFullError:
            if not said:
                say("STATE backpressured", os.getpid())
                said = True


def deaf() -> None:
    """Never reads its passive channel: once its 100-message buffer is full, the reader thread is
    stuck delivering, so this child cannot see the end of the stream when the host dies."""
    Channel(passive_channel.name, buffer_size=100)
    say("STATE deaf", os.getpid())
    threading.Event().wait()


def stubborn() -> None:
    """Swallows KeyboardInterrupt: only the stop deadline (os._exit) gets it out."""
    say("STATE stubborn", os.getpid())
    while True:
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            continue


# -- Ctrl+C under load -----------------------------------------------------------------------
def traffic() -> None:
    """Three threads as busy as they can be: channel sends, store calls, publishes; plus
    whatever the host pumps into the passive channel and every publish on the topic."""
    passive_channel.on_receive()(lambda message: None)
    shared_memory.on_subscriber_receive("rel-topic")(lambda data: None)
    me = os.getpid()

    def forever(step: Any) -> None:
        while True:
            try:
                step()
            except (ChannelFullError, CommTimeoutError):
                continue  # overload: back-pressure and slow answers are expected here
            except (BrokenPeerError, ChannelClosedError):
                return  # the host is going away

    steps = [
        lambda: active_channel.send(b"y" * 200, timeout=1),
        lambda: (shared_memory.incr("rel-traffic"), shared_memory.set(f"rel-{me}", me)),
        lambda: shared_memory.publish("rel-topic", me),
    ]
    for step in steps:
        threading.Thread(target=forever, args=(step,), daemon=True).start()
    say("STATE traffic", me)
    threading.Event().wait()


# -- bad input -------------------------------------------------------------------------------
def _frame(kind: int, name: bytes, payload: bytes, ref: int = 0) -> bytes:
    body = struct.pack("!BQH", kind, ref, len(name)) + name + payload
    return struct.pack("!I", len(body)) + body


GARBAGE: dict[str, bytes] = {
    # Random bytes (seeded: the test knows what the host's decoder makes of them).
    "random": random.Random(20240501).randbytes(4096),
    "length": b"\xff\xff\xff\xff" + b"\0" * 64,  # an absurd length prefix
    "short": b"\0\0\0\x02" + b"\0" * 64,  # a length shorter than any frame header
    "kind": _frame(99, b"x", b"payload"),  # an unknown frame kind
    "overrun": _frame(1, b"", b"abc")[:4] + struct.pack("!BQH", 1, 0, 500) + b"abc",  # name longer than the frame
    "utf8": _frame(1, b"\xff\xfe", b"payload"),  # a name that is not UTF-8
    "truncated": _frame(1, b"some-channel", b"x" * 100)[:40],  # then the child exits: EOF inside a frame
    # Well-formed frames with nonsense in them: tolerated, the child is not killed.
    "result": _frame(3, b"", b"not a pickle", ref=12345),  # an answer nobody asked for
    "request": _frame(2, b"get", b"not a pickle", ref=1),  # a request whose arguments do not unpickle
}


def garbage(kind: str, flag: str) -> None:
    """The first incarnation writes GARBAGE[kind] straight onto its socket; later ones are agents."""
    if shared_memory.compare_and_set(flag, None, os.getpid()):
        runtime = lowlevel.current()
        assert isinstance(runtime, lowlevel.ChildRuntime) and runtime._sock is not None
        runtime.flush(5)  # nothing of ours half-written: the garbage starts on a frame boundary
        runtime._sock.sendall(GARBAGE[kind])
        if kind == "truncated":
            os._exit(3)
        if kind not in ("result", "request"):
            threading.Event().wait()  # the host kills us
    ragent()


# An agent with extra commands for bad-input tests; replies on the active channel.
def _send_value(name: str, value: Any) -> None:
    Channel(name).send(value)


def _closed_send(name: str) -> None:
    chan = Channel(name)
    chan.close()
    chan.send("after close")


def _link_in_grandchild() -> bool:
    """Does a program this child runs (like os.system or exec would) hold the host link?"""
    sock = lowlevel.current()._sock
    assert sock is not None
    fd, inode = sock.fileno(), os.fstat(sock.fileno()).st_ino
    code = f"import os\ntry:\n    print(os.fstat({fd}).st_ino == {inode})\nexcept OSError:\n    print(False)"
    run = subprocess.run([sys.executable, "-c", code], close_fds=False, capture_output=True, text=True, timeout=30)
    return run.stdout.strip() == "True"


EXTRA: dict[str, Any] = {
    "send_lock": lambda name: _send_value(name, threading.Lock()),
    "send_bytes": lambda name, size: _send_value(name, b"x" * size),
    "set_bytes": lambda key, size: shared_memory.set(key, b"x" * size),
    "typed_send": lambda name, value: Channel[int](name).send(value),
    "closed_send": _closed_send,
    "get_all": lambda: shared_memory.get_all(),
    "incr": lambda key: shared_memory.incr(key),
    "send_only_in_child": lambda name, after: [_send_value(name, OnlyInChild()), _send_value(name, after)],  # noqa: F821
    "set_only_in_child": lambda key: shared_memory.set(key, OnlyInChild()),  # noqa: F821
    "publish_only_in_child": lambda topic, after: [
        shared_memory.publish(topic, OnlyInChild()),  # noqa: F821
        shared_memory.publish(topic, after),
    ],
    "publish_long_topic": lambda length: shared_memory.publish("t" * length, 1),
    "link_in_grandchild": _link_in_grandchild,
}


def _run(command: tuple[Any, ...]) -> None:
    op, *args = command
    active_channel.send(targets._call(EXTRA.get(op) or targets.COMMANDS[op], *args))


def ragent() -> None:
    # A class that exists only in this child: it pickles here (by reference to this module),
    # but nobody else can unpickle it.
    globals()["OnlyInChild"] = type("OnlyInChild", (), {"__module__": __name__})
    passive_channel.on_receive()(_run)
    threading.Event().wait()


# -- large frames from many threads ------------------------------------------------------------
def blob(tid: int, i: int, size: int) -> bytes:
    return random.Random(tid * 1_000_003 + i).randbytes(size)


def big_exchange(threads: int, count: int, size: int) -> None:
    """``threads`` threads each send ``count`` messages of ``size`` random bytes to the host and
    store each in shared memory, while checking the same kind of messages from the host."""
    pid = os.getpid()
    expected = threads * count
    last: dict[int, int] = {}
    bad: list[object] = []
    got = [0]

    @passive_channel.on_receive()
    def check(message: tuple[int, int, bytes, bytes]) -> None:
        tid, i, digest, data = message
        if len(data) != size or hashlib.sha256(data).digest() != digest:
            bad.append(("content", tid, i))
        if last.get(tid, -1) != i - 1:
            bad.append(("order", tid, i))
        last[tid] = i
        got[0] += 1
        if got[0] == expected:
            active_channel.send(("verified", got[0], bad))

    def send(tid: int) -> None:
        for i in range(count):
            data = blob(tid, i, size)
            # Stored first: the set is acknowledged, so once the host has the message it has the
            # value. (The other way round, the host could read the key between the two: once in
            # six whole-suite runs, on Python 3.13, it saw the value before the last.)
            shared_memory.set(f"big-{pid}-{tid}", (i, data))
            active_channel.send((tid, i, hashlib.sha256(data).digest(), data))

    workers = [threading.Thread(target=send, args=(tid,)) for tid in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    threading.Event().wait()


# -- soak ------------------------------------------------------------------------------------
SOAK_TOPIC = "soak-topic"
SOAK_DATA = "soak-data"


def soak_worker(peer: str, pace: float) -> None:
    """Three threads mixing incr, set/get, channel sends (to the host and to ``peer``) and
    publishes, from ("go",) to ("stop",) on the passive channel; one pause of ``pace`` s per
    round keeps the load modest. ("armed", me) on the active channel says it is subscribed;
    ("produced", me, counts, errors) that it stopped; on ("final", publishes, from_peer,
    pings) it sends a report once all of that has arrived."""
    me = lowlevel.current().process_name
    go, stop = threading.Event(), threading.Event()
    cond = threading.Condition()
    errors: list[str] = []
    counts = {"incr": 0, "kv": 0, "data": 0, "peer": 0, "published": 0}
    got = {"publishes": 0, "peer": 0, "pings": 0}
    last: dict[str, int] = {}

    def in_order(stream: str, seq: int) -> None:
        if last.get(stream, -1) != seq - 1:
            errors.append(f"{stream}: {seq} after {last.get(stream)}")
        last[stream] = seq

    @shared_memory.on_subscriber_receive(SOAK_TOPIC)
    def on_publish(data: tuple[str, int]) -> None:
        with cond:
            in_order(f"publish from {data[0]}", data[1])
            got["publishes"] += 1
            cond.notify_all()

    @passive_channel.on_receive()
    def on_passive(message: tuple[Any, ...]) -> None:
        kind = message[0]
        with cond:
            if kind in ("peer", "ping"):
                in_order(kind, message[-1])
                got["peer" if kind == "peer" else "pings"] += 1
                cond.notify_all()
            elif kind == "go":
                go.set()
            elif kind == "stop":
                stop.set()
            elif kind == "final":
                threading.Thread(target=report, args=message[1:]).start()  # the loop must go on counting

    def report(publishes: int, from_peer: int, pings: int) -> None:
        want = {"publishes": publishes, "peer": from_peer, "pings": pings}
        with cond:
            if not cond.wait_for(lambda: all(got[k] >= want[k] for k in want), 60):
                errors.append(f"still waiting: got {got}, want {want}")
            active_channel.send(("report", me, dict(got), list(errors)))

    def loop(step: Any) -> None:
        go.wait()
        while not stop.is_set():
            try:
                step()
            except Exception as exc:  # counted as a failure of the soak, never hidden
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            stop.wait(pace)

    def incr() -> None:
        shared_memory.incr(f"soak-incr-{me}")
        shared_memory.incr("soak-incr-total")
        counts["incr"] += 1

    def kv() -> None:
        i = counts["kv"]
        key = f"soak-kv-{me}-{i % 16}"
        shared_memory.set(key, (me, i))
        if shared_memory.get(key) != (me, i):
            errors.append(f"{key}: read back {shared_memory.get(key)!r}, wrote {(me, i)!r}")
        counts["kv"] += 1

    data_channel, peer_channel = get_channel(SOAK_DATA), get_channel(f"{peer}-passive")

    def traffic() -> None:
        seq = counts["data"]
        data_channel.send((me, seq))
        counts["data"] += 1
        peer_channel.send(("peer", me, seq))
        counts["peer"] += 1
        shared_memory.publish(SOAK_TOPIC, (me, seq))
        counts["published"] += 1

    workers = [threading.Thread(target=loop, args=(step,)) for step in (incr, kv, traffic)]
    for w in workers:
        w.start()
    # After our SUBSCRIBE frame: when the host reads this, it knows we subscribe.
    active_channel.send(("armed", me))
    stop.wait()
    for w in workers:
        w.join()
    active_channel.send(("produced", me, dict(counts), list(errors)))
    threading.Event().wait()
