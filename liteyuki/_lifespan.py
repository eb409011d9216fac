"""Lifespan hooks of the host, kept per bot in lists, run in registration order."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .log import logger

__all__ = ["EVENTS", "Lifespan"]

F = TypeVar("F", bound=Callable[..., Any])

EVENTS = (
    "before_start",
    "after_start",
    "before_process_shutdown",
    "before_process_restart",
    "after_shutdown",
    "after_restart",
)


def _wants_argument(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


class Lifespan:
    """Hooks per event; a hook may be sync or async, and may take the process name."""

    def __init__(self) -> None:
        self._hooks: dict[str, list[Callable[..., Any]]] = {event: [] for event in EVENTS}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def register(self, event: str, func: F) -> F:
        if not callable(func):
            raise TypeError(f"a lifespan hook must be callable, got {type(func).__name__}")
        self._hooks[event].append(func)
        return func

    async def run(self, event: str, *args: Any) -> None:
        """Await each hook in order; a hook that raises is logged and the others still run."""
        for func in list(self._hooks[event]):
            try:
                result = func(*args) if args and _wants_argument(func) else func()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception(f"{event} hook {func.__qualname__} raised")

    def start_background(self, event: str) -> None:
        """Start each hook as a task the lifespan owns (after_start hooks may loop forever)."""
        loop = asyncio.get_running_loop()
        for func in list(self._hooks[event]):
            coro = func() if inspect.iscoroutinefunction(func) else asyncio.to_thread(func)
            task = loop.create_task(coro, name=f"{event}:{func.__qualname__}")
            self.tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(f"hook task {task.get_name()} raised")

    async def cancel_background(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def run_from_thread(self, event: str, *args: Any, timeout: float = 30.0) -> None:
        """Run hooks from any thread: on the loop when it runs, and wait for them."""
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            asyncio.run(self.run(event, *args))
            return
        if _loop_thread_id(loop) == threading.get_ident():
            # On the loop itself (e.g. restart_process from an async hook): cannot wait here.
            task = loop.create_task(self.run(event, *args))
            self.tasks.add(task)
            task.add_done_callback(self._task_done)
            return
        future = asyncio.run_coroutine_threadsafe(self.run(event, *args), loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            logger.error(f"{event} hooks did not finish within {timeout} s; going on")


def _loop_thread_id(loop: asyncio.AbstractEventLoop) -> int | None:
    return getattr(loop, "_thread_id", None)
