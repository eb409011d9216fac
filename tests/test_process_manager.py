"""ProcessManager's public calls under concurrency and bad input (found by hostile scripts)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liteyuki import LiteyukiBot
from liteyuki.comm import get_channel

from . import gate, targets
from .conftest import unique
from .test_channels import ask


@pytest.fixture
def gate_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], socket.socket]]:
    """``hold()``: from now on, children importing ``tests.gate`` wait at its listener."""
    path = str(tmp_path / "gate.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(8)
        listener.settimeout(30)

        def hold() -> socket.socket:
            monkeypatch.setenv("LITEYUKI_TEST_GATE", path)
            return listener

        yield hold


def test_is_alive_from_another_thread_never_makes_a_clean_exit_look_like_a_crash(host):
    """is_alive() and pid() reaped the child (Process.is_alive() does): the supervisor then read
    exit code None and restarted children that had exited with 0 (3 runs in 10 of a hostile
    script). The window is a few bytecodes wide: this stress run is a guard, it seldom hit it."""
    names = [unique() for _ in range(4)]
    bot = host({name: targets.exits_cleanly for name in names}, restart_backoff=30)
    pm = bot.process_manager
    done = threading.Event()

    def poll(name: str) -> None:
        while not done.is_set() and not pm._children[name].exited.is_set():
            pm.is_alive(name)
            pm.pid(name)

    pollers = [threading.Thread(target=poll, args=(name,)) for name in names for _ in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the pollers and the supervisor take turns as often as they can
    for thread in pollers:
        thread.start()
    try:
        for name in names:
            assert pm._children[name].exited.wait(20)
    finally:
        sys.setswitchinterval(interval)
        done.set()
        for thread in pollers:
            thread.join(10)
    rows = {row.name: row for row in pm.status()}
    assert [(rows[n].state, rows[n].last_exit_code, rows[n].restarts) for n in names] == [("exited", 0, 0)] * 4
    assert not any(pm.is_alive(n) or pm.pid(n) for n in names)


def test_start_during_a_stop_starts_the_child_again_once_the_stop_is_done(host):
    """start() saw the stopping child alive and returned at once; the stop then left none."""
    name = unique()
    bot = host({name: targets.agent})
    pm = bot.process_manager
    old = ask(name, "pid")
    stopping = threading.Event()
    bot.on_before_process_shutdown(lambda n: stopping.set())
    stopper = threading.Thread(target=pm.stop, args=(name,))
    stopper.start()
    assert stopping.wait(10)
    pm.start(name, timeout=30)
    stopper.join(30)
    assert pm.is_alive(name)
    assert ask(name, "pid") not in (old, None)


def test_stop_with_grace_0_returns_when_the_child_is_gone(host):
    name = unique()
    bot = host({name: targets.stubborn})
    pm = bot.process_manager
    pid = pm.pid(name)
    pm.stop(name, grace=0)
    assert not pm.is_alive(name) and pm._children[name].exited.is_set(), pid
    pm.start(name, timeout=30)
    assert pm.pid(name) not in (pid, None)


def test_a_second_start_while_the_first_is_starting_waits_for_the_child_to_connect(host, gate_socket):
    name = unique()
    bot = host({name: gate.agent})
    pm = bot.process_manager
    pm.stop(name)
    listener = gate_socket()
    first = threading.Thread(target=pm.start, args=(name, 30))
    first.start()
    held, _ = listener.accept()  # the new child is importing its target: "starting"
    states: list[str] = []

    def second() -> None:
        pm.start(name, timeout=30)
        states.append(pm.status()[0].state)

    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(1.0)  # (a bound, not a sync: the bug returned at once, before the gate opened)
    held.close()
    waiter.join(30)
    first.join(30)
    assert states == ["running"]


def test_a_stop_while_a_restart_starts_the_child_ends_the_restart_quietly(host, gate_socket):
    """restart() raised RuntimeError ("exited during start-up") when stop() came meanwhile."""
    name = unique()
    bot = host({name: gate.agent})
    pm = bot.process_manager
    errors: list[BaseException] = []

    def restart() -> None:
        try:
            pm.restart(name)
        except BaseException as exc:
            errors.append(exc)

    listener = gate_socket()
    restarter = threading.Thread(target=restart)
    restarter.start()
    held, _ = listener.accept()  # the restart's new child is starting
    pm.stop(name, grace=1.0)
    held.close()
    restarter.join(30)
    assert errors == []
    assert not pm.is_alive(name)
    assert pm.status()[0].state == "stopped"


def test_concurrent_stops_run_the_shutdown_hooks_once_and_all_wait_for_the_exit(host):
    name = unique()
    bot = host({name: targets.agent})
    pm = bot.process_manager
    calls: list[str] = []
    bot.on_before_process_shutdown(calls.append)
    alive_after: list[bool] = []

    def stop() -> None:
        pm.stop(name)
        alive_after.append(pm._children[name].exited.is_set())

    stoppers = [threading.Thread(target=stop) for _ in range(4)]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join(30)
    assert calls == [name]
    assert alive_after == [True] * 4


@pytest.mark.parametrize("call", ["stop", "restart"])
def test_stop_and_restart_on_the_host_loop_return_at_once(host, call):
    """On the host's loop they blocked it: its hooks waited, and saw the new child."""
    name = unique()
    bot = host({name: targets.agent})
    pm = bot.process_manager
    old = ask(name, "pid")
    seen: list[object] = []
    done = threading.Event()
    bot.on_before_process_shutdown(lambda n: (seen.append(("shutdown", pm.pid(n))), done.set()))
    bot.on_before_process_restart(lambda n: seen.append(("restart", pm.pid(n))))
    bot.on_after_restart(lambda n: done.set())

    async def on_the_loop() -> None:
        getattr(pm, call)(name)
        seen.append("returned")

    asyncio.run_coroutine_threadsafe(on_the_loop(), bot.loop).result(10)
    assert done.wait(30)
    assert seen == ["returned", ("shutdown" if call == "stop" else "restart", old)]


def test_add_target_checks_the_name():
    bot = LiteyukiBot(pyproject=None)
    pm = bot.process_manager
    try:
        with pytest.raises(ValueError, match=r"process name must be at most 192 characters"):
            pm.add_target("x" * 193, targets.agent)
        pm.add_target("y" * 192, targets.agent)
        with pytest.raises(TypeError, match=r"process name must be a str, got list"):
            pm.add_target(["x"], targets.agent)  # type: ignore[arg-type]
        for call in (pm.start, pm.stop, pm.restart, pm.is_alive, pm.pid):
            with pytest.raises(TypeError, match=r"process name must be a str, got list"):
                call(["x"])  # type: ignore[arg-type]

        class Name(str):
            def __hash__(self) -> int:
                return 0

        pm.add_target(Name("sub"), targets.agent)
        assert [type(n) for n in pm.names if n == "sub"] == [str]
    finally:
        bot.hub.close()


def test_a_restart_waiting_in_line_when_stop_comes_does_not_start_the_child_again(host, gate_socket):
    """A restart queued behind another read the stop count only once it had the lock: a
    stop() meanwhile was missed, and the child was started again after stop() returned."""
    name = unique()
    bot = host({name: gate.agent})
    pm = bot.process_manager
    listener = gate_socket()
    first = threading.Thread(target=pm.restart, args=(name,))
    first.start()
    held, _ = listener.accept()  # the first restart's new child is starting
    second = threading.Thread(target=pm.restart, args=(name,))
    second.start()
    second.join(0.5)  # (a bound, not a sync: it is now waiting for the first restart's lock)
    stopper = threading.Thread(target=pm.stop, args=(name, 1.0))
    stopper.start()
    held.close()
    for thread in (first, second, stopper):
        thread.join(30)
    assert not pm.is_alive(name)
    assert pm.status()[0].state == "stopped"


def test_a_second_stop_with_a_shorter_grace_returns_when_the_child_is_gone(host):
    """A later stop() only waited for the first one's end, bounded by its own grace: with the
    first at grace 25 it returned after 10 s with the child alive; and a shutdown during a
    user's long stop took that stop's grace, not stop_grace."""
    name = unique()
    bot = host({name: targets.stubborn})
    pm = bot.process_manager
    assert get_channel(f"{name}-active").receive(timeout=10) == "ignoring signals"
    hooked = threading.Event()
    bot.on_before_process_shutdown(lambda n: hooked.set())
    slow = threading.Thread(target=pm.stop, args=(name, 25.0))
    slow.start()
    assert hooked.wait(10)
    pm.stop(name, grace=0)
    assert pm._children[name].exited.is_set()
    slow.join(30)
    assert not slow.is_alive()


def test_stop_then_start_on_the_host_loop_run_in_that_order(host):
    name = unique()
    bot = host({name: targets.agent})
    pm = bot.process_manager
    old = ask(name, "pid")
    seen: list[object] = []
    bot.on_before_process_shutdown(lambda n: seen.append(("shutdown", pm.pid(n))))

    async def on_the_loop() -> None:
        pm.stop(name)
        pm.start(name)
        seen.append("returned")

    asyncio.run_coroutine_threadsafe(on_the_loop(), bot.loop).result(10)
    for worker in [t for t in threading.enumerate() if t.name.startswith("liteyuki-from-loop")]:
        worker.join(30)  # the queued stop and start are done
    new = ask(name, "pid")
    assert new != old and pm.is_alive(name)
    assert seen == ["returned", ("shutdown", old)]


def test_sigint_and_sigterm_together_stop_a_child_cleanly(host):
    """Ctrl+C and the host's SIGTERM at once: the second KeyboardInterrupt escaped child_main's
    except clause with a traceback and exit code 1 (8 of 8), and the child was restarted."""
    import os
    import signal

    name = unique()
    bot = host({name: targets.agent}, restart_backoff=30)
    pm = bot.process_manager
    pid = ask(name, "pid")
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    assert pm._children[name].exited.wait(10)
    assert pm.status()[0].last_exit_code == 0


def test_add_target_refuses_args_that_are_not_a_sequence_and_kwargs_with_other_keys():
    bot = LiteyukiBot(pyproject=None)
    pm = bot.process_manager
    try:
        with pytest.raises(TypeError, match=r"args of process 'a' must be a tuple or list, got str"):
            pm.add_target("a", targets.agent, "xy")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"args of process 'a' must be a tuple or list, got NoneType"):
            pm.add_target("a", targets.agent, None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"kwargs of process 'a' must be a dict with str keys"):
            pm.add_target("a", targets.agent, (), {1: 2})  # type: ignore[dict-item]
        assert pm.names == []
    finally:
        bot.hub.close()


def test_stop_then_restart_on_the_host_loop_leaves_the_child_running(host):
    """restart() on the loop read the stop count when called, but the queued stop before it
    counted only when it ran: the restart took it for a stop that overtook it, and stayed
    stopped (3 of 3). Stops now count at the call."""
    name = unique()
    bot = host({name: targets.agent})
    pm = bot.process_manager
    old = ask(name, "pid")

    async def on_the_loop() -> None:
        pm.stop(name)
        pm.restart(name)

    asyncio.run_coroutine_threadsafe(on_the_loop(), bot.loop).result(10)
    for worker in [t for t in threading.enumerate() if t.name.startswith("liteyuki-from-loop")]:
        worker.join(30)
    assert pm.is_alive(name) and ask(name, "pid") != old


def test_a_shutdown_hook_that_stops_another_child_on_the_loop_does_not_wait_behind_itself(host):
    """One worker ran every call made on the loop: a before_process_shutdown hook of one child
    that stopped another and waited for it waited behind its own stop, until the hook's
    timeout."""
    a, b = unique("a"), unique("b")
    bot = host({a: targets.agent, b: targets.agent})
    pm = bot.process_manager
    seen: list[str] = []

    async def stop_b_first(name: str) -> None:
        if name != a:
            return
        pm.stop(b)
        deadline = time.monotonic() + 10
        while pm.is_alive(b) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # polling a real condition (b's exit) with a deadline
        seen.append("b gone" if not pm.is_alive(b) else "b still alive")

    bot.on_before_process_shutdown(stop_b_first)

    async def on_the_loop() -> None:
        pm.stop(a)

    asyncio.run_coroutine_threadsafe(on_the_loop(), bot.loop).result(10)
    for worker in [t for t in threading.enumerate() if t.name.startswith("liteyuki-from-loop")]:
        worker.join(30)
    assert seen == ["b gone"]
    assert not pm.is_alive(a) and not pm.is_alive(b)
