from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
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
    leftover = [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != "zombie"]
    # multiprocessing's resource tracker is not ours, a test redis-server outlives tests; everything else must go.
    leftover = [p for p in leftover if "resource_tracker" not in " ".join(p.cmdline()) and p.pid not in OWNED]
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
