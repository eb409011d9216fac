"""Channel[T]: a named, go-like link between processes.

A ``Channel`` object is *this process's end* of the channel with that name;
``Channel("x")`` twice in one process returns the same object. Where a sent
message goes is decided by the host (see the README's routing rules).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from ..log import logger
from ._dispatch import dispatcher, settle
from ._errors import (
    ChannelClosedError,
    ChannelFullError,
    ChannelTypeError,
    CommTimeoutError,
    ReceiveModeError,
    SerializationError,
)
from ._typecheck import matches
from ._wire import dumps, loads

__all__ = ["Channel", "local_end", "local_ends"]

T = TypeVar("T")
Callback = Callable[[Any], Any]
FilterFunc = Callable[[Any], "bool | Awaitable[bool]"]

DEFAULT_BUFFER_SIZE = 100_000
_PASSIVE = "passive"
_ACTIVE = "active"

_ends_lock = threading.Lock()
_ends: dict[str, Channel[Any]] = {}
# Set per thread by the NoneBot plugin: called when a receive() is about to block.
_park = threading.local()


def local_end(name: str) -> Channel[Any]:
    """This process's end of channel ``name``, created if needed (never asks the host)."""
    chan = _ends.get(name)
    return chan if chan is not None else Channel(name)


def local_ends() -> dict[str, Channel[Any]]:
    with _ends_lock:
        return dict(_ends)


def forget_local_ends() -> None:
    """Drop every end of this process (the runtime that owned them is gone); wake their receivers."""
    with _ends_lock:
        ends = list(_ends.values())
        _ends.clear()
    for chan in ends:
        chan.close()


def _rebuild(name: str, hint: Any) -> Channel[Any]:
    chan = local_end(name)
    if hint is not None and chan._hint is None:
        chan._hint = hint
    return chan


_current_runtime: Callable[[], Any] | None = None


def _runtime() -> Any:
    # The import is deferred (circular), and done once: an import statement per send
    # costs more than the rest of Channel.send.
    global _current_runtime
    if _current_runtime is None:
        from ._runtime import current

        _current_runtime = current
    return _current_runtime()


class Channel(Generic[T]):
    """This process's end of channel ``name``.

    ``send`` goes to the other side; receive either passively (``@on_receive``)
    or actively (``receive`` / ``async_receive`` / iteration), never both on one
    end. ``Channel[int]("x")`` checks values at ``send`` unless ``type_check=False``.
    """

    name: str
    _hint: Any

    def __new__(cls, name: str, *args: Any, **kwargs: Any) -> Channel[Any]:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError(f"channel name must be a non-empty str of at most 200 characters, got {name!r}")
        size = kwargs.get("buffer_size", args[1] if len(args) > 1 else None)
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"buffer_size must be a positive int, got {size!r}")
        with _ends_lock:
            existing = _ends.get(name)
            if existing is not None:
                return existing
            self = super().__new__(cls)
            self._setup(name)
            _ends[name] = self
            return self

    def __init__(self, name: str, type_check: bool | None = None, buffer_size: int | None = None) -> None:
        # The same end may be "created" again (Channel(name) returns it); only
        # options given explicitly change it.
        if buffer_size is not None:
            self._capacity = buffer_size
        if type_check is not None:
            self._type_check = type_check

    def _setup(self, name: str) -> None:
        self.name = name
        self._what = f"message on channel {name!r}"  # for errors; built once, not per send
        self._hint = None
        self._type_check = True
        self._capacity = DEFAULT_BUFFER_SIZE
        self._cond = threading.Condition(threading.Lock())
        self._buffer: collections.deque[bytes] = collections.deque()
        self._mode: str | None = None
        self._callbacks: list[tuple[Callback, FilterFunc | None]] = []
        self._scheduled = False
        self._closed = False
        self._generation = 0  # bumped by _release(): wakes blocked receivers with an error
        self._async_waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._declared = False

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.name, self._element_type())

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._mode or "idle")
        return f"<Channel {self.name!r} {state}, {len(self._buffer)} buffered>"

    # -- sending ---------------------------------------------------------
    def send(self, data: T, timeout: float | None = None) -> None:
        """Send ``data`` to the other side.

        Never blocks an event-loop thread: with a full buffer it raises
        ``ChannelFullError`` there at once; other threads wait up to
        ``timeout`` seconds (default: the configured send timeout).
        """
        if self._closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        self._check(data)
        runtime = _runtime()
        payload = dumps(data, runtime.max_message_size, what=self._what)
        runtime.send_message(self.name, payload, timeout)

    async def async_send(self, data: T, timeout: float | None = None) -> None:
        """Like ``send``, but waits for room in a full buffer without blocking the loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self.send(data, timeout=0)
            except ChannelFullError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.01)  # backpressure back-off, not synchronisation

    def _element_type(self) -> Any:
        if self._hint is None:
            # typing sets __orig_class__ in the instance dict; a dict lookup is much
            # cheaper than getattr() failing with AttributeError on every send.
            orig = self.__dict__.get("__orig_class__")
            if orig is not None:
                self._hint = orig.__args__[0]
        return self._hint

    def _check(self, data: Any) -> None:
        if not self._type_check:
            return
        hint = self._element_type()
        if hint is not None and not matches(data, hint):
            raise ChannelTypeError(
                f"channel {self.name!r} carries {_hint_name(hint)}, got {type(data).__name__}: {data!r:.80}"
            )

    # -- delivery (called by the transport) ------------------------------
    def _deliver(self, payloads: list[bytes], wait: bool = True) -> None:
        """Buffer payloads; wake a receiver or schedule passive dispatch.

        With a full buffer, transport threads wait (backpressure towards the
        sender); local callers (``wait=False``) get ``ChannelFullError``.
        """
        with self._cond:
            if len(self._buffer) + len(payloads) > self._capacity and self._buffer:
                if not wait:
                    raise ChannelFullError(
                        f"channel {self.name!r} has {len(self._buffer)} unread messages (limit {self._capacity})"
                    )
                logger.warning(
                    f"channel {self.name!r} is full ({self._capacity} unread messages); "
                    "holding back its sender until a receiver catches up"
                )
                while len(self._buffer) >= self._capacity and not self._closed:
                    self._cond.wait(1.0)
            self._buffer.extend(payloads)
            if self._mode == _PASSIVE:
                if not self._scheduled:
                    self._scheduled = True
                    dispatcher.submit(self._drain)
            else:
                self._cond.notify(len(payloads))
                if self._async_waiters:
                    self._wake_async()

    def _wake_async(self) -> None:
        while self._async_waiters:
            loop, fut = self._async_waiters.popleft()
            if not fut.done():
                try:
                    loop.call_soon_threadsafe(settle, fut)
                except RuntimeError:
                    continue
                return

    # -- passive mode ----------------------------------------------------
    @overload
    def on_receive(self, filter_func: FilterFunc | None = None) -> Callable[[Callback], Callback]: ...
    @overload
    def on_receive(self, filter_func: Callback) -> Callable[[Callback], Callback]: ...

    def on_receive(self, filter_func: FilterFunc | None = None) -> Callable[[Callback], Callback]:
        """Decorator: call the function (sync or async) for each message its filter accepts.

        Callbacks run on this process's event loop, in registration order per
        message and in message order per channel; one that raises is logged.
        """
        if filter_func is not None and not callable(filter_func):
            raise TypeError(f"filter_func must be callable, got {type(filter_func).__name__}")

        def decorator(func: Callback) -> Callback:
            if not callable(func):
                raise TypeError(f"on_receive needs a callable, got {type(func).__name__}")
            self._claim(_PASSIVE)
            with self._cond:
                self._callbacks.append((func, filter_func))
                if self._buffer and not self._scheduled:
                    self._scheduled = True
                    dispatcher.submit(self._drain)
            return func

        return decorator

    def _drain(self) -> None:
        with self._cond:
            batch = list(self._buffer)
            self._buffer.clear()
            self._scheduled = False
            self._cond.notify_all()
            callbacks = list(self._callbacks)
        # Labels once per batch, not per message: they are only read when a callback raises.
        what = self._what
        labelled = [(func, flt, f"callback on channel {self.name!r} {_qualname(func)}") for func, flt in callbacks]
        for payload in batch:
            try:
                data = loads(payload, what=what)
            except SerializationError:
                logger.exception(f"dropped a message on channel {self.name!r}")
                continue
            for func, flt, label in labelled:
                if flt is None:
                    dispatcher.call(func, data, label)
                elif inspect.iscoroutinefunction(flt):
                    dispatcher.call(_filtered(func, flt), data, label)
                else:
                    try:
                        accepted = flt(data)
                    except Exception:
                        logger.exception(f"filter {_qualname(flt)} on channel {self.name!r} raised")
                        continue
                    if accepted:
                        dispatcher.call(func, data, label)

    # -- active mode -----------------------------------------------------
    def receive(self, timeout: float | None = None) -> T:
        """Block until a message arrives (any thread); ``CommTimeoutError`` after ``timeout`` s."""
        self._claim(_ACTIVE)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                generation = self._generation
                while not self._buffer:
                    if self._closed:
                        raise ChannelClosedError(f"channel {self.name!r} is closed")
                    if self._generation != generation:
                        raise ChannelClosedError(f"channel {self.name!r} was released for shutdown")
                    notify = getattr(_park, "notify", None)
                    if notify is not None:
                        notify()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise CommTimeoutError(f"no message on channel {self.name!r} within {timeout} s")
                    self._cond.wait(remaining)
                payload = self._buffer.popleft()
                self._cond.notify_all()
            try:
                return loads(payload, what=self._what)
            except SerializationError:
                logger.exception(f"dropped a message on channel {self.name!r}")

    async def async_receive(self, timeout: float | None = None) -> T:
        """Await a message without parking a thread; ``CommTimeoutError`` after ``timeout`` s."""
        self._claim(_ACTIVE)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._cond:
                generation = self._generation
                if self._buffer:
                    payload = self._buffer.popleft()
                    self._cond.notify_all()
                    fut = None
                elif self._closed:
                    raise ChannelClosedError(f"channel {self.name!r} is closed")
                else:
                    fut = loop.create_future()
                    self._async_waiters.append((loop, fut))
            if fut is None:
                try:
                    return loads(payload, what=self._what)
                except SerializationError:
                    logger.exception(f"dropped a message on channel {self.name!r}")
                    continue
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                raise CommTimeoutError(f"no message on channel {self.name!r} within {timeout} s") from None
            except BaseException:
                with self._cond:  # pass a wake-up we may have consumed on to someone else
                    if fut.done() and not fut.cancelled() and self._buffer:
                        self._wake_async()
                raise
            if self._generation != generation:
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

    def _claim(self, mode: str) -> None:
        if self._mode != mode:
            with self._cond:
                if self._mode is None:
                    self._mode = mode
                elif self._mode != mode:
                    other = "on_receive() callbacks" if self._mode == _PASSIVE else "receive()"
                    raise ReceiveModeError(
                        f"channel {self.name!r} is already in {self._mode} mode ({other}); "
                        f"one end receives in one mode only"
                    )
        if not self._declared:
            self._declared = True
            _runtime().declare_receiver(self.name)

    # -- closing ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close this end: ``send`` raises; receivers drain the buffer, then stop. Safe twice."""
        with self._cond:
            self._closed = True
        self._wake_everyone()

    def _release(self) -> None:
        """Wake every blocked receiver with ``ChannelClosedError`` (shutdown); the end stays usable."""
        with self._cond:
            self._generation += 1
        self._wake_everyone()

    def _wake_everyone(self) -> None:
        with self._cond:
            self._cond.notify_all()
            waiters = list(self._async_waiters)
            self._async_waiters.clear()
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(settle, fut)
            except RuntimeError:
                pass

    def __enter__(self) -> Channel[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _call_if(func: Callback, flt: FilterFunc, data: Any) -> None:
    if await flt(data):  # type: ignore[misc]
        result = func(data)
        if inspect.isawaitable(result):
            await result


def _filtered(func: Callback, flt: FilterFunc) -> Callback:
    return lambda data: _call_if(func, flt, data)


def _qualname(func: Any) -> str:
    name = getattr(func, "__qualname__", None)  # repr() only when needed: it can be costly
    return name if isinstance(name, str) else repr(func)


def _hint_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else repr(hint)
