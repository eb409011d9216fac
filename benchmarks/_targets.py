"""Spawn targets of the liteyuki benchmark children (run in the child processes).

A benchmark child serves commands from the host on a raw ``ctrl`` pipe. It
measures both sides of an A/B pair itself where the child is the active party
(round trips), so our figure and the baseline run in the same pair of
processes: liteyuki traffic goes over the child's liteyuki connection, the
baseline over two more raw ``multiprocessing`` pipes (``rpc`` answered by a
host thread, ``data`` for one-way streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any

from liteyuki import comm
from liteyuki.comm import Channel, CommTimeoutError, lowlevel
from liteyuki.comm.storage import shared_memory

from ._common import FANIN, KEY, SET_KEY, VALUE, percentile, set_io_timeout

# How long a child waits for one step of a measurement before it reports an error.
STEP_TIMEOUT = 60.0


def bench_child(
    name: str,
    ctrl: Connection,
    rpc: Connection,
    data: Connection,
    mgr: Any = None,
    redis_port: int | None = None,
    zmq_endpoints: tuple[str, str] | None = None,
) -> None:
    """Serve benchmark commands from the host until stopped (or the ctrl pipe closes)."""
    child = _BenchChild(name, ctrl, rpc, data, mgr, redis_port, zmq_endpoints)
    try:
        child.serve()
    finally:
        child.close()


class _BenchChild:
    def __init__(
        self,
        name: str,
        ctrl: Connection,
        rpc: Connection,
        data: Connection,
        mgr: Any,
        redis_port: int | None,
        zmq_endpoints: tuple[str, str] | None,
    ) -> None:
        self.name = name
        self.ctrl = ctrl
        self.rpc = rpc
        self.data = data
        self.mgr = mgr
        self.redis_port = redis_port
        self._redis: Any = None
        self._redis_store: Any = None
        self._zmq = _ZmqClient(*zmq_endpoints) if zmq_endpoints is not None else None
        # The loop this process's passive callbacks run on, learnt through the public API
        # (an async callback on `{name}-loop`), so the harness needs no liteyuki internals.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_seen = threading.Event()
        Channel(f"{name}-loop").on_receive()(self._capture_loop)
        self.active = comm.active_channel
        self.passive = comm.passive_channel
        self.rx: Channel[Any] = Channel(f"{name}-rx")
        self.fanin: Channel[Any] = Channel(FANIN)
        # State of the passive callback (written by the main thread before "ready").
        self.count = 0
        self.expected = -1
        self.latencies: list[float] | None = None
        self.done = threading.Event()
        self.passive.on_receive()(self._on_message)
        # Declare this process as the receiver of `rx` now (a zero-timeout receive),
        # so the first measurement does not pay for the declaration.
        try:
            self.rx.receive(timeout=0)
        except CommTimeoutError:
            pass

    def close(self) -> None:
        if self._zmq is not None:
            self._zmq.close()

    async def _capture_loop(self, _msg: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_seen.set()

    def _callback_loop(self) -> asyncio.AbstractEventLoop:
        if not self._loop_seen.wait(STEP_TIMEOUT) or self.loop is None:
            raise TimeoutError(f"no message on {self.name}-loop within {STEP_TIMEOUT} s: callback loop unknown")
        return self.loop

    # -- the command loop ------------------------------------------------------
    def serve(self) -> None:
        while True:
            if not self.ctrl.poll(1.0):
                continue
            try:
                op, *args = self.ctrl.recv()
            except EOFError:
                return
            try:
                reply = getattr(self, f"cmd_{op}")(*args)
            except Exception as exc:
                reply = ("error", f"{self.name}: {op}{tuple(args)!r:.80} failed: {exc!r}\n{traceback.format_exc()}")
            self.ctrl.send(reply)

    def _ready(self) -> None:
        self.ctrl.send("ready")

    def _wait_done(self, what: str) -> None:
        if not self.done.wait(STEP_TIMEOUT):
            raise TimeoutError(f"{what}: only {self.count} of {self.expected} messages within {STEP_TIMEOUT} s")

    # -- passive callback ---------------------------------------------------------
    def _on_message(self, msg: Any) -> None:
        self.count += 1
        if self.latencies is not None:
            self.latencies.append(perf_counter() - msg)
        if self.count == self.expected:
            self.done.set()

    def cmd_ping(self) -> str:
        return "pong"

    def cmd_loop(self) -> str:
        """Wait for the host's message on ``{name}-loop`` (it captures the callback loop)."""
        self._callback_loop()
        return "bound"

    # -- round trips (child is the caller) -----------------------------------------
    def _rtt_fn(self, variant: str) -> Callable[[], Any]:
        if variant == "kv_get":
            get = shared_memory.get
            return lambda: get(KEY)
        if variant == "kv_set":
            put = shared_memory.set
            return lambda: put(SET_KEY, VALUE)
        if variant in ("raw_get", "raw_set"):
            send, recv = self.rpc.send, self.rpc.recv
            req = ("get", KEY, None) if variant == "raw_get" else ("set", SET_KEY, VALUE)

            def raw() -> Any:
                send(req)
                return recv()

            return raw
        if variant in ("mgr_get", "mgr_set"):
            self._manager_timeout()
            if variant == "mgr_get":
                mget = self.mgr.get
                return lambda: mget(KEY)
            mset = self.mgr.__setitem__
            return lambda: mset(SET_KEY, VALUE)
        if variant == "zmq_get":
            if self._zmq is None:
                raise RuntimeError("no ZeroMQ endpoints were given to this child")
            return self._zmq.get
        if variant in ("redis_get", "redis_set"):
            client = self._redis_client()
            if variant == "redis_get":
                rget = client.get
                return lambda: rget(KEY)
            rset = client.set
            return lambda: rset(SET_KEY, VALUE)
        raise ValueError(f"unknown round-trip variant {variant!r}")

    def _manager_timeout(self) -> None:
        # The proxy's connection to the manager has no timeout of its own: give it one.
        self.mgr.get(KEY)  # connects this thread's proxy connection
        set_io_timeout(self.mgr._tls.connection, STEP_TIMEOUT)

    def _redis_client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis(
                host="127.0.0.1", port=self.redis_port, socket_timeout=30, socket_connect_timeout=10
            )
            self._redis.set(KEY, VALUE)
        return self._redis

    def cmd_rtt(self, variant: str, n: int) -> float:
        """Mean seconds per round trip of ``variant`` over ``n`` calls, after ``n // 4`` untimed ones.

        The untimed calls put every variant in its own steady state before it is timed.
        Without them a sample depended on what ran just before it (the kernel places a
        thread that was just busy differently from one that was idle): in the
        alternation, our variant ran right after itself at every second repeat and took
        ~50-60 us there against ~40 us after the raw pipe, while the raw pipe never ran
        after itself, so the order, not the code, decided rows 1, 2 and 1d.
        """
        fn = self._rtt_fn(variant.replace("redis_kv_", "kv_"))
        with self._storage(variant):
            for _ in range(n // 4):
                fn()
            t0 = perf_counter()
            for _ in range(n):
                fn()
            return (perf_counter() - t0) / n

    @contextlib.contextmanager
    def _storage(self, variant: str) -> Iterator[None]:
        """For ``redis_kv_*``: this child's store on Redis, as ``storage="redis://..."`` makes it
        (the runtime's ``store_backend``: the child's own connection, the host relays nothing)."""
        if not variant.startswith("redis_kv_"):
            yield
            return
        if self._redis_store is None:
            self._redis_store = lowlevel.redis_store(f"redis://127.0.0.1:{self.redis_port}/0", "bench")
        runtime = lowlevel.current()
        runtime.store_backend = self._redis_store
        try:
            shared_memory.set(KEY, VALUE)
            yield
        finally:
            runtime.store_backend = None

    def cmd_async_rtt(self, n: int) -> float:
        """Mean seconds per ``await shared_memory.async_get``, one at a time, on the callback loop."""

        async def run() -> float:
            get = shared_memory.async_get
            for _ in range(n // 4):  # untimed, as in cmd_rtt
                await get(KEY)
            t0 = perf_counter()
            for _ in range(n):
                await get(KEY)
            return (perf_counter() - t0) / n

        return asyncio.run_coroutine_threadsafe(run(), self._callback_loop()).result(STEP_TIMEOUT)

    def cmd_async_raw_rtt(self, n: int) -> float:
        """Row 2g, asyncio's own floor for 2e: the raw ping-pong awaited on the callback loop.

        The same request on the same raw pipe as the baseline, but the answer is awaited:
        the loop watches the pipe (``loop.add_reader``), the reader settles a future, the
        coroutine resumes. What one ``async_get`` cannot go below on this machine, with
        no work of ours in it.
        """
        conn = self.rpc
        req = ("get", KEY, None)

        async def run() -> float:
            loop = asyncio.get_running_loop()
            fd = conn.fileno()
            waiter: asyncio.Future[Any] = loop.create_future()

            def on_readable() -> None:
                if waiter.done():
                    return
                try:
                    answer = conn.recv()  # blocking, under the pipe's kernel receive timeout
                except Exception as exc:  # to the awaiting call, not to the loop's log
                    waiter.set_exception(exc)
                else:
                    waiter.set_result(answer)

            async def one() -> Any:
                nonlocal waiter
                waiter = loop.create_future()
                conn.send(req)
                return await waiter

            loop.add_reader(fd, on_readable)
            try:
                for _ in range(n // 4):  # untimed, as in cmd_rtt
                    await one()
                t0 = perf_counter()
                for _ in range(n):
                    await one()
                return (perf_counter() - t0) / n
            finally:
                loop.remove_reader(fd)

        return asyncio.run_coroutine_threadsafe(run(), self._callback_loop()).result(STEP_TIMEOUT)

    def cmd_gather_floor(self, k: int, rounds: int) -> float:
        """Row 2f, asyncio's own floor for 2d: a gather of ``k`` calls that do no I/O.

        Each call makes a future and awaits it, as ``async_get`` does; once all ``k``
        have started, one loop callback settles them all, as one batch of answers
        would. Mean seconds per gather: what gathering costs here before any request
        is written or answered.
        """

        async def run() -> float:
            loop = asyncio.get_running_loop()
            pending: list[asyncio.Future[Any]] = []

            def settle() -> None:
                for future in pending:
                    future.set_result(VALUE)
                pending.clear()

            async def call() -> Any:
                future = loop.create_future()
                pending.append(future)
                if len(pending) == k:
                    loop.call_soon(settle)
                return await future

            total = 0.0
            for _ in range(rounds):
                t0 = perf_counter()
                await asyncio.gather(*[call() for _ in range(k)])
                total += perf_counter() - t0
            return total / rounds

        return asyncio.run_coroutine_threadsafe(run(), self._callback_loop()).result(STEP_TIMEOUT)

    def cmd_gather(self, k: int, rounds: int) -> float:
        """Mean seconds for ``k`` concurrent ``async_get`` (asyncio.gather) on the child's loop."""

        async def run() -> float:
            get = shared_memory.async_get
            total = 0.0
            for _ in range(rounds):
                t0 = perf_counter()
                await asyncio.gather(*[get(KEY) for _ in range(k)])
                total += perf_counter() - t0
            return total / rounds

        return asyncio.run_coroutine_threadsafe(run(), self._callback_loop()).result(STEP_TIMEOUT)

    def cmd_sequential(self, k: int, rounds: int) -> float:
        """Mean seconds for ``k`` sequential sync gets."""
        get = shared_memory.get
        total = 0.0
        for _ in range(rounds):
            t0 = perf_counter()
            for _ in range(k):
                get(KEY)
            total += perf_counter() - t0
        return total / rounds

    # -- host -> child streams (host is the sender) ----------------------------------
    def cmd_expect_cb(self, n: int, latency: bool = False) -> Any:
        """Count ``n`` messages in the passive callback; with ``latency`` return p50/p99 of send->callback."""
        self.count = 0
        self.expected = n
        self.latencies = [] if latency else None
        self.done.clear()
        self._ready()
        self._wait_done("passive callback")
        if self.latencies is not None:
            lat, self.latencies = self.latencies, None
            return ("done", percentile(lat, 50), percentile(lat, 99))
        return ("done",)

    def cmd_expect_active(self, n: int) -> Any:
        receive = self.rx.receive
        self._ready()
        for _ in range(n):
            receive(STEP_TIMEOUT)
        return ("done",)

    def cmd_expect_raw(self, n: int) -> Any:
        recv = self.data.recv  # blocking reader (the pipe has a kernel receive timeout)
        self._ready()
        for _ in range(n):
            recv()
        return ("done",)

    def cmd_expect_raw_lat(self, n: int) -> Any:
        """Row 4's baseline: ``n`` timestamped raw messages, p50/p99 of send -> blocking recv."""
        recv = self.data.recv
        latencies = []
        self._ready()
        for _ in range(n):
            sent = recv()
            latencies.append(perf_counter() - sent)
        return ("done", percentile(latencies, 50), percentile(latencies, 99))

    def cmd_expect_zmq(self, n: int) -> Any:
        if self._zmq is None:
            raise RuntimeError("no ZeroMQ endpoints were given to this child")
        recv = self._zmq.pull.recv_pyobj
        self._ready()
        for _ in range(n):
            recv()
        return ("done",)

    def cmd_expect_raw_async(self, n: int) -> Any:
        """The asyncio baseline: ``loop.add_reader`` on the raw pipe, on the same loop as our callbacks."""
        loop = self._callback_loop()
        conn = self.data
        fd = conn.fileno()
        added = threading.Event()
        done = threading.Event()
        count = 0

        def on_readable() -> None:
            nonlocal count
            while True:  # drain what is there, one poll() per message, like any Connection reader
                conn.recv()
                count += 1
                if count == n:
                    loop.remove_reader(fd)
                    done.set()
                    return
                if not conn.poll():
                    return

        def add() -> None:
            loop.add_reader(fd, on_readable)
            added.set()

        loop.call_soon_threadsafe(add)
        if not added.wait(STEP_TIMEOUT):
            raise TimeoutError("the child's loop did not add the reader")
        self._ready()
        if not done.wait(STEP_TIMEOUT):
            loop.call_soon_threadsafe(loop.remove_reader, fd)
            raise TimeoutError(f"asyncio reader: only {count} of {n} messages within {STEP_TIMEOUT} s")
        return ("done",)

    # -- child -> host streams (child is the sender) -------------------------------------
    def cmd_send_active(self, n: int, payload: Any) -> Any:
        send = self.active.send
        for _ in range(n):
            send(payload)
        return ("sent",)

    def cmd_send_fanin(self, n: int, payload: Any) -> Any:
        send = self.fanin.send
        for _ in range(n):
            send(payload)
        return ("sent",)

    def cmd_send_raw(self, n: int, payload: Any) -> Any:
        send = self.data.send
        for _ in range(n):
            send(payload)
        return ("sent",)


class _ZmqClient:
    """The child's ZeroMQ sockets: PULL (host -> child streams) and REQ (round trips)."""

    def __init__(self, push_endpoint: str, rep_endpoint: str) -> None:
        import zmq

        self._ctx = zmq.Context()
        self.pull = self._socket(zmq.PULL)
        self.pull.connect(push_endpoint)
        self.req = self._socket(zmq.REQ)
        self.req.connect(rep_endpoint)
        self._request = ("get", KEY, None)

    def _socket(self, kind: int) -> Any:
        import zmq

        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(STEP_TIMEOUT * 1000))
        sock.setsockopt(zmq.SNDTIMEO, int(STEP_TIMEOUT * 1000))
        return sock

    def get(self) -> Any:
        self.req.send_pyobj(self._request)
        return self.req.recv_pyobj()

    def close(self) -> None:
        self.pull.close(0)
        self.req.close(0)
        self._ctx.term()
