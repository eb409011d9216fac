"""Channels between the host and real child processes started by the host API."""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
import threading
from typing import Any

import pytest

from liteyuki.comm import (
    Channel,
    ChannelClosedError,
    ChannelNotFoundError,
    ChannelTypeError,
    CommTimeoutError,
    ReceiveModeError,
    SerializationError,
    get_channel,
    get_channels,
    set_channel,
)
from liteyuki.comm.storage import shared_memory

from . import targets
from .conftest import unique


def ask(name: str, *cmd: object, timeout: float = 10) -> object:
    get_channel(f"{name}-passive").send(cmd)
    return get_channel(f"{name}-active").receive(timeout=timeout)


def test_channels_exist_from_add_target_before_start(host):
    from liteyuki import LiteyukiBot

    bot = LiteyukiBot(pyproject=None)
    bot.process_manager.add_target("early", targets.agent)
    assert get_channel("early-active").name == "early-active"
    assert get_channel("early-passive").name == "early-passive"
    bot.hub.close()


def test_child_passive_mode_full_duplex(host):
    name = unique()
    host({name: targets.agent})
    pid = ask(name, "pid")
    assert isinstance(pid, int) and pid != os.getpid()
    assert ask(name, "echo", {"a": [1, 2]}) == {"a": [1, 2]}


def test_child_active_mode_with_iteration(host):
    name = unique()
    host({name: targets.active_echo})
    get_channel(f"{name}-passive").send("ping")
    assert get_channel(f"{name}-active").receive(timeout=10) == "ping"


def test_host_passive_mode_runs_callbacks_on_the_host_loop(host):
    name = unique()
    bot = host({name: targets.agent})
    got: list[tuple[object, bool]] = []
    done = threading.Event()

    @get_channel(f"{name}-active").on_receive(filter_func=lambda d: d != "skip")
    async def on_reply(data: object) -> None:
        got.append((data, asyncio.get_running_loop() is bot.loop))
        done.set()

    get_channel(f"{name}-passive").send(("echo", "skip"))
    get_channel(f"{name}-passive").send(("echo", "hello"))
    assert done.wait(10)
    assert got == [("hello", True)]


def test_a_message_never_returns_to_its_sender(host):
    name = unique()
    host({name: targets.agent})
    active = get_channel(f"{name}-active")
    active.send("to the child, not back to me")  # host -> child on the active channel
    get_channel(f"{name}-passive").send(("echo", 1))
    assert active.receive(timeout=10) == 1


def test_order_of_10000_messages_host_to_child_active(host):
    name = unique()
    host({name: (targets.ordered_sink, (10_000,))})
    passive = get_channel(f"{name}-passive")
    for i in range(10_000):
        passive.send(i)
    assert get_channel(f"{name}-active").receive(timeout=30) is True


def test_order_of_10000_messages_host_to_child_passive(host):
    name = unique()
    host({name: (targets.passive_counter, (10_000,))})
    passive = get_channel(f"{name}-passive")
    for i in range(10_000):
        passive.send(i)
    assert get_channel(f"{name}-active").receive(timeout=30) is True


def test_order_of_10000_messages_child_to_host(host):
    name = unique()
    host({name: targets.agent})
    get_channel(f"{name}-passive").send(("burst", 10_000))
    active = get_channel(f"{name}-active")
    got = [active.receive(timeout=30) for _ in range(10_001)]
    assert got[:10_000] == list(range(10_000)) and got[-1] == "sent"


def test_callback_exception_is_logged_and_dispatch_goes_on(host, capfd):
    name = unique()
    host({name: targets.flaky_agent})
    passive = get_channel(f"{name}-passive")
    passive.send("boom")
    passive.send(("echo", "still alive"))
    assert get_channel(f"{name}-active").receive(timeout=10) == "still alive"
    out = capfd.readouterr()
    assert "callback failure on purpose" in out.out + out.err


@pytest.mark.parametrize("target", [targets.exiting_agent, targets.exiting_agent_on_its_loop])
def test_a_callback_that_calls_sys_exit_is_logged_and_the_child_goes_on(host, capfd, target):
    """sys.exit() in a callback used to end a plain child's dispatch loop: the process stayed
    up, took messages, and ran no callback again. A callback cannot end its process: nor can
    its own KeyboardInterrupt on an async target's loop, which ended the child with exit code 0
    (never restarted)."""
    name = unique()
    bot = host({name: target})
    passive, active = get_channel(f"{name}-passive"), get_channel(f"{name}-active")
    pid = None
    for attempt in ("exit", "exit after an await", "exit in a filter", "interrupt"):
        passive.send(attempt)
        passive.send(("pid",))
        got = active.receive(timeout=10)
        assert pid in (None, got), f"the child was replaced after {attempt!r}"
        pid = got
    (status,) = bot.process_manager.status()
    assert (status.state, status.restarts) == ("running", 0), status
    out = capfd.readouterr()
    text = out.out + out.err
    for code in (3, 4, 5):
        assert f"SystemExit: {code}" in text, text[-3000:]
    assert "KeyboardInterrupt" in text
    assert text.count(" raised") >= 4, text[-3000:]


def test_a_host_callback_that_calls_sys_exit_is_logged_and_the_host_goes_on(host, capfd):
    name, inbox = unique(), unique("inbox")
    got: list[Any] = []
    arrived = threading.Event()

    def take(message: Any) -> None:
        if message == "exit":
            sys.exit(3)
        got.append(message)
        arrived.set()

    host({name: targets.agent})
    set_channel(inbox, Channel(inbox))
    get_channel(inbox).on_receive()(take)
    passive = get_channel(f"{name}-passive")
    passive.send(("send_on", inbox, "exit"))
    passive.send(("send_on", inbox, "after"))
    assert arrived.wait(10), "the host's callbacks stopped after one called sys.exit()"
    assert got == ["after"]
    active = get_channel(f"{name}-active")
    assert [active.receive(timeout=10) for _ in range(2)] == [None, None]  # both sends went through
    out = capfd.readouterr()
    assert "SystemExit: 3" in out.out + out.err


def test_a_keyboard_interrupt_leaves_a_callback_only_where_a_signal_raises_one():
    """On the main thread, while a handler that raises KeyboardInterrupt takes SIGINT (Python's
    own), a KeyboardInterrupt may be a real Ctrl+C: it must stop the process, not be logged as a
    callback's failure. Where no handler raises one (SIGINT ignored, as in a process started in
    the background; a loop that takes the signals) and off the main thread, it is the callback's
    own: logged. (The loops: see test_a_callback_that_calls_sys_exit….)"""
    import signal

    from liteyuki.comm._dispatch import dispatcher

    def interrupt(_: Any) -> None:
        raise KeyboardInterrupt

    def call() -> Any:
        return dispatcher.call(interrupt, None, "callback on purpose")

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with pytest.raises(KeyboardInterrupt):
            call()
        returned: list[Any] = []
        worker = threading.Thread(target=lambda: returned.append(call()))
        worker.start()
        worker.join(10)
        assert returned == [None]  # logged, and the thread goes on
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert call() is None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_messages_sent_before_the_child_registers_its_callback_arrive(host):
    name, flag = unique(), unique("flag")
    host({name: (targets.late_receiver, (flag,))})
    passive = get_channel(f"{name}-passive")
    for i in range(5):
        passive.send(i)
    shared_memory.set(flag, True)
    active = get_channel(f"{name}-active")
    assert [active.receive(timeout=10) for _ in range(5)] == [("late", i) for i in range(5)]


def test_messages_sent_before_the_child_starts_arrive():
    from liteyuki import LiteyukiBot

    name = unique()
    bot = LiteyukiBot(stop_grace=3.0, pyproject=None)
    bot.process_manager.add_target(name, targets.active_echo)
    get_channel(f"{name}-passive").send("sent before start")
    with bot.running():
        assert get_channel(f"{name}-active").receive(timeout=10) == "sent before start"


def test_async_target_receives_awaits_and_dispatches_on_its_loop(host):
    name = unique()
    host({name: targets.async_agent})
    assert ask(name, "x") == ("async", ("x",))
    get_channel("async-side").send("side message")
    assert get_channel(f"{name}-active").receive(timeout=10) == ("side", "side message", True)


def test_one_receive_mode_per_end():
    chan = Channel(unique("mode"))
    chan.on_receive()(lambda m: None)
    with pytest.raises(ReceiveModeError, match=r"^channel 'mode\w+' is already in passive mode"):
        chan.receive(timeout=0.1)
    other = Channel(unique("mode"))
    with pytest.raises(CommTimeoutError):
        other.receive(timeout=0.01)
    with pytest.raises(ReceiveModeError, match=r"already in active mode"):
        other.on_receive()(lambda m: None)


def test_typed_channel_checks_at_send_and_nothing_is_sent(host):
    name = unique()
    host({name: targets.agent})
    chan = Channel[int](unique("typed"))
    with pytest.raises(ChannelTypeError, match=r"carries int, got str"):
        chan.send("not an int")
    pair = Channel[tuple[str, dict]](unique("pair"))
    with pytest.raises(ChannelTypeError):
        pair.send(("x", [1]))
    Channel[int](unique("ok"), type_check=False)  # disabled check accepts anything


def test_unpicklable_message_is_a_clear_error():
    chan = Channel(unique("pickle"))
    with pytest.raises(SerializationError, match=r"message on channel 'pickle\w+' of type function cannot be pickled"):
        chan.send(lambda: None)


def test_closed_channel_raises_on_send_and_ends_iteration():
    chan = Channel(unique("closed"))
    chan.close()
    chan.close()  # safe twice
    with pytest.raises(ChannelClosedError, match=r"^channel 'closed\w+' is closed$"):
        chan.send(1)
    assert list(chan) == []


def test_get_channel_of_an_unknown_name():
    with pytest.raises(ChannelNotFoundError, match=r"^no channel named 'nowhere'"):
        get_channel("nowhere")


def test_get_and_set_channel_in_children_and_round_robin(host):
    a, b = unique(), unique()
    host({a: targets.agent, b: targets.agent})
    shared = unique("shared")
    assert ask(a, "register", shared) is None
    assert shared in get_channels()
    assert isinstance(ask(b, "get_channel", shared), Channel)
    assert isinstance(ask(a, "get_channel", "nope"), ChannelNotFoundError)
    # a sends on the shared channel, b receives it (a is the sender, so never a)
    get_channel(f"{b}-passive").send(("recv_on", shared, 10))
    get_channel(f"{a}-passive").send(("send_on", shared, "across"))
    replies = {get_channel(f"{a}-active").receive(timeout=10), get_channel(f"{b}-active").receive(timeout=10)}
    assert replies == {None, "across"}


def test_channel_sent_through_a_channel_works_on_arrival(host):
    name = unique()
    host({name: targets.agent})
    inner = Channel(unique("inner"))
    set_channel(inner.name, inner)
    got = threading.Event()
    inner.on_receive()(lambda m: got.set() if m == "via inner" else None)
    assert pickle.loads(pickle.dumps(inner)) is inner
    assert ask(name, "echo", inner) is inner  # a channel object round-trips to the same end
    get_channel(f"{name}-passive").send(("send_on", inner.name, "via inner"))
    assert get_channel(f"{name}-active").receive(timeout=10) is None
    assert got.wait(10)


def test_async_receive_with_timeout_parks_no_thread():
    chan = Channel(unique("async"))

    async def main() -> None:
        # New threads only: a thread of an earlier test's host may still be ending meanwhile.
        before = set(threading.enumerate())
        with pytest.raises(CommTimeoutError):
            await chan.async_receive(timeout=0.05)
        assert set(threading.enumerate()) - before == set()

    asyncio.run(main())


# -- found by hostile scripts (issue 12, sixth stop) ------------------------------------
def test_a_message_whose_unpickling_calls_sys_exit_is_dropped_and_counted(host, capfd):
    """Unpickling runs the receiver's code (``__setstate__``); a SystemExit there used to stop
    the host's loop and the whole bot ("liteyuki stopped", exit code 0), and to leave a plain
    child alive with its callbacks dead. It is an undecodable message like any other."""
    name, inbox = unique(), unique("inbox")
    bot = host({name: targets.agent})
    end = Channel(inbox)
    set_channel(inbox, end)
    got: list[Any] = []
    arrived = threading.Event()
    end.on_receive()(lambda message: (got.append(message), arrived.set()))
    assert ask(name, "send_exit_on_load", inbox) is None
    assert ask(name, "send_on", inbox, "after") is None
    assert arrived.wait(10), "the host's callbacks stopped"
    assert got == ["after"] and end._state.dropped == 1
    assert bot.loop is not None and bot.loop.is_running()
    pid = ask(name, "pid")
    get_channel(f"{name}-passive").send(targets.ExitOnLoad())  # the child's drain, on its loop
    assert ask(name, "pid") == pid  # same process, callbacks alive
    (status,) = bot.process_manager.status()
    assert (status.state, status.restarts) == ("running", 0), status
    assert "cannot be unpickled here: SystemExit(3)" in "".join(capfd.readouterr())
    key = unique("key")
    shared_memory.set(key, targets.ExitOnLoad())
    with pytest.raises(SerializationError, match=r"shared_memory value cannot be unpickled here: SystemExit\(3\)"):
        shared_memory.get(key)
    failed = ask(name, "get", key)
    assert isinstance(failed, SerializationError) and "SystemExit(3)" in str(failed)
    assert ask(name, "pid") == pid


def test_async_callbacks_run_in_a_task_from_their_first_step(host):
    """They used to start eagerly, outside any task: asyncio.current_task() was None there, and
    asyncio.timeout / anyio.fail_after failed. Any awaitable a callback returns is awaited; a
    generator returned by mistake is logged (its body never ran)."""
    import anyio

    name, inbox = unique(), unique("inbox")
    host({name: targets.agent})
    end = Channel(inbox)
    set_channel(inbox, end)
    seen: list[Any] = []
    done = threading.Event()

    @end.on_receive()
    async def timed(message: Any) -> None:
        task = asyncio.current_task()
        with anyio.fail_after(5):
            await asyncio.sleep(0)
        seen.append(("timed", message, task is not None))

    class Later:
        def __init__(self, message: Any) -> None:
            self.message = message

        def __await__(self) -> Any:
            yield from asyncio.sleep(0).__await__()
            seen.append(("awaitable", self.message))
            done.set()

    def by_mistake(message: Any) -> Any:
        yield message  # a generator function: calling it runs nothing

    end.on_receive()(by_mistake)
    end.on_receive()(Later)
    ask(name, "send_on", inbox, "m")
    assert done.wait(10)
    assert seen == [("timed", "m", True), ("awaitable", "m")]


def test_a_channel_that_arrives_in_a_message_does_not_type_this_process_end(host):
    """A Channel[int] received from a child used to make this process's untyped end of the
    same name typed: its own sends of a str then failed. An end made for the arrival takes
    the sender's type."""
    name, mine, fresh = unique(), unique("mine"), unique("fresh")
    host({name: targets.agent})
    end = Channel(mine)
    arrived = ask(name, "typed_end", mine)
    assert arrived is end
    end.send("a str, as before")  # nobody receives: it waits in the host
    typed = ask(name, "typed_end", fresh)
    with pytest.raises(ChannelTypeError, match=r"carries int, got str"):
        typed.send("not an int")


def test_a_receive_without_timeout_on_an_event_loop_is_refused_not_a_frozen_loop():
    """`while True: chan.receive()` in an async NoneBot hook froze the loop for good: in a process
    that is its own host nothing could send, and Ctrl+C and SIGTERM were never handled."""
    chan = Channel(unique("loop"))

    async def on_a_loop() -> None:
        with pytest.raises(RuntimeError, match=r"^receive\(\) without a timeout on channel 'loop\w+' would block"):
            chan.receive()
        with pytest.raises(CommTimeoutError):  # a bounded wait is the caller's choice
            chan.receive(timeout=0.01)

    asyncio.run(on_a_loop())
