from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from liteyuki import LiteyukiBot


@pytest.fixture
def start_host() -> Iterator[Callable[..., LiteyukiBot]]:
    """Like the ``host`` fixture, with a ``setup(bot)`` that runs before any child starts
    (hooks registered there see every restart, even one during start-up)."""
    contexts: list[Any] = []

    def start(
        children: dict[str, Any], setup: Callable[[LiteyukiBot], None] | None = None, **config: Any
    ) -> LiteyukiBot:
        config.setdefault("stop_grace", 3.0)
        config.setdefault("pyproject", None)
        bot = LiteyukiBot(**config)
        if setup is not None:
            setup(bot)
        for name, target in children.items():
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
    leftover = [p for p in leftover if "resource_tracker" not in " ".join(p.cmdline())]
    assert not leftover, f"processes left behind: {leftover}"
