"""The process's role: the host's hub, a child's client, or a standalone hub.

Channels and shared memory ask ``current()`` how to send, receive and call
the store. The host's ``Hub`` owns the store and routes every frame between
children; a ``ChildRuntime`` speaks to the hub over its one connection; with
neither (a plain ``nb run``, nonebug tests) the process becomes a standalone
hub, its own in-memory host where channels deliver within the process.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import random
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..log import logger
from ._channel import Channel, forget_local_ends, local_end, local_ends
from ._dispatch import settle
from ._errors import (
    BrokenPeerError,
    ChannelFullError,
    ChannelNotFoundError,
    CommTimeoutError,
    MessageTooLargeError,
    RemoteError,
)
from ._link import Outbox, Reader, is_message
from ._ops import OPERATIONS, ChannelExists, ChannelNames, Operation, RegisterChannel, fields_of
from ._store import MemoryStore
from ._wire import DEFAULT_MAX_MESSAGE_SIZE, Frame, Kind, dumps, encode, loads

__all__ = ["HOST", "ChildRuntime", "Hub", "Runtime", "current", "install"]

HOST = "@host"
# Set by the host in a child's environment: the child's name, and the host's pid
# (so a grandchild that inherits the variables does not take itself for the child).
CHILD_ENV = "LITEYUKI_CHILD_NAME"
CHILD_PID_ENV = "LITEYUKI_HOST_PID"
DEFAULT_SEND_TIMEOUT = 10.0
DEFAULT_CALL_TIMEOUT = 10.0


def _on_event_loop() -> bool:
    return asyncio._get_running_loop() is not None


class Runtime:
    """What channels and storage need from the process they run in."""

    role = ""
    process_name = ""
    max_message_size = DEFAULT_MAX_MESSAGE_SIZE
    send_timeout = DEFAULT_SEND_TIMEOUT
    call_timeout = DEFAULT_CALL_TIMEOUT
    active_channel: Channel[Any] | None = None
    passive_channel: Channel[Any] | None = None

    def configure(self, config: dict[str, Any]) -> None:
        self.max_message_size = int(config.get("max_message_size", self.max_message_size))
        self.send_timeout = float(config.get("send_timeout", self.send_timeout))
        self.call_timeout = float(config.get("call_timeout", self.call_timeout))

    def _wait(self, timeout: float | None) -> float:
        """How long a full buffer may hold the caller: never on an event loop."""
        if _on_event_loop():
            return 0.0
        return self.send_timeout if timeout is None else timeout

    def send_message(self, name: str, payload: bytes, timeout: float | None) -> None:
        raise NotImplementedError

    def declare_receiver(self, name: str) -> None:
        raise NotImplementedError

    def execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        """Carry out a store or registry operation in the host; the answer pickled (or None)."""
        raise NotImplementedError

    async def async_execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        raise NotImplementedError

    def publish(self, topic: str, payload: bytes) -> None:
        raise NotImplementedError

    def subscribe(self, topic: str) -> None:
        raise NotImplementedError

    # Registry
    def channel_exists(self, name: str) -> bool:
        raw = self.execute(ChannelExists(name))
        return bool(raw and loads(raw))

    def register_channel(self, name: str) -> None:
        self.execute(RegisterChannel(name))

    def channel_names(self) -> list[str]:
        raw = self.execute(ChannelNames())
        return loads(raw) if raw else []


# -- the host -------------------------------------------------------------
class _Route:
    """Where messages on one channel name go."""

    __slots__ = ("name", "owner", "pending", "receivers", "turn")

    def __init__(self, name: str, owner: str | None = None) -> None:
        self.name = name
        self.owner = owner  # child name for '{child}-active' / '{child}-passive'
        self.receivers: list[str] = []
        self.turn = 0
        self.pending: collections.deque[bytes] = collections.deque()

    def pick(self, sender: str, standalone: bool) -> str | None:
        if standalone:
            return HOST
        if self.owner is not None:
            return self.owner if sender != self.owner else HOST
        candidates = [r for r in self.receivers if r != sender]
        if not candidates:
            return None
        self.turn += 1
        return candidates[self.turn % len(candidates)]


class _Peer:
    """The host's side of one child: an outbox that outlives restarts, and a live link."""

    def __init__(self, name: str, outbox_limit: int) -> None:
        self.name = name
        self.outbox = Outbox(name, outbox_limit)
        self.reader: Reader | None = None
        self.sock: socket.socket | None = None
        self.topics: set[str] = set()
        self.generation = 0


class Hub(Runtime):
    """The host (or standalone) runtime: owns the store and routes every frame."""

    def __init__(self, config: dict[str, Any] | None = None, *, standalone: bool = False, name: str = "main") -> None:
        self.role = "standalone" if standalone else "host"
        self.standalone = standalone
        self.process_name = name
        self.configure(config or {})
        self.pending_limit = int((config or {}).get("pending_limit", 100_000))
        self.outbox_limit = int((config or {}).get("outbox_limit", 64 * 1024 * 1024))
        self.store = MemoryStore()
        self._lock = threading.RLock()
        self._routes: dict[str, _Route] = {}
        self._peers: dict[str, _Peer] = {}
        self._topics: set[str] = set()  # topics with a subscriber in this process
        self.on_control: Callable[[str, str, bytes], None] = lambda peer, op, payload: None
        self.on_peer_lost: Callable[[str, BaseException | None], None] = lambda peer, error: None
        if standalone:
            self.active_channel = self.add_route(f"{name}-active")
            self.passive_channel = self.add_route(f"{name}-passive")

    # -- registry -------------------------------------------------------
    def add_route(self, name: str, owner: str | None = None) -> Channel[Any]:
        """Make channel ``name`` known to every process; return the host's end."""
        with self._lock:
            route = self._routes.get(name)
            if route is None:
                self._routes[name] = _Route(name, owner)
            elif owner is not None:
                route.owner = owner
        return local_end(name)

    def add_peer(self, name: str) -> None:
        with self._lock:
            if name not in self._peers:
                self._peers[name] = _Peer(name, self.outbox_limit)
        self.add_route(f"{name}-active", owner=name)
        self.add_route(f"{name}-passive", owner=name)

    def peer_outbox(self, name: str) -> Outbox:
        return self._peers[name].outbox

    def channel_exists(self, name: str) -> bool:
        return name in self._routes or name in local_ends()

    def register_channel(self, name: str) -> None:
        self.add_route(name)

    def channel_names(self) -> list[str]:
        return sorted(set(self._routes) | set(local_ends()))

    # -- routing ----------------------------------------------------------
    def send_message(self, name: str, payload: bytes, timeout: float | None) -> None:
        self.route(name, [payload], HOST, self._wait(timeout))

    def route(self, name: str, payloads: list[bytes], sender: str, wait: float | None) -> None:
        """Deliver payloads sent by ``sender`` on channel ``name`` (host end, a child, or pending)."""
        with self._lock:
            route = self._routes.get(name)
            if route is None:
                route = self._routes[name] = _Route(name)
            target = route.pick(sender, self.standalone)
            if target is None:
                if len(route.pending) + len(payloads) > self.pending_limit:
                    raise ChannelFullError(
                        f"channel {name!r} has no receiver yet and {len(route.pending)} messages "
                        f"waiting (limit {self.pending_limit})"
                    )
                route.pending.extend(payloads)
                return
            if target != HOST and len(payloads) > 1 and route.owner is None:
                # Round-robin per message among several receiving processes.
                for payload in payloads[1:]:
                    self._send_to(route.pick(sender, False) or target, name, payload, wait)
                payloads = payloads[:1]
        if target == HOST:
            local_end(name)._deliver(payloads, wait=sender != HOST)
        else:
            for payload in payloads:
                self._send_to(target, name, payload, wait)

    def _send_to(self, peer: str, name: str, payload: bytes, wait: float | None) -> None:
        self._peers[peer].outbox.put(encode(Kind.MESSAGE, name, payload), timeout=wait, what=f"channel {name!r}")

    def declare_receiver(self, name: str) -> None:
        self._add_receiver(name, HOST)

    def _add_receiver(self, name: str, who: str) -> None:
        with self._lock:
            route = self._routes.get(name)
            if route is None:
                route = self._routes[name] = _Route(name)
            if who not in route.receivers:
                route.receivers.append(who)
            pending = list(route.pending)
            route.pending.clear()
        if pending:
            if who == HOST:
                local_end(name)._deliver(pending)
            else:
                for payload in pending:
                    self._send_to(who, name, payload, None)

    # -- store ------------------------------------------------------------
    def execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        match op:
            # A child's registry calls see what the host's own calls see.
            case ChannelExists(name):
                return dumps(self.channel_exists(name))
            case RegisterChannel(name):
                self.register_channel(name)
                return None
            case ChannelNames():
                return dumps(self.channel_names())
        return self.store.execute(op)

    async def async_execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        return self.execute(op, timeout)

    # -- pub/sub ----------------------------------------------------------
    def publish(self, topic: str, payload: bytes) -> None:
        self._publish(topic, payload)

    def _publish(self, topic: str, payload: bytes) -> None:
        from .storage import _deliver_publish

        if topic in self._topics:
            _deliver_publish(topic, payload)
        frame = None
        with self._lock:
            peers = [p for p in self._peers.values() if topic in p.topics]
        for peer in peers:
            frame = frame or encode(Kind.PUBLISH, topic, payload)
            try:
                peer.outbox.put(frame, timeout=0 if _on_event_loop() else self.send_timeout, what=f"topic {topic!r}")
            except (ChannelFullError, BrokenPeerError) as exc:
                logger.error(f"publish on {topic!r} did not reach {peer.name!r}: {exc}")

    def subscribe(self, topic: str) -> None:
        self._topics.add(topic)

    # -- children -----------------------------------------------------------
    def attach(self, name: str, sock: socket.socket) -> None:
        """Connect child ``name``'s socket: start reading it and flush its outbox."""
        peer = self._peers[name]
        with self._lock:
            peer.generation += 1
            generation = peer.generation
            peer.sock = sock
            peer.topics = set()
            peer.reader = Reader(
                sock,
                name,
                lambda frames: self._on_frames(peer, frames),
                lambda error: self._lost(peer, generation, error),
                self.max_message_size,
            )
        peer.outbox.attach(sock)
        peer.reader.start()

    def detach(self, name: str) -> None:
        """Forget child ``name``'s connection; keep channel messages queued for its successor."""
        peer = self._peers.get(name)
        if peer is None:
            return
        with self._lock:
            peer.generation += 1
            reader, sock = peer.reader, peer.sock
            peer.reader = peer.sock = None
            peer.topics = set()
            for route in self._routes.values():
                if name in route.receivers:
                    route.receivers.remove(name)
        if reader is not None:
            reader.stop()
        peer.outbox.detach(keep=is_message)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def control(self, name: str, op: str, payload: bytes = b"", timeout: float = 1.0) -> None:
        """Send a control frame to child ``name`` if it is connected; raise if it is not."""
        peer = self._peers.get(name)
        if peer is None or peer.sock is None:
            raise BrokenPeerError(f"process {name!r} is not connected")
        peer.outbox.put(encode(Kind.CONTROL, op, payload), timeout=timeout)

    def _lost(self, peer: _Peer, generation: int, error: BaseException | None) -> None:
        if peer.generation != generation:
            return
        self.on_peer_lost(peer.name, error)

    def _on_frames(self, peer: _Peer, frames: list[Frame]) -> None:
        for frame, payloads in message_runs(frames):
            kind = frame.kind
            if payloads is not None:
                try:
                    self.route(frame.name, payloads, peer.name, self.send_timeout)
                except (ChannelFullError, BrokenPeerError) as exc:
                    logger.error(f"dropped {len(payloads)} message(s) from {peer.name!r} on {frame.name!r}: {exc}")
            elif kind is Kind.REQUEST:
                self._serve(peer, frame)
            elif kind is Kind.PUBLISH:
                self._publish(frame.name, frame.payload)
            elif kind is Kind.SUBSCRIBE:
                with self._lock:
                    peer.topics.add(frame.name)
            elif kind is Kind.RECEIVER:
                self._add_receiver(frame.name, peer.name)
            elif kind is Kind.CONTROL:
                self.on_control(peer.name, frame.name, frame.payload)
            else:
                logger.warning(f"child {peer.name!r} sent an unexpected {kind.name} frame; ignored")

    def _serve(self, peer: _Peer, frame: Frame) -> None:
        op_class = OPERATIONS.get(frame.name)
        try:
            if op_class is None:
                raise RemoteError(f"unknown operation {frame.name!r}")
            result = self.execute(op_class(*loads(frame.payload, what=f"arguments of {frame.name!r}")))
            if result is not None and len(result) > self.max_message_size:
                # The child's reader would take a frame this large for garbage and drop the link.
                raise MessageTooLargeError(
                    f"the answer to {op_class.method!r} is {len(result)} bytes pickled, "
                    f"above the maximum message size of {self.max_message_size}"
                )
            reply = encode(Kind.RESULT, "", result or b"", frame.ref)
        except Exception as exc:  # the caller gets it, with its own type where it pickles
            reply = encode(Kind.FAILURE, "", _pickle_error(exc), frame.ref)
        try:
            peer.outbox.put(reply, timeout=self.send_timeout, direct=True)
        except (ChannelFullError, BrokenPeerError) as exc:
            logger.error(f"could not answer {peer.name!r}: {exc}")

    def close(self) -> None:
        """Drop every child link and this process's channel ends (the host is done)."""
        for name in list(self._peers):
            self.detach(name)
            self._peers[name].outbox.close()
        forget_local_ends()
        if _current is self:
            install(None)


def message_runs(frames: list[Frame]) -> Iterator[tuple[Frame, list[bytes] | None]]:
    """Each frame, except that a run of MESSAGE frames on one channel comes as one item
    with all their payloads (delivered or routed in one go); other frames come with None."""
    i, n = 0, len(frames)
    while i < n:
        frame = frames[i]
        if frame.kind is not Kind.MESSAGE:
            yield frame, None
            i += 1
            continue
        j = i + 1
        while j < n and frames[j].kind is Kind.MESSAGE and frames[j].name == frame.name:
            j += 1
        yield frame, [f.payload for f in frames[i:j]]
        i = j


def _pickle_error(exc: BaseException) -> bytes:
    try:
        raw = dumps(exc)
        loads(raw)
        return raw
    except Exception:
        return dumps(RemoteError(f"{type(exc).__name__}: {exc}"))


# -- a child ---------------------------------------------------------------
class _Waiter:
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
            try:
                self.loop.call_soon_threadsafe(settle, self.fut)  # type: ignore[union-attr]
            except RuntimeError:
                pass

    def wait(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=timeout)

    def outcome(self) -> bytes | None:
        if self.kind is Kind.RESULT:
            return self.payload or None
        if self.kind is Kind.FAILURE:
            raise loads(self.payload, what="error from the host")
        raise BrokenPeerError(self.payload.decode() or "the host connection was lost")


class ChildRuntime(Runtime):
    """A child's side of its one connection to the host."""

    role = "child"

    def __init__(self, name: str, config: dict[str, Any] | None = None) -> None:
        self.process_name = name
        self.configure(config or {})
        self.outbox = Outbox("host", int((config or {}).get("outbox_limit", 64 * 1024 * 1024)))
        self._pending: dict[int, _Waiter] = {}
        self._refs = itertools.count(random.randrange(1 << 32))
        self._broken: str | None = None
        self._topics: set[str] = set()
        self.on_control: Callable[[str, bytes], None] = lambda op, payload: None
        self.on_host_lost: Callable[[BaseException | None], None] = lambda error: None
        self.active_channel = local_end(f"{name}-active")
        self.passive_channel = local_end(f"{name}-passive")
        self._sock: socket.socket | None = None
        self._reader: Reader | None = None

    def connect(self, sock: socket.socket) -> None:
        """Start talking to the host on ``sock``; frames queued until now go first."""
        sock.settimeout(1.0)  # the rebuilt socket forgets the timeout mode the fd is in
        # The fd arrives inheritable: a program this child runs (os.system, exec) would hold
        # the host link and could send it frames — pickles the host unpickles.
        sock.set_inheritable(False)
        self._sock = sock
        self._reader = Reader(sock, "host", self._on_frames, self._lost, self.max_message_size)
        self.outbox.attach(sock)
        self._reader.start()

    def control(self, op: str, payload: bytes = b"") -> None:
        self.outbox.put(encode(Kind.CONTROL, op, payload), timeout=1.0)

    def send_message(self, name: str, payload: bytes, timeout: float | None) -> None:
        self._check_alive()
        self.outbox.put(encode(Kind.MESSAGE, name, payload), timeout=self._wait(timeout), what=f"channel {name!r}")

    def declare_receiver(self, name: str) -> None:
        if self._broken is None:
            self.outbox.put(encode(Kind.RECEIVER, name), timeout=self.send_timeout)

    def publish(self, topic: str, payload: bytes) -> None:
        self._check_alive()
        self.outbox.put(encode(Kind.PUBLISH, topic, payload), timeout=self._wait(None), what=f"topic {topic!r}")

    def subscribe(self, topic: str) -> None:
        if topic not in self._topics:
            self._topics.add(topic)
            self.outbox.put(encode(Kind.SUBSCRIBE, topic), timeout=self.send_timeout)

    def _check_alive(self) -> None:
        if self._broken is not None:
            raise BrokenPeerError(self._broken)

    def _request(self, op: Operation, waiter: _Waiter) -> int:
        self._check_alive()
        ref = next(self._refs)
        self._pending[ref] = waiter
        # On an event loop the writer thread writes the request: a direct write could
        # block the loop on a stalled host, and requests made in one loop iteration
        # (asyncio.gather) coalesce into one write. Elsewhere the caller writes it itself.
        on_loop = _on_event_loop()
        try:
            self.outbox.put(
                encode(Kind.REQUEST, type(op).__name__, dumps(fields_of(op), self.max_message_size), ref),
                timeout=0 if on_loop else self.send_timeout,
                direct=not on_loop,
            )
        except BaseException:
            self._pending.pop(ref, None)
            raise
        if self._broken is not None and self._pending.pop(ref, None) is not None:
            raise BrokenPeerError(self._broken)
        return ref

    def execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        waiter = _Waiter()
        ref = self._request(op, waiter)
        limit = self.call_timeout if timeout is None else timeout
        if not waiter.wait(limit):
            self._pending.pop(ref, None)
            raise CommTimeoutError(f"the host did not answer {op.method!r} within {limit} s")
        return waiter.outcome()

    async def async_execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        loop = asyncio.get_running_loop()
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

    def _on_frames(self, frames: list[Frame]) -> None:
        for frame, payloads in message_runs(frames):
            kind = frame.kind
            if payloads is not None:
                local_end(frame.name)._deliver(payloads)
            elif kind is Kind.RESULT or kind is Kind.FAILURE:
                waiter = self._pending.pop(frame.ref, None)
                if waiter is not None:
                    waiter.settle(kind, frame.payload)
            elif kind is Kind.PUBLISH:
                from .storage import _deliver_publish

                _deliver_publish(frame.name, frame.payload)
            elif kind is Kind.CONTROL:
                self.on_control(frame.name, frame.payload)

    def _lost(self, error: BaseException | None) -> None:
        self._broken = f"the host connection was lost ({error or 'end of stream'})"
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.settle(Kind.CONTROL, self._broken.encode())
        self.on_host_lost(error)

    def close(self) -> None:
        self._broken = self._broken or "the host connection was closed"
        if self._reader is not None:
            self._reader.stop()
        self.outbox.close()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass


# -- the current runtime ----------------------------------------------------
_current: Runtime | None = None
_current_lock = threading.Lock()


def current() -> Runtime:
    """This process's runtime; a standalone hub when no host or child set one up."""
    runtime = _current
    if runtime is not None:
        return runtime
    with _current_lock:
        if _current is None:
            child = os.environ.get(CHILD_ENV)
            if child and os.environ.get(CHILD_PID_ENV) == str(os.getppid()):
                # A child of a liteyuki host, importing user code before the bootstrap
                # connected: its runtime exists already, the connection comes later.
                install(ChildRuntime(child))
            else:
                install(Hub(standalone=True, name=os.environ.get("LITEYUKI_PROCESS_NAME", "nonebot")))
        return _current  # type: ignore[return-value]


def install(runtime: Runtime | None) -> None:
    """Make ``runtime`` this process's runtime (None: back to lazy standalone)."""
    global _current
    _current = runtime


def lookup_channel(name: str) -> Channel[Any]:
    runtime = current()
    ends = local_ends()
    if name in ends:
        return ends[name]
    if runtime.channel_exists(name):
        return local_end(name)
    known = ", ".join(repr(n) for n in runtime.channel_names()[:20]) or "none"
    raise ChannelNotFoundError(f"no channel named {name!r} (known channels: {known})")
