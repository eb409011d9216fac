"""A loop's lane: async storage calls made on an event loop, answered on that loop.

Like a thread's lane (``_lanes.py``), the loop gets a socketpair of its own,
handed to the host at first use; the host answers on it inline. The difference
is who reads: the loop itself (``loop.add_reader``), so an answer reaches the
awaiting coroutine with no reader thread and no ``call_soon_threadsafe`` in
between. Only answers to this loop's own requests travel here: a loop that is
busy (or blocked by a callback) delays nothing but its own calls, which could
not run anyway. Channel messages, credit and every other thread's calls stay on
the main link and the thread lanes.

Writes: a request made while none is in flight is written at once (one call
waiting alone goes out without delay); requests made while others are in
flight are queued and written together when the loop iteration ends
(``call_soon``), so a gather of 100 calls costs a few writes, not 100. The host answers every request
of a read in one write. Answers are matched by their ``ref``; one that comes
after its call timed out or was cancelled is dropped, and the lane stays in step.
Ordering: each request carries the fence of the main link, as a thread lane's.

A lane the host refuses (it holds this child's cap of lanes already: see ``_lanes``)
gets the refusal instead of answers; every call waiting on it fails with
``LaneRefused``, and the caller makes it over the main link (the host read none).

Timeouts: one timer per lane, at the earliest deadline of the calls in flight,
not one per call (a ``call_later`` and its cancel were ~16 % of the loop's work
in a gather of 100). Deadlines wait in a heap; an answered call's entry is
dropped when its time comes, or when the heap is rebuilt from the calls still
waiting (it never holds more than twice their number, plus a little).
"""

from __future__ import annotations

import heapq
import select
import socket
import time
from collections.abc import Callable

from ._errors import CommTimeoutError, ProtocolError
from ._lanes import LaneRefused
from ._wire import FrameDecoder, Kind, header

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio

__all__ = ["LoopLane"]

_READ = 1 << 16
# The deadline heap is rebuilt from the calls still waiting when it holds more entries
# than twice their number plus this (answered calls leave theirs behind).
_HEAP_SLACK = 256
_CONTROL = Kind.CONTROL
_REFUSED = "the host is at its cap of lanes for this process"


class LoopLane:
    """One event loop's lane (used on that loop's thread only)."""

    def __init__(
        self, sock: socket.socket, loop: asyncio.AbstractEventLoop, max_size: int, on_close: Callable[[], None]
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self._fd = sock.fileno()
        self._decoder = FrameDecoder(max_size)
        self._waiting: dict[int, asyncio.Future[tuple[Kind, bytes] | None]] = {}
        self._deadlines: list[tuple[float, int]] = []  # a heap of (loop time, ref)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._out = bytearray()  # what the socket has not taken yet
        self._batching = False  # a flush is scheduled for the end of this loop iteration
        self._writer_on = False
        self._seq = 0
        self._on_close: Callable[[], None] | None = on_close
        self.broken: str | None = None
        self.refused = False  # the host refused this lane: what was asked on it goes on the main link
        loop.add_reader(self._fd, self._readable)

    @property
    def usable(self) -> bool:
        return self.broken is None and not self.loop.is_closed()

    def request(
        self, op_name: str, payload: bytes, fence: int, timeout: float | None = None
    ) -> tuple[int, asyncio.Future[tuple[Kind, bytes] | None]]:
        """Queue one request; the future gets (kind, answer payload), or None once
        ``timeout`` s have passed without an answer (no limit: None)."""
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        ref = (fence << 32) | seq
        future: asyncio.Future[tuple[Kind, bytes] | None] = self.loop.create_future()
        idle = not self._waiting
        self._waiting[ref] = future
        if timeout is not None:
            self._expire_at(self.loop.time() + timeout, ref)
        self._out += header(Kind.REQUEST, op_name.encode(), len(payload), ref)
        self._out += payload
        if idle:  # nothing in flight: the host is waiting, write now
            self._flush()
        elif not self._batching:  # calls in flight: this iteration's requests go out together
            self._batching = True
            self.loop.call_soon(self._end_batch)
        return ref, future

    def call(self, op_name: str, payload: bytes, fence: int, timeout: float) -> tuple[Kind, bytes] | None:
        """A sync call made on the loop's own thread (the loop waits meanwhile): on this lane,
        so it is ordered after the async calls this loop made before it."""
        ref, future = self.request(op_name, payload, fence)  # its deadline is kept here, not by the timer
        deadline = time.monotonic() + timeout
        try:
            if self._writer_on:
                self._writer_on = False
                self.loop.remove_writer(self._fd)
            while self._out:
                self._wait(select.POLLOUT, deadline, op_name, timeout)
                self._flush()
                self._check()
            while not future.done():
                self._wait(select.POLLIN, deadline, op_name, timeout)
                self._readable()  # settles what arrives: other calls' answers too
            return future.result()  # ConnectionError if the lane broke
        finally:
            self.forget(ref)

    def _wait(self, event: int, deadline: float, op_name: str, timeout: float) -> None:
        self._check()
        remaining = deadline - time.monotonic()
        poller = select.poll()
        poller.register(self._fd, event)
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise CommTimeoutError(f"the host did not answer {op_name!r} within {timeout} s")

    def _check(self) -> None:
        if self.broken is not None:
            raise LaneRefused(self.broken) if self.refused else ConnectionError(self.broken)

    def forget(self, ref: int) -> None:
        """The call gave up (timeout, cancellation): its answer, if it comes, is dropped."""
        self._waiting.pop(ref, None)

    # -- timeouts: one timer per lane ----------------------------------------------
    def _expire_at(self, when: float, ref: int) -> None:
        if len(self._deadlines) > 2 * len(self._waiting) + _HEAP_SLACK:
            self._rebuild_deadlines()  # a new list: read self._deadlines after it
        heapq.heappush(self._deadlines, (when, ref))
        if self._timer is None or when < self._timer_at:
            self._arm_timer(when)

    def _arm_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._expire)
        self._timer_at = when

    def _rebuild_deadlines(self) -> None:
        waiting = self._waiting
        self._deadlines = kept = [entry for entry in self._deadlines if entry[1] in waiting]
        heapq.heapify(kept)

    def _expire(self) -> None:
        """The earliest deadline passed: settle every call past its own with None."""
        self._timer = None
        now = self.loop.time()
        deadlines, waiting = self._deadlines, self._waiting
        while deadlines and deadlines[0][0] <= now:
            future = waiting.pop(heapq.heappop(deadlines)[1], None)
            if future is not None and not future.done():
                future.set_result(None)
        if deadlines:
            self._arm_timer(deadlines[0][0])

    def _end_batch(self) -> None:
        self._batching = False
        self._flush()

    def _flush(self) -> None:
        if self._writer_on or not self._out or self.broken is not None:
            return
        try:
            sent = self.sock.send(self._out)
            del self._out[:sent]
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._readable()  # the host may have refused this lane and closed it already
            if self.broken is None:
                self._close(f"the host closed this loop's lane ({exc})")
            return
        except BaseException:
            # Interrupted (Ctrl+C lands on the main thread, which may run the loop) between
            # the write and its bookkeeping: the stream is out of step. Drop the lane.
            self._close("a write on this loop's lane was interrupted")
            raise
        if self._out:  # the socket is full: the loop writes the rest when it drains
            self._writer_on = True
            self.loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        self._writer_on = False
        self.loop.remove_writer(self._fd)
        self._flush()

    def _readable(self) -> None:
        try:
            chunk = self.sock.recv(_READ)
            if not chunk:
                self._close("the host closed this loop's lane")
                return
            frames = self._decoder.feed(chunk)
        except BlockingIOError:
            return
        except OSError as exc:
            self._close(f"the host closed this loop's lane ({exc})")
            return
        except ProtocolError as exc:  # garbage: the stream cannot be trusted
            self._close(f"the host sent garbage on this loop's lane ({exc})")
            return
        except BaseException:  # interrupted between the read and the decoding (see _flush)
            self._close("a read on this loop's lane was interrupted")
            raise
        waiting = self._waiting
        for kind, ref, _, payload in frames:
            future = waiting.pop(ref, None)
            if future is not None:
                if not future.done():
                    future.set_result((kind, payload))
            elif kind is _CONTROL:  # (only ever the refusal, on a new lane)
                self.refused = True
                self._close(_REFUSED)
                return

    def _close(self, reason: str) -> None:
        if self.broken is not None:
            return
        self.broken = reason
        self.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines = []
        waiting, self._waiting = self._waiting, {}
        error = LaneRefused if self.refused else ConnectionError
        for future in waiting.values():
            if not future.done():
                future.set_exception(error(reason))

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is None:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self._fd)
            if self._writer_on:
                self.loop.remove_writer(self._fd)
        try:
            self.sock.close()
        except OSError:
            pass
        on_close()
