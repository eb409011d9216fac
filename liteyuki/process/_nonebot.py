"""The NoneBot child's entry point: ``add_target("nonebot", run_nonebot)``.

It lives here, not in the plugin package: a spawn target's module is imported
before NoneBot loads plugins, and a module imported too early can no longer be
loaded as a plugin.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from .. import log
from ._child import set_stopper

__all__ = ["console_is_interactive", "run_nonebot"]

PLUGIN = "nonebot_plugin_liteyuki_comm"


def console_is_interactive() -> bool:
    """The console adapter's chat UI runs when stdin and stdout are a terminal.

    ``LITEYUKI_CONSOLE=ui`` or ``=headless`` (or NoneBot's own
    ``CONSOLE_HEADLESS_MODE``) overrides the guess.
    """
    choice = os.environ.get("LITEYUKI_CONSOLE", "").lower()
    if choice in ("ui", "headless"):
        return choice == "ui"
    if os.environ.get("CONSOLE_HEADLESS_MODE", "").lower() in ("1", "true", "yes"):
        return False
    streams = (sys.stdin, sys.stdout)
    return all(s is not None and not s.closed and s.isatty() for s in streams)


def run_nonebot(pyproject: str | Path = "pyproject.toml", **nonebot_config: Any) -> None:
    """Initialise NoneBot on the console adapter, load our plugin, then the project's, and run.

    ``pyproject`` is the NoneBot project file whose ``[tool.nonebot]`` lists the
    user's plugins (``nb plugin install`` writes there). ``nonebot_config`` goes
    to ``nonebot.init``; the driver defaults to ``~none`` unless ``DRIVER`` is set.
    """
    interactive = console_is_interactive()
    if not interactive:
        os.environ["CONSOLE_HEADLESS_MODE"] = "true"

    import nonebot
    from nonebot.adapters.console import Adapter as ConsoleAdapter

    # Importing nonebot removed every loguru handler; put ours back.
    log.reinstall()
    nonebot_config.setdefault("driver", os.environ.get("DRIVER", "~none"))
    nonebot.init(**nonebot_config)
    driver = nonebot.get_driver()
    driver.register_adapter(ConsoleAdapter)
    _stop_through_driver(driver)
    nonebot.load_plugin(PLUGIN)
    if interactive:
        _claim_terminal()
    file = Path(pyproject)
    if file.is_file():
        nonebot.load_from_toml(str(file))
    nonebot.run()


def _stop_through_driver(driver: Any) -> None:
    """Stop requests from the host become ``driver.exit()`` on NoneBot's loop.

    On Ctrl+C the child already got the terminal's SIGINT; a second SIGINT (our
    default way to stop) would make NoneBot force-quit, cutting its shutdown
    hooks short. ``exit(force=False)`` is idempotent.
    """
    exit_driver = getattr(driver, "exit", None)
    if exit_driver is None:
        return

    @driver.on_startup
    async def _install_stopper() -> None:
        loop = asyncio.get_running_loop()
        set_stopper(lambda: loop.call_soon_threadsafe(exit_driver, False))

    @driver.on_shutdown
    async def _remove_stopper() -> None:
        set_stopper(None)


def _claim_terminal() -> None:
    """Tell the host this child draws a UI on the terminal: its log lines must come here."""
    from ..comm.lowlevel import ChildRuntime, current

    runtime = current()
    if isinstance(runtime, ChildRuntime):
        runtime.control("console")


run_nonebot.liteyuki_own_loop = True  # type: ignore[attr-defined]  # NoneBot's loop dispatches, not ours
