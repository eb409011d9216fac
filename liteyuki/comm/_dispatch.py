"""Where passive callbacks run: the event loop this process lends us.

The host lends LiteyukiBot's loop, a NoneBot child lends NoneBot's loop (from
the plugin's startup hook), a plain child lends a loop the bootstrap runs in a
thread. Work submitted before a loop is bound waits and runs once one is.

A plain child's loop starts on first need: the bootstrap registers a starter
(``set_starter``), and ``ensure_loop()`` — called when a passive callback or a
subscriber is registered, and by ``submit`` as a fallback — runs it once. A
child that only makes sync calls never starts it, and never imports asyncio
(this module does not either).

Whatever a callback returns that is awaitable (a coroutine, a future, any
object with ``__await__``) runs as a task the dispatcher owns, from its first
step: ``asyncio.current_task()``, ``asyncio.timeout`` and anyio's cancel scopes
work in it as in any asyncio code. (They used to start *eagerly*, the first
step run inline by the dispatcher outside any task, which saved a task for a
callback that never suspends, and broke ``asyncio.timeout`` and
``anyio.fail_after`` there.) On Python 3.12 and later the task starts eagerly
(``eager_start``: its first step runs at once, inside the task, and a callback
that never suspends is done before the next one starts); on 3.10 and 3.11 a task
per call is scheduled, and the tasks start in message order after the sync
callbacks of the same batch. What the dispatcher adds per callback
(``python -m benchmarks.dispatch_cost``, load average 1.7): sync 0.1 µs; async
3.0 µs on 3.12, 7.3 µs on 3.11 (the old eager start: ~1 µs on either). A callback that
returns a generator or an async generator (a ``yield`` in it by mistake) ran
nothing: that is logged as its failure.

Whatever a callback raises is its own failure, logged with the traceback, and the
next callback runs, ``SystemExit`` included: ``sys.exit()`` in a callback would
otherwise stop the event loop every other callback (and NoneBot) runs on, or end a
plain child's dispatch thread and leave the process alive with its callbacks dead.
The one exception is a ``KeyboardInterrupt`` on the main thread while a stop signal
raises one there (a real Ctrl+C): it goes on up, and the process stops.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Awaitable, Callable

from ..log import logger
from ._loopcall import call_in_loop

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any

__all__ = ["Dispatcher", "contained", "dispatcher", "is_awaitable", "run_as_task", "stops_the_process"]


def is_awaitable(value: Any) -> bool:
    """``inspect.isawaitable`` without importing inspect (~6 ms of a plain child's start-up)."""
    return isinstance(value, Awaitable) or (
        isinstance(value, types.GeneratorType) and bool(value.gi_code.co_flags & 0x100)  # CO_ITERABLE_COROUTINE
    )


# asyncio.Task(eager_start=True): the first step runs now, with the task as current_task().
_EAGER_TASKS = sys.version_info >= (3, 12)


def stops_the_process(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a callback, must go on up rather than be logged as the
    callback's failure: only a real Ctrl+C, a ``KeyboardInterrupt`` on the main thread while a
    stop signal raises one there.

    Where an event loop takes the stop signals itself (an async target's, NoneBot's:
    ``add_signal_handler``; uvicorn's handlers), no signal raises it: there a callback's own
    ``raise KeyboardInterrupt`` ended the loop, and the child with exit code 0, so it was never
    restarted and what was sent to it waited in the host for good.
    """
    if not isinstance(exc, KeyboardInterrupt) or threading.current_thread() is not threading.main_thread():
        return False
    import signal  # (imported by every process's start-up already)

    # Python's own handler, or the child's stop (_child._stop_signal, marked so).
    return any(
        handler is signal.default_int_handler or getattr(handler, "raises_keyboard_interrupt", False) is True
        for handler in map(signal.getsignal, (signal.SIGINT, signal.SIGTERM))
    )


async def contained(awaitable: Awaitable[Any], label: str) -> None:
    """Await the rest of a callback inside a task; a ``SystemExit`` it raises is logged here
    as the callback's failure (out of a task, asyncio re-raises it from the loop itself,
    which would stop the loop). Other exceptions go to the task, as usual."""
    try:
        await awaitable
    except (SystemExit, KeyboardInterrupt) as exc:
        if stops_the_process(exc):
            raise
        logger.opt(exception=exc).error(f"{label} raised")


def run_as_task(
    awaitable: Awaitable[Any], loop: asyncio.AbstractEventLoop, owner: set[asyncio.Task[Any]], label: str
) -> asyncio.Task[Any] | None:
    """Await ``awaitable`` in a task of ``loop``, kept in ``owner`` until it is done; the task,
    or None when it finished at once (an eager task that never suspended)."""
    if _EAGER_TASKS:
        import asyncio  # loaded already: we run on a loop

        task = asyncio.Task(contained(awaitable, label), loop=loop, eager_start=True)  # type: ignore[call-arg]
        if task.done():  # it never suspended: nothing to own
            _task_done(task, owner, label)
            return None
    else:
        task = loop.create_task(contained(awaitable, label))
    owner.add(task)
    task.add_done_callback(lambda t: _task_done(t, owner, label))
    return task


def _task_done(task: asyncio.Task[Any], owner: set[asyncio.Task[Any]], label: str) -> None:
    owner.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.opt(exception=exc).error(f"{label} raised")


class Dispatcher:
    """The process-wide runner of passive callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[Callable[[], None]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self._starter: Callable[[], asyncio.AbstractEventLoop] | None = None
        self._start_lock = threading.Lock()  # one start at a time (a thread and a loop to make)
        self._wanted = False  # ensure_loop() was called before there was a starter

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def set_starter(self, starter: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
        """Make ``starter()`` the way to get a loop when work needs one and none is bound.

        A plain child's bootstrap sets it (a loop in a thread); ``None`` (the default):
        work waits until someone binds a loop (the host's, NoneBot's). If a loop was
        wanted already (a callback registered while the child's modules were imported),
        it starts now.
        """
        with self._lock:
            self._starter = starter
            start = starter is not None and self._loop is None and (self._wanted or bool(self._waiting))
        if start:
            self.ensure_loop()

    def ensure_loop(self) -> asyncio.AbstractEventLoop | None:
        """The bound loop, started now by the starter if none is bound (None: no loop, no starter)."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:  # with set_starter's check: a want is either seen there or started here
            if self._starter is None:
                self._wanted = True  # a starter set later starts the loop at once
                return None
        with self._start_lock:
            with self._lock:
                loop, starter = self._loop, self._starter
            if loop is None and starter is not None:
                loop = starter()
                self.bind(loop)
        return loop

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run callbacks on ``loop`` from now on (idempotent for the same loop)."""
        with self._lock:
            if self._loop is loop:
                return
            self._loop = loop
            waiting, self._waiting = self._waiting, []
        for work in waiting:
            call_in_loop(loop, work)

    def unbind(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Stop using the loop (if it is ``loop``); cancel the tasks callbacks left running."""
        with self._lock:
            if loop is not None and self._loop is not loop:
                return
            self._loop = None
            tasks, self.tasks = self.tasks, set()
        for task in tasks:
            if not task.done():
                call_in_loop(task.get_loop(), task.cancel)

    def submit(self, work: Callable[[], None]) -> None:
        """Call ``work()`` on the bound loop, soon; or when a loop is bound (or started)."""
        starter = None
        with self._lock:
            loop = self._loop
            if loop is None:
                self._waiting.append(work)
                starter = self._starter
        if loop is None:
            if starter is not None:
                self.ensure_loop()  # binding runs the waiting work
            return
        if not call_in_loop(loop, work):  # the loop closed under us: keep the work for the next one
            with self._lock:
                if self._loop is loop:
                    self._loop = None
                self._waiting.append(work)

    def call(self, func: Callable[..., Any], arg: Any, label: str) -> asyncio.Task[Any] | None:
        """Call a sync or async callback with ``arg`` on the loop thread; log what it raises.
        The task it left to run (an async callback that did not finish), if any."""
        try:
            result = func(arg)
        except BaseException as exc:  # SystemExit too (see the module's docstring)
            if stops_the_process(exc):
                raise
            logger.exception(f"{label} raised")
            return None
        # `is not None` first: a sync callback returns None, and the ABC check costs ~0.5 us.
        if result is None:
            return None
        if is_awaitable(result):
            loop = self._loop
            if loop is None:
                import asyncio  # loaded already: we run on a loop

                loop = asyncio.get_running_loop()
            return run_as_task(result, loop, self.tasks, label)
        if isinstance(result, (types.GeneratorType, types.AsyncGeneratorType)):
            result.close()
            logger.error(
                f"{label} returned a {type(result).__name__}, not a result: its body never ran "
                "(a callback is a function or an `async def`; is there a `yield` in it?)"
            )
        return None


dispatcher = Dispatcher()
