"""Development mode (``python bot.py --reload``): restart exactly what changed.

Two processes share the work:

- the **supervisor** (the process the user started; ``LiteyukiBot.run()`` becomes
  it) watches host plugins and the configuration (``pyproject.toml``, ``.env*``,
  the main script). A change there replaces the whole host process, the way
  uvicorn's reloader does: the host's state (shared memory, queued messages) is
  not kept across that restart. See ``_supervisor.py``.
- the **host** (run by the supervisor in a session of its own) watches the
  NoneBot plugins of each ``run_nonebot`` child. A change there restarts only
  that child through ``ProcessManager.restart``: the restart hooks run, the
  host keeps its pid, its plugins, its shared memory and what is queued for
  the child.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._plugins import plugins_from_pyproject
from ._threads import QuietThread
from ._watch import (
    HOST,
    Rule,
    Watcher,
    config_rules,
    describe,
    nonebot_rules,
    plugin_rules,
    require_watchfiles,
)
from .log import logger

if TYPE_CHECKING:
    from ._bot import LiteyukiBot

__all__ = ["SUPERVISOR_FD_ENV", "Reload", "requested"]

# Set by the supervisor for the host it runs: the read end of a pipe whose EOF means
# "the supervisor is gone" (the host, in its own session, would otherwise outlive it).
SUPERVISOR_FD_ENV = "LITEYUKI_RELOAD_FD"


def requested(config: dict[str, Any]) -> bool:
    """Whether development mode is on: ``reload`` of the merged configuration, which came
    from ``reload=True``, ``LITEYUKI_RELOAD``, ``.env`` or ``[tool.liteyuki] reload`` with the
    documented precedence (it used to re-read the environment and pyproject.toml here, so
    ``LITEYUKI_RELOAD=false`` or ``reload=False`` could not turn a pyproject's ``true`` off)."""
    value = config.get("reload", False)
    if not isinstance(value, bool):
        raise TypeError(f"reload must be a bool, got {type(value).__name__} {value!r}")
    return value


def nonebot_pyprojects(bot: LiteyukiBot) -> dict[str, Path]:
    """Child name -> the pyproject.toml of each child that runs ``run_nonebot``."""
    from .process import run_nonebot

    found = {}
    manager = bot.process_manager
    for name in manager.names:
        target, args, kwargs = manager.target(name)
        if target is run_nonebot:
            found[name] = Path(kwargs.get("pyproject", args[0] if args else "pyproject.toml"))
    return found


def host_rules(bot: LiteyukiBot) -> list[Rule]:
    """Host plugins (as ``LiteyukiBot`` loads them) and the configuration files."""
    pyproject = bot.config.get("pyproject")
    modules, dirs = plugins_from_pyproject(pyproject) if pyproject else ([], [])
    rules = plugin_rules(HOST, [*modules, *bot.config.get("plugins", [])], dirs, Path.cwd())
    rules += plugin_rules(HOST, [], bot.config.get("plugin_dirs", []), Path.cwd())
    script = sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else None
    projects = [*([pyproject] if pyproject else []), *nonebot_pyprojects(bot).values()]
    return rules + config_rules(projects, script)


def child_rules(bot: LiteyukiBot) -> list[Rule]:
    rules: list[Rule] = []
    for name, pyproject in nonebot_pyprojects(bot).items():
        rules += nonebot_rules(name, pyproject)
    return rules


class Reload:
    """Development mode for one ``LiteyukiBot``: made by ``LiteyukiBot(reload=True)``.

    In the process the user started, ``run()`` hands over to ``supervise()``; in the
    host the supervisor runs (or a host run with ``running()``), an ``after_start``
    hook watches the NoneBot plugins.
    """

    def __init__(self, bot: LiteyukiBot) -> None:
        require_watchfiles()  # say what to install before anything starts
        self.bot = bot
        fd = os.environ.pop(SUPERVISOR_FD_ENV, None)
        self.supervised = fd is not None
        if fd is not None:
            _stop_when_supervisor_is_gone(int(fd))
        self._changes: queue.SimpleQueue[tuple[str | None, list[str]] | None] = queue.SimpleQueue()
        bot.on_after_start(self._watch_children)

    @property
    def supervises(self) -> bool:
        """Whether ``run()`` in this process becomes the supervisor (it needs the main thread for signals)."""
        return not self.supervised and threading.current_thread() is threading.main_thread()

    def supervise(self) -> None:
        """Be the supervisor until Ctrl+C: run the host in a new process, replace it on host-level changes."""
        from ._supervisor import Supervisor

        Supervisor(self.bot, host_rules(self.bot)).run()

    async def _watch_children(self) -> None:
        """after_start hook of the host: restart a NoneBot child when its plugins change."""
        rules = child_rules(self.bot)
        if not self.supervised:
            logger.info("reload: no supervisor (LiteyukiBot.run() starts one); host plugin changes are not watched")
        if not rules:
            logger.info("reload: no NoneBot process to watch")
            return
        names = sorted({str(r.process) for r in rules})
        watcher = Watcher(
            rules,
            on_change=lambda process, paths: self._changes.put((process, paths)),
            on_live=lambda: logger.info(
                f"reload: watching the NoneBot plugins of {', '.join(map(repr, names))}; "
                "a change there restarts only that process (the host and its state stay)"
            ),
            all_rules=rules + host_rules(self.bot),
        )
        worker = QuietThread(target=self._restart_changed, name="liteyuki-reload-restart", daemon=True)
        watcher.start()
        worker.start()
        try:
            await asyncio.get_running_loop().create_future()  # until the host stops (the task is cancelled)
        finally:
            watcher.stop()
            self._changes.put(None)

    def _restart_changed(self) -> None:
        # One thread restarts, so changes that arrive during a restart make one more restart, not many.
        while True:
            item = self._changes.get()
            batch: dict[str, set[str]] = {}
            while item is not None:
                process, paths = item
                batch.setdefault(str(process), set()).update(paths)
                try:
                    item = self._changes.get_nowait()
                except queue.Empty:
                    break
            for process, paths in batch.items():
                logger.info(f"reload: {describe(paths)} changed; restarting process {process!r}")
                try:
                    self.bot.process_manager.restart(process)
                except Exception:
                    logger.exception(f"reload: restarting process {process!r} failed; the next change tries again")
            if item is None:
                return


def _stop_when_supervisor_is_gone(fd: int) -> None:
    os.set_inheritable(fd, False)  # our own children must not hold the supervisor's pipe open

    def watch() -> None:
        try:
            while os.read(fd, 64):  # the supervisor never writes: only EOF comes
                pass
        except OSError:
            pass
        logger.warning("reload: the supervisor is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)  # the host's own stop path (or, before it is set up, exit)

    QuietThread(target=watch, name="liteyuki-reload-supervisor-watch", daemon=True).start()
