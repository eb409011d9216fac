"""ProcessManager.restart in a row and at once: every call is one full restart, nothing is lost.

`--reload` drives this path on every save. Before the fix the exit handler of the
old process read the state of the new one (``stopping`` reset by ``start()``) and
could detach the new child's link, so a restart logged "exited normally; not
restarting it" and the next call could hang.
"""

from __future__ import annotations

import contextlib
import threading

import psutil
import pytest

from liteyuki.comm import get_channel
from liteyuki.comm.storage import shared_memory

from . import targets
from .conftest import gone, unique
from .test_channels import ask


def _record_hooks(bot, events: list[str]) -> None:
    bot.on_before_process_restart(lambda n: events.append(f"before {n}"))
    bot.on_after_restart(lambda n: events.append(f"after {n}"))


@pytest.mark.parametrize("times", [2, 10])
def test_restarts_in_a_row_each_give_a_new_connected_child(host, capfd, times):
    name = unique()
    events: list[str] = []
    bot = host({name: targets.agent}, setup=lambda b: _record_hooks(b, events))
    shared_memory.set(f"{name}:kept", "yes")
    pids = [ask(name, "pid")]
    for _ in range(times):
        bot.restart_process(name)
        # The new child is connected: it answers, and sees the host's store.
        pids.append(ask(name, "pid"))
        assert ask(name, "get", f"{name}:kept") == "yes"
    assert len(set(pids)) == times + 1, pids
    assert events == [f"before {name}", f"after {name}"] * times
    assert bot.process_manager._children[name].restarts == times
    for pid in pids[:-1]:
        assert gone(pid)
    assert bot.process_manager.pid(name) == pids[-1]
    out = capfd.readouterr().out
    assert "exited normally" not in out and "exited unexpectedly" not in out, out


def test_restarts_back_to_back_without_waiting_in_between(host, capfd):
    """Two restart requests fired at once (two threads): both run, one after the other."""
    name = unique()
    events: list[str] = []
    bot = host({name: targets.agent}, setup=lambda b: _record_hooks(b, events))
    first = ask(name, "pid")
    errors: list[BaseException] = []

    def restart() -> None:
        try:
            bot.restart_process(name)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=restart) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a restart is stuck"
    assert not errors, errors
    assert events == [f"before {name}", f"after {name}"] * 2
    last = ask(name, "pid")
    assert last != first and bot.process_manager.pid(name) == last
    assert "exited normally" not in capfd.readouterr().out


def test_messages_queued_during_restarts_reach_the_new_child(host):
    """The host's outbox for the child keeps what was sent while it was down."""
    name = unique()
    bot = host({name: targets.agent})
    ask(name, "pid")
    passive = get_channel(f"{name}-passive")
    for _ in range(3):
        bot.restart_process(name)
    passive.send(("echo", "queued"))
    assert get_channel(f"{name}-active").receive(timeout=10) == "queued"


def test_restart_of_a_crashed_child_waiting_for_its_backoff_restarts_it_once(host, capfd):
    """A restart while a crash restart is pending replaces it: one new child, no second spawn."""
    name = unique()
    events: list[str] = []
    bot = host({name: targets.agent}, setup=lambda b: _record_hooks(b, events), restart_backoff=2.0)
    old = ask(name, "pid")
    passive = get_channel(f"{name}-passive")
    passive.send(("exit", 3))
    with contextlib.suppress(psutil.NoSuchProcess):  # it may be gone and reaped already
        psutil.Process(old).wait(10)
    child = bot.process_manager._children[name]
    assert child.exited.wait(10)
    bot.restart_process(name)
    new = ask(name, "pid")
    # Once its backoff is over, the pending crash restart gives up (no third process).
    for pending in [t for t in threading.enumerate() if t.name == f"liteyuki-restart-{name}"]:
        pending.join(10)
        assert not pending.is_alive()
    assert ask(name, "pid") == new
    assert events == [f"before {name}", f"after {name}"]
