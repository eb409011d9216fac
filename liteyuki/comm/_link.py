"""One duplex connection: a write-through writer and a reader thread.

Writing: the thread that sends writes the frame itself when the link is idle
(no hop to another thread), without ever blocking (``MSG_DONTWAIT``). When the
link is busy, frames are appended to a queue that whoever is writing drains
in large scatter-gather batches (coalescing); what the socket cannot take now
goes to a backstop thread that finishes the write. Large payloads are handed
to ``sendmsg`` as they are, never copied into a joined batch.

Nothing here waits on a consumer: what bounds the queue is the credit the
receiving side granted (see ``_credit``), plus a byte high-water mark at which
ordinary threads (never the host's routing threads, never an event loop) wait.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable

from .._threads import QuietThread
from ._errors import BrokenPeerError, ChannelFullError, ProtocolError
from ._runtime_base import on_event_loop
from ._wire import DEFAULT_MAX_MESSAGE_SIZE, FrameDecoder, Run

__all__ = ["Reader", "Writer", "new_socketpair"]

_CHUNK = 1 << 20
_JOIN_BELOW = 64 * 1024  # batches smaller than this are joined into one buffer
_BIG_PART = 16 * 1024  # in a larger batch, parts this large go as their own iovec (never copied)
_IOV_MAX = 512
HIGH_WATER = 4 * 1024 * 1024
_BATCH = 1 << 20  # the backstop writes at most this much per system call round
# A sender that finds the link written less than WINDOW ago leaves its frame queued;
# frames wait until the backstop's timer (WINDOW after the first of them) or a sender
# finding the oldest MAX_AGE old or 64 KiB queued writes them in one go: a burst of small
# messages costs a few large writes, not one system call each, while a message sent on an
# idle link goes out at once. (The window runs from the end of a write: a write that
# costs as much as the window, which a wake-up of the reading process can, must not make
# every message a write of its own.) A sender that never lets go of the GIL leaves the
# backstop no turn, so under it MAX_AGE sets the batch: 400 us rather than 200 halved the
# writes and the GIL hand-offs around them, and measured better on every stream row and on
# latency too (rows 3, 3c, 3d, 4, 4b, 5, 6 of `python -m benchmarks`, two A/B pairs; 800 us
# measured no better than 400).
WINDOW = 20e-6
MAX_AGE = 400e-6
_BACKSTOP = "backstop"  # the backstop thread owns the socket
_clock = time.perf_counter  # bound once: read on every put


class Writer:
    """Frames waiting to be written to one peer; written through by the sender when idle."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # flush() and senders waiting for room
        # The backstop thread waits on its own condition: the notify that ends every write
        # (for flush and room waiters) must not wake it for nothing, a GIL and futex round
        # trip per write. It is woken when it is armed, handed the link, attached or closed.
        self._wake = threading.Condition(self._lock)
        self._queue: list[bytes | memoryview] = []
        self._queued = 0
        self._writing = 0  # bytes the backstop took and is writing
        self._sock: socket.socket | None = None
        # Who may write the socket now: None (nobody: the next put may), the token of the put
        # that is writing, or _BACKSTOP. One owner at a time keeps frames whole and in order.
        self._owner: object | None = None
        self._backstop_wanted = False
        self._armed = False  # frames wait for the coalescing window to close
        self._inflight: list[bytes | memoryview] | None = None  # the batch a put is writing (see _drain)
        self._counts: collections.deque[int] = collections.deque()
        self._last = 0.0  # when the last write ended
        self._since = 0.0  # when the oldest queued frame was queued
        self._closed = False
        self._thread: threading.Thread | None = None
        # Called (no lock held) when the backstop has written everything queued: a hub
        # that held messages back from a backed-up peer hands them over again.
        self.on_drained: Callable[[], None] | None = None
        self.frames = 0  # frames put so far (a lane's request fences on it)
        # Bytes ever put, and ever handed to the socket: a frame put when the first reached X
        # is on the socket once the second reaches X (wait_sent).
        self._put_total = 0
        self._sent_total = 0
        self.stalled = False  # a wait for room timed out: the peer is not reading (see wait_for_room)

    # -- producers -------------------------------------------------------
    def put(
        self,
        parts: tuple[bytes, ...] | list[bytes],
        size: int = -1,
        *,
        wait: float | None = 0.0,
        what: str = "",
        urgent: bool = False,
    ) -> int:
        """Queue one frame (its parts in order) and write it now if the link is idle.

        ``size`` is the frame's length in bytes, when the caller knows it (else it is
        summed here). Never blocks on the socket. With ``wait`` > 0, a caller finding
        more than the high-water mark queued waits up to ``wait`` s for room (``None``:
        as long as it takes; never on an event loop's thread), then raises
        ``ChannelFullError`` with nothing queued. ``urgent``: no coalescing window; if
        nobody is writing, what is queued goes out now. Returns the frame's mark for
        ``wait_sent``.
        """
        if size < 0:
            size = sum(map(len, parts))
        token = None  # made only when this put takes the link: most puts just queue
        try:
            with self._lock:
                if self._closed:
                    raise BrokenPeerError(f"connection to {self.peer!r} is closed")
                if wait != 0.0 and self._queued + self._writing > HIGH_WATER and not on_event_loop():
                    self._wait_for_room(wait, what)
                write_now = self._enqueue(parts, size, urgent)
                mark = self._put_total
                if not write_now:
                    return mark
                token = self._owner = object()
            self._drain(token)
        except BaseException:
            self._abandon(token)
            raise
        return mark

    def put_deferred(self, parts: tuple[bytes, ...] | list[bytes], size: int = -1) -> bool:
        """``put`` for a caller that holds a lock of its own: queue the frame, never write it.

        True when the link is idle and the frame should go now: the caller then calls
        ``kick()`` once its lock is released. (A write is a system call. Made under the
        host's routing lock, it let the reader thread take that lock and then wait for the
        GIL the sender held: a convoy that, on a loaded machine, cost the host's sending
        thread a quarter of its messages per second.) Should the ``kick`` never come (an interrupt in
        between), the next ``put`` or ``flush`` writes the frame.
        """
        if size < 0:
            size = sum(map(len, parts))
        with self._lock:
            if self._closed:
                raise BrokenPeerError(f"connection to {self.peer!r} is closed")
            return self._enqueue(parts, size, False)

    def _enqueue(self, parts: tuple[bytes, ...] | list[bytes], size: int, urgent: bool) -> bool:
        """Queue one frame (lock held); True if the caller should take the link and write now."""
        waiting = bool(self._queue)
        self._queue += parts
        self._queued += size
        self.frames += 1
        self._put_total += size
        if self._owner is not None or self._sock is None:
            return False
        now = _clock()
        if not waiting:
            self._since = now
        if (
            not urgent
            and (now - self._since < MAX_AGE if waiting else now - self._last < WINDOW)
            and self._queued < _JOIN_BELOW
        ):
            if not self._armed:  # checked here too: most puts find it armed, and a call costs
                self._arm()
            return False
        return True

    def kick(self) -> None:
        """Write what is queued now, unless someone is writing (see ``put_deferred``)."""
        token = None
        try:
            with self._lock:
                if self._owner is not None or not self._queue or self._sock is None:  # (close() clears _sock)
                    return
                token = self._owner = object()
            self._drain(token)
        except BaseException:
            self._abandon(token)
            raise

    def wait_sent(self, mark: int, timeout: float) -> bool:
        """Wait until the frame ``put`` returned ``mark`` for is on the socket (False on timeout,
        or when the link is gone): only what was queued before it is written first."""
        with self._lock:
            return (
                self._cond.wait_for(lambda: self._sent_total >= mark or self._closed or self._sock is None, timeout)
                and self._sent_total >= mark
            )

    def _arm(self) -> None:
        """Have the backstop write what is queued when the window closes (lock held)."""
        if not self._armed:
            self._ensure_backstop()
            self._wake.notify()
            self._armed = True  # last: an interrupt before it leaves nothing half-armed

    def _abandon(self, token: object | None) -> None:
        """An exception (Ctrl+C on the main thread) cut a put short: no frame may be stranded.

        If the link is still ours, what our write had not sent goes back to the queue
        and the backstop takes the link over; anything queued gets written.
        """
        with self._lock:
            if token is not None and self._owner is token:
                self._put_back_inflight()
                self._hand_to_backstop()
            elif self._queue and self._owner is None:
                self._arm()

    def _hand_to_backstop(self) -> None:
        """The backstop owns the link from now on and writes what is queued (lock held)."""
        self._owner = _BACKSTOP
        self._ensure_backstop()
        self._wake.notify()
        self._backstop_wanted = True  # last (see _arm)

    def wait_for_room(self, stall_after: float, limit: float) -> None:
        """Hold a sender back while more than the high-water mark waits and the peer reads.

        Flow control for large messages: a sender that runs megabytes ahead of the
        socket only makes memory churn (page faults) and stalls the pipeline when the
        pile is handed over. Waits up to ``limit`` s in all (the sender's own bound);
        a peer that reads nothing for ``stall_after`` s marks the link stalled: senders
        then queue without waiting (credit and the outbox limit bound them, as before)
        until the backstop writes again.

        "Reads nothing" is judged by progress (a write finished), not by the whole wait:
        a child whose callbacks hold the GIL in C code leaves its reader thread without
        the GIL for tens of milliseconds at a time (98 ms measured at load 0.7), and it
        must be waited for, not taken for a stuck one and run megabytes ahead of.
        """
        deadline = time.monotonic() + limit
        with self._lock:
            while not self.stalled and not self._room():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return  # the sender's bound: it goes on and queues (not stalled: it reads)
                sent = self._sent_total
                wait = min(stall_after, remaining)
                if not self._cond.wait_for(lambda sent=sent: self._room() or self._sent_total != sent, wait):
                    self.stalled = wait == stall_after
                    return

    def _room(self) -> bool:
        """Whether a sender waiting for room may go on (lock held)."""
        return self._closed or self._queued + self._writing <= HIGH_WATER

    def _wait_for_room(self, wait: float | None, what: str) -> None:
        """Wait (lock held) until the queue is below the high-water mark, or raise."""
        deadline = None if wait is None else time.monotonic() + wait
        while not self._room():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ChannelFullError(
                    f"{what or 'outgoing data'} to {self.peer!r} is held back: "
                    f"{self._queued + self._writing} bytes are waiting to be written"
                )
            self._cond.wait(remaining)
        if self._closed:
            raise BrokenPeerError(f"connection to {self.peer!r} is closed")

    # A put that writes may be interrupted at any point (Ctrl+C lands on the main thread,
    # and the main thread writes too): the batch being written is kept in _inflight with the
    # byte counts the kernel took (recorded by C code, see _send), and every change to what
    # is queued is a run of plain stores, with no call in between where an interrupt could
    # land. Whoever finishes (the put, or _abandon for it) puts exactly the unwritten rest
    # back: nothing twice, nothing lost, the stream stays whole.
    def _drain(self, token: object) -> None:
        """Write what is queued once, without blocking (the link is ours: ``_owner is token``)."""
        counts: collections.deque[int] = collections.deque()
        with self._lock:
            sock = self._sock
            if sock is None or not self._queue:
                self._owner = None
                self._cond.notify_all()
                return
            bufs = _batch(self._queue, self._queued)
            self._inflight = bufs
            self._counts = counts
            self._queue = []
            self._queued = 0
        try:
            _send(sock, bufs, socket.MSG_DONTWAIT, counts)
        except OSError:  # the peer is gone; the reader reports it
            with self._lock:
                self._inflight = None
                self._owner = None
                self._cond.notify_all()
            return
        with self._lock:
            self._last = time.perf_counter()  # the window runs from the end of a write
            if self._put_back_inflight():
                self._hand_to_backstop()  # the socket is full: the backstop waits for room
                return
            self._owner = None
            if self._queue:
                self._arm()  # frames put while we wrote: the next window's write
            self._cond.notify_all()

    def _put_back_inflight(self) -> bool:
        """Put what the interrupted or partial write did not send back in front (lock held);
        True if there was such a rest."""
        bufs = self._inflight
        if bufs is None:
            return False
        written = sum(self._counts)
        rest = _unwritten(bufs, written)
        size = sum(map(len, rest))
        self._sent_total += written
        self._inflight = None
        self._queue[:0] = rest
        self._queued += size
        return bool(rest)

    def _ensure_backstop(self) -> None:
        if self._thread is None:
            thread = QuietThread(target=self._backstop, name=f"liteyuki-writer-{self.peer}", daemon=True)
            thread.start()
            self._thread = thread  # after start: an interrupt in between never leaves a thread unstarted

    def _backstop(self) -> None:
        while True:
            with self._lock:
                while not self._backstop_wanted and not self._armed and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                if not self._backstop_wanted:  # armed: write when the window since the last write closes
                    delay = self._since + WINDOW - time.perf_counter()
                    if delay > 0:
                        self._lock.release()
                        try:
                            time.sleep(delay)  # a timer, not synchronisation
                        finally:
                            self._lock.acquire()
                    self._armed = False
                    if self._owner is not None or not self._queue or self._backstop_wanted:
                        continue  # a sender wrote it meanwhile (or handed us a rest)
                    self._owner = _BACKSTOP
                self._backstop_wanted = False
                sock = self._sock
                if sock is None:
                    self._owner = None
                    self._cond.notify_all()
                    continue
            drained = None
            try:
                while True:
                    with self._lock:
                        if not self._queue or self._sock is not sock:
                            self._owner = None
                            self._cond.notify_all()
                            drained = self.on_drained if not self._queue else None
                            break
                        queue, size = self._queue, self._queued
                        if size > _BATCH:  # a slice, so senders waiting for room wake while we go on
                            n, size = _prefix(queue, _BATCH)
                            self._queue = queue[n:]
                            queue = queue[:n]
                        else:
                            self._queue = []
                        bufs = _batch(queue, size)
                        # Still ours until written: counted, so the high-water mark bounds it too.
                        self._writing = size
                        self._queued -= size
                    _send(sock, bufs, 0, collections.deque())
                    with self._lock:
                        self._last = time.perf_counter()
                        self._sent_total += size
                        self._writing = 0
                        self.stalled = False
                        self._cond.notify_all()
            except OSError:
                with self._lock:
                    self._owner = None
                    self._writing = 0
                    self._cond.notify_all()
                continue
            if drained is not None:
                drained()

    # -- connection ------------------------------------------------------
    def attach(self, sock: socket.socket) -> None:
        """Start writing queued and future frames to ``sock``."""
        with self._lock:
            self._sock = sock
            if self._owner is not None or not self._queue:
                return
            self._owner = _BACKSTOP
            self._backstop_wanted = True
            self._ensure_backstop()
            self._wake.notify()

    def detach(self) -> None:
        """Forget the connection and drop what was queued for it."""
        with self._lock:
            self._sock = None
            self._queue = []
            self._queued = 0
            self._cond.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._sock = None
            self._queue = []
            self._queued = 0
            self._cond.notify_all()
            self._wake.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was handed to the socket (False on timeout)."""
        with self._lock:
            if self._queue and self._owner is None and self._sock is not None:
                self._arm()  # a put_deferred whose kick never came
            return self._cond.wait_for(
                lambda: self._closed or self._sock is None or (self._owner is None and not self._queue), timeout
            )

    @property
    def mark(self) -> int:
        """The mark of the last frame put (``wait_sent``: everything put so far is on the socket)."""
        return self._put_total

    @property
    def queued_bytes(self) -> int:
        """Bytes handed to this writer and not yet taken by the socket."""
        return self._queued + self._writing


def _prefix(queue: list[bytes | memoryview], limit: int) -> tuple[int, int]:
    """How many parts of ``queue`` (whole frames' parts, at least one) make up to ``limit``
    bytes, and their size."""
    size = 0
    for i, part in enumerate(queue):
        if size and size + len(part) > limit:
            return i, size
        size += len(part)
    return len(queue), size


def _batch(queue: list[bytes | memoryview], size: int) -> list[bytes | memoryview]:
    """The buffers of one write: runs of small parts joined (one copy is cheaper than many
    iovecs), large payloads passed as they are, by scatter-gather (never copied)."""
    if size < _JOIN_BELOW:
        return [b"".join(queue)] if len(queue) > 1 else queue
    batch: list[bytes | memoryview] = []
    start = 0
    for i, part in enumerate(queue):
        if len(part) >= _BIG_PART:
            if i > start:
                batch.append(b"".join(queue[start:i]))
            batch.append(part)
            start = i + 1
    if start < len(queue):
        batch.append(b"".join(queue[start:]))
    return batch


def _send(sock: socket.socket, bufs: list[bytes | memoryview], flags: int, counts: collections.deque[int]) -> None:
    """Write ``bufs`` (left as they are) until done or, with MSG_DONTWAIT, until the socket is full.

    Every byte count the kernel took is appended to ``counts``, by C code: ``deque.extend``
    over ``map`` runs the system call and stores its result with no Python bytecode in
    between, so a signal handler that raises (Ctrl+C lands on the main thread) runs before
    a write or after its count is recorded, never between. ``_unwritten(bufs, sum(counts))``
    is then exactly what is left.
    """
    rest = _unwritten(bufs, sum(counts))
    while rest:
        try:
            counts.extend(map(sock.sendmsg, (rest[:_IOV_MAX],), ((),), (flags,)))
        except BlockingIOError:
            return
        rest = _unwritten(rest, counts[-1])  # from where we were: a long list is walked once


def _unwritten(bufs: list[bytes | memoryview], written: int) -> list[bytes | memoryview]:
    """What of ``bufs`` is left once ``written`` bytes went out."""
    if not written:
        return bufs
    i, n = 0, len(bufs)
    while i < n and written >= len(bufs[i]):
        written -= len(bufs[i])
        i += 1
    rest = bufs[i:]
    if written:
        rest[0] = memoryview(rest[0])[written:]
    return rest


class Reader:
    """A daemon thread that reads frames from ``sock`` and hands them to ``on_frames``.

    ``on_frames(runs, count)`` gets each read's frames as runs (``_wire.Run``) and how
    many frames they are; it must never block (credits guarantee there is room for every
    message). ``on_closed`` gets ``None`` on a clean EOF, or the exception that
    broke the stream (``ProtocolError`` for garbage, ``OSError`` for a dead socket).
    """

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        on_frames: Callable[[list[Run], int], None],
        on_closed: Callable[[BaseException | None], None],
        max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._sock = sock
        self._on_frames = on_frames
        self._on_closed = on_closed
        self._decoder = FrameDecoder(max_size)
        self._stopping = False
        self._thread = QuietThread(target=self._run, name=f"liteyuki-reader-{peer}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader to finish; True if it has."""
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        chunk = bytearray(_CHUNK)
        view = memoryview(chunk)
        error: BaseException | None = None
        try:
            while not self._stopping:
                n = self._sock.recv_into(view)
                if n == 0:
                    break
                runs, count = self._decoder.feed_runs(chunk, n)
                if runs and not self._stopping:
                    self._on_frames(runs, count)
        except (OSError, ProtocolError) as exc:
            error = exc
        except BaseException as exc:  # a handler bug must still close the link
            error = exc
        if not self._stopping:
            self._on_closed(error)


def new_socketpair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of blocking sockets with large buffers."""
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return a, b


def close_socket(sock: socket.socket | None) -> None:
    """Shut down and close ``sock``; a thread blocked on it wakes up."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
