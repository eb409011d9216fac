"""The host's hub: owns the store and routes every channel message between processes.

Routing rules (one per channel name, see docs/ARCHITECTURE.md):

- A message goes to exactly one receiving end, round-robin over the ends
  that have credit, never to an end in the sending process (a standalone
  process is its own host: there it goes to its own end).
- Messages wait in the channel's queue, in send order, while no receiving
  end has credit; a receiving end is handed messages only against the credit
  it granted (its free buffer), so nobody ever waits to deliver.
- Every sender holds a window of ``pending_limit`` messages per channel in
  that queue; the host gives a child's credit back as its messages leave the
  queue. A sender without credit waits (or is refused), nothing is dropped.
- Messages handed to a child stay in the host's ledger until the child
  reports them consumed; when its end closes or its process dies, the rest go
  back to the front of the queue for the other ends (at-least-once there).

The hub's lock guards only bookkeeping: no one waits while holding it, and
writes under it never block (``Writer.put`` with no wait).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import pickle
import socket
import threading
from collections.abc import Callable
from typing import Any

from .._threads import QuietThread
from ._credit import Credit
from ._errors import BrokenPeerError, ChannelFullError, MessageTooLargeError, ProtocolError, RemoteError
from ._lanes import serve_handoff
from ._link import HIGH_WATER, Reader, Writer, close_socket
from ._ops import OPERATIONS, STORE_OPERATIONS, ChannelExists, ChannelNames, Operation, RegisterChannel, fields_of
from ._runtime_base import RuntimeBase, on_event_loop
from ._store import MemoryStore
from ._wire import Frame, Kind, MessageHead, Run, dumps, encode, header, loads, pack_length

__all__ = ["HOST", "Hub"]

HOST = ""  # the host process, in routing tables
_RESULT = Kind.RESULT
# How long a sync sender waits for a child's link to make progress (a write finish)
# before taking the child for one that does not read (see Writer.wait_for_room). Not
# shorter: a child busy in C code starves its own reader of the GIL for ~0.1 s at a time.
_ROOM_WAIT = 0.5
_RETURNED = "\0returned"  # sender of a message handed back by an end that left: matches no process


class _Receiver:
    """One receiving end of a channel: in the host, or in a child."""

    __slots__ = ("credit", "inflight", "peer", "process", "returned", "sink")

    def __init__(self, process: str, credit: int, sink: Any = None, peer: _Peer | None = None) -> None:
        self.process = process
        self.credit = credit
        self.sink = sink  # the host's own end
        self.peer = peer  # the child's link; None for the host's own end
        # (sequence number, payload) handed to this end and not yet reported consumed
        self.inflight: collections.deque[tuple[int, bytes]] = collections.deque()
        # Messages it reported consumed but gives back unhandled (it closed mid-batch); they
        # go back to the channel with its withdrawal, ahead of the ledger's (see _hand_back).
        self.returned: list[bytes] | None = None


class _Route:
    """Where messages on one channel name go."""

    __slots__ = ("dropped", "head", "host_credit", "name", "next_seq", "pending", "receivers", "registered", "turn")

    def __init__(self, name: str, window: int) -> None:
        self.name = name
        self.head = MessageHead(name.encode())
        self.receivers: list[_Receiver] = []
        self.turn = 0
        # (sequence number, sender process, sender generation or -1 when no credit is owed, payload)
        self.pending: collections.deque[tuple[int, str, int, bytes]] = collections.deque()
        self.next_seq = 0  # messages are numbered as they reach the queue: send order
        self.host_credit = Credit(window)  # what the host's own senders may still queue here
        self.registered = False  # set_channel() or a child's own channel: kept while nobody uses it
        self.dropped = False  # forgotten (idle, unregistered): a sender holding it looks again


class _Peer:
    """The host's side of one child."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.generation = 0
        self.writer: Writer | None = None
        self.reader: Reader | None = None
        self.sock: socket.socket | None = None
        self.topics: set[str] = set()
        self.queued: collections.Counter[str] = collections.Counter()  # its messages waiting per channel
        self.publish_dropped = 0
        self.backed_up = False  # messages were held back: it stopped reading
        self.frames_read = 0  # frames of its main link handled so far (lane requests fence on it)
        self.fence = threading.Condition(threading.Lock())
        self.fence_waiters = 0


class Hub(RuntimeBase):
    """The host (or standalone) runtime: owns the store and routes every frame."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        standalone: bool = False,
        name: str = "main",
        local_names: Callable[[], list[str]] = list,
    ) -> None:
        self.role = "standalone" if standalone else "host"
        self.standalone = standalone
        self.process_name = name
        self.configure(config or {})
        self.outbox_limit = int((config or {}).get("outbox_limit", 64 * 1024 * 1024))
        self.store = self.store_backend or MemoryStore()
        self._local_names = local_names
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {}
        self._peers: dict[str, _Peer] = {}
        self._topics: set[str] = set()  # topics with a subscriber in this process
        self.on_control: Callable[[str, str, bytes], None] = lambda peer, op, payload: None
        self.on_peer_lost: Callable[[str, BaseException | None], None] = lambda peer, error: None
        self.own_channels = (f"{name}-active", f"{name}-passive") if standalone else None
        if standalone:
            for chan in self.own_channels or ():
                self.register_channel(chan)

    # -- registry -------------------------------------------------------
    def _route(self, name: str) -> _Route:
        """The route of ``name`` (lock held), created on first use."""
        route = self._routes.get(name)
        if route is None:
            route = self._routes[name] = _Route(name, self.window)
        return route

    def register_channel(self, name: str) -> None:
        with self._lock:
            self._route(name).registered = True

    def add_peer(self, name: str) -> None:
        """Make child ``name`` known; its two channels exist from now on."""
        with self._lock:
            if name not in self._peers:
                self._peers[name] = _Peer(name)
            self._route(f"{name}-active").registered = True
            self._route(f"{name}-passive").registered = True

    def _forget_if_idle(self, route: _Route) -> None:
        """Drop ``route`` once nothing refers to it (lock held): an unregistered channel whose
        last end closed, nothing queued, no credit out. Channels made and closed per request
        (a reply channel each) otherwise left ~2.4 KB each in the host for good."""
        if route.registered or route.receivers or route.pending:
            return
        credit = route.host_credit
        if credit.available != self.window or credit.waiting():
            return
        name = route.name
        if any(peer.queued.get(name) for peer in self._peers.values()):
            return
        route.dropped = True
        del self._routes[name]

    def channel_exists(self, name: str) -> bool:
        return name in self._routes or name in self._local_names()

    def channel_names(self) -> list[str]:
        return sorted(set(self._routes) | set(self._local_names()))

    # -- sending from this process ---------------------------------------
    def send(self, name: str, payload: bytes, timeout: float | None) -> None:
        route = self._routes.get(name)
        if route is None:
            with self._lock:
                route = self._route(name)
        receivers = route.receivers
        room_waited = False
        idle: Writer | None = None  # the frame went to an idle link: written below, unlocked
        while True:
            wait_on: Writer | None = None
            with self._lock:
                if route.dropped:  # forgotten since we looked it up: the channel's route now
                    route = self._route(name)
                    receivers = route.receivers
                # The common case, kept short: nothing waits on the channel and an end has
                # credit, so the message goes straight there (the choice _pump would make) and
                # never occupies this process's pending window. One child end with credit that
                # is reading is the commonest of all (a child's passive channel): done inline.
                if not route.pending:
                    if len(receivers) == 1:
                        receiver = receivers[0]
                        peer = receiver.peer
                        if receiver.credit > 0 and peer is not None and (writer := peer.writer) is not None:
                            queued = writer.queued_bytes
                            if queued > HIGH_WATER and not room_waited and not writer.stalled and not on_event_loop():
                                wait_on = writer  # megabytes ahead of a reading child: wait, unlocked
                            elif queued <= self.outbox_limit:
                                # _hand for a child end, inlined, and the frame's parts built here
                                # (see MessageHead): ~0.3 us of a ~2 us send.
                                seq = route.next_seq
                                route.next_seq = seq + 1
                                receiver.credit -= 1
                                receiver.inflight.append((seq, payload))
                                head = route.head
                                n = len(payload)
                                if not writer.put_deferred(
                                    (pack_length(head.base + n), head.tail, payload), head.overhead + n
                                ):
                                    return
                                idle = writer
                                break
                    if wait_on is None:
                        receiver = self._pick(route, HOST)
                        if receiver is not None:
                            self._hand(route, receiver, payload)
                            return
            if wait_on is None:
                break
            # Once per send, within the send's own timeout: a child that makes no progress
            # for _ROOM_WAIT is taken for one that does not read (see Writer.wait_for_room).
            room_waited = True
            wait_on.wait_for_room(_ROOM_WAIT, self.send_timeout if timeout is None else timeout)
        if idle is not None:
            idle.kick()
            return
        if not route.host_credit.try_take():
            if on_event_loop():
                raise self._full(name)
            wait = self.send_timeout if timeout is None else timeout
            if not route.host_credit.take(wait):
                raise self._full(name)
        self._queue_local(route, payload)

    async def async_send(self, name: str, payload: bytes, timeout: float | None) -> None:
        with self._lock:
            route = self._route(name)
        if not await route.host_credit.take_async(timeout):
            raise self._full(name)
        self._queue_local(route, payload)

    def _queue_local(self, route: _Route, payload: bytes) -> None:
        """Queue a message sent by this process against its credit (taken), or hand it over."""
        with self._lock:
            if route.dropped:  # (it had no credit out when forgotten: ours came after; not owed)
                route = self._route(route.name)
                route.host_credit.try_take()
            if not route.pending:
                receiver = self._pick(route, HOST)
                if receiver is not None:
                    self._hand(route, receiver, payload)
                    route.host_credit.give(1)
                    return
            seq = route.next_seq
            route.next_seq = seq + 1
            route.pending.append((seq, HOST, 0, payload))
            self._pump(route)

    def _hand(self, route: _Route, receiver: _Receiver, payload: bytes) -> None:
        """Give the next message of ``route`` straight to ``receiver`` (lock held)."""
        seq = route.next_seq
        route.next_seq = seq + 1
        receiver.credit -= 1
        receiver.inflight.append((seq, payload))
        peer = receiver.peer
        if peer is None:
            receiver.sink.deliver([payload])
        elif (writer := peer.writer) is not None:
            writer.put(route.head.parts(payload))

    def _full(self, name: str) -> ChannelFullError:
        return ChannelFullError(
            f"channel {name!r} is full: {self.window} messages sent by this process are waiting "
            f"for a receiving end with room (pending_limit {self.window})"
        )

    # -- receiving ends of this process ------------------------------------
    def declare_receiver(self, sink: Any) -> None:
        with self._lock:
            route = self._route(sink.name)
            self._add_receiver(route, HOST, sink.capacity, sink)
            self._pump(route)

    def consumed(self, name: str, n: int, urgent: bool = False) -> None:
        # (urgent: a child writes its report at once; the host's own ends have nothing to write)
        with self._lock:
            route = self._routes.get(name)
            receiver = route and _find(route, HOST)
            if receiver is None:
                return
            receiver.credit += n
            _pop_consumed(receiver, n)
            self._pump(route)

    def interrupt_senders(self, name: str) -> None:
        """This process's end of ``name`` closed: its sends waiting for credit give up."""
        route = self._routes.get(name)
        if route is not None:
            route.host_credit.interrupt()

    def withdraw(self, sink: Any, consumed: int, returned: list[bytes] | None = None) -> None:
        with self._lock:
            route = self._routes.get(sink.name)
            receiver = route and _find(route, HOST)
            if route is None or receiver is None or receiver.sink is not sink:
                return  # (a newer end of this process holds the name: not ours to withdraw)
            route.receivers.remove(receiver)
            sink.take_unconsumed()  # the same messages as the ledger's, which has their numbers
            _pop_consumed(receiver, consumed)
            receiver.returned = returned
            _hand_back(route, receiver)
            self._pump(route)
            self._forget_if_idle(route)

    def _add_receiver(self, route: _Route, process: str, capacity: int, sink: Any = None) -> None:
        receiver = _find(route, process)
        if receiver is None:
            route.receivers.append(_Receiver(process, capacity, sink, self._peers.get(process)))
        else:  # declared again (a new buffer size): credit is what is free of it
            receiver.credit = capacity - len(receiver.inflight)
            receiver.sink = sink

    # -- routing ----------------------------------------------------------
    def _pick(self, route: _Route, sender: str) -> _Receiver | None:
        receivers = route.receivers
        n = len(receivers)
        if n == 1:  # the common case: one receiving end (a child's passive channel)
            receiver = receivers[0]
            if receiver.credit > 0 and (receiver.process != sender or self.standalone):
                peer = receiver.peer
                if peer is None or not self._backed_up(peer):
                    return receiver
            return None
        turn = route.turn
        for k in range(n):
            i = (turn + k) % n
            receiver = receivers[i]
            if receiver.credit > 0 and (receiver.process != sender or self.standalone):
                peer = receiver.peer
                if peer is not None and self._backed_up(peer):
                    continue
                route.turn = i + 1
                return receiver
        return None

    def _backed_up(self, peer: _Peer) -> bool:
        """Is the child not reading (more than ``outbox_limit`` bytes waiting for it)? Then its
        messages wait in the channel queues, where its credit or another end can take them."""
        writer = peer.writer
        if writer is not None and writer.queued_bytes > self.outbox_limit:
            peer.backed_up = True
            return True
        return False

    def _drained(self, peer: _Peer, generation: int) -> None:
        if not peer.backed_up or peer.generation != generation:
            return
        with self._lock:
            peer.backed_up = False
            for route in self._routes.values():
                if route.pending and _find(route, peer.name) is not None:
                    self._pump(route)

    def _pump(self, route: _Route) -> None:
        """Hand queued messages to receiving ends with credit, in order (lock held).

        A message no end may take yet (its only ends are in its sender's process,
        or have no credit) does not hold up messages of other senders behind it;
        messages of one sender keep their order (once one waits, the rest wait).
        """
        pending = route.pending
        if not pending or not route.receivers:
            return
        local: dict[int, tuple[Any, list[bytes]]] = {}
        host_done = 0
        grants: dict[str, int] | None = None
        peers = self._peers
        waiting: list[tuple[int, str, int, bytes]] = []
        blocked: set[str] = set()
        while pending:
            entry = pending.popleft()
            seq, sender, generation, payload = entry
            receiver = None if sender in blocked else self._pick(route, sender)
            if receiver is None:
                waiting.append(entry)
                if sender not in blocked:
                    blocked.add(sender)
                    if not any(
                        r.credit > 0 and (r.process == HOST or not peers[r.process].backed_up) for r in route.receivers
                    ):
                        break  # nobody has room: the rest waits as it is
                continue
            receiver.credit -= 1
            if generation >= 0:
                if sender == HOST:
                    host_done += 1
                else:
                    peer = peers.get(sender)
                    if peer is not None and peer.generation == generation:
                        queued = peer.queued
                        if queued[route.name] > 1:
                            queued[route.name] -= 1
                        else:  # none left: no key kept for names used once (a reply channel each)
                            queued.pop(route.name, None)
                        if grants is None:
                            grants = {}
                        grants[sender] = grants.get(sender, 0) + 1
            receiver.inflight.append((seq, payload))
            if receiver.process == HOST:
                local.setdefault(id(receiver), (receiver.sink, []))[1].append(payload)
            else:
                peer = peers[receiver.process]
                if peer.writer is not None:
                    peer.writer.put(route.head.parts(payload))
        if waiting:
            pending.extendleft(reversed(waiting))
        for sink, payloads in local.values():
            sink.deliver(payloads)
        if host_done:
            route.host_credit.give(host_done)
        for name, n in (grants or {}).items():
            writer = peers[name].writer
            if writer is not None:
                writer.put((encode(Kind.SEND_CREDIT, route.name, b"", n),))

    # -- store ------------------------------------------------------------
    def execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        if type(op) in STORE_OPERATIONS:  # the hot case, before three class patterns (~0.5 us)
            backend = self.store_backend
            return self.store.execute(op) if backend is None else backend.execute(op, timeout)
        match op:
            # A child's registry calls see what the host's own calls see.
            case ChannelExists(name):
                return dumps(self.channel_exists(name))
            case RegisterChannel(name):
                self.register_channel(name)
                return None
            case ChannelNames():
                return dumps(self.channel_names())
        if self.store_backend is not None:
            return self.store_backend.execute(op, timeout)
        return self.store.execute(op)

    async def async_execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        backend = self.store_backend
        if backend is not None and type(op) in STORE_OPERATIONS:
            return await backend.async_execute(op, timeout)
        return self.execute(op, timeout)

    # -- pub/sub ----------------------------------------------------------
    def publish(self, topic: str, payload: bytes) -> None:
        backend = self.pubsub_backend
        if backend is not None:  # Redis delivers it back to deliver_publish, here as everywhere
            backend.publish(topic, payload)
        else:
            self.deliver_publish(topic, payload)

    def deliver_publish(self, topic: str, payload: bytes) -> None:
        """This process's subscribers, and children that subscribed over their link."""
        if topic in self._topics and self.publish_sink is not None:
            self.publish_sink(topic, payload)
        frame = None
        with self._lock:
            peers = [p for p in self._peers.values() if topic in p.topics and p.writer is not None]
        for peer in peers:
            frame = frame or encode(Kind.PUBLISH, topic, payload)
            writer = peer.writer
            if writer is None:
                continue
            if writer.queued_bytes > self.outbox_limit:
                # Pub/sub is fire-and-forget (as in Redis): a subscriber whose process stopped
                # reading loses publishes past the limit. Counted, logged, documented.
                peer.publish_dropped += 1
                if peer.publish_dropped & (peer.publish_dropped - 1) == 0:  # 1, 2, 4, 8 ...
                    from ..log import logger

                    logger.error(
                        f"process {peer.name!r} is not reading: {peer.publish_dropped} publish(es) "
                        f"dropped for it so far ({writer.queued_bytes} bytes waiting)"
                    )
                continue
            try:
                writer.put((frame,))
            except BrokenPeerError:
                pass  # gone: it has no subscribers any more

    def subscribe(self, topic: str) -> None:
        self._topics.add(topic)
        if self.pubsub_backend is not None:
            self.pubsub_backend.subscribe(topic)

    # -- children -----------------------------------------------------------
    def attach(self, name: str, sock: socket.socket, handoff: socket.socket | None = None) -> None:
        """Connect child ``name``'s socket (and the socket its threads' lanes come over)."""
        peer = self._peers[name]
        with self._lock:
            peer.generation += 1
            generation = peer.generation
            peer.frames_read = 0
            peer.sock = sock
            peer.topics = set()
            peer.queued = collections.Counter()
            peer.writer = Writer(name)
            peer.writer.on_drained = lambda: self._drained(peer, generation)
            peer.backed_up = False
            peer.reader = Reader(
                sock,
                name,
                lambda runs, count: self._on_frames(peer, generation, runs, count),
                lambda error: self._lost(peer, generation, error),
                self.max_message_size,  # [#11] the decoder adds a request's and a frame's own room
            )
        peer.writer.attach(sock)
        peer.reader.start()
        if handoff is not None:
            QuietThread(
                target=serve_handoff,
                args=(
                    handoff,
                    name,
                    self._answer,
                    peer,
                    lambda fence: self._wait_for_fence(peer, generation, fence),
                    self.max_message_size,
                    lambda error: self._lost(peer, generation, error),
                ),
                name=f"liteyuki-lanes-{name}",
                daemon=True,
            ).start()

    def _wait_for_fence(self, peer: _Peer, generation: int, fence: int) -> None:
        """Hold a lane's request until the main link's frames sent before it are handled."""
        if peer.frames_read >= fence:
            return
        with peer.fence:
            peer.fence_waiters += 1
            try:
                peer.fence.wait_for(
                    lambda: peer.frames_read >= fence or peer.generation != generation, self.call_timeout
                )
            finally:
                peer.fence_waiters -= 1

    def detach(self, name: str, drain: float = 5.0) -> None:
        """Forget child ``name``'s connection once its process is gone.

        What it sent is read to the end of the stream first (up to ``drain``
        seconds); what it was handed but had not consumed goes back to the
        channels' queues for the other ends or its successor.
        """
        peer = self._peers.get(name)
        if peer is None:
            return
        reader = peer.reader
        if reader is not None and drain > 0:
            reader.join(drain)
        with self._lock:
            peer.generation += 1
            reader, sock, writer = peer.reader, peer.sock, peer.writer
            peer.reader = peer.sock = peer.writer = None
            peer.topics = set()
            touched = []
            for route in self._routes.values():
                receiver = _find(route, name)
                if receiver is not None:
                    route.receivers.remove(receiver)
                    _hand_back(route, receiver)
                    touched.append(route)
            for route in touched:
                self._pump(route)
                self._forget_if_idle(route)
        if reader is not None:
            reader.stop()
        if writer is not None:
            writer.close()
        close_socket(sock)

    def control(self, name: str, op: str, payload: bytes = b"", timeout: float = 1.0) -> None:
        """Send a control frame to child ``name``; ``BrokenPeerError`` if it is not connected."""
        peer = self._peers.get(name)
        writer = peer.writer if peer is not None else None
        if writer is None:
            raise BrokenPeerError(f"process {name!r} is not connected")
        writer.put((encode(Kind.CONTROL, op, payload),))

    def _lost(self, peer: _Peer, generation: int, error: BaseException | None) -> None:
        if peer.generation == generation:
            self.on_peer_lost(peer.name, error)

    def _on_frames(self, peer: _Peer, generation: int, runs: list[Run], count: int) -> None:
        if peer.generation != generation:
            return
        try:
            self._handle_frames(peer, runs)
        finally:
            peer.frames_read += count
            if peer.fence_waiters:
                with peer.fence:
                    peer.fence.notify_all()

    def _handle_frames(self, peer: _Peer, runs: list[Run]) -> None:
        for frame, payloads in runs:
            kind = frame.kind
            if payloads is not None:
                self._from_peer(peer, frame.name, payloads)
            elif kind is Kind.REQUEST:
                self._serve(peer, frame)
            elif kind is Kind.CONSUMED:
                self._peer_consumed(peer, frame.name, frame.ref, withdraw=False)
            elif kind is Kind.RECEIVER:
                with self._lock:
                    route = self._route(frame.name)
                    self._add_receiver(route, peer.name, frame.ref)
                    self._pump(route)
            elif kind is Kind.WITHDRAW:
                self._peer_consumed(peer, frame.name, frame.ref, withdraw=True)
                # Acknowledged after everything sent to the withdrawn end: the child drops what
                # arrives for the name until then (we hand it back), and gives what follows to
                # a new end of that name (whose RECEIVER we read after this WITHDRAW).
                writer = peer.writer
                if writer is not None:
                    writer.put((encode(Kind.WITHDRAW, frame.name),))
            elif kind is Kind.RETURN:
                self._peer_returned(peer, frame.name, frame.payload)
            elif kind is Kind.PUBLISH:
                self.publish(frame.name, frame.payload)
            elif kind is Kind.SUBSCRIBE:
                peer.topics.add(frame.name)
                if self.pubsub_backend is not None:
                    self.pubsub_backend.subscribe(frame.name, wait=False)
            elif kind is Kind.CONTROL:
                self.on_control(peer.name, frame.name, frame.payload)
            else:  # well-formed but meaningless here (an answer nobody asked for): tolerated
                from ..log import logger

                logger.warning(f"child {peer.name!r} sent an unexpected {kind.name} frame; ignored")

    def _from_peer(self, peer: _Peer, name: str, payloads: list[bytes]) -> None:
        idle = self._from_peer_locked(peer, name, payloads)
        if idle is not None:
            idle.kick()  # the credit frame, written with the routing lock released (see put_deferred)

    def _from_peer_locked(self, peer: _Peer, name: str, payloads: list[bytes]) -> Writer | None:
        with self._lock:
            route = self._route(name)
            queued = peer.queued[name] + len(payloads)
            if queued > self.window:
                raise ProtocolError(f"child {peer.name!r} sent {queued} messages on {name!r} beyond its credit")
            if not route.pending and len(route.receivers) == 1:
                # The common case, kept short: nothing waits and one end has credit for the
                # run: it goes there whole (what _pump would do), and the sender's credit
                # comes straight back, since none of it ever waited in the queue.
                receiver = route.receivers[0]
                n = len(payloads)
                if receiver.credit >= n and (receiver.process != peer.name or self.standalone):
                    target = receiver.peer
                    if target is None or not self._backed_up(target):
                        self._hand_run(route, receiver, payloads)
                        writer = peer.writer
                        if writer is not None and writer.put_deferred((encode(Kind.SEND_CREDIT, name, b"", n),)):
                            return writer
                        return None
            peer.queued[name] = queued
            generation = peer.generation
            seq = route.next_seq
            route.pending.extend((seq + i, peer.name, generation, p) for i, p in enumerate(payloads))
            route.next_seq = seq + len(payloads)
            self._pump(route)
        return None

    def _hand_run(self, route: _Route, receiver: _Receiver, payloads: list[bytes]) -> None:
        """Give a run of messages straight to ``receiver``, which has credit for all (lock held)."""
        seq = route.next_seq
        n = len(payloads)
        route.next_seq = seq + n
        receiver.credit -= n
        receiver.inflight.extend(zip(range(seq, seq + n), payloads, strict=True))
        peer = receiver.peer
        if peer is None:
            receiver.sink.deliver(payloads)
        elif (writer := peer.writer) is not None:
            parts = route.head.parts
            for payload in payloads:
                writer.put(parts(payload))

    def _peer_consumed(self, peer: _Peer, name: str, n: int, withdraw: bool) -> None:
        with self._lock:
            route = self._routes.get(name)
            receiver = route and _find(route, peer.name)
            if route is None or receiver is None:
                return
            if n > len(receiver.inflight):
                raise ProtocolError(f"child {peer.name!r} consumed {n} messages on {name!r} it was not handed")
            _pop_consumed(receiver, n)
            if withdraw:
                route.receivers.remove(receiver)
                _hand_back(route, receiver)
            else:
                receiver.credit += n
            self._pump(route)
            if withdraw:
                self._forget_if_idle(route)

    def _peer_returned(self, peer: _Peer, name: str, payload: bytes) -> None:
        with self._lock:
            route = self._routes.get(name)
            receiver = route and _find(route, peer.name)
            if receiver is None:
                raise ProtocolError(f"child {peer.name!r} gave back a message on {name!r}, where it does not receive")
            if receiver.returned is None:
                receiver.returned = []
            receiver.returned.append(payload)

    def _answer(self, op_name: str, payload: bytes) -> tuple[Kind, bytes]:
        """Carry out a child's request: (RESULT, pickled answer) or (FAILURE, pickled error)."""
        if (op_name == "Get" or op_name == "Set") and self.store_backend is None:
            hot = self._answer_hot(op_name, payload)
            if hot is not None:
                return hot
        op_class = OPERATIONS.get(op_name)
        try:
            if op_class is None:
                raise RemoteError(f"unknown operation {op_name!r}")
            op = op_class(*loads(payload, what=f"arguments of {op_name!r}"))
            _check_value_sizes(op, self.max_message_size)  # a value's limit holds for a child's calls too
            result = self.execute(op)
            if result is not None and len(result) > self.max_message_size:
                # The child's reader would take a frame this large for garbage and drop the link.
                raise MessageTooLargeError(
                    f"the answer to {op_class.method!r} is {len(result)} bytes pickled, "
                    f"above the maximum message size of {self.max_message_size}"
                )
            return Kind.RESULT, result or b""
        except Exception as exc:  # the caller gets it, with its own type where it pickles
            return Kind.FAILURE, _pickle_error(exc)

    def _answer_hot(self, op_name: str, payload: bytes) -> tuple[Kind, bytes] | None:
        """A well-formed Get or Set on the memory store, without building the operation or
        dispatching it; None: not well formed, the general path says what is wrong.

        A lane thread wakes with cold caches, so every function on this path costs several
        times its warm figure (a canned answer instead of the real one took ~20 us off a
        ~70 us round trip); this one is ~1 us warm against ~2 us."""
        try:
            fields = pickle.loads(payload)
        except BaseException:  # SystemExit from a key's class too: the general path names it
            return None
        if type(fields) is not tuple:
            return None
        limit = self.max_message_size
        for field in fields:  # the general path's rule (_check_value_sizes), which then says so
            if type(field) is bytes and len(field) > limit:
                return None
        try:
            if op_name == "Get":
                if len(fields) == 1:
                    return _RESULT, self.store.get(fields[0]) or b""
            elif len(fields) == 3 and type(fields[1]) is bytes:
                self.store.set(*fields)  # (key, pickled value, ttl): the store checks the ttl
                return _RESULT, b""
        except Exception as exc:  # an unhashable key, a bad ttl: the caller gets it
            return Kind.FAILURE, _pickle_error(exc)
        return None

    def _serve(self, peer: _Peer, frame: Frame) -> None:
        kind, answer = self._answer(frame.name, frame.payload)
        reply = (header(kind, b"", len(answer), frame.ref), answer)
        writer = peer.writer
        if writer is not None:
            try:
                writer.put(reply)
            except BrokenPeerError:
                pass  # the child is gone: nobody waits for this answer

    # -- test isolation -----------------------------------------------------
    def discard_queued(self) -> int:
        """Drop every message waiting in a process that is its own host: queued for an end
        that does not receive, and buffered in its ends and not yet taken (consumed, so the
        credit comes back). What ``liteyuki.testing`` does between tests; the number dropped."""
        if not self.standalone:
            raise RuntimeError("discard_queued() is for a process that is its own host (tests)")
        dropped = 0
        with self._lock:
            for route in self._routes.values():
                own = sum(1 for _, sender, generation, _ in route.pending if sender == HOST and generation >= 0)
                dropped += len(route.pending)
                route.pending.clear()
                if own:
                    route.host_credit.give(own)
            sinks = [r.sink for route in self._routes.values() for r in route.receivers if r.sink is not None]
        for sink in sinks:  # outside the hub's lock: reporting takes it
            dropped += sink.discard_buffered()
        return dropped

    # -- status -------------------------------------------------------------
    def channel_stats(self) -> list[dict[str, Any]]:
        """Per channel: messages waiting in the host, and per receiving end its credit and ledger."""
        with self._lock:
            return [
                {
                    "name": route.name,
                    "waiting": len(route.pending),
                    "receivers": [
                        {"process": r.process or self.process_name, "credit": r.credit, "unconsumed": len(r.inflight)}
                        for r in route.receivers
                    ],
                    "send_credit": route.host_credit.available,
                }
                for route in self._routes.values()
            ]

    def peer_stats(self, name: str) -> dict[str, Any]:
        peer = self._peers[name]
        writer = peer.writer
        return {
            "connected": writer is not None,
            "outbox_bytes": writer.queued_bytes if writer is not None else 0,
            "publish_dropped": peer.publish_dropped,
        }

    def close(self) -> None:
        """Drop every child link (the host is done)."""
        for name in list(self._peers):
            self.detach(name, drain=0)
        from ._backends import close_all

        close_all(self)


def _pop_consumed(receiver: _Receiver, n: int) -> None:
    """Drop the ``n`` oldest entries of the ledger (lock held)."""
    inflight = receiver.inflight
    rest = len(inflight) - n
    if rest <= 0:
        inflight.clear()
    elif rest <= 8 * n:
        # A report of hundreds of messages is common (a passive end reports per batch): a copy
        # of the few left, in C, beats a Python loop of popleft() per consumed message.
        receiver.inflight = collections.deque(itertools.islice(inflight, n, None))
    else:
        for _ in itertools.repeat(None, n):
            inflight.popleft()


def _hand_back(route: _Route, receiver: _Receiver) -> None:
    """What an end that left held unconsumed goes back to the queue, by send order: before
    everything sent after it (it may then reach another end after later messages). What it
    gave back unhandled (``returned``) was sent before all of that: it goes first."""
    returned = sorted(receiver.inflight, key=lambda item: item[0])
    receiver.inflight.clear()
    given, receiver.returned = receiver.returned, None
    if given:
        # Numbered just below everything still queued or held: the merge puts them first.
        pending = route.pending
        first = min(returned[0][0] if returned else route.next_seq, pending[0][0] if pending else route.next_seq)
        returned[:0] = zip(range(first - len(given), first), given, strict=True)
    if not returned:
        return
    back = [(seq, _RETURNED, -1, payload) for seq, payload in returned]
    pending = route.pending
    if not pending or back[-1][0] < pending[0][0]:
        # The usual case: an end is handed messages from the front of the queue, so all it
        # gives back is older than everything still waiting. A merge would walk the whole
        # queue: with 100,000 waiting and ~250 closes a second, an unrelated round trip took
        # 3.3 ms at p50 (0.15 ms without the merge).
        pending.extendleft(reversed(back))
    else:
        route.pending = collections.deque(heapq.merge(back, pending, key=lambda entry: entry[0]))


def _find(route: _Route, process: str) -> _Receiver | None:
    for receiver in route.receivers:
        if receiver.process == process:
            return receiver
    return None


def _check_value_sizes(op: Operation, limit: int) -> None:
    # [#11] The child's facade checks each value; this holds the limit against any other sender.
    for value in fields_of(op):
        if type(value) is bytes and len(value) > limit:
            raise MessageTooLargeError(
                f"a value in {op.method!r} is {len(value)} bytes pickled, above the maximum message size of {limit}"
            )


def _pickle_error(exc: BaseException) -> bytes:
    try:
        raw = dumps(exc)
        loads(raw)
        return raw
    except Exception:
        return dumps(RemoteError(f"{type(exc).__name__}: {exc}"))
