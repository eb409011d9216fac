"""Per-thread lanes: a sync storage call does its own I/O on its thread's own socket.

A child thread's first sync call makes a socketpair and hands one end to the
host over the hand-off socket made at spawn (``SCM_RIGHTS``). From then on the
thread writes its request and reads its own answer on a blocking socket — no
reader thread in between, no hop, no lock shared with other threads. In the
host one thread per lane reads the request and answers it inline.

Ordering: a request carries a fence, the number of frames the thread's process
had queued on its main link before it; the host answers only once it has
handled that many frames of the main link, so a call made after a ``send`` or
an ``async_set`` sees its effects. Answers are not ordered with channel
messages still in flight towards the caller.

A lane is dropped (and made again on the next call) when a call is interrupted
(Ctrl+C) or times out in the middle, when the thread ends, and in a forked child
(it must not share its parent's lanes).

The cap: the child counts its lanes and makes no more than ``MAX_LANES``; the host
counts them too and holds no more than that many. The two counts are not in step: a
lane the child closed (its thread ended) is still counted by the host until the
host's lane thread reads the end of its stream (or, if a call on it timed out, until
that call's answer is written), so a lane handed over in between can find the host
full. The host then writes a refusal (a ``CONTROL`` frame,
ref 0) on that lane, reads nothing from it and closes it; the child's call on it
reads the refusal instead of an answer (``LaneRefused``), drops the lane and makes
the call over the main link. The refused request was never read, so it is made once.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable

from .._threads import QuietThread
from ._errors import BrokenPeerError, CommTimeoutError, ProtocolError
from ._runtime_base import running_loop
from ._wire import HEADER_SIZE, FrameDecoder, Kind, encode, pack_header

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Protocol

    from ._looplane import LoopLane

    class _Progress(Protocol):
        frames_read: int

    class _Frames(Protocol):
        frames: int


__all__ = ["MAX_LANES", "ChildLanes", "LaneRefused", "serve_handoff"]

MAX_LANES = 32  # per child: more threads than this fall back to the main link
_REQUEST = Kind.REQUEST
_CONTROL = Kind.CONTROL
_TIMEVAL = struct.Struct("@ll")
# Host -> child, the only thing written on a lane the host will not serve (it is full).
_REFUSAL = encode(Kind.CONTROL, "refused", b"", 0)


class LaneRefused(Exception):
    """The host refused a new lane (it holds ``MAX_LANES`` of this child's already): the
    requests written on it were not read; make them over the main link."""


def _raise_if_refused(sock: socket.socket, decoder: FrameDecoder) -> None:
    """After a failed write on a lane: raise ``LaneRefused`` if what the host wrote before
    closing it is its refusal."""
    try:
        chunk = sock.recv(1 << 16, socket.MSG_DONTWAIT)
        frames = decoder.feed(chunk)
    except (OSError, ProtocolError):
        return
    if any(frame[0] is _CONTROL for frame in frames):
        raise LaneRefused("the host is at its cap of lanes for this process")


def _set_timeout(sock: socket.socket, seconds: float) -> None:
    # A kernel timeout (SO_RCVTIMEO) rather than a Python-level one: no poll before
    # every recv, and the socket stays in blocking mode. Zero there means "never time out":
    # a timeout of 0 (or below a microsecond) is one microsecond, the least the kernel takes.
    whole = int(seconds)
    micros = int((seconds - whole) * 1e6)
    if whole == 0 and micros == 0:
        micros = 1
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(whole, micros))


class _Lane:
    __slots__ = ("decoder", "on_close", "pid", "seq", "sock", "timeout")

    def __init__(self, sock: socket.socket, max_size: int, on_close: Callable[[], None]) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(max_size)
        self.seq = 0
        self.timeout = -1.0
        self.pid = os.getpid()
        self.on_close: Callable[[], None] | None = on_close

    def close(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is None:
            return
        try:
            self.sock.close()
        except OSError:
            pass
        if self.pid == os.getpid():
            on_close()

    def __del__(self) -> None:  # the thread that owned it ended: its lane goes with it
        self.close()


class ChildLanes:
    """The child's side: one lane per thread, made on first use."""

    def __init__(self, handoff: socket.socket, max_size: int, main_link: _Frames) -> None:
        self._handoff = handoff
        self._max_size = max_size
        self._main_link = main_link  # its .frames: what a request fences on (see the module docstring)
        self._heads: dict[str, tuple[bytes, int]] = {}  # op name -> (its bytes, header length base)
        self._local = threading.local()
        # Re-entrant: a lane's finaliser (garbage collection, in any thread) counts it out.
        self._lock = threading.RLock()
        self._count = 0
        self._closed = False
        self._loop_lanes: dict[int, LoopLane] = {}  # id(loop) -> its lane
        self._pid = os.getpid()  # the process that owns the main link (not a forked one)

    def after_refusal(self) -> None:
        """A lane was refused, unread: its calls go over the main link. Not in a forked
        process: the main link is its parent's (its reader gets the answers), so it fails
        there, as it did before refusals."""
        if os.getpid() != self._pid:
            raise BrokenPeerError("the host refused a new lane, and a forked process has no main link of its own")

    def loop_lane(self, loop: asyncio.AbstractEventLoop) -> LoopLane | None:
        """The lane of ``loop`` (the running loop: call on its thread), made on first use;
        None: no lane (the cap is reached, or the host is gone): use the main link."""
        lane = self._loop_lanes.get(id(loop))
        if lane is not None and lane.loop is loop and lane.usable:
            return lane
        with self._lock:
            for key, old in list(self._loop_lanes.items()):  # broken, or their loop closed
                if not old.usable or old.loop is loop:
                    del self._loop_lanes[key]
                    old.close()
            ours = self._new_socket()
        if ours is None:
            return None
        from ._looplane import LoopLane  # on the first async call: a sync-only child never loads it

        lane = LoopLane(ours, loop, self._max_size, self._released)
        self._loop_lanes[id(loop)] = lane
        return lane

    def running_loop_lane(self) -> LoopLane | None:
        """The lane of the loop running on this thread, if it has one."""
        if not self._loop_lanes:
            return None
        loop = running_loop()
        lane = self._loop_lanes.get(id(loop)) if loop is not None else None
        return lane if lane is not None and lane.loop is loop and lane.usable else None

    def _new_socket(self) -> socket.socket | None:
        """A new lane's socket, its other end handed to the host, and counted; None after
        close, at the cap, or if the host is gone."""
        with self._lock:
            if self._closed or self._count >= MAX_LANES:
                return None
            ours = self._hand_over()
            if ours is not None:
                self._count += 1
            return ours

    def _hand_over(self) -> socket.socket | None:
        """A new socketpair whose other end went to the host (lock held); None if it could not."""
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self._handoff, [b"L"], [theirs.fileno()])
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()
        return ours

    def _lane(self) -> _Lane | None:
        # No getpid() per call: in a forked child forget_after_fork (os.register_at_fork)
        # has replaced self._local, so the parent's lanes are out of sight.
        lane: _Lane | None = getattr(self._local, "lane", None)
        if lane is not None:
            return lane
        ours = self._new_socket()
        if ours is None:
            return None
        lane = _Lane(ours, self._max_size, self._released)
        self._local.lane = lane
        return lane

    def _released(self) -> None:
        with self._lock:
            self._count -= 1

    @property
    def count(self) -> int:
        """Lanes this process holds now."""
        return self._count

    def call(self, op_name: str, payload: bytes, timeout: float) -> tuple[Kind, bytes] | None:
        """Send one request on this thread's lane and read its answer; None: no lane here."""
        lane = self._lane()
        if lane is None:
            return None
        lane.seq = seq = (lane.seq + 1) & 0xFFFFFFFF
        ref = (self._main_link.frames << 32) | seq
        head = self._heads.get(op_name)
        if head is None:
            raw_name = op_name.encode()
            head = self._heads[op_name] = (raw_name, HEADER_SIZE - 4 + len(raw_name))
        raw_name, base = head
        try:
            if lane.timeout != timeout:
                _set_timeout(lane.sock, timeout)
                lane.timeout = timeout
            try:
                # header() inline, its name and length base kept per operation (~0.2 us a call)
                lane.sock.sendmsg([pack_header(base + len(payload), _REQUEST, ref, len(raw_name)) + raw_name, payload])
            except OSError:  # the host may have refused this lane and closed it already
                _raise_if_refused(lane.sock, lane.decoder)
                raise
            while True:
                try:
                    chunk = lane.sock.recv(1 << 16)
                except BlockingIOError:  # SO_RCVTIMEO ran out
                    raise CommTimeoutError(f"the host did not answer {op_name!r} within {timeout} s") from None
                if not chunk:
                    raise ConnectionError("the host closed this thread's lane")
                for kind, answer_ref, _, answer in lane.decoder.feed(chunk):
                    if answer_ref == ref:
                        return kind, answer
                    if kind is _CONTROL:  # (only ever the refusal, on a new lane)
                        raise LaneRefused
        except LaneRefused:  # the host is full: it read nothing here; the main link makes the call
            self._drop(lane)
            self.after_refusal()
            return None
        except BaseException:
            # Interrupted, timed out or broken in the middle of a call: this lane's stream
            # is no longer in step. Drop it; the next call makes a new one.
            self._drop(lane)
            raise

    def _drop(self, lane: _Lane) -> None:
        lane.close()
        if getattr(self._local, "lane", None) is lane:
            del self._local.lane

    def forget_after_fork(self) -> None:
        """In a forked child: the lanes belong to the parent; make new ones here (the hand-off
        socket is shared with the parent, but each hand-off is one message under its lock)."""
        self._local = threading.local()
        self._lock = threading.RLock()
        self._count = 0
        self._loop_lanes = {}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            loop_lanes, self._loop_lanes = list(self._loop_lanes.values()), {}
        for lane in loop_lanes:  # on its loop's thread, where its reader is registered
            try:
                lane.loop.call_soon_threadsafe(lane.close)
            except RuntimeError:  # the loop is closed: its selector is gone with it
                lane.close()
        try:
            self._handoff.close()
        except OSError:
            pass


def serve_handoff(
    handoff: socket.socket,
    peer: str,
    answer: Callable[[str, bytes], tuple[Kind, bytes]],
    progress: _Progress,
    wait_for_fence: Callable[[int], None],
    max_size: int,
    on_error: Callable[[BaseException], None],
) -> None:
    """The host's side: take lanes from ``handoff`` and answer each on a thread of its own.

    A request fenced beyond ``progress.frames_read`` (main-link frames handled so far)
    waits in ``wait_for_fence`` first."""
    live = [0]
    count_lock = threading.Lock()

    def released() -> None:
        with count_lock:
            live[0] -= 1

    try:
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(handoff, 16, 4)
            except OSError:
                return
            if not fds:
                return  # end of stream: the child is gone
            for fd in fds:
                sock = socket.socket(fileno=fd)
                if sock.family != socket.AF_UNIX:
                    sock.close()
                    continue
                with count_lock:
                    full = live[0] >= MAX_LANES
                    if not full:
                        live[0] += 1
                if full:
                    # Not closed unanswered: the child may count fewer lanes than we do (one
                    # it closed whose end we have not read yet), and its call on this lane
                    # must not look like a lost host. The refusal tells it to use the main link.
                    try:
                        sock.send(_REFUSAL, socket.MSG_DONTWAIT)
                    except OSError:
                        pass
                    sock.close()
                    continue
                QuietThread(
                    target=_serve_lane,
                    args=(sock, answer, progress, wait_for_fence, max_size, on_error, released),
                    name=f"liteyuki-lane-{peer}",
                    daemon=True,
                ).start()
    finally:
        handoff.close()


def _serve_lane(
    sock: socket.socket,
    answer: Callable[[str, bytes], tuple[Kind, bytes]],
    progress: _Progress,
    wait_for_fence: Callable[[int], None],
    max_size: int,
    on_error: Callable[[BaseException], None],
    released: Callable[[], None],
) -> None:
    decoder = FrameDecoder(max_size)
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            # The answers to every request of one read go out in one write (a loop's lane
            # sends a gathered batch of calls at once).
            answers = []
            for frame_kind, ref, name, request in decoder.feed(chunk):  # (unpacked: no field lookups)
                if frame_kind is not _REQUEST:
                    raise ProtocolError(f"a lane carried a {frame_kind.name} frame")
                fence = ref >> 32
                if fence > progress.frames_read:  # (read here: most requests need no wait, nor a call)
                    wait_for_fence(fence)
                kind, payload = answer(name, request)
                answers.append(encode(kind, "", payload, ref))
            if answers:
                sock.sendall(answers[0] if len(answers) == 1 else b"".join(answers))
    except ProtocolError as exc:
        on_error(exc)
    except OSError:
        pass  # the child (or its thread) is gone
    finally:
        sock.close()
        released()
