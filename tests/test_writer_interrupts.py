"""The writer under signals: a handler that raises in the middle of a write never sends a frame twice.

Ctrl+C lands on the main thread, and the main thread writes the link itself (write-through).
A handler that raises may fire right after the kernel took a write: the writer must know
exactly what went out. Here a SIGALRM handler fires every 50 us and raises (once per put,
like one Ctrl+C) when it lands in the writer's code, while the main thread puts numbered
frames on a real socketpair; a reader thread decodes the other end.
"""

from __future__ import annotations

import itertools
import signal
import struct
import threading
from types import FrameType

import pytest

from liteyuki.comm import _link
from liteyuki.comm._link import Writer, new_socketpair
from liteyuki.comm._wire import FrameDecoder, Kind, MessageHead

pytestmark = pytest.mark.timeout(60)


class _Tick(Exception):
    pass


_budget = [0]  # interrupts still allowed in the current put: one, like one Ctrl+C


def _raise_tick(signum: int, frame: FrameType | None) -> None:
    # Only inside the writer's own code: that is what is under test (an interrupt landing
    # in this test's loop would only test the loop).
    if _budget[0] and frame is not None and frame.f_code.co_filename == _link.__file__:
        _budget[0] = 0
        raise _Tick


def test_a_raising_signal_handler_never_duplicates_or_reorders_frames() -> None:
    a, b = new_socketpair()
    writer = Writer("peer")
    writer.attach(a)
    got: list[int] = []
    done = threading.Event()

    def read() -> None:
        decoder = FrameDecoder()
        while True:
            chunk = b.recv(1 << 16)
            if not chunk:
                break
            for frame in decoder.feed(chunk):
                got.append(struct.unpack("!Q", frame.payload)[0])
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    head = MessageHead(b"n")
    returned: list[int] = []  # puts that returned normally: their frames must arrive
    interrupted = 0
    previous = signal.signal(signal.SIGALRM, _raise_tick)
    signal.setitimer(signal.ITIMER_REAL, 50e-6, 50e-6)
    try:
        for i in range(200_000):
            parts = head.parts(struct.pack("!Q", i))
            _budget[0] = 1
            try:
                writer.put(parts)
                returned.append(i)
            except _Tick:
                interrupted += 1
            _budget[0] = 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert writer.flush(10), "the writer never finished what was queued"
    a.shutdown(2)
    assert done.wait(10)
    writer.close()
    a.close()
    b.close()
    assert interrupted > 100, "the timer should have interrupted many puts"
    assert all(x < y for x, y in itertools.pairwise(got)), "a frame arrived twice or out of order"
    missing = set(returned) - set(got)
    assert not missing, f"{len(missing)} frames whose put returned never arrived"


def test_frames_put_on_a_link_that_would_block_arrive_whole_and_in_order() -> None:
    a, b = new_socketpair()
    writer = Writer("peer")
    writer.attach(a)
    head = MessageHead(b"big")
    payloads = [bytes([i % 251]) * (300_000 + i) for i in range(40)]  # more than the socket buffers hold
    got: list[bytes] = []

    def read() -> None:
        decoder = FrameDecoder()
        while len(got) < len(payloads):
            chunk = b.recv(1 << 20)
            if not chunk:
                return
            got.extend(frame.payload for frame in decoder.feed(chunk) if frame.kind is Kind.MESSAGE)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for payload in payloads:
        writer.put(head.parts(payload), wait=10)
    reader.join(30)
    writer.close()
    a.close()
    b.close()
    assert got == payloads


def test_an_urgent_frame_goes_out_at_once_inside_the_coalescing_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # A passive drain's consumption report is urgent: written before its callbacks run, even
    # right after another write, so a callback that kills the process cannot take it along.
    monkeypatch.setattr(_link, "WINDOW", 5.0)  # any put after a write would wait for the window
    monkeypatch.setattr(_link, "MAX_AGE", 5.0)
    ours, theirs = new_socketpair()
    writer = Writer("peer")
    writer.attach(ours)
    try:
        writer.put((b"first",))  # an idle link: written through
        writer.put((b"second",))  # inside the window: queued for the backstop
        assert writer.queued_bytes == len(b"second")
        writer.put((b"third",), urgent=True)  # no window: what is queued goes out now, in order
        assert writer.queued_bytes == 0
        theirs.settimeout(5)
        got = b""
        while len(got) < len(b"firstsecondthird"):
            got += theirs.recv(100)
        assert got == b"firstsecondthird"
    finally:
        writer.close()
        ours.close()
        theirs.close()


def test_a_deferred_frame_is_written_by_kick_and_one_whose_kick_never_came_by_flush() -> None:
    # The host queues a frame under its routing lock (put_deferred) and writes it once the lock
    # is released (kick). An interrupt in between must not strand the frame on an idle link.
    ours, theirs = new_socketpair()
    theirs.settimeout(5)
    writer = Writer("peer")
    writer.attach(ours)

    def read(n: int) -> bytes:
        got = b""
        while len(got) < n:
            got += theirs.recv(100)
        return got

    try:
        assert writer.put_deferred((b"one",)) is True  # an idle link: the caller writes it
        assert writer.queued_bytes == 3, "put_deferred must never write"
        writer.kick()
        assert read(3) == b"one"
        writer.kick()  # nothing queued: nothing happens
        writer._last = 0.0  # the link has been idle for long (no coalescing window)
        assert writer.put_deferred((b"two",)) is True
        # ... and the kick never comes: flush writes it (the backstop takes the link)
        assert writer.flush(5)
        assert read(3) == b"two"
        assert writer.queued_bytes == 0
    finally:
        writer.close()
        ours.close()
        theirs.close()
