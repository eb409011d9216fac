"""LiteyukiBot: the host. Owns the hub, the store, the children and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from . import _config, _reload, log
from ._lifespan import Lifespan
from ._plugins import load_plugin, load_plugins, plugins_from_pyproject
from .comm import lowlevel
from .comm.lowlevel import dispatcher
from .log import logger
from .process import ProcessManager

__all__ = ["LiteyukiBot", "get_bot"]

F = TypeVar("F", bound=Callable[..., Any])

_bot: LiteyukiBot | None = None


def get_bot() -> LiteyukiBot:
    """The LiteyukiBot of this (host) process."""
    if _bot is None:
        raise RuntimeError("no LiteyukiBot in this process: create LiteyukiBot(...) in the host first")
    return _bot


class LiteyukiBot:
    """The host process: ``LiteyukiBot(**config).run()``.

    Configuration keys and defaults are in ``liteyuki._config.DEFAULTS``; every
    child gets a copy (``get_config`` works there too). ``plugins`` and
    ``plugin_dirs`` add host plugins to those listed in ``pyproject.toml``.
    """

    def __init__(self, **config: Any) -> None:
        global _bot
        self.config = _config.set_config(config)
        log.install(self.config["log_level"], self.config["language"])
        self.lifespan = Lifespan()
        self.hub = lowlevel.new_hub(self.config)
        lowlevel.install(self.hub)
        self.process_manager = ProcessManager(self.hub, self.config, self._run_hooks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._signals = 0
        _bot = self
        # Development mode (`--reload`): see liteyuki/_reload.py.
        self._reload = _reload.Reload(self) if _reload.requested(self.config) else None

    # -- lifespan decorators ------------------------------------------------------
    def on_before_start(self, func: F) -> F:
        """Run before any child starts (awaited, in order)."""
        return self.lifespan.register("before_start", func)

    def on_after_start(self, func: F) -> F:
        """Run once the children started, as a background task (it may loop forever)."""
        return self.lifespan.register("after_start", func)

    def on_before_process_shutdown(self, func: F) -> F:
        """Run before a child is stopped; gets the process name if it takes an argument."""
        return self.lifespan.register("before_process_shutdown", func)

    def on_before_process_restart(self, func: F) -> F:
        """Run before a child is restarted (also after a crash); gets the process name."""
        return self.lifespan.register("before_process_restart", func)

    def on_after_shutdown(self, func: F) -> F:
        """Run after every child has stopped."""
        return self.lifespan.register("after_shutdown", func)

    def on_after_restart(self, func: F) -> F:
        """Run after a child was restarted; gets the process name."""
        return self.lifespan.register("after_restart", func)

    def _run_hooks(self, event: str, *args: Any) -> None:
        self.lifespan.run_from_thread(event, *args)

    # -- running --------------------------------------------------------------
    def run(self) -> None:
        """Start everything and block until Ctrl+C, SIGTERM or ``stop()``.

        In development mode this process becomes the reload supervisor instead, and
        runs the host as a new process (README: "Development mode").
        """
        if self._reload is not None and self._reload.supervises:
            self._reload.supervise()
            return
        try:
            asyncio.run(self._serve(handle_signals=threading.current_thread() is threading.main_thread()))
        except KeyboardInterrupt:  # a SIGINT that arrived before our handler was in place
            self.process_manager.stop_all()

    @contextlib.contextmanager
    def running(self, timeout: float = 60.0) -> Iterator[LiteyukiBot]:
        """Run the host on a background thread (for tests and embedding); stop on exit."""
        thread = threading.Thread(target=lambda: asyncio.run(self._serve(False)), name="liteyuki-host")
        thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError(f"the host did not start within {timeout} s")
        try:
            yield self
        finally:
            self.stop()
            thread.join(timeout)

    def stop(self) -> None:
        """Ask the host to stop (any thread); ``run()`` returns once every child is gone."""
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def restart_process(self, name: str | None = None) -> None:
        """Restart child ``name`` (every child with None), running the restart hooks."""
        for each in [name] if name is not None else self.process_manager.names:
            self.process_manager.restart(each)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info(f"received {signal.Signals(signum).name}; stopping")
            assert self._stop_requested is not None
            self._stop_requested.set()
        else:
            logger.warning("second stop signal: killing every child now")
            self.process_manager.kill_all()

    def _load_plugins(self) -> None:
        pyproject = self.config.get("pyproject")
        modules, dirs = plugins_from_pyproject(pyproject) if pyproject else ([], [])
        for module in [*modules, *self.config.get("plugins", [])]:
            load_plugin(module)
        for directory in [*dirs, *self.config.get("plugin_dirs", [])]:
            try:
                load_plugins(directory)
            except FileNotFoundError as exc:
                logger.error(str(exc))

    async def _serve(self, handle_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        self._loop = self.lifespan.loop = loop
        self._stop_requested = asyncio.Event()
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal, signum)
        dispatcher.bind(loop)
        try:
            self._load_plugins()
            await self.lifespan.run("before_start")
            await loop.run_in_executor(None, self.process_manager.start_all)
            self.lifespan.start_background("after_start")
            self._started.set()
            await self._stop_requested.wait()
        finally:
            self._started.set()
            await self.lifespan.cancel_background()
            await loop.run_in_executor(None, self.process_manager.stop_all)
            await self.lifespan.run("after_shutdown")
            dispatcher.unbind(loop)
            lowlevel.close_runtime(self.hub)
            if handle_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
            self._stopped.set()
            logger.info("liteyuki stopped")
