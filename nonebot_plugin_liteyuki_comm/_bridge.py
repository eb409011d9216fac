"""Startup/shutdown bridge: channels dispatch on NoneBot's loop while NoneBot runs."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any

from nonebot.utils import is_coroutine_callable

from liteyuki import log
from liteyuki.comm import ChannelClosedError
from liteyuki.comm.lowlevel import current, dispatcher, end_callbacks, release_receivers, set_park_hook
from liteyuki.log import logger

__all__ = ["Bridge"]

_announced = threading.Event()  # the standalone line is printed once per process


class Bridge:
    """What the plugin's startup and shutdown hooks do; both are safe to run twice."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, lifespan: Any, detach_blocking_hooks: bool, language: str) -> None:
        if not log.installed():
            log.install(language=language)
        runtime = current()  # standalone in-memory host when there is no Liteyuki host
        if getattr(runtime, "role", "") == "standalone" and not _announced.is_set():
            _announced.set()
            logger.info(
                "liteyuki-comm: standalone mode (no Liteyuki host): shared_memory and channels live in this "
                "process only; run `python bot.py` to share them with a host"
            )
        loop = asyncio.get_running_loop()
        if self.loop is loop:
            return
        self.loop = loop
        dispatcher.bind(loop)
        if detach_blocking_hooks and lifespan is not None:
            for hooks in (lifespan._startup_funcs, lifespan._ready_funcs):
                # Replaced in place: NoneBot is iterating this very list right now,
                # and picks up the wrapped hooks that come after ours.
                for i, func in enumerate(hooks):
                    if not is_coroutine_callable(func) and not getattr(func, "liteyuki_detachable", False):
                        hooks[i] = detachable(func)

    async def finish(self) -> None:
        """In a Liteyuki child, NoneBot's shutdown is the process's clean stop: end the passive
        callbacks before NoneBot cancels its tasks (their messages were reported consumed, so
        a cancelled one was lost: up to 88 at one restart). The ends close (what they held
        goes back to the successor) and the tasks async callbacks left may finish."""
        if getattr(current(), "role", "") != "child":
            return  # nb run, nonebug: a startup may follow this shutdown, and the ends stay
        await end_callbacks()

    def stop(self) -> None:
        loop, self.loop = self.loop, None
        # Release every thread blocked in receive() (the documented sync hook among them).
        release_receivers()
        if loop is not None:
            dispatcher.unbind(loop)


def detachable(func: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a sync startup hook: it runs in a daemon thread; the wrapper returns when the
    hook returns (NoneBot's usual semantics) *or* when it blocks in ``Channel.receive()``
    — then it keeps running in the background until shutdown releases it.

    The thread is what NoneBot's own ``run_sync`` gives a sync hook, but a daemon (a hook
    that never returns must not hold the process at exit): the context of the hooks before it
    (``contextvars``), and anyio's worker-thread token (``anyio.from_thread.run`` works)."""
    name = getattr(func, "__qualname__", repr(func))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        outcome: asyncio.Future[tuple[str, BaseException | None]] = loop.create_future()
        parked = threading.Event()

        def settle(kind: str, error: BaseException | None = None) -> None:
            def set_result() -> None:
                if not outcome.done():
                    outcome.set_result((kind, error))

            try:
                loop.call_soon_threadsafe(set_result)
            except RuntimeError:  # NoneBot's loop is gone already
                pass

        def on_park() -> None:
            if not parked.is_set():
                parked.set()
                settle("parked")

        def body() -> None:
            set_park_hook(on_park)
            try:
                with _anyio_worker(loop):
                    func()
            except ChannelClosedError:
                settle("done")  # released at shutdown: the loop it ran is over
            except BaseException as exc:
                if parked.is_set():
                    logger.opt(exception=exc).error(f"startup hook {name} raised in the background")
                settle("error", exc)
            else:
                settle("done")

        threading.Thread(target=context.run, args=(body,), name=f"startup-hook-{name}", daemon=True).start()
        kind, error = await outcome
        if kind == "error" and error is not None:
            raise error
        if kind == "parked":
            logger.debug(f"startup hook {name} waits on a channel; it goes on in the background")

    run.liteyuki_detachable = True  # type: ignore[attr-defined]
    run.__qualname__ = name
    return run


def _anyio_worker(loop: asyncio.AbstractEventLoop) -> contextlib.AbstractContextManager[Any]:
    """Make this thread an anyio worker thread of ``loop`` (as ``anyio.to_thread`` does), so
    ``anyio.from_thread.run`` works in the hook; a no-op where anyio's internals differ."""
    try:
        from anyio._backends._asyncio import AsyncIOBackend
        from anyio._core._eventloop import claim_worker_thread

        return claim_worker_thread(AsyncIOBackend, loop)
    except Exception:  # another anyio: the hook runs without the token, as before
        return contextlib.nullcontext()
