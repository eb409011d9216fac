from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psutil
import pytest

from liteyuki import LiteyukiBot

from .redis_server import OWNED, RedisServer

_names = itertools.count()

# The nonebug suite runs in its own process (see test_nonebot_plugin.py).
collect_ignore = [] if os.environ.get("LITEYUKI_PLUGIN_TESTS") else ["nonebot_plugin"]


def pytest_configure(config: pytest.Config) -> None:
    # nonebug initialises NoneBot in every pytest session; here it only needs a driver
    # that is always installed, and no lifespan (the host tests do not use NoneBot).
    from nonebug import NONEBOT_INIT_KWARGS, NONEBOT_START_LIFESPAN

    if not os.environ.get("LITEYUKI_PLUGIN_TESTS"):
        config.stash[NONEBOT_INIT_KWARGS] = {"driver": "~none", "console_headless_mode": True}
        config.stash[NONEBOT_START_LIFESPAN] = False


def gone(pid: int) -> bool:
    """``pid`` has exited: reaped, or a zombie its parent has not reaped yet. (Checking
    ``pid_exists`` and then building a ``Process`` raced with the reaper: ``NoSuchProcess``.)"""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def handles(pids: Iterable[int]) -> list[psutil.Process]:
    """``psutil.Process`` of each pid still there; one reaped meanwhile is left out."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    return procs


def leftover_children() -> list[psutil.Process]:
    """This process's descendants still running, but for multiprocessing's resource tracker
    (not ours) and the session's redis-server (it outlives tests): each test checks none is left."""
    left = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # exited while we looked: not left
            mine = proc.pid not in OWNED and "resource_tracker" not in " ".join(proc.cmdline())
            if mine and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
    return left


def unique(prefix: str = "c") -> str:
    return f"{prefix}{os.getpid()}x{next(_names)}"


@pytest.fixture
def host() -> Iterator[Callable[..., LiteyukiBot]]:
    """Start a LiteyukiBot with the given children on a background thread; stop it after the test.

    ``setup(bot)`` runs before any child starts (hooks registered there see every
    restart, even one during start-up)."""
    contexts: list[Any] = []

    def start(
        children: dict[str, Any] | None = None, setup: Callable[[LiteyukiBot], None] | None = None, **config: Any
    ) -> LiteyukiBot:
        config.setdefault("stop_grace", 3.0)
        config.setdefault("pyproject", None)  # the repository's demo plugins are not under test here
        bot = LiteyukiBot(**config)
        if setup is not None:
            setup(bot)
        for name, target in (children or {}).items():
            target, args = target if isinstance(target, tuple) else (target, ())
            bot.process_manager.add_target(name, target, args)
        ctx = bot.running()
        ctx.__enter__()
        contexts.append(ctx)
        return bot

    yield start
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)
    leftover = leftover_children()
    assert not leftover, f"processes left behind: {leftover}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (tests keep apart by namespace or database)."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (for tests that kill it)."""
    server = RedisServer().start()
    yield server
    server.close()
