"""``shared_memory``: one key-value store, owned by the host, the same in every process.

In the host (and in a standalone process) calls are local; in a child they are
request/response frames to the host with a timeout. Values must pickle: an
unpicklable value raises ``SerializationError`` at the caller and nothing is
stored. Errors raised by the host (``KeyError``, ``TypeError``) arrive with
their own type. Every operation is atomic.

With ``storage="redis://..."`` every process (host and children, of every host
on that Redis) runs the same operations on Redis directly (``_redis_store.py``);
then a lost server is ``StorageUnavailableError`` within the call's timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from . import _context
from ._context import current
from ._dispatch import dispatcher
from ._errors import SerializationError
from ._ops import Clear, CompareAndSet, Delete, Expire, Get, GetAll, Incr, Pop, Set, SetDefault, StoreOp, Ttl
from ._validate import check_bool, check_name, check_number, check_timeout, check_ttl, safe_repr, type_name
from ._wire import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["KeyValueStore", "shared_memory"]
_MISSING: Any = object()

_subscribers_lock = threading.Lock()
_subscribers: dict[str, list[Callable[[Any], Any]]] = {}


def _value(value: Any) -> bytes:
    rt = current()
    return dumps(value, rt.max_message_size, what="shared_memory value")


# Plain keys always pickle; below this size (characters, bytes, or bytes of an int) they
# cannot come near a message's limit.
_SHORT_KEY = 4096


def _check_key(key: Any) -> Any:
    """``key`` checked, as the store will keep it: a plain key as it is, any other as a copy."""
    try:
        hash(key)
    except Exception:  # whatever a hostile __hash__ raises, the caller gets TypeError
        raise TypeError(f"shared_memory keys must be hashable, got {type_name(key)}") from None
    kind = type(key)
    if kind is str or kind is bytes:
        if len(key) <= _SHORT_KEY:
            return key
    elif kind is int:
        if key.bit_length() <= 8 * _SHORT_KEY:
            return key
    elif kind is bool:
        return key
    elif kind is float:
        if key != key:
            raise ValueError("shared_memory keys must equal themselves, got nan (it could never be found again)")
        return key
    # The host's memory store keeps keys as they are and pickles them only when another
    # process asks (get_all, a child's call): a key that cannot be pickled, or is larger than
    # a message may be, would break those calls for every process. Refused here, alike in
    # every process and on every backend (a child's request would fail on it anyway).
    raw = dumps(key, (_context._current or current()).max_message_size, what="shared_memory key")
    # And kept as a copy: the caller's own object, changed after the call (a hashable object
    # with a mutable attribute), would rename the key, or break get_all(), for every process.
    copy = loads(raw, what="shared_memory key")
    # Every other process sees a copy too: a key its copy does not equal (a class compared by
    # identity, a tuple holding nan) was written and never found again, piling up entries.
    try:
        same = bool(copy == key) and hash(copy) == hash(key)
    except Exception:
        same = False
    if not same:
        raise TypeError(
            f"shared_memory keys must equal a copy of themselves, got {type_name(key)} "
            f"(compared by identity, or holding nan: another process could never find it)"
        )
    return copy


def _ttl(ttl: float | None) -> float | None:
    return check_ttl(ttl)


def _execute(op: StoreOp, timeout: float | None) -> bytes | None:
    # The runtime read without calling current() once it exists (every sync call passes here).
    return (_context._current or current()).execute(op, check_timeout(timeout))


async def _async_execute(op: StoreOp, timeout: float | None) -> bytes | None:
    return await current().async_execute(op, check_timeout(timeout))


def _decode(raw: bytes | None, default: Any = None) -> Any:
    return default if raw is None else loads(raw, what="shared_memory value")


def _snapshot(raw: bytes | None) -> dict[Any, Any]:
    items = _decode(raw, [])
    return {key: loads(value, what=f"shared_memory value of {safe_repr(key)}") for key, value in items}


# Operations are built (and their arguments checked) before anything is sent.
def _set(key: Any, value: Any, ttl: float | None) -> Set:
    key = _check_key(key)
    return Set(key, _value(value), _ttl(ttl))


def _get(key: Any) -> Get:
    key = _check_key(key)
    return Get(key)


def _delete(key: Any, ignore_key_error: bool) -> Delete:
    key = _check_key(key)
    return Delete(key, check_bool(ignore_key_error, "ignore_key_error"))


def _expire(key: Any, ttl: float | None) -> Expire:
    key = _check_key(key)
    return Expire(key, _ttl(ttl))


def _ttl_op(key: Any) -> Ttl:
    key = _check_key(key)
    return Ttl(key)


def _pop(key: Any, default: Any) -> Pop:
    key = _check_key(key)
    return Pop(key, None if default is _MISSING else _value(default))


def _setdefault(key: Any, default: Any) -> SetDefault:
    key = _check_key(key)
    return SetDefault(key, _value(default))


def _incr(key: Any, amount: Any) -> Incr:
    key = _check_key(key)
    # Exactly int or float: the host unpickles the amount, and must not import a subclass.
    if type(amount) not in (int, float):
        raise TypeError(f"amount must be an int or float, got {type_name(amount)}")
    # Any int is finite and adds exactly (check_number refused those too large for a float).
    return Incr(key, amount if type(amount) is int else check_number(amount, "amount"))


def _compare_and_set(key: Any, expected: Any, new: Any) -> CompareAndSet:
    key = _check_key(key)
    return CompareAndSet(key, None if expected is None else _value(expected), _value(new))


class KeyValueStore:
    """The ``shared_memory`` API. Sync methods may block for up to ``timeout``
    seconds in a child (default: the configured call timeout); every one has an
    ``async_*`` twin that awaits the answer without blocking the event loop."""

    def get(self, key: Any, default: Any = None, *, timeout: float | None = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent (or expired)."""
        return _decode(_execute(_get(key), timeout), default)

    def set(self, key: Any, value: Any, *, ttl: float | None = None, timeout: float | None = None) -> None:
        """Store ``value`` under ``key``; with ``ttl`` the key expires after that many seconds."""
        _execute(_set(key, value, ttl), timeout)

    def delete(self, key: Any, ignore_key_error: bool = True, *, timeout: float | None = None) -> None:
        """Remove ``key``; a missing key raises ``KeyError`` unless ``ignore_key_error``."""
        _execute(_delete(key, ignore_key_error), timeout)

    def pop(self, key: Any, default: Any = _MISSING, *, timeout: float | None = None) -> Any:
        """Remove ``key`` and return its value (``KeyError`` if absent and no default).

        A value this process cannot unpickle raises ``SerializationError`` and is put
        back (without its expiry) unless the key was set again in the meantime."""
        op = _pop(key, default)
        raw = _execute(op, timeout)
        try:
            return _decode(raw)
        except SerializationError:
            _execute(SetDefault(op.key, raw), timeout)
            raise

    def setdefault(self, key: Any, default: Any = None, *, timeout: float | None = None) -> Any:
        """Return the value of ``key``; store and return ``default`` if it is absent."""
        return _decode(_execute(_setdefault(key, default), timeout))

    def incr(self, key: Any, amount: int | float = 1, *, timeout: float | None = None) -> int | float:
        """Atomically add ``amount`` to a number (absent counts as 0); return the new value."""
        return _decode(_execute(_incr(key, amount), timeout))

    def compare_and_set(self, key: Any, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        """Store ``new`` only if the value equals ``expected`` (``None``: the key is absent)."""
        return bool(_decode(_execute(_compare_and_set(key, expected, new), timeout)))

    def expire(self, key: Any, ttl: float | None, *, timeout: float | None = None) -> bool:
        """Set (or with None remove) the expiry of ``key``; False if the key does not exist."""
        return bool(_decode(_execute(_expire(key, ttl), timeout)))

    def ttl(self, key: Any, *, timeout: float | None = None) -> float | None:
        """Seconds until ``key`` expires; None without expiry; ``KeyError`` if absent."""
        return _decode(_execute(_ttl_op(key), timeout))

    def get_all(self, *, timeout: float | None = None) -> dict[Any, Any]:
        """A snapshot of the whole store (changing it changes nothing shared)."""
        return _snapshot(_execute(GetAll(), timeout))

    def clear(self, *, timeout: float | None = None) -> None:
        """Remove every key."""
        _execute(Clear(), timeout)

    # -- async twins: same arguments, same results, same errors -------------------
    async def async_get(self, key: Any, default: Any = None, *, timeout: float | None = None) -> Any:
        return _decode(await _async_execute(_get(key), timeout), default)

    async def async_set(self, key: Any, value: Any, *, ttl: float | None = None, timeout: float | None = None) -> None:
        await _async_execute(_set(key, value, ttl), timeout)

    async def async_delete(self, key: Any, ignore_key_error: bool = True, *, timeout: float | None = None) -> None:
        await _async_execute(_delete(key, ignore_key_error), timeout)

    async def async_pop(self, key: Any, default: Any = _MISSING, *, timeout: float | None = None) -> Any:
        op = _pop(key, default)
        raw = await _async_execute(op, timeout)
        try:
            return _decode(raw)
        except SerializationError:  # put back, as in pop()
            await _async_execute(SetDefault(op.key, raw), timeout)
            raise

    async def async_setdefault(self, key: Any, default: Any = None, *, timeout: float | None = None) -> Any:
        return _decode(await _async_execute(_setdefault(key, default), timeout))

    async def async_incr(self, key: Any, amount: int | float = 1, *, timeout: float | None = None) -> int | float:
        return _decode(await _async_execute(_incr(key, amount), timeout))

    async def async_compare_and_set(self, key: Any, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        return bool(_decode(await _async_execute(_compare_and_set(key, expected, new), timeout)))

    async def async_expire(self, key: Any, ttl: float | None, *, timeout: float | None = None) -> bool:
        return bool(_decode(await _async_execute(_expire(key, ttl), timeout)))

    async def async_ttl(self, key: Any, *, timeout: float | None = None) -> float | None:
        return _decode(await _async_execute(_ttl_op(key), timeout))

    async def async_get_all(self, *, timeout: float | None = None) -> dict[Any, Any]:
        return _snapshot(await _async_execute(GetAll(), timeout))

    async def async_clear(self, *, timeout: float | None = None) -> None:
        await _async_execute(Clear(), timeout)

    # -- publish / subscribe ------------------------------------------------------
    def publish(self, channel: str, data: Any) -> None:
        """Send ``data`` to every ``on_subscriber_receive(channel)`` callback in every process."""
        channel = check_name(channel, "channel")
        current().publish(channel, dumps(data, current().max_message_size, what=f"data published on {channel!r}"))

    async def async_publish(self, channel: str, data: Any) -> None:
        """``publish`` for code on an event loop: never blocks the loop."""
        channel = check_name(channel, "channel")  # the same checks and errors as publish()
        rt = current()
        await rt.async_publish(channel, dumps(data, rt.max_message_size, what=f"data published on {channel!r}"))

    def on_subscriber_receive(self, channel: str) -> Callable[[F], F]:
        """Decorator: run the function (sync or async, on this process's loop) for each publish."""
        channel = check_name(channel, "channel")

        def decorator(func: F) -> F:
            if not callable(func):
                raise TypeError(f"on_subscriber_receive needs a callable, got {type(func).__name__}")
            with _subscribers_lock:
                _subscribers.setdefault(channel, []).append(func)
            dispatcher.ensure_loop()  # a plain child starts its callback loop on first need
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
