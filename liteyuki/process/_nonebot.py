"""The NoneBot child's entry point: ``add_target("nonebot", run_nonebot)``.

It lives here, not in the plugin package: a spawn target's module is imported
before NoneBot loads plugins, and a module imported too early can no longer be
loaded as a plugin.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import log
from ..log import logger
from ._child import SAME_STOP, set_stopper, stop_asked

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["configured_adapters", "console_is_interactive", "nonebot_table", "run_nonebot"]

PLUGIN = "nonebot_plugin_liteyuki_comm"


def console_is_interactive() -> bool:
    """The console adapter's chat UI runs when stdin and stdout are a terminal.

    ``LITEYUKI_CONSOLE=ui`` or ``=headless`` (or NoneBot's own
    ``CONSOLE_HEADLESS_MODE``) overrides the guess.
    """
    choice = os.environ.get("LITEYUKI_CONSOLE", "").strip().lower()
    if choice in ("ui", "headless"):
        return choice == "ui"
    if choice:  # a typo is said, not silently taken for "guess"
        logger.warning(
            f"LITEYUKI_CONSOLE={choice!r} is neither 'ui' nor 'headless'; ignored (guessing from the terminal)"
        )
    if os.environ.get("CONSOLE_HEADLESS_MODE", "").lower() in ("1", "true", "yes"):
        return False
    streams = (sys.stdin, sys.stdout)
    return all(s is not None and not s.closed and s.isatty() for s in streams)


def run_nonebot(pyproject: str | Path = "pyproject.toml", **nonebot_config: Any) -> None:
    """Run NoneBot the way ``nb run`` would for the project of ``pyproject``.

    In that project's folder (the working directory of the child): NoneBot reads
    ``.env`` and ``.env.{ENVIRONMENT}`` itself (driver, host, port, superusers,
    log level…); every adapter in ``[tool.nonebot.adapters]`` is registered;
    ``builtin_plugins``, ``plugins`` and ``plugin_dirs`` of ``[tool.nonebot]`` are
    loaded after ``nonebot_plugin_liteyuki_comm``. Differences from ``nb run``, on
    purpose: the console adapter when no adapter is configured (a bot that can
    talk at once), and the ``~none`` driver when nothing sets ``DRIVER`` (NoneBot's
    default, ``~fastapi``, is an extra install). ``nonebot_config`` goes to
    ``nonebot.init`` and wins over ``.env``.
    """
    file = Path(pyproject).resolve()
    project = file.parent
    if project.is_dir() and Path.cwd() != project:
        os.chdir(project)  # as `nb run` in the project: plugin_dirs, data files, .env are relative to it
    table = nonebot_table(file)
    adapters = configured_adapters(table)
    console_default = not adapters
    if console_default:
        adapters = [("Console", CONSOLE)]
    uses_console = any(module == CONSOLE for _, module in adapters)
    interactive = uses_console and console_is_interactive()
    if uses_console and not interactive:
        os.environ["CONSOLE_HEADLESS_MODE"] = "true"

    import nonebot

    # Importing nonebot removed every loguru handler; put ours back, and give NoneBot's
    # lines our timestamp and level names (before an adapter keeps NoneBot's handler id).
    log.reinstall()
    log.adopt_nonebot()
    env_files = _env_files(project)
    if "driver" not in nonebot_config and not _driver_configured(env_files):
        nonebot_config["driver"] = "~none"
    nonebot.init(_env_file=env_files, **nonebot_config)
    driver = nonebot.get_driver()
    if console_default:
        logger.info(f"no adapter in [tool.nonebot.adapters] of {file}: using the console adapter")
    for name, module in adapters:
        try:
            driver.register_adapter(importlib.import_module(module).Adapter)
        except Exception as exc:
            logger.error(f"adapter {name} ({module}) could not be registered: {exc}; is its package installed?")
    _stop_through_driver(driver)
    nonebot.load_plugin(PLUGIN)
    if interactive:
        _claim_terminal()
    builtin = table.get("builtin_plugins", [])
    if isinstance(builtin, list) and builtin:
        nonebot.load_builtin_plugins(*builtin)
    if table:
        plugins, plugin_dirs = _toml_plugins(table)
        nonebot.load_all_plugins(plugins, plugin_dirs)
    nonebot.run()


def _toml_plugins(table: dict[str, Any]) -> tuple[set[str], list[str]]:
    """What ``nonebot.load_from_toml`` loads from ``[tool.nonebot]`` (both formats), less this
    bridge, loaded above already: ``nb plugin install nonebot-plugin-liteyuki-comm`` lists it
    there, and NoneBot refuses a plugin loaded twice ("Plugin already exists")."""
    plugins = table.get("plugins", {})
    plugin_dirs = table.get("plugin_dirs", [])
    if not isinstance(plugins, (list, dict)):
        raise TypeError("[tool.nonebot] plugins must be a list or a table of plugin names")
    if not isinstance(plugin_dirs, list):
        raise TypeError("[tool.nonebot] plugin_dirs must be a list of directories")
    if isinstance(plugins, list):
        logger.warning("Legacy project format found! Upgrade with `nb upgrade-format`.")
        names = set(plugins)
    else:
        names = {name for modules in plugins.values() for name in modules}
    names.discard(PLUGIN)
    return names, plugin_dirs


CONSOLE = "nonebot.adapters.console"


def nonebot_table(file: Path) -> dict[str, Any]:
    """``[tool.nonebot]`` of ``file`` ({} when there is no such file or table)."""
    if not file.is_file():
        return {}
    table = tomllib.loads(file.read_text("utf-8")).get("tool", {}).get("nonebot", {})
    return table if isinstance(table, dict) else {}


def configured_adapters(table: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, module) of every adapter in ``[tool.nonebot.adapters]`` (nb-cli's new and legacy formats)."""
    raw = table.get("adapters", {})
    groups = list(raw.values()) if isinstance(raw, dict) else [raw]
    found: list[tuple[str, str]] = []
    for group in groups:
        for entry in group if isinstance(group, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("module_name"), str):
                pair = (str(entry.get("name", entry["module_name"])), entry["module_name"])
                if pair not in found:
                    found.append(pair)
    return found


def _env_files(project: Path) -> tuple[Path, Path]:
    # NoneBot's own rule: .env names the environment (ENVIRONMENT, default prod), then
    # .env.{environment} adds to it; a real environment variable wins over both.
    environment = os.environ.get("ENVIRONMENT") or _dotenv(project / ".env").get("ENVIRONMENT") or "prod"
    os.environ.setdefault("ENVIRONMENT", environment)  # NoneBot's Env() looks in the working directory
    return project / ".env", project / f".env.{environment}"


def _driver_configured(env_files: tuple[Path, ...]) -> bool:
    if any(key.upper() == "DRIVER" for key in os.environ):
        return True
    return any(key.upper() == "DRIVER" for file in env_files for key in _dotenv(file))


def _dotenv(file: Path) -> dict[str, str]:
    if not file.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(file).items() if v is not None}


def _stop_through_driver(driver: Any) -> None:
    """Stop requests from the host, without a second SIGINT.

    On Ctrl+C the child already got the terminal's SIGINT; a second one makes
    NoneBot's own driver, and uvicorn, force-quit (cutting shutdown hooks short;
    uvicorn prints a ``CancelledError`` traceback). Drivers with ``exit()``
    (``~none`` and combinations based on it) get ``driver.exit(False)``, which is
    idempotent. Server drivers without it (``~fastapi``: uvicorn) get a SIGTERM:
    uvicorn takes that as one more "please exit", never as "force".
    """
    exit_driver = getattr(driver, "exit", None)
    if exit_driver is None:
        # From now on: before uvicorn runs, our SIGTERM handler makes it a KeyboardInterrupt.
        set_stopper(lambda: os.kill(os.getpid(), signal.SIGTERM))
        return
    _exit_after_startup(driver, exit_driver)

    @driver.on_startup
    async def _install_stopper() -> None:
        loop = asyncio.get_running_loop()
        set_stopper(lambda: loop.call_soon_threadsafe(driver.exit, False))
        if stop_asked():
            # A stop reached us before this stopper, as a KeyboardInterrupt, and NoneBot is
            # starting all the same: something swallowed it on the way (a bare `except:` in a
            # plugin's import; pydantic-core building a model's validator drops one now and
            # then). It was the host's only request: it waited for its SIGTERM after stop_grace.
            driver.exit(False)

    @driver.on_shutdown
    async def _remove_stopper() -> None:
        set_stopper(None)


def _exit_after_startup(driver: Any, exit_driver: Callable[..., None]) -> None:
    """``driver.exit()`` called while NoneBot's startup hooks run waits for their end, and
    a Ctrl+C that reaches the child twice is one stop.

    NoneBot's ``~none`` driver told to exit during its startup returns without its
    shutdown: no shutdown hook runs (the plugin's ``bridge.finish`` neither), and anyio
    fails the child on the lifespan's task group left open ("Attempted to exit a cancel
    scope that isn't the current tasks's current cancel scope", exit code 1): 7 of 10
    restarts asked for during a 1.5 s startup hook. This covers the host's stop requests, a
    Ctrl+C (NoneBot's signal handler calls ``exit``) and a plugin's own call.

    A Ctrl+C reaches a child twice: the terminal's SIGINT and the host's stop request.
    NoneBot takes a second ``exit`` as "force quit" (``exit(force=should_exit.is_set())``):
    when the request came first, on a busy loop, the SIGINT cut the shutdown hooks and
    failed the child the same way (3 of 4 runs). So the calls within ``SAME_STOP`` s of the
    first are that one stop; a call after it forces, startup or not (the host's SIGTERM
    after ``stop_grace``, a second Ctrl+C).
    """
    started = False
    first: float | None = None  # when the first exit was asked for (before the end of startup: pending)

    def exit_once_started(force: bool = False) -> None:
        nonlocal first
        now = time.monotonic()
        if first is None:
            first = now
        elif now - first >= SAME_STOP:
            exit_driver(True)  # a second stop
            return
        else:
            force = False  # the same stop, told twice
        if started or force:
            exit_driver(force)

    lifespan = getattr(driver, "_lifespan", None)
    on_ready = getattr(lifespan, "on_ready", None)
    ready_hooks = getattr(lifespan, "_ready_funcs", None)
    if on_ready is None or not isinstance(ready_hooks, list):  # pragma: no cover  (another NoneBot)
        return

    async def _started() -> None:
        nonlocal started
        if ready_hooks[-1] is not _started:  # a hook added a ready hook of its own (Adapter.on_ready)
            on_ready(_started)  # NoneBot's loop over the list reaches us again, after it
            return
        started = True
        if first is not None:  # after this hook, once the driver waits for its exit: not inside its startup
            asyncio.get_running_loop().call_soon(exit_driver, False)

    driver.exit = exit_once_started

    @driver.on_startup
    async def _last_ready_hook() -> None:
        on_ready(_started)  # added now, after every plugin's: it runs last of NoneBot's startup


def _claim_terminal() -> None:
    """Tell the host this child draws a UI on the terminal: its log lines must come here."""
    from ..comm.lowlevel import ChildRuntime, current

    runtime = current()
    if isinstance(runtime, ChildRuntime):
        runtime.control("console")


run_nonebot.liteyuki_own_loop = True  # type: ignore[attr-defined]  # NoneBot's loop dispatches, not ours
