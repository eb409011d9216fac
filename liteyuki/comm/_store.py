"""The authoritative key-value store, owned by the host.

Values are kept pickled: every reader, in the host or a child, gets its own
copy (value semantics everywhere), and a child's ``get`` is answered with the
stored bytes as they are. Every operation holds one lock, so each is atomic.

The host never unpickles a value it does not need, and never imports a user's
class to look at one: ``incr`` and ``compare_and_set`` read stored values with
``_plain``, an unpickler that refuses every global except a few builtins.

Expired keys are reclaimed actively: deadlines sit in a heap, and every call
first removes (up to a budget) the keys whose deadline has passed, so memory
follows the live keys under any stream of short-lived ones. Between calls,
nothing runs: what expired meanwhile goes at the next call.
"""

from __future__ import annotations

import heapq
import io
import itertools
import math
import pickle
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from ._ops import Clear, CompareAndSet, Delete, Expire, Get, GetAll, Incr, Pop, Set, SetDefault, StoreOp, Ttl
from ._validate import safe_repr, type_name

__all__ = ["MemoryStore"]

# Expired keys removed per call at most: bounds one call's extra work; each call adds
# at most one deadline, so reclaiming keeps up with any stream of writes.
_REAP_BUDGET = 64
# The classes plain data may name in a pickle (everything else is "not plain data").
_PLAIN_GLOBALS = frozenset({"complex", "bytearray", "set", "frozenset"})


class _NotPlain(Exception):
    """The pickle names a class the host will not import; ``args[0]`` is its dotted name."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise _NotPlain(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _NotPlain("a persistent reference")


def _plain(raw: bytes) -> Any:
    """Unpickle ``raw`` if it is plain builtin data; ``_NotPlain`` naming the class otherwise."""
    try:
        return _PlainUnpickler(io.BytesIO(raw)).load()
    except _NotPlain:
        raise
    except Exception as exc:  # truncated or corrupt: not something the host can read either
        raise _NotPlain(f"an unreadable pickle ({type(exc).__name__})") from None


# A pickle that is exactly PROTO, maybe FRAME, one number opcode and STOP holds that
# number and nothing else: incr reads it without an unpickler (its common case).
_FIXED = {0x4B: (1, False), 0x4D: (2, False), 0x4A: (4, True)}  # BININT1, BININT2, BININT


def _number(raw: bytes) -> int | float | None:
    if len(raw) < 5 or raw[0] != 0x80 or raw[-1] != 0x2E:
        return None
    pos = 2
    if raw[pos] == 0x95:  # FRAME: 8-byte length of the rest, STOP included
        if int.from_bytes(raw[3:11], "little") != len(raw) - 11:
            return None
        pos = 11
    op, data = raw[pos], raw[pos + 1 : -1]
    fixed = _FIXED.get(op)
    if fixed is not None:
        return int.from_bytes(data, "little", signed=fixed[1]) if len(data) == fixed[0] else None
    if op == 0x8A and data and len(data) == 1 + data[0]:  # LONG1: n bytes, two's complement
        return int.from_bytes(data[1:], "little", signed=True)
    if op == 0x47 and len(data) == 8:  # BINFLOAT: a big-endian double
        return float(struct.unpack(">d", data)[0])
    return None


def _check_ttl(ttl: Any) -> None:
    # The facades check ttl at the caller; this guards the store against anything else.
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0
    ):
        raise ValueError(f"ttl must be a finite number of seconds > 0, or None; got {safe_repr(ttl)}")


class MemoryStore:
    """A dict of pickled values with per-key expiry; every method is atomic.

    ``clock`` (default ``time.monotonic``) is injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[Any, bytes] = {}
        self._expiry: dict[Any, float] = {}
        # (deadline, tie-breaker, key); an entry is stale once the key's deadline changed.
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Entries held right now, expired ones not yet reclaimed included."""
        return len(self._data)

    def execute(self, op: StoreOp) -> bytes | None:
        """Carry out one operation; the answer is pickled (None: no such key / nothing).

        That is what travels back to a child, and what the ``shared_memory``
        facade unpickles, in the host as in a child.
        """
        # The two hot operations without the match: a class pattern costs ~0.3 us.
        kind = type(op)
        if kind is Get:
            return self.get(op[0])
        if kind is Set:
            self.set(*op)
            return None
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
        raise TypeError(f"not a store operation: {type_name(op)}")

    # -- expiry (lock held) ------------------------------------------------------
    def _reap(self, now: float) -> None:
        """Remove up to _REAP_BUDGET keys whose deadline passed (active expiry)."""
        heap, expiry = self._heap, self._expiry
        for _ in range(_REAP_BUDGET):
            if not heap or heap[0][0] > now:
                break
            deadline, _, key = heapq.heappop(heap)
            if expiry.get(key) == deadline:
                del expiry[key]
                del self._data[key]

    def _set_deadline(self, key: Any, deadline: float) -> None:
        self._expiry[key] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), key))
        # Stale entries (keys re-set, deleted or given a new ttl) are dropped by a
        # rebuild once they outnumber the live ones: amortised O(1) per call.
        if len(self._heap) > 2 * len(self._expiry) + 64:
            self._heap = [(d, next(self._seq), k) for k, d in self._expiry.items()]
            heapq.heapify(self._heap)

    def _live(self, key: Any, now: float) -> bytes | None:
        heap = self._heap
        if heap and heap[0][0] <= now:  # checked here: most stores have nothing to reap
            self._reap(now)
        deadline = self._expiry.get(key)
        if deadline is not None and deadline <= now:
            del self._expiry[key]
            self._data.pop(key, None)
            return None
        return self._data.get(key)

    def _put(self, key: Any, raw: bytes, ttl: float | None, now: float) -> None:
        self._data[key] = raw
        if ttl is None:
            self._expiry.pop(key, None)
        else:
            self._set_deadline(key, now + ttl)

    def _remove(self, key: Any) -> None:
        del self._data[key]
        self._expiry.pop(key, None)

    # -- operations ----------------------------------------------------------------
    def get(self, key: Any) -> bytes | None:
        with self._lock:
            return self._live(key, self._clock())

    def set(self, key: Any, raw: bytes, ttl: float | None = None) -> None:
        _check_ttl(ttl)
        with self._lock:
            now = self._clock()
            self._reap(now)
            self._put(key, raw, ttl, now)

    def delete(self, key: Any, ignore_key_error: bool = True) -> None:
        with self._lock:
            if self._live(key, self._clock()) is None:
                if ignore_key_error:
                    return
                raise KeyError(key)
            self._remove(key)

    def pop(self, key: Any, raw_default: bytes | None) -> bytes:
        with self._lock:
            raw = self._live(key, self._clock())
            if raw is None:
                if raw_default is None:
                    raise KeyError(key)
                return raw_default
            self._remove(key)
            return raw

    def setdefault(self, key: Any, raw_default: bytes) -> bytes:
        with self._lock:
            now = self._clock()
            raw = self._live(key, now)
            if raw is None:
                self._put(key, raw_default, None, now)
                return raw_default
            return raw

    def incr(self, key: Any, amount: int | float = 1) -> bytes:
        """Add ``amount`` to an int or float (absent: 0); the key keeps its expiry.

        The stored value is read without importing any class: an int subclass
        or a user's number type is refused like any other non-number.
        """
        with self._lock:
            raw = self._live(key, self._clock())
            current: Any = 0 if raw is None else _number(raw)
            if current is None:
                try:
                    current = _plain(raw)
                except _NotPlain as exc:
                    raise TypeError(f"shared_memory key {safe_repr(key)} holds {exc.args[0]}, not a number") from None
            if type(current) not in (int, float):  # not bool, not a subclass
                raise TypeError(f"shared_memory key {safe_repr(key)} holds {type(current).__name__}, not a number")
            raw = pickle.dumps(current + amount, protocol=pickle.HIGHEST_PROTOCOL)
            self._data[key] = raw
            return raw

    def compare_and_set(self, key: Any, raw_expected: bytes | None, raw_new: bytes) -> bool:
        """Store ``raw_new`` (no expiry) if the current value matches (None: the key must be absent).

        It matches when the pickled forms are identical, or when both are plain
        builtin data (None, bool, numbers, str, bytes, and tuples, lists, dicts,
        sets of those) that compare equal. Values of any other class match only
        by identical pickles: the host never runs (or imports) a user's ``__eq__``.
        """
        with self._lock:
            now = self._clock()
            raw = self._live(key, now)
            if raw_expected is None:
                ok = raw is None
            else:
                ok = raw is not None and (raw == raw_expected or _plain_equal(raw, raw_expected))
            if ok:
                self._put(key, raw_new, None, now)
            return ok

    def expire(self, key: Any, ttl: float | None) -> bool:
        _check_ttl(ttl)
        with self._lock:
            now = self._clock()
            if self._live(key, now) is None:
                return False
            if ttl is None:
                self._expiry.pop(key, None)
            else:
                self._set_deadline(key, now + ttl)
            return True

    def ttl(self, key: Any) -> float | None:
        """Seconds left; None for no expiry; KeyError when the key does not exist."""
        with self._lock:
            now = self._clock()
            if self._live(key, now) is None:
                raise KeyError(key)
            deadline = self._expiry.get(key)
            return None if deadline is None else max(0.0, deadline - now)

    def usage(self) -> dict[str, int]:
        """``{"keys": n, "bytes": pickled size of the values}`` of what is live (for the status)."""
        with self._lock:
            now = self._clock()
            live = [v for k, v in self._data.items() if self._expiry.get(k, now + 1) > now]
            return {"keys": len(live), "bytes": sum(len(v) for v in live)}

    def get_all(self) -> bytes:
        with self._lock:
            now = self._clock()
            for key in [k for k, d in self._expiry.items() if d <= now]:
                self._remove(key)
            items = list(self._data.items())
        # One pickle of already-pickled values: cheap, and a consistent snapshot.
        return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._expiry.clear()
            self._heap.clear()


def _plain_equal(a: bytes, b: bytes) -> bool:
    try:
        return bool(_plain(a) == _plain(b))
    except (_NotPlain, RecursionError):
        return False


def _pickled(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
