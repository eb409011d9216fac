"""A child's side of its one connection to the host."""

from __future__ import annotations

import collections
import itertools
import os
import socket
import threading
from collections.abc import Callable

from ._credit import Credit
from ._errors import BrokenPeerError, ChannelFullError, CommTimeoutError
from ._lanes import ChildLanes, LaneRefused
from ._link import Reader, Writer, close_socket
from ._loopcall import call_in_loop, settle
from ._runtime_base import RuntimeBase, on_event_loop
from ._wire import Kind, MessageHead, Run, dumps, encode, header, loads, pack_length, request_limit

TYPE_CHECKING = False
if TYPE_CHECKING:  # imported where used: a plain child that never awaits does not load asyncio
    import asyncio
    from typing import Any

    from ._ops import Operation

# Operations (``_ops``) are loaded by whoever makes one (storage, the registry calls), not
# here: a child that only sends never loads them. An operation is the tuple of its fields
# (``_ops.fields_of``): ``tuple(op)`` is what travels.

__all__ = ["ChildRuntime"]

# How long an urgent frame (a passive end's consumption report, close()'s withdrawal)
# waits to reach the socket: only this process's own backlog is ahead of it, and a sync
# sender keeps that near the writer's high-water mark (4 MiB: milliseconds to write).
_URGENT_WAIT = 1.0


class _Waiter:
    """One storage call waiting for its answer: a lock for a thread, a future for a coroutine."""

    __slots__ = ("_lock", "fut", "kind", "loop", "payload")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.kind: Kind | None = None
        self.payload = b""
        if loop is None:
            self._lock = threading.Lock()
            self._lock.acquire()
            self.fut = None
        else:
            self.fut = loop.create_future()

    def settle(self, kind: Kind, payload: bytes) -> None:
        self.kind, self.payload = kind, payload
        if self.fut is None:
            self._lock.release()
        else:
            call_in_loop(self.loop, settle, self.fut)  # type: ignore[arg-type]

    def wait(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=timeout)

    def outcome(self) -> bytes | None:
        if self.kind is Kind.RESULT:
            return self.payload or None
        if self.kind is Kind.FAILURE:
            raise loads(self.payload, what="error from the host")
        raise BrokenPeerError(self.payload.decode() or "the host connection was lost")


def _lane_result(kind: Kind, raw: bytes) -> bytes | None:
    """A lane's answer: the stored pickle (None for nothing), or the host's error raised here."""
    if kind is Kind.RESULT:
        return raw or None
    raise loads(raw, what="error from the host")


def _is_store_op(op: Operation) -> bool:
    """A store operation (a store backend takes it), not a registry one (the host keeps those)."""
    from ._ops import STORE_OPERATIONS

    return type(op) in STORE_OPERATIONS


class ChildRuntime(RuntimeBase):
    """A child's side of its one connection to the host."""

    role = "child"

    def __init__(self, name: str, config: dict[str, Any] | None = None) -> None:
        self.process_name = name
        self.own_channels = (f"{name}-active", f"{name}-passive")
        self.configure(config or {})
        self.writer = Writer("host")
        self._lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._refs = itertools.count(int.from_bytes(os.urandom(4), "big"))  # not random: it costs a cold child 0.6 ms
        self._broken: str | None = None
        self._topics: set[str] = set()
        self._sinks: dict[str, Any] = {}
        # Ends withdrawn whose WITHDRAW the host has not acknowledged yet, per name: messages
        # on that name arriving meanwhile were sent to the withdrawn end (the host hands them
        # back from its ledger), never to a new end of the same name, which the host only
        # learns of after the WITHDRAW. They are dropped here until the acknowledgement.
        self._withdrawing: collections.Counter[str] = collections.Counter()
        self._credits: dict[str, Credit] = {}
        self._heads: dict[str, MessageHead] = {}
        self.on_control: Callable[[str, bytes], None] = lambda op, payload: None
        self.on_host_lost: Callable[[BaseException | None], None] = lambda error: None
        self._sock: socket.socket | None = None
        self._reader: Reader | None = None
        self._lanes: ChildLanes | None = None

    @property
    def link_lost(self) -> bool:
        return self._broken is not None

    def connect(self, sock: socket.socket, handoff: socket.socket | None = None) -> None:
        """Start talking to the host on ``sock``; frames queued until now go first.

        With ``handoff``, sync storage calls use per-thread lanes handed over on it.
        """
        # The fds arrive inheritable: a program this child runs (os.system, exec) would hold
        # the host link and could send it frames — pickles the host unpickles.
        for s in (sock, handoff):
            if s is not None:
                s.setblocking(True)
                s.set_inheritable(False)
        if handoff is not None:
            self._lanes = ChildLanes(handoff, self.max_message_size, self.writer)
            os.register_at_fork(after_in_child=self._lanes.forget_after_fork)
        self._sock = sock
        # [#11] The decoder's bound makes room for a frame's own overhead (see FrameDecoder).
        self._reader = Reader(sock, "host", self._on_frames, self._lost, self.max_message_size)
        self.writer.attach(sock)
        self._reader.start()

    def control(self, op: str, payload: bytes = b"") -> None:
        self.writer.put((encode(Kind.CONTROL, op, payload),))

    def _check_alive(self) -> None:
        if self._broken is not None:
            raise BrokenPeerError(self._broken)

    # -- channels ---------------------------------------------------------
    def _credit(self, name: str) -> Credit:
        credit = self._credits.get(name)
        if credit is None:
            with self._lock:
                credit = self._credits.setdefault(name, Credit(self.window))
        return credit

    def send(self, name: str, payload: bytes, timeout: float | None) -> None:
        # The hot path of every message a child sends: _check_alive and the lookup of
        # _credit inlined. (Inlining _put_message too measured the same: 1.54-1.76 vs
        # 1.50-1.70 us per message, a child thread sending 200k messages, 4 runs each.)
        if self._broken is not None:
            raise BrokenPeerError(self._broken)
        credit = self._credits.get(name) or self._credit(name)
        if not credit.try_take():
            if on_event_loop():
                raise self._full(name)
            if not credit.take(self.send_timeout if timeout is None else timeout):
                self._check_alive()
                raise self._full(name)
        # A sync sender waits for the link when megabytes are queued (the writer skips the
        # wait on an event loop): a child flooding the host held 300 MB in its writer, and
        # the consumption reports queued behind that arrived seconds late or died with it.
        self._put_message(name, payload, credit, self.send_timeout if timeout is None else timeout)

    async def async_send(self, name: str, payload: bytes, timeout: float | None) -> None:
        self._check_alive()
        credit = self._credit(name)
        if not await credit.take_async(timeout):
            self._check_alive()
            raise self._full(name)
        self._put_message(name, payload, credit)

    def _head(self, name: str) -> MessageHead:
        head = self._heads[name] = MessageHead(name.encode())
        return head

    def _put_message(self, name: str, payload: bytes, credit: Credit, wait: float = 0.0) -> None:
        head = self._heads.get(name) or self._head(name)
        n = len(payload)
        try:
            self.writer.put(  # see MessageHead
                (pack_length(head.base + n), head.tail, payload), head.overhead + n, wait=wait, what="a message"
            )
        except BaseException:
            credit.give(1)
            raise

    def _full(self, name: str) -> ChannelFullError:
        return ChannelFullError(
            f"channel {name!r} is full: {self.window} messages sent by process {self.process_name!r} "
            f"are waiting in the host for a receiving end with room (pending_limit {self.window})"
        )

    def declare_receiver(self, sink: Any) -> None:
        self._sinks[sink.name] = sink
        if self._broken is None:
            self.writer.put((encode(Kind.RECEIVER, sink.name, b"", sink.capacity),))

    def consumed(self, name: str, n: int, urgent: bool = False) -> None:
        if self._broken is None and name in self._sinks:
            mark = self.writer.put((encode(Kind.CONSUMED, name, b"", n),), urgent=urgent)
            if urgent:
                # On the socket before the callbacks run: behind a backlog of this process's
                # own sends, a callback that exits took the report along (a crash loop).
                self.writer.wait_sent(mark, _URGENT_WAIT)

    def interrupt_senders(self, name: str) -> None:
        """This process's end of ``name`` closed: its sends waiting for credit give up."""
        credit = self._credits.get(name)
        if credit is not None:
            credit.interrupt()

    def withdraw(self, sink: Any, consumed: int, returned: list[bytes] | None = None) -> None:
        # The host keeps what it handed us and did not hear consumed: it goes back to the
        # channel from there, after what we give back unhandled (``returned``). What still
        # arrives for this end is dropped here.
        name = sink.name
        if self._sinks.get(name) is sink:
            del self._sinks[name]
        sink.take_unconsumed()
        if self._broken is None:
            with self._lock:
                self._withdrawing[name] += 1
            for payload in returned or ():
                self.writer.put((encode(Kind.RETURN, name, payload),))
            # Written now, not after the coalescing window, and close() returns once it is on
            # the socket, with all this process queued before it: a process that dies right
            # after close() took what it gave back with it (2 runs in 6 of the test), and the
            # messages its callbacks had sent just before (a batch ending at the fatal one).
            mark = self.writer.put((encode(Kind.WITHDRAW, name, b"", consumed),), urgent=True)
            self.writer.wait_sent(mark, _URGENT_WAIT)
        # The channel's credit and cached header go with its last end: names made per request
        # would otherwise pile up here (a sender of the name makes them again when it sends).
        credit = self._credits.get(name)
        if credit is not None and credit.available == self.window and not credit.waiting():
            with self._lock:
                self._credits.pop(name, None)
            self._heads.pop(name, None)

    # -- pub/sub ----------------------------------------------------------
    def publish(self, topic: str, payload: bytes) -> None:
        if self.pubsub_backend is not None:
            self.pubsub_backend.publish(topic, payload)
            return
        self._check_alive()
        self.writer.put((encode(Kind.PUBLISH, topic, payload),), wait=0 if on_event_loop() else self.send_timeout)

    def subscribe(self, topic: str) -> None:
        if self.pubsub_backend is not None:
            self.pubsub_backend.subscribe(topic)
            return
        if topic not in self._topics:
            self._topics.add(topic)
            self.writer.put((encode(Kind.SUBSCRIBE, topic),))

    # -- store ------------------------------------------------------------
    def _request(self, op: Operation, waiter: _Waiter) -> int:
        self._check_alive()
        ref = next(self._refs)
        self._pending[ref] = waiter
        try:
            payload = self._request_payload(op)
            self.writer.put((header(Kind.REQUEST, type(op).__name__.encode(), len(payload), ref), payload))
        except BaseException:
            self._pending.pop(ref, None)
            raise
        if self._broken is not None and self._pending.pop(ref, None) is not None:
            raise BrokenPeerError(self._broken)
        return ref

    def _request_payload(self, op: Operation) -> bytes:
        # [#11] Each value in op was bounded by max_message_size already; the fields around
        # them get room (compare_and_set carries two values), so exactly the limit passes.
        return dumps(tuple(op), request_limit(self.max_message_size), what=f"arguments of {op.method!r}")

    def _lane_lost(self, exc: ConnectionError) -> BrokenPeerError:
        return BrokenPeerError(self._broken or f"the host connection was lost ({exc})")

    def execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        backend = self.store_backend
        if backend is not None and _is_store_op(op):
            return backend.execute(op, timeout)
        lanes = self._lanes
        if lanes is not None:
            if self._broken is not None:  # _check_alive() inline: the hot path of every sync call
                raise BrokenPeerError(self._broken)
            limit = self.call_timeout if timeout is None else timeout
            payload = self._request_payload(op)
            try:
                # On a loop that made async calls, after them on its lane; else this thread's lane.
                lane = lanes.running_loop_lane()
                if lane is not None:
                    answer = lane.call(type(op).__name__, payload, self.writer.frames, limit)
                else:
                    answer = lanes.call(type(op).__name__, payload, limit)
            except ConnectionError as exc:
                raise self._lane_lost(exc) from exc
            except CommTimeoutError:  # named like the main link's: the method, not the class
                raise CommTimeoutError(f"the host did not answer {op.method!r} within {limit} s") from None
            except LaneRefused:  # the host refused the loop's new lane, unread: the main link makes it
                lanes.after_refusal()
                answer = None
            if answer is not None:
                return _lane_result(*answer)
        if self._sock is None:
            self._refuse_before_connect(op)
        waiter = _Waiter()
        ref = self._request(op, waiter)
        limit = self.call_timeout if timeout is None else timeout
        if not waiter.wait(limit):
            self._pending.pop(ref, None)
            raise CommTimeoutError(f"the host did not answer {op.method!r} within {limit} s")
        return waiter.outcome()

    def _refuse_before_connect(self, op: Operation) -> None:
        """A call that waits for an answer, made before this child connected, on its main
        thread: the child connects on that thread once the spawn bootstrap has imported the
        main script, so nothing could answer (it used to wait out ``call_timeout``)."""
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError(
                f"{op.method!r} was called in child process {self.process_name!r} while it was still starting "
                "(importing the main script, before it connected to the host), where nothing can answer it. "
                "Code at the top level of the script that starts LiteyukiBot runs again in every child: "
                'put it under `if __name__ == "__main__":` (see bot.py in the README)'
            )

    async def async_execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        backend = self.store_backend
        if backend is not None and _is_store_op(op):
            return await backend.async_execute(op, timeout)
        import asyncio  # loaded already: we run on a loop

        loop = asyncio.get_running_loop()
        lanes = self._lanes
        lane = lanes.loop_lane(loop) if lanes is not None else None
        if lane is not None:  # the loop's own lane: the loop reads the answer itself
            self._check_alive()
            limit = self.call_timeout if timeout is None else timeout
            # The lane's one timer settles the future with None at the deadline (see _looplane).
            ref, future = lane.request(type(op).__name__, self._request_payload(op), self.writer.frames, limit)
            refused = False
            try:
                answer = await future
            except ConnectionError as exc:
                raise self._lane_lost(exc) from exc
            except LaneRefused:  # the host refused the loop's new lane, unread: the main link makes it
                lanes.after_refusal()  # (lanes is not None: it made this lane)
                refused = True
            finally:
                lane.forget(ref)
            if not refused:
                if answer is None:
                    raise CommTimeoutError(f"the host did not answer {op.method!r} within {limit} s")
                return _lane_result(*answer)
        waiter = _Waiter(loop)
        ref = self._request(op, waiter)
        limit = self.call_timeout if timeout is None else timeout
        # A timer rather than wait_for(shield(...)): the future is this call's alone, and
        # wait_for + shield cost more than the rest of the call's event-loop work.
        timer = loop.call_later(limit, settle, waiter.fut, False)  # an answer settles with None
        try:
            answered = await waiter.fut  # type: ignore[misc]
        finally:
            timer.cancel()
            self._pending.pop(ref, None)
        if answered is False:
            raise CommTimeoutError(f"the host did not answer {op.method!r} within {limit} s")
        return waiter.outcome()

    # -- frames from the host ----------------------------------------------
    def _on_frames(self, runs: list[Run], count: int) -> None:
        for frame, payloads in runs:
            kind = frame.kind
            if payloads is not None:
                sink = self._sinks.get(frame.name)
                if sink is not None and not self._withdrawing[frame.name]:
                    sink.deliver(payloads)  # else: for a withdrawn end; the host takes them back
            elif kind is Kind.WITHDRAW:  # the host read our WITHDRAW: what follows is the new end's
                with self._lock:
                    if self._withdrawing[frame.name] > 1:
                        self._withdrawing[frame.name] -= 1
                    else:
                        self._withdrawing.pop(frame.name, None)
            elif kind is Kind.RESULT or kind is Kind.FAILURE:
                waiter = self._pending.pop(frame.ref, None)
                if waiter is not None:
                    waiter.settle(kind, frame.payload)
            elif kind is Kind.SEND_CREDIT:
                self._credit(frame.name).give(frame.ref)
            elif kind is Kind.PUBLISH:
                if self.publish_sink is not None:
                    self.publish_sink(frame.name, frame.payload)
            elif kind is Kind.CONTROL:
                self.on_control(frame.name, frame.payload)

    def _lost(self, error: BaseException | None) -> None:
        self._broken = f"the host connection was lost ({error or 'end of stream'})"
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.settle(Kind.CONTROL, self._broken.encode())
        with self._lock:
            credits = list(self._credits.values())
        for credit in credits:
            credit.close()  # senders waiting for credit wake up and see the broken link
        self.on_host_lost(error)

    def wait_written(self, timeout: float) -> None:
        if self._broken is None:
            writer = self.writer
            mark = writer.mark
            writer.kick()  # (frames a put_deferred queued without its kick)
            writer.wait_sent(mark, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until everything this process sent was handed to the socket."""
        return self.writer.flush(timeout)

    def close(self) -> None:
        from ._backends import close_all

        close_all(self)
        self._broken = self._broken or "the host connection was closed"
        if self._lanes is not None:
            self._lanes.close()
        if self._reader is not None:
            self._reader.stop()
        self.writer.close()
        close_socket(self._sock)
