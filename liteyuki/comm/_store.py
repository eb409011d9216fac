"""The authoritative key-value store, owned by the host.

Values are kept pickled: every reader, in the host or a child, gets its own
copy (value semantics everywhere), and a child's ``get`` is answered with the
stored bytes as they are. Every operation holds one lock, so each is atomic.
"""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any

from ._ops import Clear, CompareAndSet, Delete, Expire, Get, GetAll, Incr, Pop, Set, SetDefault, StoreOp, Ttl

__all__ = ["MemoryStore"]

_MISSING = object()


class MemoryStore:
    """A dict of pickled values with per-key expiry; every method is atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[Any, bytes] = {}
        self._expiry: dict[Any, float] = {}

    def execute(self, op: StoreOp) -> bytes | None:
        """Carry out one operation; the answer is pickled (None: no such key / nothing).

        That is what travels back to a child, and what the ``shared_memory``
        facade unpickles, in the host as in a child.
        """
        match op:
            case Get(key):
                return self.get(key)
            case Set(key, value, ttl):
                self.set(key, value, ttl)
                return None
            case Delete(key, missing_ok):
                self.delete(key, missing_ok)
                return None
            case Pop(key, default):
                return self.pop(key, default)
            case SetDefault(key, default):
                return self.setdefault(key, default)
            case Incr(key, amount):
                return self.incr(key, amount)
            case CompareAndSet(key, expected, new):
                return _pickled(self.compare_and_set(key, expected, new))
            case Expire(key, ttl):
                return _pickled(self.expire(key, ttl))
            case Ttl(key):
                return _pickled(self.ttl(key))
            case GetAll():
                return self.get_all()
            case Clear():
                self.clear()
                return None
        raise TypeError(f"not a store operation: {op!r}")

    def _live(self, key: Any) -> bytes | None:
        deadline = self._expiry.get(key)
        if deadline is not None and deadline <= time.monotonic():
            del self._expiry[key]
            self._data.pop(key, None)
            return None
        return self._data.get(key)

    def _put(self, key: Any, raw: bytes, ttl: float | None) -> None:
        self._data[key] = raw
        if ttl is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = time.monotonic() + ttl

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            return self._live(key)

    def set(self, key: Any, raw: bytes, ttl: float | None = None) -> None:
        with self._lock:
            self._put(key, raw, ttl)

    def delete(self, key: Any, ignore_key_error: bool = True) -> None:
        with self._lock:
            if self._live(key) is None:
                if ignore_key_error:
                    return
                raise KeyError(key)
            del self._data[key]
            self._expiry.pop(key, None)

    def pop(self, key: Any, raw_default: bytes | None) -> bytes:
        with self._lock:
            raw = self._live(key)
            if raw is None:
                if raw_default is None:
                    raise KeyError(key)
                return raw_default
            del self._data[key]
            self._expiry.pop(key, None)
            return raw

    def setdefault(self, key: Any, raw_default: bytes) -> bytes:
        with self._lock:
            raw = self._live(key)
            if raw is None:
                self._put(key, raw_default, None)
                return raw_default
            return raw

    def incr(self, key: Any, amount: int | float = 1) -> bytes:
        with self._lock:
            raw = self._live(key)
            current = 0 if raw is None else pickle.loads(raw)
            if isinstance(current, bool) or not isinstance(current, (int, float)):
                raise TypeError(f"shared_memory key {key!r} holds {type(current).__name__}, not a number")
            raw = pickle.dumps(current + amount, protocol=pickle.HIGHEST_PROTOCOL)
            self._data[key] = raw
            return raw

    def compare_and_set(self, key: Any, raw_expected: bytes | None, raw_new: bytes) -> bool:
        """Store ``raw_new`` if the current value equals the expected one (None: key absent)."""
        with self._lock:
            raw = self._live(key)
            if raw_expected is None:
                ok = raw is None
            else:
                ok = raw is not None and (raw == raw_expected or pickle.loads(raw) == pickle.loads(raw_expected))
            if ok:
                self._put(key, raw_new, None)
            return ok

    def expire(self, key: Any, ttl: float | None) -> bool:
        with self._lock:
            if self._live(key) is None:
                return False
            if ttl is None:
                self._expiry.pop(key, None)
            else:
                self._expiry[key] = time.monotonic() + ttl
            return True

    def ttl(self, key: Any) -> float | None:
        """Seconds left; None for no expiry; KeyError when the key does not exist."""
        with self._lock:
            if self._live(key) is None:
                raise KeyError(key)
            deadline = self._expiry.get(key)
            return None if deadline is None else max(0.0, deadline - time.monotonic())

    def get_all(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            for key in [k for k, d in self._expiry.items() if d <= now]:
                del self._expiry[key]
                self._data.pop(key, None)
            items = list(self._data.items())
        # One pickle of already-pickled values: cheap, and a consistent snapshot.
        return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._expiry.clear()


def _pickled(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
