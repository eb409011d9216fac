"""``Channel(name, cluster=True)``: one channel for every process of every host on the same Redis.

Built on a Redis Stream, ``{ns}:chan:{name}``, with one consumer group
(``receivers``). Each receiving process is one consumer
(``{host}:{pid}:{process}``), so each message goes to exactly one receiving
process across the cluster.

- ``send`` is one ``XADD``; it never waits for a receiver (the stream is the
  buffer; messages sent before anyone receives wait there).
- ``receive`` / ``async_receive`` read one message (``XREADGROUP``) and
  acknowledge it (``XACK``, then ``XDEL``: the stream keeps only what is not
  yet handled) as they hand it over.
- ``on_receive`` callbacks run on this process's event loop, like any
  channel's. The consumer thread reads up to ``buffer_size`` messages at a
  time (default 32) and reads more only when those are handled; each message
  is acknowledged as soon as every callback for it returned (async ones:
  finished). A callback that raises is logged and its message acknowledged:
  redelivering it would only fail again.
- A process that dies (``kill -9``) holding messages leaves them pending; any
  other receiving process reclaims them with ``XAUTOCLAIM`` once they were idle
  for ``cluster_claim_idle`` seconds (default 30 s), and handles them. A live
  consumer whose callback runs longer keeps its messages: it resets their idle
  time (``XCLAIM ... JUSTID``) every third of that interval.
- Delivery is at least once across crashes: a process killed after a callback
  returned but before the acknowledgement reached Redis has that message
  handled again elsewhere. Order is the stream's order per consumer; a
  reclaimed message comes after those that were sent later.
- Redis lost: ``send`` raises ``StorageUnavailableError``; consumers retry with
  backoff and resume when it is back (if the stream or group vanished with a
  server that does not persist, they are created again).

With ``storage="memory"`` there is only this host: ``cluster=True`` gives the
host's ordinary channel of that name.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import queue
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._threads import QuietThread
from ..log import logger
from ._channel import Channel, _hint_name, _qualname, _safe_repr, _same_hint
from ._context import current
from ._dispatch import contained, dispatcher, stops_the_process
from ._errors import (
    ChannelClosedError,
    ChannelTypeError,
    CommTimeoutError,
    ReceiveModeError,
    SerializationError,
)
from ._redis_conn import BACKOFF_FIRST, BACKOFF_MAX, Health, RedisSettings, TimedClients, import_redis, translate
from ._runtime_base import running_loop
from ._typecheck import is_type_var, matches
from ._validate import check_timeout
from ._wire import dumps, loads

__all__ = ["ClusterChannel", "cluster_end", "cluster_ends"]

T = TypeVar("T")
Callback = Callable[[Any], Any]
FilterFunc = Callable[[Any], "bool | Awaitable[bool]"]

GROUP = "receivers"
BLOCK_MS = 500  # one XREADGROUP waits at most this long, so close/shutdown is seen promptly
DEFAULT_BATCH = 32
_PASSIVE, _ACTIVE = "passive", "active"

_ends_lock = threading.Lock()
_ends: dict[str, ClusterChannel[Any]] = {}


def cluster_end(name: str, settings: RedisSettings | None, process_name: str) -> Channel[Any]:
    """This process's end of cluster channel ``name`` (the local channel without Redis)."""
    if settings is None:
        from ._channel import local_end

        return local_end(name)
    with _ends_lock:
        end = _ends.get(name)
        if end is None:
            end = object.__new__(ClusterChannel)
            end._setup_cluster(name, settings, process_name)
            _ends[name] = end
        return end


def cluster_ends() -> dict[str, ClusterChannel[Any]]:
    with _ends_lock:
        return dict(_ends)


def forget_cluster_ends() -> None:
    with _ends_lock:
        ends = list(_ends.values())
        _ends.clear()
    for end in ends:
        end.close()


def _rebuild(name: str, hint: Any) -> Channel[Any]:
    runtime = current()
    backend = getattr(runtime, "store_backend", None)
    end = cluster_end(name, getattr(backend, "settings", None), runtime.process_name)
    if hint is not None and getattr(end, "_hint", None) is None:
        end._hint = hint
    return end


class ClusterChannel(Channel[T]):
    """This process's end of a cluster channel (see the module docstring)."""

    def __init__(
        self, name: str, type_check: bool | None = None, buffer_size: int | None = None, cluster: bool = True
    ) -> None:
        if buffer_size is not None:
            self._batch = min(buffer_size, 1000)
        if type_check is not None:
            self._type_check = type_check

    def _setup_cluster(self, name: str, settings: RedisSettings, process_name: str) -> None:
        self.name = name
        self._what = f"message on channel {name!r}"
        self._hint: Any = None
        self._type_check = True
        self._batch = DEFAULT_BATCH
        self._settings = settings
        self._redis = import_redis()
        self._client = settings.client()
        self._timed = TimedClients(settings, self._client)  # for calls with their own timeout
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._stream = settings.key("chan", name)
        self._consumer = f"{socket.gethostname()}:{os.getpid()}:{process_name}"
        self._health = Health(settings, f"cluster channel {name!r}")
        self._lock = threading.Lock()
        self._mode: str | None = None
        self._callbacks: list[tuple[Callback, FilterFunc | None]] = []
        self._closed = False
        self._generation = 0
        self._group_ready = False
        self._next_claim = 0.0
        self._consumer_thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Messages an async_receive read but could not hand over (it was cancelled between the
        # read and its return): the next receive here returns them first. Their acknowledgement
        # is sent with that return, so a death before it leaves them pending for XAUTOCLAIM.
        self._held: collections.deque[tuple[bytes, bytes]] = collections.deque()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.name, self._element_type())

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._mode or "idle")
        return f"<ClusterChannel {self.name!r} {state}, stream {self._stream!r}>"

    @property
    def closed(self) -> bool:
        return self._closed

    # -- sending -----------------------------------------------------------------
    def send(self, data: T, timeout: float | None = None) -> None:
        """Append ``data`` to the stream (one round trip to Redis; never waits for a receiver)."""
        if self._closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        check_timeout(timeout)
        self._check(data)
        payload = dumps(data, current().max_message_size, what=self._what)
        self._health.check(f"send on {self.name!r}")
        client = self._client if timeout is None else self._timed.get(timeout)
        try:
            client.execute_command("XADD", self._stream, "*", "d", payload)
        except (self._redis.RedisError, OSError) as exc:
            raise self._failed(exc, f"send on {self.name!r}", timeout) from exc
        self._health.ok()

    async def async_send(self, data: T, timeout: float | None = None) -> None:
        """``send`` on ``redis.asyncio``: never blocks the loop."""
        if self._closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        check_timeout(timeout)
        self._check(data)
        payload = dumps(data, current().max_message_size, what=self._what)
        self._health.check(f"send on {self.name!r}")
        limit = self._settings.call_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._aclient().execute_command("XADD", self._stream, "*", "d", payload), limit)
        except (self._redis.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise self._failed(exc, f"send on {self.name!r}", timeout) from exc
        self._health.ok()

    # Channel[T](name, cluster=True) sets __orig_class__ on the end it returned: the element type.
    @property
    def __orig_class__(self) -> Any:
        return self.__dict__.get("_orig_class")

    @__orig_class__.setter
    def __orig_class__(self, alias: Any) -> None:
        hint = (getattr(alias, "__args__", None) or (None,))[0]
        if is_type_var(hint):
            return
        if self._hint is not None and not _same_hint(self._hint, hint):
            raise ChannelTypeError(
                f"channel {self.name!r} was created in this process as Channel[{_hint_name(self._hint)}] "
                f"and again as Channel[{_hint_name(hint)}]: one element type per channel name"
            )
        self.__dict__["_orig_class"] = alias
        self._hint = hint

    def _element_type(self) -> Any:
        return self._hint

    def _check(self, data: Any) -> None:
        hint = self._hint
        if hint is None or not self._type_check:
            return
        try:
            ok = matches(data, hint)
        except Exception as exc:  # a value's hostile __eq__/__iter__ never changes the error type
            raise ChannelTypeError(
                f"channel {self.name!r} carries {_hint_name(hint)}: checking the value failed ({exc!r:.80})"
            ) from exc
        if not ok:
            raise ChannelTypeError(
                f"channel {self.name!r} carries {_hint_name(hint)}, got {type(data).__name__}: {_safe_repr(data)}"
            )

    def _failed(self, exc: BaseException, what: str, timeout: float | None = None) -> BaseException:
        if not isinstance(exc, self._redis.ResponseError):
            self._health.failed(exc, timeout)
        return translate(exc, self._settings, what)

    def _aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = self._settings.async_client()
        return client

    # -- the stream ----------------------------------------------------------------
    def _ensure_group(self, client: Any) -> None:
        if self._group_ready:
            return
        try:
            client.execute_command("XGROUP", "CREATE", self._stream, GROUP, "0", "MKSTREAM")
        except self._redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _async_ensure_group(self, client: Any) -> None:
        if self._group_ready:
            return
        try:
            await client.execute_command("XGROUP", "CREATE", self._stream, GROUP, "0", "MKSTREAM")
        except self._redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _claim_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_claim:
            return False
        self._next_claim = now + max(0.05, self._settings.claim_idle / 2)
        return True

    def _claim_args(self, count: int) -> tuple[Any, ...]:
        idle_ms = int(self._settings.claim_idle * 1000)
        return ("XAUTOCLAIM", self._stream, GROUP, self._consumer, idle_ms, "0-0", "COUNT", count)

    def _read_args(self, count: int, block_ms: int) -> tuple[Any, ...]:
        group = ("GROUP", GROUP, self._consumer)
        # BLOCK 0 would wait for ever: a read with no time left to wait does not block at all.
        block = ("BLOCK", block_ms) if block_ms > 0 else ()
        return ("XREADGROUP", *group, "COUNT", count, *block, "STREAMS", self._stream, ">")

    def _entries(self, reply: Any, claimed: bool) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """(id, payload) pairs, and ids with no payload (deleted meanwhile: acknowledge them)."""
        if not reply:
            return [], []
        if claimed:
            raw = reply[1]
            gone = list(reply[2]) if len(reply) > 2 else []
        else:
            raw = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
            gone = []
        entries = []
        for entry_id, fields in raw:
            if not fields:
                gone.append(entry_id)
                continue
            if isinstance(fields, dict):
                payload = fields.get(b"d")
            else:
                pairs = dict(zip(fields[::2], fields[1::2], strict=True))
                payload = pairs.get(b"d")
            if payload is None:
                gone.append(entry_id)
            else:
                entries.append((entry_id, payload))
        return entries, gone

    def _fetch(self, client: Any, count: int, block_ms: int) -> list[tuple[bytes, bytes]]:
        """Reclaim a dead consumer's messages when due, else read new ones; acknowledge empty ids."""
        self._ensure_group(client)
        entries: list[tuple[bytes, bytes]] = []
        gone: list[bytes] = []
        if self._claim_due():
            entries, gone = self._entries(client.execute_command(*self._claim_args(count)), claimed=True)
            if entries:
                logger.info(f"channel {self.name!r}: reclaimed {len(entries)} message(s) of a consumer that stopped")
        if not entries:
            entries, more = self._entries(client.execute_command(*self._read_args(count, block_ms)), claimed=False)
            gone += more
        if gone:
            self._ack(client, gone)
        return entries

    async def _async_fetch(self, client: Any, count: int, block_ms: int) -> list[tuple[bytes, bytes]]:
        await self._async_ensure_group(client)
        entries: list[tuple[bytes, bytes]] = []
        gone: list[bytes] = []
        if self._claim_due():
            reply = await client.execute_command(*self._claim_args(count))
            entries, gone = self._entries(reply, claimed=True)
        if not entries:
            reply = await client.execute_command(*self._read_args(count, block_ms))
            entries, more = self._entries(reply, claimed=False)
            gone += more
        if gone:
            try:
                await client.execute_command("XACK", self._stream, GROUP, *gone)
                await client.execute_command("XDEL", self._stream, *gone)
            except asyncio.CancelledError:
                self._held.extend(entries)  # read, not handed over: the next receive takes them
                raise
        return entries

    async def _fetch_shielded(self, client: Any, block_ms: int) -> list[tuple[bytes, bytes]]:
        """One read, not cut off by a cancel: Redis may already have handed the message to this
        consumer, where only XAUTOCLAIM would find it again (after ``cluster_claim_idle``). A
        cancelled caller leaves the read to finish (within ``block_ms``); what it got is held
        for the next receive here."""
        fetch = asyncio.ensure_future(self._async_fetch(client, 1, block_ms))
        try:
            return await asyncio.shield(fetch)
        except asyncio.CancelledError:
            fetch.add_done_callback(self._hold_fetched)
            raise

    def _hold_fetched(self, fetch: asyncio.Future[list[tuple[bytes, bytes]]]) -> None:
        if not fetch.cancelled() and fetch.exception() is None:
            self._held.extend(fetch.result())

    def _ack(self, client: Any, ids: list[bytes]) -> None:
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("XACK", self._stream, GROUP, *ids)
        pipe.execute_command("XDEL", self._stream, *ids)
        pipe.execute()

    def _recovering(self, exc: BaseException) -> bool:
        """Whether a consumer should retry after ``exc`` (a lost server, a vanished group)."""
        if isinstance(exc, self._redis.ResponseError):
            if "NOGROUP" in str(exc):
                self._group_ready = False
                return True
            return False
        if isinstance(exc, (self._redis.RedisError, OSError, asyncio.TimeoutError)):  # not an OSError on 3.10
            self._health.failed(exc)
            return True
        return False

    # -- active mode -----------------------------------------------------------------
    def receive(self, timeout: float | None = None) -> T:
        """Take one message from the cluster (any thread); ``CommTimeoutError`` after ``timeout`` s."""
        check_timeout(timeout)
        self._claim_mode(_ACTIVE)
        deadline = None if timeout is None else time.monotonic() + timeout
        generation = self._generation
        delay = 0.0
        tried = False
        while True:
            self._check_open(generation)
            block = BLOCK_MS if deadline is None else int(min(BLOCK_MS, (deadline - time.monotonic()) * 1000))
            if block <= 0 and tried:  # (a message already waiting is taken even with timeout=0)
                raise CommTimeoutError(f"no message on channel {self.name!r} within {timeout} s")
            tried = True
            # The socket's timeout bounds a read from a server that stopped answering: with a
            # deadline, that deadline (and never less than the read's own BLOCK).
            client = self._client
            if deadline is not None:
                client = self._timed.get(max(deadline - time.monotonic(), 0.0) + block / 1000 + 0.05)
            try:
                entries = [self._held.popleft()] if self._held else self._fetch(client, 1, max(block, 0))
                if entries:
                    self._ack(client, [entries[0][0]])
            except Exception as exc:
                if not self._recovering(exc):
                    raise translate(exc, self._settings, f"receive on {self.name!r}") from exc
                delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, delay * 2))
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())) if deadline else delay)
                continue
            if delay:
                delay = 0.0
                self._health.ok()
            if entries:
                try:
                    return loads(entries[0][1], what=self._what)
                except SerializationError:
                    logger.exception(f"dropped a message on channel {self.name!r}")

    async def async_receive(self, timeout: float | None = None) -> T:
        """Await one message from the cluster without blocking the loop."""
        check_timeout(timeout)
        self._claim_mode(_ACTIVE)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        generation = self._generation
        client = self._aclient()
        delay = 0.0
        tried = False
        task = asyncio.current_task()
        while True:
            self._check_open(generation)
            if task is not None and getattr(task, "cancelling", lambda: 0)():
                # A cancel that redis-py's own wait_for swallowed (it does when its inner await
                # has just finished): honoured here, or this loop would never end.
                raise asyncio.CancelledError
            block = BLOCK_MS if deadline is None else int(min(BLOCK_MS, (deadline - loop.time()) * 1000))
            if block <= 0 and tried:  # (a message already waiting is taken even with timeout=0)
                raise CommTimeoutError(f"no message on channel {self.name!r} within {timeout} s")
            tried = True
            try:
                if self._held:
                    entries = [self._held.popleft()]
                elif deadline is None:
                    entries = await self._fetch_shielded(client, max(block, 0))
                else:  # a server that stopped answering is given up at the deadline, not call_timeout
                    limit = max(deadline - loop.time(), 0.0) + max(block, 0) / 1000 + 0.05
                    entries = await asyncio.wait_for(self._fetch_shielded(client, max(block, 0)), limit)
                if entries:
                    try:
                        await client.execute_command("XACK", self._stream, GROUP, entries[0][0])
                        await client.execute_command("XDEL", self._stream, entries[0][0])
                    except asyncio.CancelledError:
                        # Read, and maybe acknowledged, but not handed over: kept for the next
                        # receive here (it used to be lost).
                        self._held.appendleft(entries[0])
                        raise
            except Exception as exc:
                if not self._recovering(exc):
                    raise translate(exc, self._settings, f"receive on {self.name!r}") from exc
                delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, delay * 2))
                await asyncio.sleep(delay)  # reconnect backoff
                continue
            if delay:
                delay = 0.0
                self._health.ok()
            if entries:
                try:
                    return loads(entries[0][1], what=self._what)
                except SerializationError:
                    logger.exception(f"dropped a message on channel {self.name!r}")

    def _check_open(self, generation: int) -> None:
        if self._closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        if self._generation != generation:
            raise ChannelClosedError(f"channel {self.name!r} was released for shutdown")

    # -- passive mode ----------------------------------------------------------------
    def on_receive(self, filter_func: FilterFunc | None = None) -> Callable[[Callback], Callback]:
        """Decorator: call the function for each message this process takes from the cluster."""
        if filter_func is not None and not callable(filter_func):
            raise TypeError(f"filter_func must be callable, got {type(filter_func).__name__}")

        def decorator(func: Callback) -> Callback:
            if not callable(func):
                raise TypeError(f"on_receive needs a callable, got {type(func).__name__}")
            self._claim_mode(_PASSIVE)
            with self._lock:
                self._callbacks.append((func, filter_func))
                if self._consumer_thread is None:
                    self._consumer_thread = QuietThread(
                        target=self._consume, name=f"liteyuki-cluster-{self.name}", daemon=True
                    )
                    self._consumer_thread.start()
            return func

        return decorator

    def _consume(self) -> None:
        try:
            self._consume_until_closed()
        finally:
            if self._closed:  # close() leaves the connection to us while we still acknowledge
                try:
                    self._client.close()
                except Exception:
                    pass

    def _consume_until_closed(self) -> None:
        delay = 0.0
        while not self._closed:
            try:
                entries = self._fetch(self._client, self._batch, BLOCK_MS)
            except Exception as exc:
                if self._closed:
                    return
                if not self._recovering(exc):
                    logger.opt(exception=exc).error(f"channel {self.name!r}: reading the stream failed")
                delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, delay * 2))
                time.sleep(delay)  # reconnect backoff of a background thread
                continue
            if delay:
                delay = 0.0
                self._health.ok()
            if entries:
                self._handle(entries)

    def _handle(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Run the callbacks for a batch on the loop; acknowledge each message once its callbacks finished."""
        finished: queue.SimpleQueue[tuple[bytes, bool]] = queue.SimpleQueue()  # (id, handled)
        dispatcher.submit(lambda: self._run_batch(entries, finished.put))
        remaining = {entry_id for entry_id, _ in entries}
        keep_alive = max(0.05, self._settings.claim_idle / 3)
        renew_at = time.monotonic() + keep_alive
        progress = time.monotonic()
        while remaining:
            # Renewed when due, whatever else happens: callbacks that finish one by one more
            # often than the wait below times out used to leave the rest of the batch unrenewed,
            # and another live process reclaimed them (each handled twice).
            if time.monotonic() >= renew_at:
                renew_at = time.monotonic() + keep_alive
                try:  # still working on them: reset their idle time so nobody reclaims them
                    self._client.execute_command("XCLAIM", self._stream, GROUP, self._consumer, 0, *remaining, "JUSTID")
                except Exception:
                    pass  # Redis away: the acknowledgement below retries
            try:
                items = [finished.get(timeout=min(keep_alive, BLOCK_MS / 1000))]
            except queue.Empty:
                # Closed: the batch's callbacks that already started still finish and are
                # acknowledged (the rest are skipped, left pending for another consumer): one
                # left unacknowledged would be handled again elsewhere. A loop that is gone
                # runs nothing more: given up after cluster_claim_idle without progress.
                if self._closed and time.monotonic() - progress > self._settings.claim_idle:
                    return
                continue
            progress = time.monotonic()
            while True:  # everything else that finished meanwhile goes in the same round trip
                try:
                    items.append(finished.get_nowait())
                except queue.Empty:
                    break
            remaining.difference_update(entry_id for entry_id, _ in items)
            handled = [entry_id for entry_id, ok in items if ok]
            if handled:
                self._ack_retrying(handled)

    def _ack_retrying(self, ids: list[bytes]) -> None:
        delay = 0.0
        while True:
            try:
                self._ack(self._client, ids)
                return
            except Exception as exc:
                if self._closed or not self._recovering(exc):
                    logger.error(f"channel {self.name!r}: could not acknowledge {len(ids)} message(s): {exc}")
                    return
                delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, delay * 2))
                time.sleep(delay)  # reconnect backoff

    def _run_batch(self, entries: list[tuple[bytes, bytes]], finished: Callable[[tuple[bytes, bool]], None]) -> None:
        """On the loop: each message's callbacks in registration order (async ones run as tasks);
        ``finished((id, True))`` once all of them returned; ``(id, False)`` if cancelled."""
        with self._lock:
            callbacks = list(self._callbacks)
        for entry_id, payload in entries:
            if self._closed:  # closed (maybe by a callback of this batch): the rest is not run
                finished((entry_id, False))
                continue
            try:
                data = loads(payload, what=self._what)
            except SerializationError:
                logger.exception(f"dropped a message on channel {self.name!r}")
                finished((entry_id, True))
                continue
            pending: list[tuple[Awaitable[Any], str]] = []
            for func, flt in callbacks:
                label = f"callback on channel {self.name!r} {_qualname(func)}"
                if flt is not None and inspect.iscoroutinefunction(flt):
                    pending.append((_call_if(func, flt, data), label))
                    continue
                try:
                    if flt is not None and not flt(data):
                        continue
                    result = func(data)
                except BaseException as exc:  # SystemExit too, as on a local channel (see _dispatch)
                    if stops_the_process(exc):
                        raise
                    logger.exception(f"{label} raised")
                    continue
                if inspect.isawaitable(result):
                    pending.append((result, label))
            if not pending:
                finished((entry_id, True))
                continue
            task = asyncio.ensure_future(_all_of(pending))
            self._tasks.add(task)
            task.add_done_callback(lambda t, i=entry_id: self._task_done(t, i, finished))

    def _task_done(self, task: asyncio.Task[Any], entry_id: bytes, finished: Callable[..., None]) -> None:
        self._tasks.discard(task)
        finished((entry_id, not task.cancelled()))

    def _claim_mode(self, mode: str) -> None:
        with self._lock:
            if self._mode is None:
                self._mode = mode
            elif self._mode != mode:
                other = "on_receive() callbacks" if self._mode == _PASSIVE else "receive()"
                raise ReceiveModeError(
                    f"channel {self.name!r} is already in {self._mode} mode ({other}); "
                    f"one end receives in one mode only"
                )

    # -- closing ---------------------------------------------------------------------
    def close(self) -> None:
        """Stop sending and receiving here; messages not yet handled stay in the stream. Safe twice."""
        self._closed = True
        thread = self._consumer_thread
        if thread is not None and thread.is_alive():
            # The consumer thread acknowledges what already ran and closes the connection when
            # it ends. Not waited for on the loop the callbacks run on (it waits for them there).
            loop = dispatcher.loop
            on_loop = loop is not None and running_loop() is loop
            if not on_loop and thread is not threading.current_thread():
                thread.join(BLOCK_MS / 1000 + 2)
            return
        try:
            self._client.close()
        except Exception:
            pass

    def _release(self) -> None:
        """Wake blocked receivers with ``ChannelClosedError`` (shutdown; within BLOCK_MS); the end stays usable."""
        self._generation += 1


async def _call_if(func: Callback, flt: FilterFunc, data: Any) -> None:
    if await flt(data):  # type: ignore[misc]
        result = func(data)
        if inspect.isawaitable(result):
            await result


async def _all_of(pending: list[tuple[Awaitable[Any], str]]) -> None:
    outcomes = await asyncio.gather(*(contained(aw, label) for aw, label in pending), return_exceptions=True)
    for (_, label), outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, Exception):
            logger.opt(exception=outcome).error(f"{label} raised")
