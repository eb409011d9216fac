"""``shared_memory``: one key-value store, owned by the host, the same in every process.

In the host (and in a standalone process) calls are local; in a child they are
request/response frames to the host with a timeout. Values must pickle: an
unpicklable value raises ``SerializationError`` at the caller and nothing is
stored. Errors raised by the host (``KeyError``, ``TypeError``) arrive with
their own type. Every operation is atomic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._context import current
from ._dispatch import dispatcher
from ._errors import SerializationError
from ._ops import Clear, CompareAndSet, Delete, Expire, Get, GetAll, Incr, Pop, Set, SetDefault, Ttl
from ._wire import dumps, loads

__all__ = ["KeyValueStore", "shared_memory"]

F = TypeVar("F", bound=Callable[..., Any])
_MISSING: Any = object()

_subscribers_lock = threading.Lock()
_subscribers: dict[str, list[Callable[[Any], Any]]] = {}


def _value(value: Any) -> bytes:
    rt = current()
    return dumps(value, rt.max_message_size, what="shared_memory value")


def _check_key(key: Any) -> None:
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"shared_memory keys must be hashable, got {type(key).__name__}") from None


def _ttl(ttl: float | None) -> float | None:
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
    return ttl


def _decode(raw: bytes | None, default: Any = None) -> Any:
    return default if raw is None else loads(raw, what="shared_memory value")


def _snapshot(raw: bytes | None) -> dict[Any, Any]:
    items = _decode(raw, [])
    return {key: loads(value, what=f"shared_memory value of {key!r}") for key, value in items}


# Operations are built (and their arguments checked) before anything is sent.
def _set(key: Any, value: Any, ttl: float | None) -> Set:
    _check_key(key)
    return Set(key, _value(value), _ttl(ttl))


def _pop(key: Any, default: Any) -> Pop:
    return Pop(key, None if default is _MISSING else _value(default))


def _setdefault(key: Any, default: Any) -> SetDefault:
    _check_key(key)
    return SetDefault(key, _value(default))


def _incr(key: Any, amount: Any) -> Incr:
    _check_key(key)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"incr amount must be a number, got {type(amount).__name__}")
    return Incr(key, amount)


def _compare_and_set(key: Any, expected: Any, new: Any) -> CompareAndSet:
    _check_key(key)
    return CompareAndSet(key, None if expected is None else _value(expected), _value(new))


class KeyValueStore:
    """The ``shared_memory`` API. Sync methods may block for up to ``timeout``
    seconds in a child (default: the configured call timeout); every one has an
    ``async_*`` twin that awaits the answer without blocking the event loop."""

    def get(self, key: Any, default: Any = None, *, timeout: float | None = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent (or expired)."""
        return _decode(current().execute(Get(key), timeout), default)

    def set(self, key: Any, value: Any, *, ttl: float | None = None, timeout: float | None = None) -> None:
        """Store ``value`` under ``key``; with ``ttl`` the key expires after that many seconds."""
        current().execute(_set(key, value, ttl), timeout)

    def delete(self, key: Any, ignore_key_error: bool = True, *, timeout: float | None = None) -> None:
        """Remove ``key``; a missing key raises ``KeyError`` unless ``ignore_key_error``."""
        current().execute(Delete(key, ignore_key_error), timeout)

    def pop(self, key: Any, default: Any = _MISSING, *, timeout: float | None = None) -> Any:
        """Remove ``key`` and return its value (``KeyError`` if absent and no default)."""
        return _decode(current().execute(_pop(key, default), timeout))

    def setdefault(self, key: Any, default: Any = None, *, timeout: float | None = None) -> Any:
        """Return the value of ``key``; store and return ``default`` if it is absent."""
        return _decode(current().execute(_setdefault(key, default), timeout))

    def incr(self, key: Any, amount: int | float = 1, *, timeout: float | None = None) -> int | float:
        """Atomically add ``amount`` to a number (absent counts as 0); return the new value."""
        return _decode(current().execute(_incr(key, amount), timeout))

    def compare_and_set(self, key: Any, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        """Store ``new`` only if the value equals ``expected`` (``None``: the key is absent)."""
        return bool(_decode(current().execute(_compare_and_set(key, expected, new), timeout)))

    def expire(self, key: Any, ttl: float | None, *, timeout: float | None = None) -> bool:
        """Set (or with None remove) the expiry of ``key``; False if the key does not exist."""
        return bool(_decode(current().execute(Expire(key, _ttl(ttl)), timeout)))

    def ttl(self, key: Any, *, timeout: float | None = None) -> float | None:
        """Seconds until ``key`` expires; None without expiry; ``KeyError`` if absent."""
        return _decode(current().execute(Ttl(key), timeout))

    def get_all(self, *, timeout: float | None = None) -> dict[Any, Any]:
        """A snapshot of the whole store (changing it changes nothing shared)."""
        return _snapshot(current().execute(GetAll(), timeout))

    def clear(self, *, timeout: float | None = None) -> None:
        """Remove every key."""
        current().execute(Clear(), timeout)

    # -- async twins: same arguments, same results, same errors -------------------
    async def async_get(self, key: Any, default: Any = None, *, timeout: float | None = None) -> Any:
        return _decode(await current().async_execute(Get(key), timeout), default)

    async def async_set(self, key: Any, value: Any, *, ttl: float | None = None, timeout: float | None = None) -> None:
        await current().async_execute(_set(key, value, ttl), timeout)

    async def async_delete(self, key: Any, ignore_key_error: bool = True, *, timeout: float | None = None) -> None:
        await current().async_execute(Delete(key, ignore_key_error), timeout)

    async def async_pop(self, key: Any, default: Any = _MISSING, *, timeout: float | None = None) -> Any:
        return _decode(await current().async_execute(_pop(key, default), timeout))

    async def async_setdefault(self, key: Any, default: Any = None, *, timeout: float | None = None) -> Any:
        return _decode(await current().async_execute(_setdefault(key, default), timeout))

    async def async_incr(self, key: Any, amount: int | float = 1, *, timeout: float | None = None) -> int | float:
        return _decode(await current().async_execute(_incr(key, amount), timeout))

    async def async_compare_and_set(self, key: Any, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        return bool(_decode(await current().async_execute(_compare_and_set(key, expected, new), timeout)))

    async def async_expire(self, key: Any, ttl: float | None, *, timeout: float | None = None) -> bool:
        return bool(_decode(await current().async_execute(Expire(key, _ttl(ttl)), timeout)))

    async def async_ttl(self, key: Any, *, timeout: float | None = None) -> float | None:
        return _decode(await current().async_execute(Ttl(key), timeout))

    async def async_get_all(self, *, timeout: float | None = None) -> dict[Any, Any]:
        return _snapshot(await current().async_execute(GetAll(), timeout))

    async def async_clear(self, *, timeout: float | None = None) -> None:
        await current().async_execute(Clear(), timeout)

    # -- publish / subscribe ------------------------------------------------------
    def publish(self, channel: str, data: Any) -> None:
        """Send ``data`` to every ``on_subscriber_receive(channel)`` callback in every process."""
        if not isinstance(channel, str) or not channel or len(channel) > 200:  # a frame name holds 64 KiB
            raise ValueError(f"publish channel must be a non-empty str of at most 200 characters, got {channel!r:.80}")
        current().publish(channel, dumps(data, current().max_message_size, what=f"data published on {channel!r}"))

    async def async_publish(self, channel: str, data: Any) -> None:
        """``publish`` for code on an event loop: never blocks the loop."""
        self.publish(channel, data)

    def on_subscriber_receive(self, channel: str) -> Callable[[F], F]:
        """Decorator: run the function (sync or async, on this process's loop) for each publish."""
        if not isinstance(channel, str) or not channel or len(channel) > 200:
            raise ValueError(
                f"subscriber channel must be a non-empty str of at most 200 characters, got {channel!r:.80}"
            )

        def decorator(func: F) -> F:
            if not callable(func):
                raise TypeError(f"on_subscriber_receive needs a callable, got {type(func).__name__}")
            with _subscribers_lock:
                _subscribers.setdefault(channel, []).append(func)
            runtime = current()
            runtime.publish_sink = _deliver_publish
            runtime.subscribe(channel)
            return func

        return decorator


_published_lock = threading.Lock()
_published: list[tuple[str, bytes, list[Callable[[Any], Any]]]] = []
_published_on: Any = None  # the loop a _run_published() is scheduled on, if any


def _deliver_publish(topic: str, payload: bytes) -> None:
    """Run this process's subscribers of ``topic`` on its loop (called by the transport).

    Publishes are queued and run in batches: one wake-up of the loop per batch, not one per
    publish. A wake-up per publish floods the loop's self-pipe, which also carries signals:
    a host flooded with publishes lost its Ctrl+C.
    """
    global _published_on
    with _subscribers_lock:
        callbacks = list(_subscribers.get(topic, ()))
    if not callbacks:
        return
    with _published_lock:
        _published.append((topic, payload, callbacks))
        loop = dispatcher.loop
        if loop is not None and _published_on is loop:
            return
        _published_on = loop
    dispatcher.submit(_run_published)


def _run_published() -> None:
    global _published_on
    with _published_lock:
        batch = _published[:]
        _published.clear()
        _published_on = None
    for topic, payload, callbacks in batch:
        try:
            data = loads(payload, what=f"data published on {topic!r}")
        except SerializationError:
            from ..log import logger

            logger.exception(f"dropped a publish on {topic!r}")
            continue
        for func in callbacks:
            dispatcher.call(func, data, f"subscriber {getattr(func, '__qualname__', func)!r} of {topic!r}")


shared_memory = KeyValueStore()
"""The process-wide handle on the host's store."""
