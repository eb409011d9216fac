"""Lifespan hooks of the host, kept per bot in lists, run in registration order.

A hook may be sync or async, may return or run forever: it never keeps the host
from stopping. Async hooks run as tasks on the host's loop; sync hooks run in a
daemon thread of their own (never in asyncio's default executor, which
``asyncio.run`` and the interpreter join at exit). A hook still running when the
host stops, or past its time limit, is *left behind*: logged by name, and (a
sync one) left to die with the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._threads import QuietThread
from .log import logger

__all__ = ["EVENTS", "Lifespan", "in_daemon_thread"]

F = TypeVar("F", bound=Callable[..., Any])

EVENTS = (
    "before_start",
    "after_start",
    "before_process_shutdown",
    "before_process_restart",
    "after_shutdown",
    "after_restart",
)
# The least a hook gets once its phase's time budget is spent: it still starts and
# may finish quickly; past this it is left behind.
_MIN_HOOK_TIME = 0.1


def _wants_argument(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _name(func: Any) -> str:
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__name__


class HookThreadError(RuntimeError):
    """A hook raised something that is not an ``Exception`` (``SystemExit`` ...)."""


async def _contained(coro: Any, label: str) -> Any:
    """Await an async hook; a ``SystemExit`` or ``KeyboardInterrupt`` it raises is its own
    failure, as for a sync hook. Out of a task, asyncio re-raises both from the loop itself:
    the host stopped (exit status 3 for ``sys.exit(3)``), or its stop sequence was cut off and
    a child was never stopped. (A real Ctrl+C never lands in a task: the host's loop takes
    SIGINT with a signal handler.)"""
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise HookThreadError(f"{label} raised {type(exc).__name__}({exc})") from exc


def in_daemon_thread(func: Callable[..., Any], *args: Any, name: str) -> asyncio.Future[Any]:
    """Run ``func(*args)`` in a new daemon thread; a future of the running loop gets its outcome.

    Unlike ``asyncio.to_thread`` nobody joins the thread: a call that never returns
    cannot hold the loop's shutdown or the interpreter's exit.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Any, failed: bool) -> None:
        if future.done():  # cancelled: the caller left this call behind
            return
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def body() -> None:
        try:
            outcome, failed = context.run(func, *args), False
        except Exception as exc:
            outcome, failed = exc, True
        except BaseException as exc:  # SystemExit in a hook must not reach the host's loop as is
            outcome, failed = HookThreadError(f"{name} raised {type(exc).__name__}: {exc}"), True
        try:
            loop.call_soon_threadsafe(settle, outcome, failed)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    QuietThread(target=body, name=name, daemon=True).start()
    return future


class Lifespan:
    """Hooks per event; a hook may be sync or async, and may take the process name."""

    def __init__(self) -> None:
        self._hooks: dict[str, list[Callable[..., Any]]] = {event: [] for event in EVENTS}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        # How long a cancelled async hook gets to finish before it is left behind.
        self.cancel_grace = 5.0
        self.left_behind: list[str] = []  # labels of hooks abandoned so far (also logged)

    def register(self, event: str, func: F) -> F:
        if not callable(func):
            raise TypeError(f"a lifespan hook must be callable, got {type(func).__name__}")
        self._hooks[event].append(func)
        return func

    def _leave(self, label: str, why: str, thread: bool) -> None:
        where = "; its thread runs on until the process exits" if thread else ""
        logger.warning(f"{label} left behind: {why}{where}")
        self.left_behind.append(label)

    async def call(self, event: str, func: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> None:
        """Run one hook; ``timeout`` (s) bounds the wait, after which the hook is left behind.

        Cancelling this call (the host stops) cancels an async hook, waits up to
        ``cancel_grace`` for it to end, and leaves it behind otherwise.
        """
        label = f"{event} hook {_name(func)}"
        call_args = args if args and _wants_argument(func) else ()
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        job: asyncio.Future[Any]
        if inspect.iscoroutinefunction(func):
            job = loop.create_task(_contained(func(*call_args), label), name=label)
        else:
            job = in_daemon_thread(func, *call_args, name=f"liteyuki-{label.replace(' ', '-')}")
        while True:
            thread = not isinstance(job, asyncio.Task)
            remaining = None if deadline is None else max(deadline - time.monotonic(), _MIN_HOOK_TIME)
            try:
                done, _ = await asyncio.wait({job}, timeout=remaining)
            except asyncio.CancelledError:
                job.cancel()
                if not thread:
                    await asyncio.wait({job}, timeout=self.cancel_grace)
                if thread or not job.done():
                    self._leave(label, "still running when the host stopped", thread)
                    if not thread:  # already reported: no "Task was destroyed" at exit
                        job._log_destroy_pending = False  # type: ignore[attr-defined]
                raise
            if not done:
                job.cancel()
                self._leave(label, f"did not return within {timeout:.1f} s", thread)
                return
            result = job.result()
            if not inspect.isawaitable(result):
                return
            job = asyncio.ensure_future(_contained(result, label))  # a sync hook that returned a coroutine

    async def run(self, event: str, *args: Any, timeout: float | None = None) -> None:
        """Run each hook in order; one that raises is logged and the others still run.

        ``timeout`` (s) is the budget of the whole event: a hook still running
        when it is spent is left behind and the next one starts.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for func in list(self._hooks[event]):
            remaining = None if deadline is None else max(deadline - time.monotonic(), _MIN_HOOK_TIME)
            try:
                await self.call(event, func, args, remaining)
            except Exception:
                logger.exception(f"{event} hook {_name(func)} raised")

    def start_background(self, event: str) -> None:
        """Start each hook as a task the lifespan owns (after_start hooks may loop forever)."""
        loop = asyncio.get_running_loop()
        for func in list(self._hooks[event]):
            task = loop.create_task(self.call(event, func, (), None), name=f"{event}:{_name(func)}")
            self.tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(f"hook task {task.get_name()} raised")

    async def cancel_background(self, timeout: float) -> None:
        """Cancel the background hooks; those that do not end within ``timeout`` s are left behind."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            self.cancel_grace = max(timeout, _MIN_HOOK_TIME)
            await asyncio.wait(tasks, timeout=self.cancel_grace + 1.0)

    def run_from_thread(self, event: str, *args: Any, timeout: float = 30.0) -> None:
        """Run hooks from any thread, on the loop when it runs, and wait up to ``timeout`` s for them."""
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            _run_without_loop(self.run(event, *args, timeout=timeout))
            return
        if _loop_thread_id(loop) == threading.get_ident():
            # On the loop itself (e.g. restart_process from an async hook): cannot wait here.
            task = loop.create_task(self.run(event, *args, timeout=timeout))
            self.tasks.add(task)
            task.add_done_callback(self._task_done)
            return
        try:
            future = asyncio.run_coroutine_threadsafe(self.run(event, *args, timeout=timeout), loop)
        except RuntimeError:  # the loop closed in the meantime
            return
        try:
            # run() leaves a hook behind after `timeout`; this bound only guards a stuck loop.
            future.result(timeout + 5.0)
        except concurrent.futures.TimeoutError:  # not the builtin TimeoutError before 3.11
            future.cancel()
            logger.error(f"{event} hooks did not finish within {timeout} s; going on")


def _run_without_loop(coro: Any) -> None:
    # A private loop, closed without joining anything (asyncio.run joins executor threads).
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


def _loop_thread_id(loop: asyncio.AbstractEventLoop) -> int | None:
    return getattr(loop, "_thread_id", None)
