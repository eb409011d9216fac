"""liteyuki: a bot host that runs plugin frameworks (NoneBot first) as child processes.

Importing this package changes no global state: no start method is set, no
log handler is added or removed, nothing is spawned.
"""

from __future__ import annotations

from typing import TypeVar

from ._bot import LiteyukiBot as LiteyukiBot
from ._bot import get_bot as get_bot
from ._config import ConfigError as ConfigError
from ._config import UnknownSettingError as UnknownSettingError
from ._config import get_config as get_config
from ._plugins import load_plugin as load_plugin
from ._plugins import load_plugins as load_plugins
from ._status import Status as Status
from ._status import async_status as async_status
from ._status import status as status
from .log import logger as logger

__all__ = [
    "ConfigError",
    "LiteyukiBot",
    "Status",
    "UnknownSettingError",
    "async_status",
    "get_bot",
    "get_config",
    "load_plugin",
    "load_plugins",
    "logger",
    "on_after_restart",
    "on_after_shutdown",
    "on_after_start",
    "on_before_process_restart",
    "on_before_process_shutdown",
    "on_before_start",
    "status",
]

__version__ = "0.1.0"

F = TypeVar("F")


def on_before_start(func: F) -> F:
    """``get_bot().on_before_start`` as a module-level decorator."""
    return get_bot().on_before_start(func)  # type: ignore[arg-type]


def on_after_start(func: F) -> F:
    return get_bot().on_after_start(func)  # type: ignore[arg-type]


def on_before_process_shutdown(func: F) -> F:
    return get_bot().on_before_process_shutdown(func)  # type: ignore[arg-type]


def on_before_process_restart(func: F) -> F:
    return get_bot().on_before_process_restart(func)  # type: ignore[arg-type]


def on_after_shutdown(func: F) -> F:
    return get_bot().on_after_shutdown(func)  # type: ignore[arg-type]


def on_after_restart(func: F) -> F:
    return get_bot().on_after_restart(func)  # type: ignore[arg-type]
