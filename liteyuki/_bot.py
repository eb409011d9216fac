"""LiteyukiBot: the host. Owns the hub, the store, the children and the lifespan."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator

from . import log
from ._threads import QuietThread
from .comm import lowlevel
from .comm.lowlevel import dispatcher
from .log import logger
from .process._child import MAIN_GUARD_EXIT

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any, TypeVar

    from ._lifespan import Lifespan
    from ._reload import Reload
    from ._status import Status
    from .process import ProcessManager

    F = TypeVar("F", bound=Callable[..., Any])

# The host's machinery (asyncio, pydantic for the configuration, the manager, the hub) is
# imported when a bot is made, not with this module: spawn runs the main script again in
# every child, and a `bot.py` that imports LiteyukiBot at its top would otherwise load all
# of it into each child (measured: a plain child 37.6 MB instead of 17.0 MB).

__all__ = ["LiteyukiBot", "get_bot"]

_bot: LiteyukiBot | None = None
_bot_lock = threading.Lock()  # guards _bot and every bot's _state
# Lifecycle: new -> running -> stopped; a new bot created while this one is not
# running retires it ("replaced"). Only a "new" bot that is still _bot may run.
_NEW, _RUNNING, _STOPPED, _REPLACED = "new", "running", "stopped", "replaced"
# What a shutdown step may take beyond stop_grace (tasks left on the loop at the end).
_LEFTOVER_WAIT = 1.0


def _in_child() -> bool:
    # The same test the runtime makes (see comm._default): set by the host for its children.
    return bool(os.environ.get(lowlevel.CHILD_ENV)) and os.environ.get(lowlevel.CHILD_PID_ENV) == str(os.getppid())


def get_bot() -> LiteyukiBot:
    """The LiteyukiBot of this (host) process."""
    if _bot is None:
        if _in_child():
            raise RuntimeError(
                f"get_bot() works in the host process only; this is the child process "
                f"{os.environ.get(lowlevel.CHILD_ENV)!r}, which has no LiteyukiBot: use liteyuki.status() for "
                "the host's state and channels (liteyuki.comm) or shared_memory to talk to it"
            )
        raise RuntimeError("no LiteyukiBot in this process: create LiteyukiBot(...) in the host first")
    return _bot


class LiteyukiBot:
    """The host process: ``LiteyukiBot(**config).run()``.

    Configuration: ``liteyuki._config.HostConfig`` (keys, ranges, defaults), merged
    with ``LITEYUKI_*`` variables, ``.env`` and ``[tool.liteyuki]``; a bad or unknown
    key raises ``ConfigError`` here and changes nothing. Every child gets a copy
    (``get_config`` works there too). ``plugins`` and ``plugin_dirs`` add to those
    in ``pyproject.toml``.

    One bot runs per process: creating another while one runs is a
    ``RuntimeError`` that changes nothing. A bot runs once: after it stopped,
    ``run()`` / ``running()`` raise ``RuntimeError`` (create a new ``LiteyukiBot``).
    """

    def __init__(self, **config: Any) -> None:
        global _bot
        _refuse_spawn_reimport()
        if _in_child():
            # It would replace the child's link to its host with a hub of its own.
            raise RuntimeError("LiteyukiBot runs in the host process, not in one of its children")
        lowlevel.check_storage(config)  # a bad storage URL fails here, before anything changed
        with _bot_lock:
            if _bot is not None and _bot._state == _RUNNING:
                raise RuntimeError(
                    "a LiteyukiBot is already running in this process (one per process); "
                    "use get_bot(), or stop it before creating another"
                )
            self._state = _NEW
            self._setup(config)
            if _bot is not None and _bot._state == _NEW:
                _bot._state = _REPLACED
            _bot = self

    def _setup(self, config: dict[str, Any]) -> None:
        from . import _config, _reload
        from ._lifespan import Lifespan
        from .process import ProcessManager

        self.config = _config.set_config(_config.build_config(config))
        log.install(self.config["log_level"], self.config["language"])
        self.lifespan: Lifespan = Lifespan()
        self.hub = lowlevel.new_hub(self.config)
        lowlevel.install(self.hub)
        self.process_manager: ProcessManager = ProcessManager(self.hub, self.config, self._run_hooks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._stop_flag = threading.Event()  # stop() before the loop exists is kept here
        self._signals = 0
        self._exit_code = 0
        self.process_manager.status_provider = lambda: self.status().to_json()
        self.process_manager.on_fatal = self._on_fatal
        # Development mode (`--reload`): see liteyuki/_reload.py.
        self._reload: Reload | None = _reload.Reload(self) if _reload.requested(self.config) else None

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
        # A child's stop waits for its hooks at most stop_grace s; restart hooks 30 s.
        timeout = float(self.config.get("stop_grace", 5.0)) if event == "before_process_shutdown" else 30.0
        self.lifespan.run_from_thread(event, *args, timeout=timeout)

    # -- running --------------------------------------------------------------
    def run(self) -> None:
        """Start everything and block until Ctrl+C, SIGTERM or ``stop()``.

        In development mode this process becomes the reload supervisor instead, and
        runs the host as a new process (README: "Development mode").
        """
        self._claim_run()
        if self._reload is not None and self._reload.supervises:
            try:
                self._reload.supervise()
            finally:
                self._finish()
            return
        try:
            self._run_loop(handle_signals=threading.current_thread() is threading.main_thread())
        except KeyboardInterrupt:  # a SIGINT that arrived before our handler was in place
            self.process_manager.stop_all()
        finally:
            self._finish()
        if self._exit_code:
            raise SystemExit(self._exit_code)

    def status(self) -> Status:
        """A snapshot: processes, channels, store (README: "Status"); any thread."""
        from ._status import local_status

        return local_status(self.process_manager.status(), role="host")

    def _on_fatal(self, message: str) -> None:
        # A child can never start (bot.py without its __main__ guard): stop, exit status 1.
        self._exit_code = 1
        self.stop()

    def _log_status(self) -> None:
        logger.info(self.status().format())

    @contextlib.contextmanager
    def running(self, timeout: float = 60.0) -> Iterator[LiteyukiBot]:
        """Run the host on a background thread (for tests and embedding); stop on exit."""
        if lowlevel.check_timeout(timeout) is None:
            raise TypeError("timeout must be a number of seconds, got None")
        self._claim_run()
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                self._run_loop(handle_signals=False)
            except BaseException as exc:  # handed to the caller of running()
                failure.append(exc)
            finally:
                self._finish()

        thread = QuietThread(target=serve, name="liteyuki-host")
        thread.start()
        if not self._started.wait(timeout):
            self.stop()
            thread.join(timeout)  # stopped (or still stopping) when the caller learns it
            raise RuntimeError(f"the host did not start within {timeout} s")
        if failure:
            thread.join(timeout)
            raise RuntimeError(f"the host failed to start: {failure[0]!r}") from failure[0]
        try:
            yield self
        finally:
            self.stop()
            thread.join(timeout)

    def stop(self) -> None:
        """Ask the host to stop (any thread, any moment, even before or during start-up);
        ``run()`` returns once every child is gone."""
        self._stop_flag.set()
        if self._state == _RUNNING:
            self.process_manager.begin_shutdown()  # no child spawned after this call
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def restart_process(self, name: str | None = None) -> None:
        """Restart child ``name`` (every child with None), running the restart hooks.

        From any thread it returns when the restart is done. On the host's own loop (an
        async hook, a host callback) it returns at once and the restart runs in a thread:
        waiting there would block the loop its hooks run on, and every signal with it."""
        pm = self.process_manager
        names = [name] if name is not None else pm.names
        children = [pm._child(each) for each in names]  # an unknown name raises here, at the caller
        for child in children:  # (on the loop each is queued, as pm.restart() does)
            pm._restart_or_queue(child)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    # -- lifecycle ----------------------------------------------------------------
    def _claim_run(self) -> None:
        with _bot_lock:
            if self._state == _NEW and _bot is self:
                self._state = _RUNNING
                return
            state = self._state
        if state == _RUNNING:
            raise RuntimeError("this LiteyukiBot is already running")
        if state == _STOPPED:
            raise RuntimeError(
                "this LiteyukiBot has stopped and does not run again; create a new LiteyukiBot "
                "(its children, channels and store start afresh)"
            )
        raise RuntimeError("this LiteyukiBot was replaced by a newer LiteyukiBot(...) in this process; run that one")

    def _finish(self) -> None:
        with _bot_lock:
            self._state = _STOPPED
        self._started.set()
        self._stopped.set()

    def _run_loop(self, handle_signals: bool) -> None:
        """``asyncio.run(self._serve())`` without its joins: a task that refuses to be
        cancelled or a thread in the default executor cannot hold the host's exit."""
        import asyncio

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(handle_signals, loop))
        finally:
            try:
                leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    loop.run_until_complete(asyncio.wait(leftovers, timeout=_LEFTOVER_WAIT))
                for task in leftovers:
                    if not task.done():
                        logger.warning(f"task {task.get_name()} ignored cancellation; left behind")
                        task._log_destroy_pending = False  # type: ignore[attr-defined]  # reported above
                loop.run_until_complete(asyncio.wait([loop.create_task(loop.shutdown_asyncgens())], timeout=1.0))
            finally:
                executor = getattr(loop, "_default_executor", None)
                if executor is not None:
                    executor.shutdown(wait=False)
                loop.close()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info(f"received {signal.Signals(signum).name}; stopping")
            self.process_manager.begin_shutdown()  # no child spawned after the signal
            assert self._stop_requested is not None
            self._stop_requested.set()
        else:
            logger.warning("second stop signal: killing every child now")
            self.process_manager.kill_all()

    def _load_plugins(self) -> None:
        # [tool.liteyuki] lists and LiteyukiBot(plugins=..., plugin_dirs=...) merged by _config.
        from ._plugins import load_plugin, load_plugins

        for module in self.config["plugins"]:
            load_plugin(module)
        for directory in self.config["plugin_dirs"]:
            try:
                load_plugins(directory)
            except FileNotFoundError as exc:
                logger.error(str(exc))

    async def _until_stopped(self, job: asyncio.Future[Any]) -> bool:
        """Wait for ``job`` unless a stop comes first (then cancel it); True if it finished."""
        import asyncio

        assert self._stop_requested is not None
        if not self._stop_requested.is_set():
            stop = asyncio.ensure_future(self._stop_requested.wait())
            try:
                await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
        if self._stop_requested.is_set():  # the stop wins, even a tie
            job.cancel()
            return False
        job.result()
        return True

    async def _serve(self, handle_signals: bool, loop: asyncio.AbstractEventLoop) -> None:
        import asyncio

        from ._lifespan import in_daemon_thread

        self._stop_requested = asyncio.Event()
        self._loop = self.lifespan.loop = self.process_manager.host_loop = loop
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal, signum)
            loop.add_signal_handler(signal.SIGUSR1, self._log_status)
        if self._stop_flag.is_set():  # stop() came before the loop existed
            self.process_manager.begin_shutdown()
            self._stop_requested.set()
        dispatcher.bind(loop)
        grace = float(self.config.get("stop_grace", 5.0))
        try:
            self._load_plugins()
            # A stop (signal or stop()) during start-up ends it at once: a before_start hook
            # still running is left behind, and no child is spawned after the stop.
            if await self._until_stopped(loop.create_task(self.lifespan.run("before_start"))) and (
                await self._until_stopped(in_daemon_thread(self.process_manager.start_all, name="liteyuki-start"))
            ):
                self.lifespan.start_background("after_start")
                self._started.set()
                await self._stop_requested.wait()
        finally:
            self._started.set()
            # Hooks share one budget of stop_grace seconds (children get their own).
            deadline = loop.time() + grace
            await self.lifespan.cancel_background(grace)
            await in_daemon_thread(self.process_manager.stop_all, name="liteyuki-stop")
            await self.lifespan.run("after_shutdown", timeout=max(deadline - loop.time(), 0.0))
            dispatcher.unbind(loop)
            lowlevel.close_runtime(self.hub)
            if handle_signals:
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
                    loop.remove_signal_handler(signum)
            self._stopped.set()
            logger.info("liteyuki stopped")


def _refuse_spawn_reimport() -> None:
    """A child re-imports the main script while it bootstraps (spawn). Without the
    ``__main__`` guard that would build a second host inside the child: exit at once
    with a status the host reports as one clear error (never a hang)."""
    if os.environ.get(lowlevel.CHILD_ENV) and getattr(multiprocessing.current_process(), "_inheriting", False):
        os._exit(MAIN_GUARD_EXIT)
