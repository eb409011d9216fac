"""Channel[T]: a named, go-like link between processes.

A ``Channel`` object is *this process's end* of the channel with that name;
``Channel("x")`` twice in one process returns the same object. Where a sent
message goes is decided by the host: to exactly one receiving end in another
process, round-robin (see the README's delivery rules).

A receiving end grants credit up to its buffer size: the host never hands it
more than it can hold, so its buffer never overflows and the thread that
delivers into it never waits.
"""

from __future__ import annotations

import collections
import pickle
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from . import _context, _slices
from ._context import current
from ._dispatch import dispatcher, is_awaitable, stops_the_process
from ._errors import (
    ChannelClosedError,
    ChannelFullError,
    ChannelTypeError,
    CommTimeoutError,
    ReceiveModeError,
    SerializationError,
)
from ._loopcall import call_in_loop, settle
from ._runtime_base import on_event_loop, running_loop
from ._typecheck import is_type_var, matches
from ._validate import check_bool, check_name, check_size, check_timeout, safe_repr, safe_str, type_name
from ._wire import dumps, loads, too_large, unpicklable

_pickle_dumps = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL

TYPE_CHECKING = False
if TYPE_CHECKING:  # imported where used: a plain child that never awaits does not load asyncio
    import asyncio
    from typing import Any, Generic, TypeVar, overload

    Callback = Callable[[Any], Any]
    FilterFunc = Callable[[Any], bool | Awaitable[bool]]
else:
    from .._lean_typing import Generic, TypeVar

__all__ = ["Channel", "forget_local_ends", "keep_end", "local_end", "local_end_names", "local_ends"]

T = TypeVar("T")

DEFAULT_BUFFER_SIZE = 100_000
MAX_BUFFER_SIZE = 1_000_000_000
# A receiving end reports what it consumed (the credit it gives back) after this many
# messages, or whenever its buffer runs empty; what it consumed but had not reported
# yet is what may be delivered twice if its process dies (see docs/RELIABILITY.md).
_REPORT_EVERY = 64
# A passive end reports messages consumed a chunk at a time, just before their callbacks run:
# one message first, twice as many each time a chunk's callbacks took under _QUICK_CHUNK s,
# at most _ANNOUNCE_MAX. What a process killed mid-batch loses is its current chunk: at most
# ~1 ms of callback work, and one message when callbacks are slow. (A fixed 32 lost up to 31
# slow callbacks' messages; a report per message cost ~3x the throughput of fast ones.)
_ANNOUNCE_MAX = 32
_QUICK_CHUNK = 0.001
_CLOSE_WAIT = 1.0  # how long close() waits for what the process sent before it to be written
_PASSIVE = "passive"
_ACTIVE = "active"

_ends_lock = threading.Lock()
# Every live end of this process, by name. Held weakly: a plain end nobody refers to (a reply
# channel that arrived in a message, or was made per request, and was let go) goes with its
# last reference. (Held strongly, each stayed for good: ~3 KB per request in a host that
# answered on channels it was sent.) _kept holds the ends that must outlive their caller's
# reference: receivers, ends given options, registered ones and the process's own.
_ends: weakref.WeakValueDictionary[str, Channel[Any]] = weakref.WeakValueDictionary()
_kept: dict[str, Channel[Any]] = {}
# Set per thread by the NoneBot plugin: called when a receive() is about to block.
_park = threading.local()


def local_end(name: str, keep: bool = False) -> Channel[Any]:
    """This process's end of channel ``name``, created if needed (never asks the host);
    ``keep``: it lives on without a reference (see ``keep_end``)."""
    chan = _ends.get(name)
    if chan is None:
        chan = Channel(name)
    if keep and _kept.get(name) is not chan:  # (the own channels' every access comes here)
        keep_end(chan)
    return chan


def keep_end(chan: Channel[Any]) -> None:
    """Hold ``chan`` for as long as it is open, referenced or not."""
    with _ends_lock:
        if _ends.get(chan.name) is chan:
            _kept[chan.name] = chan


def local_ends() -> dict[str, Channel[Any]]:
    with _ends_lock:
        return dict(_ends)


def local_end_names() -> list[str]:
    with _ends_lock:
        return list(_ends)


def forget_local_ends() -> None:
    """Drop every end of this process (the runtime that owned them is gone); wake their receivers."""
    with _ends_lock:
        ends = list(_ends.values())
        _ends.clear()
        _kept.clear()
    for chan in ends:
        chan._state.shut()


def _rebuild(name: str, hint: Any) -> Channel[Any]:
    """A ``Channel`` that arrived in a message: this process's end of it. The sender's element
    type is taken only by an end made here for it; an end this process has keeps its own
    (typed or not: typed channels check in the process that declared the type)."""
    chan = _ends.get(name)
    if chan is None:
        chan = Channel(name)
        state = chan._state
        with state.lock:  # an end made just now by another thread may have a type already
            if hint is not None and state.hint is None and not state.declared:
                state.hint = hint
    return chan


class _EndState:
    """Everything one end holds: its buffer, receive mode, waiters and callbacks.

    The runtime delivers into it (``deliver``, never blocking) and is told what
    was consumed (credit) and when the end withdraws.
    """

    __slots__ = (
        "async_waiters",
        "buffer",
        "callbacks",
        "capacity",
        "chunk",
        "chunk_began",
        "closed",
        "cond",
        "declared",
        "dropped",
        "generation",
        "hint",
        "lock",
        "mode",
        "name",
        "ready",
        "report_lock",
        "running",
        "scheduled",
        "tasks",
        "type_check",
        "unreported",
        "what",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.what = f"message on channel {name!r}"  # for errors; built once, not per send
        self.hint: Any = None
        self.type_check = True
        self.capacity = DEFAULT_BUFFER_SIZE
        # ``with self.lock`` is ``with self.cond`` without Condition.__enter__'s Python frame.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.buffer: collections.deque[bytes] = collections.deque()
        self.mode: str | None = None
        self.callbacks: list[tuple[Callback, FilterFunc | None]] = []
        self.scheduled = False
        self.closed = False
        self.declared = False
        self.generation = 0  # bumped by release(): wakes blocked receivers with an error
        self.unreported = 0  # consumed, not yet reported to the runtime as credit
        # Held while a count of consumed messages travels to the runtime, and by close() while
        # it takes the count left and withdraws: a report that reached the runtime after the
        # withdrawal would be ignored there, and those messages handed to another end again.
        self.report_lock = threading.Lock()
        # The batch a passive drain is running: ``ready`` holds what it reported consumed and has
        # not run (close() gives those back), ``running`` the rest, which the ledger still holds.
        self.running: collections.deque[bytes] | None = None
        self.ready: collections.deque[bytes] | None = None
        self.chunk = 1  # how many messages a passive drain reports at a time (see _ANNOUNCE_MAX)
        self.tasks: list[Any] | None = None  # the last chunk's async callbacks' tasks (see drain)
        self.chunk_began = 0.0  # when that chunk was reported
        self.dropped = 0  # consumed but could not be unpickled here
        # A list, not a deque: an empty deque holds a 0.5 KB block, and most ends never
        # have an async waiter (1,000 channels: benchmark row 7b).
        self.async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- called by the runtime -------------------------------------------
    def deliver(self, payloads: list[bytes]) -> None:
        """Take messages the runtime routed here (there is room: it had our credit)."""
        with self.lock:
            self.buffer.extend(payloads)
            if self.closed:
                return  # kept for take_unconsumed(): the withdrawal hands them back
            if self.mode == _PASSIVE:
                if not self.scheduled:
                    self.scheduled = True
                    dispatcher.submit(self.drain)
                return
            self.cond.notify(len(payloads))
            wake = _pop_waiters(self.async_waiters, len(payloads))
        for loop, fut in wake:
            call_in_loop(loop, settle, fut)

    def discard_buffered(self) -> int:
        """Drop what is buffered and not taken, as consumed (test isolation); how many."""
        with self.lock:
            n = len(self.buffer)
            self.buffer.clear()
            self.unreported += n
        if n:
            self.report()
        return n

    def take_unconsumed(self) -> list[bytes]:
        """Empty the buffer (the end withdrew): these go back to the channel."""
        with self.lock:
            rest = list(self.buffer)
            self.buffer.clear()
            return rest

    # -- consuming ---------------------------------------------------------
    def _consumed(self, n: int) -> bool:
        """Count ``n`` consumed messages (lock held); whether to report now (``report()``)."""
        self.unreported += n
        return self.unreported >= _REPORT_EVERY or not self.buffer

    def report(self, urgent: bool = False) -> None:
        """Tell the runtime what was consumed and not yet reported (the credit it gives back)."""
        with self.report_lock:
            with self.lock:
                n, self.unreported = self.unreported, 0
            if n:
                current().consumed(self.name, n, urgent)

    def drain(self) -> None:
        """Passive mode, on the dispatch loop: run the callbacks for everything buffered."""
        with self.lock:
            self.scheduled = False
            if self.closed or not self.buffer:  # (closed: what is buffered goes back to the channel)
                return
            loop = running_loop()  # (the dispatch loop: drain runs on it)
            if loop is not None and _slices.spent(loop):
                # This turn's drains ran their slice: the loop's other work first.
                self.scheduled = True
                _slices.pause(loop, self.drain, ran=False)
                return
            batch = self.running = self.buffer
            self.buffer = collections.deque()
            callbacks = list(self.callbacks)
        # Labels once per batch, not per message: they are only read when a callback raises.
        labelled = [(f, flt, f"callback on channel {self.name!r} {_qualname(f)}") for f, flt in callbacks]
        ready = self.ready = collections.deque()  # reported consumed, not run yet
        take = ready.popleft
        chunk = self.chunk  # (kept from the last batch: fast traffic comes in many small batches)
        began = 0.0
        started = _slices.begin(loop) if loop is not None else time.perf_counter()
        tasks: list[Any] = []  # tasks the chunk's async callbacks left to run
        earlier, self.tasks = self.tasks, None
        if earlier is not None:  # the last chunk's tasks had a turn: done, or slow (awaiting)
            quick = time.perf_counter() - self.chunk_began < _QUICK_CHUNK  # eager tasks (3.12+) may be done yet slow
            chunk = min(2 * chunk, _ANNOUNCE_MAX) if quick and all(task.done() for task in earlier) else 1
        while True:
            if not ready:
                if tasks:
                    # They run once this drain returns: announcing more now would report a whole
                    # batch consumed before any of it ran (a kill -9 then lost 189 of 199 on
                    # Python 3.11). The rest waits for their turn (loop.call_soon: no wake-up);
                    # the next chunk doubles if they all finished by then, else is 1 message.
                    self.tasks = tasks
                    self.chunk = chunk
                    self.chunk_began = began
                    self._resume_later(batch)
                    break
                now = time.perf_counter()
                if began:
                    chunk = min(2 * chunk, _ANNOUNCE_MAX) if now - began < _QUICK_CHUNK else 1
                    if now - started > _slices.SLICE and batch:
                        # The loop's other work gets a turn between chunks: a backlog of sync
                        # callbacks held NoneBot's loop, or an async target's, for seconds, and
                        # a stop (the target's task cancelled) waited behind it until its grace ran out.
                        self.chunk = chunk
                        self._resume_later(batch, pause=True)
                        break
                began = now
                # Reported a chunk at a time just before it runs, and written now rather than
                # after the writer's coalescing window: a callback that takes its process down
                # (os._exit, a crash in C) does not get the same message again in the
                # successor (no crash loop on one message), and a process killed mid-batch
                # (kill -9, the OOM killer) loses at most the rest of its chunk: the host hands
                # what was never reported to the successor. (Left to the window, the report
                # died with the process when the link had been written < 20 us before.)
                with self.lock:  # moved under the lock close() takes both deques with
                    if not batch:  # done, or close() (from a callback or another thread) took it
                        break
                    for _ in range(min(len(batch), chunk)):
                        ready.append(batch.popleft())
                    self.unreported += len(ready)
                self.report(urgent=True)
            try:
                payload = take()
            except IndexError:  # close() took what was left
                continue
            try:
                data = loads(payload, what=self.what)
            except SerializationError:
                self.undecodable()
                continue
            for func, flt, label in labelled:
                task = dispatcher.call(func if flt is None else _FilteredCall(func, flt, self.name), data, label)
                if task is not None:
                    tasks.append(task)
        if self.tasks is None:
            self.chunk = chunk if time.perf_counter() - began < _QUICK_CHUNK else 1
        # (an empty deque holds a 0.5 KB block: 1,000 channels, row 7b)
        with self.lock:
            self.running = self.ready = None

    def _resume_later(self, batch: collections.deque[bytes], pause: bool = False) -> None:
        """Put the rest of a batch back in front of the buffer and drain again after the tasks
        already scheduled, or (``pause``) once the loop has had its turn (the ledger still
        holds these: they were never reported)."""
        with self.lock:
            if not batch or self.closed:
                return
            # The rest of the batch becomes the buffer (older first), its deque not copied: a
            # drain slices a deep batch (up to buffer_size) every slice. (The drain that calls
            # this stops at once and never touches the batch again.)
            if self.running is batch:
                self.running = None
            batch.extend(self.buffer)
            self.buffer = batch
            if not self.scheduled:
                self.scheduled = True
                loop = running_loop()  # (the dispatch loop: drain runs on it)
                if loop is None:
                    dispatcher.submit(self.drain)
                elif pause:
                    _slices.pause(loop, self.drain, ran=True)
                else:
                    loop.call_soon(self.drain)

    def undecodable(self) -> None:
        """A message arrived that cannot be unpickled in this process (a class only the sender
        has): it was consumed, not delivered; counted (``repr``, status) and logged."""
        from ..log import logger

        self.dropped += 1
        logger.exception(f"dropped a message on channel {self.name!r}")

    def shut(self) -> None:
        """Closed for good: stop callbacks, wake every receiver."""
        with self.lock:
            self.closed = True
            self.cond.notify_all()
            wake = _pop_waiters(self.async_waiters, len(self.async_waiters))
        for loop, fut in wake:
            call_in_loop(loop, settle, fut)

    def release(self) -> None:
        """Wake every blocked receiver with ``ChannelClosedError`` (shutdown); the end stays usable."""
        with self.lock:
            self.generation += 1
            self.cond.notify_all()
            wake = _pop_waiters(self.async_waiters, len(self.async_waiters))
        for loop, fut in wake:
            call_in_loop(loop, settle, fut)


def _pop_waiters(
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]], n: int
) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
    out = []
    while waiters and len(out) < n:
        loop, fut = waiters.pop(0)
        if not fut.done():
            out.append((loop, fut))
    return out


class _FilteredCall:
    """A callback behind its filter; the filter may be sync or return an awaitable."""

    __slots__ = ("flt", "func", "name")

    def __init__(self, func: Callback, flt: FilterFunc, name: str) -> None:
        self.func, self.flt, self.name = func, flt, name

    def __call__(self, data: Any) -> Any:
        try:
            accepted = self.flt(data)
        except BaseException as exc:  # SystemExit too, as for callbacks (see _dispatch)
            if stops_the_process(exc):
                raise
            from ..log import logger

            logger.exception(f"filter {_qualname(self.flt)} on channel {self.name!r} raised")
            return None
        if is_awaitable(accepted):
            return self._after(accepted, data)
        if accepted:
            return self.func(data)
        return None

    async def _after(self, accepted: Awaitable[Any], data: Any) -> None:
        if await accepted:
            result = self.func(data)
            if is_awaitable(result):
                await result


def _cluster_end(name: str) -> Channel[Any]:
    from ._cluster_channel import cluster_end

    runtime = current()
    settings = getattr(runtime.store_backend, "settings", None)
    return cluster_end(name, settings, runtime.process_name)


class Channel(Generic[T]):
    """This process's end of channel ``name``.

    ``send`` goes to one receiving end in another process; receive either
    passively (``@on_receive``) or actively (``receive`` / ``async_receive`` /
    iteration), never both on one end. ``Channel[int]("x")`` checks values at
    ``send`` unless ``type_check=False``.
    """

    name: str
    _state: _EndState

    def __new__(
        cls, name: str, type_check: bool | None = None, buffer_size: int | None = None, cluster: bool = False
    ) -> Channel[Any]:
        # [#11] Every argument is checked before the end exists (or an existing one changes).
        name = check_name(name, "name")
        if type_check is not None:
            check_bool(type_check, "type_check")
        if buffer_size is not None:
            check_size(buffer_size, "buffer_size", maximum=MAX_BUFFER_SIZE)
        if check_bool(cluster, "cluster"):
            return _cluster_end(name)  # every process of every host on the storage's Redis
        with _ends_lock:
            existing = _ends.get(name)
            if existing is not None:
                return existing
            self = super().__new__(cls)
            self.name = name
            self._state = _EndState(name)
            _ends[name] = self
            return self

    def __init__(
        self, name: str, type_check: bool | None = None, buffer_size: int | None = None, cluster: bool = False
    ) -> None:
        # The same end may be "created" again (Channel(name) returns it); only
        # options given explicitly change it.
        state = self._state
        if buffer_size is not None:  # checked in __new__; its plain value (not a subclass's __ne__)
            buffer_size = check_size(buffer_size, "buffer_size", maximum=MAX_BUFFER_SIZE)
        if buffer_size is not None and buffer_size != state.capacity:
            # Under the lock close() withdraws with: checked and declared again on one side of
            # the withdrawal, never across it (a closed end made a receiver again held on to
            # what the host then sent it).
            with state.report_lock:
                state.capacity = buffer_size
                if state.declared and not state.closed:
                    current().declare_receiver(state)  # the host adjusts the credit it holds
        if type_check is not None:
            state.type_check = type_check
        if buffer_size is not None or type_check is not None:
            keep_end(self)  # options a later Channel(name) must find

    # [#11] Channel[T](name) sets __orig_class__ on the (maybe existing) end it returned: one
    # element type per channel name per process, a clear error when two disagree. The alias
    # is ours (_lean_typing), so the error reaches the caller on every Python version.
    @property
    def __orig_class__(self) -> Any:
        return self.__dict__.get("_orig_class")

    @__orig_class__.setter
    def __orig_class__(self, alias: Any) -> None:
        hint = (getattr(alias, "__args__", None) or (None,))[0]
        if is_type_var(hint):
            return
        state = self._state
        if state.hint is not None and not _same_hint(state.hint, hint):
            message = (
                f"channel {self.name!r} was created in this process as Channel[{_hint_name(state.hint)}] "
                f"and again as Channel[{_hint_name(hint)}]: one element type per channel name"
            )
            raise ChannelTypeError(message)
        self.__dict__["_orig_class"] = alias
        state.hint = hint
        keep_end(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.name, self._element_type())

    def __repr__(self) -> str:
        state = self._state
        mode = "closed" if state.closed else (state.mode or "idle")
        dropped = f", {state.dropped} undecodable dropped" if state.dropped else ""
        return f"<Channel {self.name!r} {mode}, {len(state.buffer)} buffered of {state.capacity}{dropped}>"

    # -- sending ---------------------------------------------------------
    def send(self, data: T, timeout: float | None = None) -> None:
        """Send ``data`` to one receiving end in another process.

        Waits for credit (room at the receiving side) up to ``timeout`` seconds
        (default: the configured send timeout), then raises ``ChannelFullError``
        with nothing sent. On an event-loop thread it never waits: no credit is
        ``ChannelFullError`` at once (use ``await async_send``).
        """
        state = self._state
        if state.closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        if timeout is not None:
            check_timeout(timeout)  # [#11]
        if state.type_check and state.hint is not None:
            self._check(data)
        runtime = _context._current or current()  # the call only until a runtime exists
        # dumps() inlined: this is the hot path of every message a process sends.
        try:
            payload = _pickle_dumps(data, _PROTOCOL)
        except Exception as exc:
            raise unpicklable(data, exc, state.what) from exc
        if len(payload) > runtime.max_message_size:
            raise too_large(len(payload), runtime.max_message_size, state.what)
        try:
            runtime.send(self.name, payload, timeout)
        except ChannelFullError:
            if state.closed:  # close() woke this send while it waited for credit: nothing was sent
                raise ChannelClosedError(f"channel {self.name!r} was closed while this send waited") from None
            raise

    async def async_send(self, data: T, timeout: float | None = None) -> None:
        """Like ``send``, but waits for credit without blocking the loop (``None``: no time limit)."""
        state = self._state
        if state.closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        check_timeout(timeout)  # [#11]
        if state.type_check and state.hint is not None:
            self._check(data)
        runtime = current()
        try:
            await runtime.async_send(self.name, dumps(data, runtime.max_message_size, what=state.what), timeout)
        except ChannelFullError:
            if state.closed:  # close() woke this send while it waited for credit: nothing was sent
                raise ChannelClosedError(f"channel {self.name!r} was closed while this send waited") from None
            raise

    def _element_type(self) -> Any:
        return self._state.hint  # [#11] set by the __orig_class__ setter

    def _check(self, data: Any) -> None:
        state = self._state
        hint = state.hint
        if hint is None or not state.type_check:
            return
        # [#11] A value's hostile __eq__/__iter__/__class__ never changes the error type.
        try:
            ok = matches(data, hint)
        except Exception as exc:
            raise ChannelTypeError(
                f"channel {self.name!r} carries {_hint_name(hint)}; checking a {type_name(data)} "
                f"against it raised {type_name(exc)}: {safe_str(exc)}"
            ) from None
        if not ok:
            raise ChannelTypeError(
                f"channel {self.name!r} carries {_hint_name(hint)}, got {type_name(data)}: {safe_repr(data)}"
            )

    # -- passive mode ----------------------------------------------------
    if TYPE_CHECKING:

        @overload
        def on_receive(self, filter_func: FilterFunc | None = None) -> Callable[[Callback], Callback]: ...
        @overload
        def on_receive(self, filter_func: Callback) -> Callable[[Callback], Callback]: ...

    def on_receive(self, filter_func: FilterFunc | None = None) -> Callable[[Callback], Callback]:
        """Decorator: call the function (sync or async) for each message its filter accepts.

        Callbacks run on this process's event loop, in registration order per
        message and in message order per channel; one that raises is logged, and
        the next one runs (``SystemExit`` too: a callback cannot end its process).
        A filter may be sync or async (anything whose result is awaitable is awaited).
        """
        if filter_func is not None and not callable(filter_func):
            raise TypeError(f"filter_func must be callable, got {type(filter_func).__name__}")

        def decorator(func: Callback) -> Callback:
            if not callable(func):
                raise TypeError(f"on_receive needs a callable, got {type(func).__name__}")
            self._claim(_PASSIVE, (func, filter_func))
            return func

        return decorator

    # -- active mode -----------------------------------------------------
    def receive(self, timeout: float | None = None) -> T:
        """Block until a message arrives (any thread); ``CommTimeoutError`` after ``timeout`` s."""
        check_timeout(timeout)  # [#11]
        state = self._state
        if state.mode != _ACTIVE or not state.declared:
            self._claim(_ACTIVE)
        deadline = None  # taken when a wait starts: a message already here needs no clock
        while True:
            with state.lock:
                generation = state.generation
                if not state.buffer and deadline is None and timeout is not None:
                    deadline = time.monotonic() + timeout
                # Closed first, even with messages buffered: close() hands those back to the
                # channel, and one taken here as well would be delivered twice.
                if state.closed:
                    raise ChannelClosedError(f"channel {self.name!r} is closed")
                while not state.buffer:
                    if state.closed:
                        raise ChannelClosedError(f"channel {self.name!r} is closed")
                    if state.generation != generation:
                        raise ChannelClosedError(f"channel {self.name!r} was released for shutdown")
                    if timeout is None and on_event_loop():
                        # Waiting with no bound here would block the loop for good: in a process
                        # that is its own host (nb run, nonebug) nothing could ever send the
                        # message, and signals wait too (Ctrl+C did not stop such a bot).
                        raise RuntimeError(
                            f"receive() without a timeout on channel {self.name!r} would block this "
                            "thread's event loop for good (no message is buffered): use "
                            "`await async_receive()` in async code"
                        )
                    notify = getattr(_park, "notify", None)
                    if notify is not None:
                        notify()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise CommTimeoutError(f"no message on channel {self.name!r} within {timeout} s")
                    state.cond.wait(remaining)
                if state.closed:  # closed while this thread waited (a message may be here too)
                    raise ChannelClosedError(f"channel {self.name!r} is closed")
                payload = state.buffer.popleft()
                report = state._consumed(1)
            if report:
                state.report()
            try:
                return loads(payload, what=state.what)
            except SerializationError:
                state.undecodable()

    async def async_receive(self, timeout: float | None = None) -> T:
        """Await a message without parking a thread; ``CommTimeoutError`` after ``timeout`` s."""
        check_timeout(timeout)  # [#11]
        import asyncio  # loaded already: we run on a loop

        self._claim(_ACTIVE)
        state = self._state
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with state.lock:
                generation = state.generation
                if state.closed:  # first: what is buffered goes back to the channel (see receive)
                    raise ChannelClosedError(f"channel {self.name!r} is closed")
                if state.buffer:
                    payload = state.buffer.popleft()
                    report = state._consumed(1)
                    fut = None
                else:
                    fut = loop.create_future()
                    state.async_waiters.append((loop, fut))
            if fut is None:
                if report:
                    state.report()
                try:
                    return loads(payload, what=state.what)
                except SerializationError:
                    state.undecodable()
                    continue
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(fut, remaining)
            except BaseException as exc:
                with state.lock:
                    woken = fut.done() and not fut.cancelled()
                    if not woken:
                        _discard_waiter(state.async_waiters, fut)
                    # A wake-up we were given but will not use goes to the next waiter.
                    wake = _pop_waiters(state.async_waiters, 1) if woken and state.buffer else []
                for other_loop, other in wake:
                    call_in_loop(other_loop, settle, other)
                if isinstance(exc, asyncio.TimeoutError):
                    raise CommTimeoutError(f"no message on channel {self.name!r} within {timeout} s") from None
                raise
            if state.generation != generation:
                raise ChannelClosedError(f"channel {self.name!r} was released for shutdown")

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                yield self.receive()
            except ChannelClosedError:
                return

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.async_receive()
            except ChannelClosedError:
                return

    def _claim(self, mode: str, callback: tuple[Callback, FilterFunc | None] | None = None) -> None:
        """Fix this end's receive mode (and add ``callback``), then tell the runtime we receive.

        The callback is in place before the end is declared: a message that
        arrives at once finds it.
        """
        state = self._state
        if state.mode != mode or callback is not None:
            with state.lock:
                if state.closed:
                    raise ChannelClosedError(f"channel {self.name!r} is closed")
                if state.mode is None:
                    state.mode = mode
                elif state.mode != mode:
                    other = "on_receive() callbacks" if state.mode == _PASSIVE else "receive()"
                    raise ReceiveModeError(
                        f"channel {self.name!r} is already in {state.mode} mode ({other}); "
                        f"one end receives in one mode only"
                    )
                if callback is not None:
                    state.callbacks.append(callback)
                    if state.buffer and not state.scheduled:
                        state.scheduled = True
                        dispatcher.submit(state.drain)
        if mode == _PASSIVE:
            dispatcher.ensure_loop()  # a plain child starts its callback loop on first need
        if not state.declared:
            with state.report_lock:  # with close(): declared and withdrawn, or never declared
                if state.closed:
                    raise ChannelClosedError(f"channel {self.name!r} is closed")
                if not state.declared:
                    state.declared = True
                    current().declare_receiver(state)
                    keep_end(self)  # a receiver lives on without a reference (callbacks, messages)

    # -- closing ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._state.closed

    def close(self) -> None:
        """Close this end (safe twice): ``send`` raises, callbacks stop, receivers wake with
        ``ChannelClosedError`` (iteration ends), and the end is withdrawn from routing at once:
        the messages it held but had not consumed go back to the channel, to its other
        receiving ends (or to the next one to appear)."""
        state = self._state
        with state.lock:
            if state.closed:
                return
        state.shut()
        runtime = _context._current  # none yet: nothing was ever sent here, nobody waits
        if runtime is not None:
            runtime.interrupt_senders(self.name)
        # Withdrawn first, under the lock a first receive()'s declaration takes too: a
        # declaration still on its way would otherwise make the closed end a receiver again.
        with state.report_lock:
            if state.declared:
                with state.lock:
                    consumed, state.unreported = state.unreported, 0
                    returned = _take_all(state.ready)  # reported consumed: we give them back
                    if state.running:  # never reported: the host hands them on itself
                        state.running.clear()
                current().withdraw(state, consumed, returned)  # (waits until written, with all before it)
            elif runtime is not None:
                # An end that only sent: close() still returns once what the process sent
                # before it is on the socket (a sender that closed and called os._exit lost
                # the tail of its messages).
                runtime.wait_written(_CLOSE_WAIT)
        # Only then may Channel(name) make a new end: the host and the link see the old end
        # gone before the new one arrives.
        with _ends_lock:
            if _ends.get(self.name) is self:
                del _ends[self.name]
                _kept.pop(self.name, None)

    def _release(self) -> None:
        self._state.release()

    def __enter__(self) -> Channel[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take_all(batch: collections.deque[bytes] | None) -> list[bytes]:
    """Empty ``batch`` one ``popleft`` at a time: each message goes either to a drain that is
    running it or here, never to both (a drain on the loop thread pops from it unlocked)."""
    taken: list[bytes] = []
    while batch:
        try:
            taken.append(batch.popleft())
        except IndexError:
            break
    return taken


def _discard_waiter(
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]], fut: asyncio.Future[None]
) -> None:
    for i, (_, other) in enumerate(waiters):
        if other is fut:
            del waiters[i]
            return


def _qualname(func: Any) -> str:
    name = getattr(func, "__qualname__", None)  # repr() only when needed: it can be costly
    return name if isinstance(name, str) else type(func).__qualname__


def _safe_repr(value: Any) -> str:
    try:
        return f"{value!r:.80}"
    except Exception:  # a hostile __repr__ must not change which error the caller gets
        return f"<{type(value).__name__} object>"


def _hint_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else safe_repr(hint)


def _same_hint(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b
