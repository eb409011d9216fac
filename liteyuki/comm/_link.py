"""One duplex connection: a bounded, coalescing outbox and a reader thread.

The outbox outlives any one connection: the host keeps one per child name, so
messages sent while a child restarts wait there and go to the new child.
Frames queued by many threads are written by one writer in large batches
(coalesced), so a burst of small messages costs one ``send`` call, not one per
message; a caller waiting for an answer may write directly when the outbox is
empty, saving the hop to the writer thread.
"""

from __future__ import annotations

import collections
import socket
import threading
from collections.abc import Callable

from ._errors import BrokenPeerError, ChannelFullError, ProtocolError
from ._wire import DEFAULT_MAX_MESSAGE_SIZE, Frame, FrameDecoder, Kind

__all__ = ["Outbox", "Reader"]

_CHUNK = 1 << 20
# A blocked socket write wakes up this often to see whether the outbox was closed.
_WRITE_POLL = 1.0


class Outbox:
    """Frames waiting to be written to one peer, bounded by ``limit`` bytes."""

    def __init__(self, peer: str, limit: int = 64 * 1024 * 1024) -> None:
        self.peer = peer
        self.limit = limit
        self._cond = threading.Condition(threading.Lock())
        self._frames: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._sock: socket.socket | None = None
        self._write_lock = threading.Lock()
        self._writer_idle = True
        self._closed = False
        self._thread: threading.Thread | None = None
        self._keep: Callable[[bytes], bool] | None = None  # the filter of the last detach()
        self._waiting = 0  # threads in put() waiting for room or in flush(): _take() wakes them

    # -- producers -------------------------------------------------------
    def put(
        self,
        frame: bytes,
        *,
        timeout: float | None = 0.0,
        what: str = "",
        direct: bool = False,
    ) -> None:
        """Queue ``frame``; wait up to ``timeout`` seconds for room when full.

        ``timeout=0`` never waits (used on event-loop threads); ``None`` waits
        as long as it takes. A full outbox past the wait is ``ChannelFullError``
        naming ``what`` and the limit; nothing is queued then.
        """
        size = len(frame)
        with self._cond:
            if self._closed:
                raise BrokenPeerError(f"connection to {self.peer!r} is closed")
            if self._size and self._size + size > self.limit:
                if not timeout or not self._wait_for(
                    lambda: self._closed or self._size + size <= self.limit or not self._size,
                    timeout,
                ):
                    raise ChannelFullError(
                        f"{what or 'outbox'} to {self.peer!r} is full ({self._size} bytes queued, limit {self.limit})"
                    )
                if self._closed:
                    raise BrokenPeerError(f"connection to {self.peer!r} is closed")
            self._frames.append(frame)
            self._size += size
            sock = self._sock
            if not (direct and sock is not None and self._write_lock.acquire(blocking=False)):
                if self._writer_idle and sock is not None:
                    self._writer_idle = False
                    self._cond.notify_all()
                return
            batch = self._take()
        try:
            self._write(sock, batch)
        finally:
            self._write_lock.release()

    # -- connection ------------------------------------------------------
    def attach(self, sock: socket.socket) -> None:
        """Start writing queued and future frames to ``sock``."""
        with self._cond:
            self._sock = sock
            self._writer_idle = False
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"liteyuki-writer-{self.peer}", daemon=True)
                self._thread.start()

    def detach(self, keep: Callable[[bytes], bool] | None = None) -> None:
        """Forget the current connection; keep queued frames for the next one.

        ``keep`` filters the queued frames: answers meant for a dead process
        must not reach its successor.
        """
        with self._cond:
            self._sock = None
            self._keep = keep
            if keep is not None:
                kept = [f for f in self._frames if keep(f)]
                self._frames = collections.deque(kept)
                self._size = sum(map(len, kept))
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._sock = None
            self._frames.clear()
            self._size = 0
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued frame was handed to the socket (False on timeout)."""
        with self._cond:
            return self._wait_for(
                lambda: self._closed or self._sock is None or (not self._frames and self._writer_idle), timeout
            )

    def _wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        self._waiting += 1
        try:
            return self._cond.wait_for(predicate, timeout)
        finally:
            self._waiting -= 1

    @property
    def queued_bytes(self) -> int:
        return self._size

    # -- writer ----------------------------------------------------------
    def _take(self) -> list[bytes]:
        # At most about _CHUNK bytes (or one larger frame): what the writer has taken is
        # lost if the peer dies, what is still queued is kept for the next connection.
        frames = self._frames
        batch: list[bytes] = []
        size = 0
        while frames and size < _CHUNK:
            frame = frames.popleft()
            batch.append(frame)
            size += len(frame)
        self._size -= size
        if self._frames and self._writer_idle and self._sock is not None:
            # A direct put() took part of the queue: the idle writer takes the rest.
            self._writer_idle = False
            self._cond.notify_all()
        elif self._waiting:
            # Wake producers waiting for room and flush(); never the idle writer for nothing:
            # a spurious wake-up per request costs a thread switch and a GIL hand-off.
            self._cond.notify_all()
        return batch

    def _write(self, sock: socket.socket, batch: list[bytes]) -> None:
        data = memoryview(batch[0] if len(batch) == 1 else b"".join(batch))
        while data:
            try:
                sent = sock.send(data)
            except TimeoutError:
                if self._closed or self._sock is not sock:
                    self._give_back(sock, batch, len(data))
                    return
                continue
            except OSError:
                self._give_back(sock, batch, len(data))  # the peer is gone
                return
            data = data[sent:]

    def _give_back(self, sock: socket.socket, batch: list[bytes], unsent: int) -> None:
        """Writing ``batch`` to ``sock`` failed with ``unsent`` bytes to go: the frames the
        socket took whole are lost with the peer; the others go back to the front of the
        queue (filtered as ``detach()`` filters it), for the next ``attach()``. Nothing more
        is written to ``sock``."""
        with self._cond:
            if self._closed:
                return
            keep = None
            if self._sock is sock:
                self._sock = None
            else:  # detach() came first and filtered the queue: filter the same way
                keep = self._keep
            done, whole = sum(map(len, batch)) - unsent, 0
            while whole < len(batch) and done >= len(batch[whole]):
                done -= len(batch[whole])
                whole += 1
            rest = [frame for frame in batch[whole:] if keep is None or keep(frame)]
            self._frames.extendleft(reversed(rest))
            self._size += sum(map(len, rest))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._sock is None or not self._frames):
                    self._writer_idle = True
                    self._cond.notify_all()  # for flush()
                    self._cond.wait()
                if self._closed:
                    return
                sock = self._sock
            with self._write_lock:
                with self._cond:
                    if self._sock is not sock or sock is None:
                        continue
                    batch = self._take()
                if batch:
                    self._write(sock, batch)


class Reader:
    """A daemon thread that reads frames from ``sock`` and hands them to ``on_frames``.

    ``on_closed`` gets ``None`` on a clean EOF, or the exception that broke the
    stream (``ProtocolError`` for garbage, ``OSError`` for a dead socket).
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

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        chunk = bytearray(_CHUNK)
        view = memoryview(chunk)
        error: BaseException | None = None
        try:
            while not self._stopping:
                try:
                    n = self._sock.recv_into(view)
                except TimeoutError:
                    continue
                if n == 0:
                    break
                frames = self._decoder.feed(view[:n])
                if frames:
                    self._on_frames(frames)
        except (OSError, ProtocolError) as exc:
            error = exc
        except BaseException as exc:  # a handler bug must still close the link
            error = exc
        if not self._stopping:
            self._on_closed(error)


def is_message(frame: bytes) -> bool:
    return frame[4] in (Kind.MESSAGE, Kind.PUBLISH)


def new_socketpair() -> tuple[socket.socket, socket.socket]:
    """A connected pair whose ends time out so threads can notice a close."""
    a, b = socket.socketpair()
    for s in (a, b):
        s.settimeout(_WRITE_POLL)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return a, b
