"""``shared_memory`` on Redis: the same typed operations as ``MemoryStore``, atomic across hosts.

Layout (everything under the namespace, ``liteyuki`` by default)::

    {ns}:kv:s<text>        a str key          (readable with redis-cli)
    {ns}:kv:i<decimal>     an int key
    {ns}:kv:b<bytes>       a bytes key
    {ns}:kv:p<pickle>      any other hashable key, by its pickle

A bool, or a float (complex) equal to an int, is written as that int key, and a
complex with no imaginary part as its float: equal numbers are one key, as in
a dict (``_canonical``).

A value is stored as its pickle, except an ``int``, which is stored as its
decimal text: then ``incr`` is Redis's own ``INCRBY`` — one atomic command,
exact over the whole 64-bit range, no Lua arithmetic on doubles. A pickle
always starts with byte 0x80, a decimal never does, so the two cannot be
confused. Counters beyond 64 bits and float counters use the slow path: read,
add in Python (exact for any int), write back with a compare-and-set script,
retry if another process changed the value in between.

Atomicity: each operation is one Redis command (``GETDEL`` for ``pop``,
``INCRBY``, ``SET`` ``PX``, ``PEXPIRE``, ``PTTL``) or one Lua script
(``setdefault``, ``compare_and_set``, ``expire(key, None)``). Lua, not
``WATCH``/``MULTI``: a script runs atomically on the server in one round trip
and needs no dedicated connection, while ``WATCH`` costs three round trips and
retries under contention. ``compare_and_set`` compares the stored bytes in the
script (exact for ints and strings, whose pickles are canonical); when the
bytes differ it compares the values here exactly as the memory backend does
(plain builtin data only: no user class is imported, no user ``__eq__`` runs),
and retries the script with the bytes it saw if they are equal.

``get_all`` and ``clear`` walk the namespace with ``SCAN`` (never ``KEYS``);
``get_all`` is a snapshot of each key, not of all keys at one instant.

Each operation is written once, as a generator that yields Redis commands and
receives their replies; a sync driver (redis-py) and an async driver
(``redis.asyncio``) run it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import numbers
import pickle
import time
import weakref
from collections.abc import Generator
from typing import Any, NoReturn

from ._errors import BrokenPeerError, CommTimeoutError, SerializationError, StorageUnavailableError
from ._ops import Clear, CompareAndSet, Delete, Expire, Get, GetAll, Incr, Pop, Set, SetDefault, StoreOp, Ttl
from ._redis_conn import Health, RedisSettings, TimedClients, import_redis, translate
from ._store import _NotPlain as NotPlain
from ._store import _number as number_in
from ._store import _plain as plain
from ._store import _plain_equal as plain_equal
from ._validate import safe_repr

__all__ = ["RedisStore"]

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_INT64 = range(-(2**63), 2**63)
_SCAN_COUNT = 500
_USAGE_LIMIT = 1.0  # how long the status may take counting the namespace (it may run on the host's loop)
_MAX_ATTEMPTS = 10_000  # optimistic retries of one slow-path incr or compare_and_set
_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _bounded(coro: Any, limit: float) -> Any:
    """asyncio.timeout for 3.10: cancel this task at the deadline, raise TimeoutError then."""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def expire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(limit, expire)
    try:
        return await coro
    except asyncio.CancelledError:
        if fired:
            raise asyncio.TimeoutError from None
        raise
    finally:
        handle.cancel()


class _Script:
    """A Lua script run with EVALSHA (EVAL once if the server does not have it, e.g. after a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_SETDEFAULT = _Script(
    """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return false
"""
)
# ARGV: mode ('absent' | 'equal'), expected bytes, new bytes, 'keepttl' or ''.
# Returns {1} when stored, {0} when the key is absent, {0, current} when it holds something else.
_COMPARE_AND_SET = _Script(
    """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == 'absent' then
  if current then return {0, current} end
elseif not current then
  return {0}
elseif current ~= ARGV[2] then
  return {0, current}
end
if ARGV[4] == 'keepttl' then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return {1}
"""
)
_PERSIST = _Script(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"""
)

Command = tuple[Any, ...]
Plan = Generator[Command, Any, "bytes | None"]


# -- representation ---------------------------------------------------------------
def _pickled_int(raw: bytes) -> int | None:
    """The int a pickle holds if it is exactly one plain ``int`` (read from its opcodes, not unpickled)."""
    if len(raw) < 4 or raw[0] != 0x80 or raw[-1] != 0x2E:  # PROTO ... STOP
        return None
    i = 2
    if raw[i] == 0x95:  # FRAME + 8-byte length
        i += 9
    if i >= len(raw) - 1:
        return None
    op, body = raw[i], raw[i + 1 : -1]
    if op == 0x4B and len(body) == 1:  # BININT1
        return body[0]
    if op == 0x4D and len(body) == 2:  # BININT2
        return int.from_bytes(body, "little")
    if op == 0x4A and len(body) == 4:  # BININT
        return int.from_bytes(body, "little", signed=True)
    if op == 0x8A and len(body) >= 1 and body[0] == len(body) - 1:  # LONG1
        return int.from_bytes(body[1:], "little", signed=True)
    return None


def to_cell(raw: bytes) -> bytes:
    """What Redis holds for a pickled value: decimal text for an int, else the pickle itself."""
    number = _pickled_int(raw)
    return raw if number is None else str(number).encode()


def from_cell(cell: bytes) -> bytes:
    """The pickle of what Redis holds (the answer format of every store backend)."""
    if cell[:1] == b"\x80":
        return cell
    try:
        return pickle.dumps(int(cell), protocol=_PROTOCOL)
    except ValueError:  # written by something else (redis-cli SET ...)
        raise SerializationError(f"the value {cell[:40]!r} in Redis was not stored by shared_memory") from None


# An int key is written as its digits below this many bits (~3,900 digits): Python converts
# at most 4,300 digits to text (sys.get_int_max_str_digits); a larger one is pickled.
_INT_AS_TEXT = 13_000


def _canonical(key: Any) -> Any:
    """One Redis key per class of keys a dict takes for one: ``True``, ``1.0``, ``1+0j``,
    ``Fraction(1)`` and an ``IntEnum`` of value 1 are the key ``1``; ``-0.0`` is ``0``; a
    ``str``, ``bytes`` or ``tuple`` subclass equal to its base value (a namedtuple) is that
    value; a tuple's items are canonical too; a frozenset is its canonical items in one order
    (``_FrozenKey``). Each was a Redis key of its own (its pickle): ``get`` of an equal key
    missed the entry, and ``get_all()`` collapsed them into one, pairing a key with another
    key's value.

    A difference from the memory backend, which keeps the key object inserted first: here
    ``get_all()`` gives the canonical key back (``set(1.0, x)`` then ``get_all()`` is
    ``{1: x}`` where memory has ``{1.0: x}``); ``get``/``set`` of any equal key reach the same
    entry on both. A key of another class equal to one of these (a user class with its own
    ``__eq__``) stays a key of its own, by its pickle.
    """
    kind = type(key)
    if kind is str or kind is int or kind is bytes or key is None:
        return key
    if kind is bool:
        return int(key)
    if kind is float:
        return int(key) if key.is_integer() else key  # -0.0 too; not nan or inf
    if kind is complex:
        return _canonical(key.real) if key.imag == 0 else key
    if kind is tuple or (isinstance(key, tuple) and _same(key, tuple(key))):
        return tuple(map(_canonical, key))
    if isinstance(key, frozenset) and (kind is frozenset or _same(key, frozenset(key))):
        return _FrozenKey(sorted(map(_canonical, key), key=_plain_pickle))
    for base in (str, bytes):
        if isinstance(key, base):
            value = base(key)
            return value if _same(key, value) else key
    if isinstance(key, numbers.Number):  # Fraction, Decimal, numpy scalars, int and float subclasses
        for cast in (int, float):
            try:
                value = cast(key)
            except (TypeError, ValueError, OverflowError, ArithmeticError):
                continue
            if _same(key, value):
                return _canonical(value)
    return key


def _same(key: Any, value: Any) -> bool:
    """Whether a dict takes ``key`` and ``value`` for one key."""
    try:
        return bool(key == value) and hash(key) == hash(value)
    except Exception:
        return False


class _FrozenKey(tuple):  # type: ignore[type-arg]
    """A frozenset key's canonical items, sorted by their pickles: a frozenset pickles its
    items in its hash table's order, which differs with insertion history (``{1, 9}`` and
    ``{9, 1}``) and, for strings, between processes."""

    __slots__ = ()


def _thaw(key: Any) -> Any:
    """The key a canonical one stands for (frozensets back from ``_FrozenKey``)."""
    if type(key) is _FrozenKey:
        return frozenset(map(_thaw, key))
    if type(key) is tuple and any(type(item) in (_FrozenKey, tuple) for item in key):
        return tuple(map(_thaw, key))
    return key


def _unshared(key: Any, seen: set[int]) -> Any:
    """A canonical key with no string or bytes object in it twice: the pickle's memo writes an
    object met again as a reference, so ``(s, s)`` pickled unlike an equal tuple of two
    distinct strings. (Tuples are new objects already: ``_canonical`` rebuilt them.)"""
    kind = type(key)
    if kind is tuple or kind is _FrozenKey:
        items = [_unshared(item, seen) for item in key]
        return tuple(items) if kind is tuple else _FrozenKey(items)
    if kind is str or kind is bytes:
        if id(key) in seen:  # a copy: a new object (but for cached ones, alike in every process)
            if kind is bytes:
                return bytes(bytearray(key))
            return key.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
        seen.add(id(key))
    return key


def _plain_pickle(key: Any) -> bytes:
    """Bytes equal keys sort by (the pickle without its memo: see ``_unshared``)."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=_PROTOCOL)
    pickler.fast = True  # no memo
    try:
        pickler.dump(key)
    except ValueError:  # a cycle (an object key holding itself): only the memo pickles it
        return pickle.dumps(key, protocol=_PROTOCOL)
    return out.getvalue()


class _Keys:
    """Store keys ↔ Redis keys under ``{ns}:kv:``."""

    def __init__(self, settings: RedisSettings) -> None:
        self.prefix = settings.key("kv").encode()
        self.pattern = self.prefix + b"*"

    def encode(self, key: Any) -> bytes:
        hash(key)  # unhashable keys fail here, as they do in a dict
        key = _canonical(key)
        kind = type(key)
        if kind is str:
            try:
                return self.prefix + b"s" + key.encode()
            except UnicodeEncodeError:  # lone surrogates: fall through to the pickle
                pass
        elif kind is int and key.bit_length() <= _INT_AS_TEXT:
            return self.prefix + b"i" + str(key).encode()
        elif kind is bytes:
            return self.prefix + b"b" + key
        if kind is tuple or kind is _FrozenKey:
            key = _unshared(key, set())
        return self.prefix + b"p" + pickle.dumps(key, protocol=_PROTOCOL)

    def decode(self, name: bytes) -> Any:
        tag, body = name[len(self.prefix) : len(self.prefix) + 1], name[len(self.prefix) + 1 :]
        if tag == b"s":
            return body.decode()
        if tag == b"i":
            return int(body)
        if tag == b"b":
            return bytes(body)
        if tag == b"p":
            return _thaw(pickle.loads(body))
        raise ValueError(f"unknown key tag {tag!r}")


# Redis refuses an expiry past 2**63 ms from now (about 292 million years); the memory store
# takes any finite ttl. Longer ones are clamped here: nobody can tell the difference.
_MAX_MS = 2**62


def _ms(ttl: float) -> int:
    # Compared before multiplying: ttl * 1000 of 1e306 is inf, and round(inf) raised OverflowError.
    if ttl >= _MAX_MS / 1000:
        return _MAX_MS
    return max(1, round(ttl * 1000))


def _number(key: Any, cell: bytes | None) -> int | float:
    """The number a cell holds, read as the memory backend reads it: no class is imported,
    and a bool, an int subclass or a user's number type is refused like any non-number."""
    if cell is None:
        return 0
    raw = from_cell(cell)
    current: Any = number_in(raw)
    if current is None:
        try:
            current = plain(raw)
        except NotPlain as exc:
            raise TypeError(f"shared_memory key {safe_repr(key)} holds {exc.args[0]}, not a number") from None
    if type(current) not in (int, float):
        raise TypeError(f"shared_memory key {safe_repr(key)} holds {type(current).__name__}, not a number")
    return current


class RedisStore:
    """The store backend for ``storage="redis://..."``: ``execute`` / ``async_execute`` a typed operation.

    The answer contract is ``MemoryStore.execute``'s: the result pickled, or
    None for "no such key / nothing". One instance per process; thread-safe
    (redis-py's pool gives each thread its own connection).
    """

    def __init__(self, settings: RedisSettings, label: str = "shared_memory") -> None:
        self.settings = settings
        self.keys = _Keys(settings)
        self.health = Health(settings, label)
        self._redis = import_redis()
        self._client = settings.client()
        self._timed = TimedClients(settings, self._client)  # for calls with their own timeout
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._closed = False

    def _closed_error(self, what: str) -> BrokenPeerError:
        """What a call in flight when this process's runtime stopped raises (or one made after):
        BrokenPeerError, as on the memory backend, whose child's link is closed then. redis-py
        raised a raw ``ValueError: I/O operation on closed file`` from a reply read on a
        connection that close() had just closed under it."""
        return BrokenPeerError(f"shared_memory ({what}): this process's storage was closed (the runtime stopped)")

    # -- drivers ------------------------------------------------------------------
    def execute(self, op: StoreOp, timeout: float | None = None) -> bytes | None:
        """Run ``op``; a lost server raises ``StorageUnavailableError`` within ``timeout``
        (default ``call_timeout``), the socket timeout of the connection it runs on."""
        if self._closed:
            raise self._closed_error(op.method)
        self.health.check(op.method)
        client = self._client if timeout is None else self._timed.get(timeout)
        try:
            if type(op) is Get:  # the hot path, without a plan
                cell = client.execute_command("GET", self.keys.encode(op.key))
                result = None if cell is None else from_cell(cell)
            else:
                result = self._drive(self._plan(op), client)
        except (self._redis.RedisError, OSError, ValueError) as exc:
            self._failed(exc, op, timeout)
        if self.health.down_since is not None:
            self.health.ok()
        return result

    def _failed(self, exc: BaseException, op: StoreOp, timeout: float | None) -> NoReturn:
        """Raise what ``exc``, from a call with its own ``timeout`` (or None), means here."""
        if self._closed:  # the connection was closed under the call
            raise self._closed_error(op.method) from exc
        if isinstance(exc, (self._redis.ConnectionError, self._redis.TimeoutError, OSError)):
            self.health.failed(exc, timeout)
            raise translate(exc, self.settings, op.method) from exc
        if isinstance(exc, self._redis.RedisError):
            raise translate(exc, self.settings, op.method) from exc
        raise exc

    def _drive(self, plan: Plan, client: Any) -> bytes | None:
        try:
            command = next(plan)
            while True:
                try:
                    reply = self._call(client, command)
                except self._redis.ResponseError as exc:
                    command = plan.throw(exc)
                else:
                    command = plan.send(reply)
        except StopIteration as stop:
            return stop.value

    def _call(self, client: Any, command: Command) -> Any:
        if type(command[0]) is _Script:
            script, *rest = command
            try:
                return client.execute_command("EVALSHA", script.sha, 1, *rest)
            except self._redis.exceptions.NoScriptError:
                return client.execute_command("EVAL", script.source, 1, *rest)
        return client.execute_command(*command)

    async def async_execute(self, op: StoreOp, timeout: float | None = None) -> bytes | None:
        """Like ``execute``, on ``redis.asyncio``; ``timeout`` (default ``call_timeout``) bounds the call."""
        if self._closed:
            raise self._closed_error(op.method)
        self.health.check(op.method)
        limit = self.settings.call_timeout if timeout is None else timeout
        try:
            if _timeout is not None:  # in this task: see _async_client
                async with _timeout(limit):
                    result = await self._run_async(op)
            else:  # 3.10: not wait_for, which loses a cancel arriving as the call finishes (gh-86296)
                result = await _bounded(self._run_async(op), limit)
        except asyncio.TimeoutError as exc:  # first: it is an OSError (TimeoutError) since 3.11
            self.health.failed(exc, timeout)
            raise StorageUnavailableError(
                f"redis at {self.settings.where} did not answer {op.method!r} within {limit} s"
            ) from None
        except (self._redis.RedisError, OSError, ValueError) as exc:
            self._failed(exc, op, None)
        self.health.ok()
        return result

    async def _run_async(self, op: StoreOp) -> bytes | None:
        client = self._async_client()
        plan = self._plan(op)
        try:
            command = next(plan)
            while True:
                try:
                    reply = await self._async_call(client, command)
                except self._redis.ResponseError as exc:
                    command = plan.throw(exc)
                else:
                    command = plan.send(reply)
        except StopIteration as stop:
            return stop.value

    async def _async_call(self, client: Any, command: Command) -> Any:
        if type(command[0]) is _Script:
            script, *rest = command
            try:
                return await client.execute_command("EVALSHA", script.sha, 1, *rest)
            except self._redis.exceptions.NoScriptError:
                return await client.execute_command("EVAL", script.source, 1, *rest)
        return await client.execute_command(*command)

    def _async_client(self) -> Any:
        # redis.asyncio connections belong to the loop that made them: one client per loop.
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            # No socket timeout: async_execute bounds each call by cancelling it. redis.asyncio
            # sends a command in asyncio.wait_for when it has one, and wait_for before Python
            # 3.12 loses a cancellation that arrives as the awaited part finishes (CPython
            # gh-86296): a task cancelled in a loop of async_incr ran to its end. For the same
            # reason the bound is asyncio.timeout where there is one (3.11+).
            client = self._async[loop] = self.settings.async_client(read_timeout=False)
        return client

    def ping(self) -> None:
        """Check the server answers (raises ``StorageUnavailableError`` if not)."""
        try:
            self._client.ping()
        except (self._redis.RedisError, OSError) as exc:
            self.health.failed(exc)
            raise translate(exc, self.settings, "ping") from exc
        self.health.ok()

    def close(self) -> None:
        self._closed = True  # before the clients: a call whose connection closes under it sees it
        self._client.close()
        self._timed.close()

    # -- the operations, as plans -------------------------------------------------
    def _plan(self, op: StoreOp) -> Plan:
        match op:
            case Get(key):
                return self._get(key)
            case Set(key, value, ttl):
                return self._set(key, value, ttl)
            case Delete(key, missing_ok):
                return self._delete(key, missing_ok)
            case Pop(key, default):
                return self._pop(key, default)
            case SetDefault(key, default):
                return self._setdefault(key, default)
            case Incr(key, amount):
                return self._incr(key, amount)
            case CompareAndSet(key, expected, new):
                return self._compare_and_set(key, expected, new)
            case Expire(key, ttl):
                return self._expire(key, ttl)
            case Ttl(key):
                return self._ttl(key)
            case GetAll():
                return self._get_all()
            case Clear():
                return self._clear()
        raise TypeError(f"not a store operation: {op!r}")

    def _get(self, key: Any) -> Plan:
        cell = yield ("GET", self.keys.encode(key))
        return None if cell is None else from_cell(cell)

    def _set(self, key: Any, raw: bytes, ttl: float | None) -> Plan:
        name = self.keys.encode(key)
        if ttl is None:
            yield ("SET", name, to_cell(raw))
        else:
            yield ("SET", name, to_cell(raw), "PX", _ms(ttl))
        return None

    def _delete(self, key: Any, missing_ok: bool) -> Plan:
        removed = yield ("DEL", self.keys.encode(key))
        if not removed and not missing_ok:
            raise KeyError(key)
        return None

    def _pop(self, key: Any, raw_default: bytes | None) -> Plan:
        cell = yield ("GETDEL", self.keys.encode(key))
        if cell is None:
            if raw_default is None:
                raise KeyError(key)
            return raw_default
        return from_cell(cell)

    def _setdefault(self, key: Any, raw_default: bytes) -> Plan:
        cell = yield (_SETDEFAULT, self.keys.encode(key), to_cell(raw_default))
        return raw_default if cell is None else from_cell(cell)

    def _incr(self, key: Any, amount: int | float) -> Plan:
        name = self.keys.encode(key)
        if type(amount) is int and amount in _INT64:
            try:
                total = yield ("INCRBY", name, amount)
            except self._redis.ResponseError:
                pass  # not a 64-bit int (a float, a big int, not a number): the slow path decides
            else:
                return pickle.dumps(int(total), protocol=_PROTOCOL)
        for _ in range(_MAX_ATTEMPTS):
            cell = yield ("GET", name)
            total = _number(key, cell) + amount
            new = pickle.dumps(total, protocol=_PROTOCOL)
            if cell is None:
                stored = yield (_COMPARE_AND_SET, name, "absent", b"", to_cell(new), "keepttl")
            else:
                stored = yield (_COMPARE_AND_SET, name, "equal", cell, to_cell(new), "keepttl")
            if stored[0] == 1:
                return new
        raise CommTimeoutError(f"incr of {key!r} lost {_MAX_ATTEMPTS} races in a row; nothing was changed")

    def _compare_and_set(self, key: Any, raw_expected: bytes | None, raw_new: bytes) -> Plan:
        name = self.keys.encode(key)
        new = to_cell(raw_new)
        if raw_expected is None:
            stored = yield (_COMPARE_AND_SET, name, "absent", b"", new, "")
            return pickle.dumps(stored[0] == 1, protocol=_PROTOCOL)
        expected = to_cell(raw_expected)
        for _ in range(_MAX_ATTEMPTS):
            stored = yield (_COMPARE_AND_SET, name, "equal", expected, new, "")
            if stored[0] == 1 or len(stored) == 1:
                return pickle.dumps(stored[0] == 1, protocol=_PROTOCOL)
            current = stored[1]
            # Other bytes may still be an equal value (1.0 == 1, dicts in another order): compare
            # as the memory backend does (plain builtin data only) and retry with those bytes.
            if not plain_equal(from_cell(current), raw_expected):
                return pickle.dumps(False, protocol=_PROTOCOL)
            expected = current
        raise CommTimeoutError(f"compare_and_set of {key!r} lost {_MAX_ATTEMPTS} races in a row; nothing was changed")

    def _expire(self, key: Any, ttl: float | None) -> Plan:
        name = self.keys.encode(key)
        if ttl is None:
            done = yield (_PERSIST, name)
        else:
            done = yield ("PEXPIRE", name, _ms(ttl))
        return pickle.dumps(bool(done), protocol=_PROTOCOL)

    def _ttl(self, key: Any) -> Plan:
        left = yield ("PTTL", self.keys.encode(key))
        if left == -2:
            raise KeyError(key)
        return pickle.dumps(None if left == -1 else left / 1000, protocol=_PROTOCOL)

    def _scan(self) -> Generator[Command, Any, list[bytes]]:
        names: dict[bytes, None] = {}  # SCAN may return a key twice
        cursor = 0
        while True:
            cursor, batch = yield ("SCAN", cursor, "MATCH", self.keys.pattern, "COUNT", _SCAN_COUNT)
            names.update(dict.fromkeys(batch))
            if int(cursor) == 0:
                return list(names)

    def usage(self, limit: float = _USAGE_LIMIT) -> dict[str, Any]:
        """Keys and bytes this namespace holds (for the status): ``SCAN``, then ``STRLEN`` in
        pipelines, within ``limit`` s. Never raises: a server that does not answer gives
        ``None`` and the error; a namespace too large to count in time, a lower bound."""
        where = self.settings.where
        deadline = time.monotonic() + limit
        keys = size = 0
        try:
            client = self._timed.get(limit)  # each command bounded: a hung server costs one limit
            names = self._drive(self._scan(), client)
            for start in range(0, len(names), _SCAN_COUNT):
                if time.monotonic() > deadline:
                    return {"keys": keys, "bytes": size, "backend": where, "error": f"more than counted in {limit} s"}
                pipe = client.pipeline(transaction=False)
                for name in names[start : start + _SCAN_COUNT]:
                    pipe.strlen(name)
                lengths = [n for n in pipe.execute() if n]  # 0: expired since the SCAN
                keys += len(lengths)
                size += sum(lengths)
            return {"keys": keys, "bytes": size, "backend": where}
        except Exception as exc:  # the status must come, Redis or not
            return {"keys": None, "bytes": None, "backend": where, "error": safe_repr(exc, 200)}

    def _get_all(self) -> Plan:
        names = yield from self._scan()
        items: dict[Any, tuple[bytes, bytes]] = {}  # key -> (Redis name, value)
        for start in range(0, len(names), _SCAN_COUNT):
            chunk = names[start : start + _SCAN_COUNT]
            cells = yield ("MGET", *chunk)
            for name, cell in zip(chunk, cells, strict=True):
                if cell is None:
                    continue  # deleted or expired since the SCAN
                try:
                    key = self.keys.decode(name)
                except Exception as exc:
                    if name[len(self.keys.prefix) : len(self.keys.prefix) + 1] == b"p":
                        # A key shared_memory wrote, of a class this process cannot import: the
                        # caller is told, as for a value it cannot unpickle (never a silent gap).
                        raise SerializationError(
                            f"shared_memory key {name!r} cannot be unpickled here: {safe_repr(exc, 1000)}"
                        ) from exc
                    from ..log import logger  # one foreign key must not make get_all unusable

                    logger.warning(f"get_all skipped Redis key {name!r}, not written by shared_memory: {exc}")
                    continue
                try:
                    raw = from_cell(cell)
                except Exception as exc:  # a foreign value under a key of ours: as before
                    from ..log import logger

                    logger.warning(f"get_all skipped Redis key {name!r}, not written by shared_memory: {exc}")
                    continue
                earlier = items.pop(key, None)
                if earlier is not None:
                    # Two Redis keys for keys a dict takes for one (written before their encoding
                    # was canonical, or a class with an __eq__ of its own): one entry, its key and
                    # its value from the same Redis key (a dict would pair the first key with
                    # the last value), and the caller's log names both.
                    from ..log import logger

                    logger.warning(
                        f"get_all: Redis keys {earlier[0]!r} and {name!r} hold keys equal in Python; "
                        f"the snapshot has the second (get() reaches only the key's own encoding)"
                    )
                items[key] = (name, raw)
        return pickle.dumps([(key, raw) for key, (_, raw) in items.items()], protocol=_PROTOCOL)

    def _clear(self) -> Plan:
        names = yield from self._scan()
        for start in range(0, len(names), _SCAN_COUNT):
            yield ("UNLINK", *names[start : start + _SCAN_COUNT])
        return None
