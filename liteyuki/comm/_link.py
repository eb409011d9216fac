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

import socket
import threading
import time
from collections.abc import Callable

from ._errors import BrokenPeerError, ChannelFullError, ProtocolError
from ._wire import DEFAULT_MAX_MESSAGE_SIZE, Frame, FrameDecoder

__all__ = ["Reader", "Writer", "new_socketpair"]

_CHUNK = 1 << 20
_JOIN_BELOW = 64 * 1024  # batches smaller than this are joined into one buffer; larger go as iovecs
_IOV_MAX = 512
HIGH_WATER = 4 * 1024 * 1024
_MAIN_THREAD = threading.main_thread()
# A sender that finds the link written to less than WINDOW ago leaves its frame queued;
# frames wait until MAX_AGE has passed or 64 KiB are queued, then the sender at hand (or
# the backstop's timer, at the end of a burst) writes them in one go: a burst of small
# messages costs a few large writes, not one system call each, while a message sent on
# an idle link goes out at once.
WINDOW = 30e-6
MAX_AGE = 500e-6


class Writer:
    """Frames waiting to be written to one peer; written through by the sender when idle."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: list[bytes | memoryview] = []
        self._queued = 0
        self._writing = 0  # bytes the backstop took and is writing
        self._sock: socket.socket | None = None
        self._busy = False  # a thread is writing (or the backstop owns the write)
        self._backstop_wanted = False
        self._armed = False  # frames wait for the coalescing window to close
        self._last = 0.0  # when the last write ended
        self._since = 0.0  # when the oldest queued frame was queued
        self._closed = False
        self._thread: threading.Thread | None = None
        # Called (no lock held) when the backstop has written everything queued: a hub
        # that held messages back from a backed-up peer hands them over again.
        self.on_drained: Callable[[], None] | None = None
        self.frames = 0  # frames put so far (a lane's request fences on it)

    # -- producers -------------------------------------------------------
    def put(self, parts: tuple[bytes, ...] | list[bytes], *, wait: float | None = 0.0, what: str = "") -> None:
        """Queue one frame (its parts in order) and write it now if the link is idle.

        Never blocks on the socket. With ``wait`` > 0, a caller finding more than
        the high-water mark queued waits up to ``wait`` s for room (``None``: as
        long as it takes), then raises ``ChannelFullError`` with nothing queued.
        """
        size = 0
        for part in parts:
            size += len(part)
        with self._lock:
            if self._closed:
                raise BrokenPeerError(f"connection to {self.peer!r} is closed")
            if wait != 0.0 and self._queued + self._writing > HIGH_WATER:
                self._wait_for_room(wait, what)
            queue = self._queue
            waiting = bool(queue)
            queue += parts
            self._queued += size
            self.frames += 1
            if self._busy or self._sock is None:
                return
            # Write now if the link is idle (nothing written for a window), or what waits has
            # waited long enough, or enough waits; else leave it to the next sender or the
            # backstop's timer: a busy link is written in batches.
            now = time.perf_counter()
            if not waiting:
                self._since = now
            if (now - self._since < MAX_AGE if waiting else now - self._last < WINDOW) and self._queued < _JOIN_BELOW:
                if not self._armed:
                    self._armed = True
                    self._ensure_backstop()
                    self._cond.notify_all()
                return
            if not self._claim_write():
                return
        self._drain()

    def _wait_for_room(self, wait: float | None, what: str) -> None:
        """Wait (lock held) until the queue is below the high-water mark, or raise."""
        deadline = None if wait is None else time.monotonic() + wait
        while self._queued + self._writing > HIGH_WATER and not self._closed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ChannelFullError(
                    f"{what or 'outgoing data'} to {self.peer!r} is held back: "
                    f"{self._queued + self._writing} bytes are waiting to be written"
                )
            self._cond.wait(remaining)
        if self._closed:
            raise BrokenPeerError(f"connection to {self.peer!r} is closed")

    def _drain(self) -> None:
        """Write what is queued without blocking; hand any rest to the backstop thread."""
        bufs: list[bytes | memoryview] = []
        try:
            while True:
                with self._lock:
                    sock = self._sock
                    if not self._queue or sock is None:
                        self._busy = False
                        self._last = time.perf_counter()  # the window runs from the end of a write
                        self._cond.notify_all()
                        return
                    bufs = _batch(self._queue, self._queued)
                    self._queue = []
                    self._queued = 0
                    self._cond.notify_all()
                _send(sock, bufs, socket.MSG_DONTWAIT)
                if bufs:
                    break
        except OSError:
            bufs = []  # the peer is gone; the reader reports it
            with self._lock:
                self._busy = False
                self._cond.notify_all()
        finally:
            # It would block (or an interrupt came in the middle): the backstop finishes.
            # ``_send`` trims ``bufs`` in place, so only unwritten bytes go back.
            if bufs:
                with self._lock:
                    self._queue[:0] = bufs
                    self._queued += sum(map(len, bufs))
                    self._backstop_wanted = True
                    self._ensure_backstop()
                    self._cond.notify_all()

    def _claim_write(self) -> bool:
        """Take the link for a write (lock held); False when it goes to the backstop instead.

        Ctrl+C lands on the main thread, and it may land between a write and the
        bookkeeping of what that write took: the frames would go out twice. The main
        thread hands its writes to the backstop thread instead.
        """
        self._busy = True
        if threading.current_thread() is not _MAIN_THREAD:
            return True
        self._backstop_wanted = True
        self._ensure_backstop()
        self._cond.notify_all()
        return False

    def _ensure_backstop(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._backstop, name=f"liteyuki-writer-{self.peer}", daemon=True)
            self._thread.start()

    def _backstop(self) -> None:
        while True:
            with self._lock:
                while not self._backstop_wanted and not self._armed and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                if not self._backstop_wanted:  # armed: flush when the coalescing window closes
                    delay = self._since + WINDOW - time.perf_counter()
                    if delay > 0:
                        self._lock.release()
                        try:
                            time.sleep(delay)  # a timer, not synchronisation
                        finally:
                            self._lock.acquire()
                    self._armed = False
                    if self._busy or not self._queue:
                        continue  # a sender wrote it meanwhile
                    self._busy = True
                    self._last = time.perf_counter()
                self._backstop_wanted = False
                sock = self._sock
                if sock is None:
                    self._busy = False
                    self._cond.notify_all()
                    continue
            drained = None
            try:
                while True:
                    with self._lock:
                        if not self._queue or self._sock is not sock:
                            self._busy = False
                            self._cond.notify_all()
                            drained = self.on_drained if not self._queue else None
                            break
                        bufs = _batch(self._queue, self._queued)
                        # Still ours until written: counted, so the high-water mark bounds it too.
                        self._writing = self._queued
                        self._queue = []
                        self._queued = 0
                    _send(sock, bufs, 0)
                    with self._lock:
                        self._writing = 0
                        self._cond.notify_all()
            except OSError:
                with self._lock:
                    self._busy = False
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
            if self._busy or not self._queue:
                return
            if not self._claim_write():
                return
        self._drain()

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

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was handed to the socket (False on timeout)."""
        with self._lock:
            return self._cond.wait_for(
                lambda: self._closed or self._sock is None or (not self._busy and not self._queue), timeout
            )

    @property
    def queued_bytes(self) -> int:
        """Bytes handed to this writer and not yet taken by the socket."""
        return self._queued + self._writing


def _batch(queue: list[bytes | memoryview], size: int) -> list[bytes | memoryview]:
    # Small frames are joined into one buffer (one copy, cheaper than many iovecs);
    # a batch holding large payloads goes out as it is, by scatter-gather.
    if len(queue) > 1 and size < _JOIN_BELOW:
        return [b"".join(queue)]
    return queue


def _send(sock: socket.socket, bufs: list[bytes | memoryview], flags: int) -> None:
    """Write ``bufs``, trimming the list in place as bytes go out (what is left did not fit:
    only with MSG_DONTWAIT, or when an interrupt stops us in the middle)."""
    while bufs:
        try:
            sent = sock.sendmsg(bufs[:_IOV_MAX], (), flags)
        except BlockingIOError:
            return
        except InterruptedError:
            continue
        i = 0
        n = len(bufs)
        while i < n and sent >= len(bufs[i]):
            sent -= len(bufs[i])
            i += 1
        if sent:
            bufs[i] = memoryview(bufs[i])[sent:]
        del bufs[:i]


class Reader:
    """A daemon thread that reads frames from ``sock`` and hands them to ``on_frames``.

    ``on_frames`` must never block (credits guarantee there is room for every
    message). ``on_closed`` gets ``None`` on a clean EOF, or the exception that
    broke the stream (``ProtocolError`` for garbage, ``OSError`` for a dead socket).
    """

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        on_frames: Callable[[list[Frame]], None],
        on_closed: Callable[[BaseException | None], None],
        max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._sock = sock
        self._on_frames = on_frames
        self._on_closed = on_closed
        self._decoder = FrameDecoder(max_size)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"liteyuki-reader-{peer}", daemon=True)

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
                frames = self._decoder.feed(view[:n])
                if frames and not self._stopping:
                    self._on_frames(frames)
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
