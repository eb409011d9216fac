"""Spawn targets for the tests: they run in real child processes started by the host."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from liteyuki.comm import Channel, active_channel, get_channel, lowlevel, passive_channel, set_channel
from liteyuki.comm.storage import shared_memory
from liteyuki.log import logger


def _incr_many(key: str, n: int, threads: int) -> str:
    def work() -> None:
        for _ in range(n):
            shared_memory.incr(key)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return "done"


def _call(func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # the test looks at the exception itself
        return exc


class ExitOnLoad:
    """Pickles; unpickling it calls sys.exit(3) (a buggy ``__setstate__``)."""

    def __init__(self) -> None:
        self.state = 1  # (pickle calls __setstate__ only for an object with state)

    def __setstate__(self, state: Any) -> None:
        import sys

        sys.exit(3)


class IdentityKey:
    """Hashable by identity only (no ``__eq__``): a copy never equals the original."""


class MutableKey:
    """A hashable key whose hash and equality follow a mutable attribute (a careless but
    legal key): the store must keep its own copy."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MutableKey) and other.name == self.name


def _timed_call(op: str, args: tuple[Any, ...], timeout: float) -> tuple[Any, float]:
    import time

    t0 = time.monotonic()
    result = _call(getattr(shared_memory, op), *args, **{"timeout": timeout})
    return result, time.monotonic() - t0


def _cluster_slow(name: str, seconds: float) -> str:
    """A cluster consumer whose callback takes ``seconds`` (work, not a wait for anything);
    it counts each message it handled in the store, under ``name:n``."""
    import time

    @Channel(name, cluster=True).on_receive()
    def work(n: int) -> None:
        shared_memory.incr(f"{name}:{n}")
        time.sleep(seconds)

    return "consuming"


def _cluster_close_after(name: str, k: int) -> str:
    """A cluster consumer that closes its end from its callback at its ``k``-th message; it
    counts what it handled under ``name:n``, and any callback run after the close."""
    chan = Channel(name, cluster=True)
    seen = [0]

    @chan.on_receive()
    def work(n: int) -> None:
        if chan.closed:
            shared_memory.incr(f"{name}:after-close")
        shared_memory.incr(f"{name}:{n}")
        seen[0] += 1
        if seen[0] == k:
            chan.close()

    return "consuming"


def _fork_sleeper() -> int:
    """Fork a copy of this child that does nothing until killed (it holds every fd we hold)."""
    import signal

    pid = os.fork()
    if pid == 0:
        while True:
            signal.pause()
    return pid


COMMANDS: dict[str, Any] = {
    "echo": lambda x: x,
    "pid": os.getpid,
    "get": lambda k, d=None: shared_memory.get(k, d),
    "set": lambda k, v: shared_memory.set(k, v),
    "call": lambda op, *a: _call(getattr(shared_memory, op), *a),
    "incr_many": _incr_many,
    "set_lock": lambda k: _call(shared_memory.set, k, threading.Lock()),
    "send_on": lambda name, value: get_channel(name).send(value),
    "recv_on": lambda name, timeout: get_channel(name).receive(timeout),
    "get_channel": lambda name: _call(get_channel, name),
    "register": lambda name: set_channel(name, Channel(name)),
    "burst": lambda n: [active_channel.send(i) for i in range(n)] and "sent",
    "log": lambda text: logger.info(text),
    "exit": lambda code: os._exit(code),
    "publish": lambda topic, data: shared_memory.publish(topic, data),
    "subscribe": lambda topic: _subscribe(topic),
    "channel_names": lambda: sorted(__import__("liteyuki.comm", fromlist=["x"]).get_channels()),
    "status": lambda: __import__("liteyuki").status(timeout=10).to_dict(),
    "get_bot": lambda: _call(__import__("liteyuki").get_bot),
    "async_call": lambda op, *a: _in_new_loop(getattr(shared_memory, f"async_{op}"), *a),
    "cluster_send": lambda name, values: [Channel(name, cluster=True).send(v) for v in values] and "sent",
    "cluster_recv": lambda name, n, timeout: [Channel(name, cluster=True).receive(timeout) for _ in range(n)],
    "cluster_forward": lambda name: _cluster_forward(name),
    "send_exit_on_load": lambda name: get_channel(name).send(ExitOnLoad()),
    "typed_end": lambda name: Channel[int](name),
    "timed_call": _timed_call,
    "fork_sleeper": _fork_sleeper,
    "cluster_slow": _cluster_slow,
    "cluster_close_after": _cluster_close_after,
    "get_all": lambda: _call(shared_memory.get_all),
}


def _in_new_loop(func: Any, *args: Any) -> Any:
    """Await ``func(*args)`` on a fresh loop in its own thread (this callback runs on the dispatch loop)."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(_call(lambda: asyncio.run(func(*args)))))
    worker.start()
    worker.join(30)
    return out[0] if out else TimeoutError("async call did not finish in 30 s")


def _cluster_forward(name: str) -> str:
    Channel(name, cluster=True).on_receive()(lambda message: active_channel.send(("cluster", name, message)))
    return "forwarding"


def _subscribe(topic: str) -> str:
    @shared_memory.on_subscriber_receive(topic)
    def forward(data: Any) -> None:
        active_channel.send(("published", topic, data))

    # This runs on the callback loop, where a subscription on Redis is live one round trip
    # later (documented: the loop must not wait); the tests publish right after the answer.
    backend = lowlevel.current().pubsub_backend
    if backend is not None and not backend._topics[topic].wait(10):
        return "not live"
    return "subscribed"


def _run_command(cmd: tuple[Any, ...]) -> None:
    op, *args = cmd
    result = _call(COMMANDS[op], *args)
    active_channel.send(result)


def agent() -> None:
    """Passive mode: each command on the passive channel is answered on the active one."""
    passive_channel.on_receive()(_run_command)
    threading.Event().wait()


def flaky_agent() -> None:
    """Like agent, but its callback raises on 'boom' (dispatch must go on)."""

    @passive_channel.on_receive()
    def answer(cmd: Any) -> None:
        if cmd == "boom":
            raise RuntimeError("callback failure on purpose")
        _run_command(cmd)

    threading.Event().wait()


def exiting_agent() -> None:
    """Like agent, but its callbacks try to end the process, or interrupt it, on purpose:
    ``sys.exit()`` in a sync callback, in an async one after an await, and in a filter;
    ``raise KeyboardInterrupt`` off the main thread. Each must be logged as raised, and
    dispatch must go on (the process stays up, its callbacks alive)."""
    import sys

    @passive_channel.on_receive()
    def answer(cmd: Any) -> None:
        if cmd == "exit":
            sys.exit(3)
        if cmd == "interrupt":
            raise KeyboardInterrupt
        if isinstance(cmd, tuple):
            _run_command(cmd)

    @passive_channel.on_receive()
    async def later(cmd: Any) -> None:
        if cmd == "exit after an await":
            await asyncio.sleep(0)
            sys.exit(4)

    def exit_in_filter(cmd: Any) -> bool:
        if cmd == "exit in a filter":
            sys.exit(5)
        return False

    passive_channel.on_receive(exit_in_filter)(lambda cmd: None)
    threading.Event().wait()


async def exiting_agent_on_its_loop() -> None:
    """``exiting_agent`` in an ``async def`` target: its callbacks run on the target's loop, on
    the main thread, whose stop signals the loop takes (no signal raises KeyboardInterrupt)."""
    threading.Thread(target=exiting_agent, daemon=True).start()  # (it registers, then blocks)
    await asyncio.Event().wait()


def active_echo() -> None:
    """Active mode: echo every message on the passive channel back on the active one."""
    for message in passive_channel:
        active_channel.send(message)


def late_receiver(delay_key: str) -> None:
    """Registers its callback only after the host said so through shared memory."""
    import time

    deadline = time.monotonic() + 10
    while not shared_memory.get(delay_key) and time.monotonic() < deadline:
        threading.Event().wait(0.02)  # polling the store in a test target only
    passive_channel.on_receive()(lambda m: active_channel.send(("late", m)))
    threading.Event().wait()


def ordered_sink(n: int) -> None:
    """Receives n messages actively and reports whether they came in order."""
    got = [passive_channel.receive(timeout=30) for _ in range(n)]
    active_channel.send(got == list(range(n)))
    threading.Event().wait()


def passive_counter(n: int) -> None:
    """Counts n messages in a passive callback, then reports whether they came in order."""
    seen: list[int] = []

    @passive_channel.on_receive()
    async def count(i: int) -> None:
        seen.append(i)
        if len(seen) == n:
            active_channel.send(seen == list(range(n)))

    threading.Event().wait()


async def async_agent() -> None:
    """An async target: awaits commands; its loop also dispatches passive callbacks."""
    side = Channel("async-side")
    set_channel("async-side", side)

    @side.on_receive()
    async def on_side(data: Any) -> None:
        await asyncio.sleep(0)
        active_channel.send(("side", data, threading.current_thread() is threading.main_thread()))

    while True:
        cmd = await passive_channel.async_receive()
        if cmd == "async_get":
            active_channel.send(await shared_memory.async_get("async-key"))
        elif cmd == "gather":
            values = await asyncio.gather(*(shared_memory.async_incr("gathered") for _ in range(100)))
            active_channel.send(sorted(values))
        else:
            active_channel.send(("async", cmd))


def crash_on_start() -> None:
    raise RuntimeError("this child fails on purpose")


def exits_cleanly() -> None:
    active_channel.send("bye")


def chatter() -> None:
    """Sends as fast as it can and receives everything (traffic for shutdown tests)."""
    count = [0]

    @passive_channel.on_receive()
    def sink(message: Any) -> None:
        count[0] += 1

    while True:
        try:
            active_channel.send("y" * 100, timeout=1)
        except Exception:
            threading.Event().wait(0.01)


def stubborn() -> None:
    """Ignores SIGINT and SIGTERM: only SIGKILL ends it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    active_channel.send("ignoring signals")
    threading.Event().wait()


def forks_then_serves() -> None:
    """Forks first; the copy returns from the target (and so ends in the bootstrap's clean-up),
    then this process serves commands like agent, once the copy is gone."""
    pid = os.fork()
    if pid == 0:
        return
    os.waitpid(pid, 0)
    agent()


def exits_with_a_message() -> None:
    import sys

    sys.exit("fatal: a message for the log")


def returns_leaving_a_worker() -> None:
    """Starts a (non-daemon) thread that answers on the channels, and returns."""

    def serve() -> None:
        for message in passive_channel:
            active_channel.send(("worker", message))

    threading.Thread(target=serve, name="worker").start()
