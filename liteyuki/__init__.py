"""liteyuki: a bot host that runs plugin frameworks (NoneBot first) as child processes.

Importing this package changes no global state: no start method is set, no
log handler is added or removed, nothing is spawned. It imports almost nothing
either: every name below is loaded on first access (PEP 562), so a child
process, which imports ``liteyuki`` to run its bootstrap, never loads the
host's modules (``LiteyukiBot``, plugin loading, the pydantic configuration).
"""

from __future__ import annotations

from ._lazy import lazy_names

TYPE_CHECKING = False
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these
    from typing import TypeVar

    from ._bot import LiteyukiBot as LiteyukiBot
    from ._bot import get_bot as get_bot
    from ._plugins import load_plugin as load_plugin
    from ._plugins import load_plugins as load_plugins
    from ._settings import ConfigError as ConfigError
    from ._settings import UnknownSettingError as UnknownSettingError
    from ._settings import get_config as get_config
    from ._status import Status as Status
    from ._status import async_status as async_status
    from ._status import status as status
    from .log import logger as logger

    F = TypeVar("F")

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

# name -> the private module that defines it (loaded on first access)
_LAZY = {
    "LiteyukiBot": "._bot",
    "get_bot": "._bot",
    "load_plugin": "._plugins",
    "load_plugins": "._plugins",
    "ConfigError": "._settings",
    "UnknownSettingError": "._settings",
    "get_config": "._settings",
    "Status": "._status",
    "async_status": "._status",
    "status": "._status",
    "logger": ".log",
}


__getattr__, __dir__ = lazy_names(globals(), _LAZY)


def _get_bot() -> LiteyukiBot:
    from ._bot import get_bot

    return get_bot()


def on_before_start(func: F) -> F:
    """``get_bot().on_before_start`` as a module-level decorator."""
    return _get_bot().on_before_start(func)  # type: ignore[arg-type]


def on_after_start(func: F) -> F:
    return _get_bot().on_after_start(func)  # type: ignore[arg-type]


def on_before_process_shutdown(func: F) -> F:
    return _get_bot().on_before_process_shutdown(func)  # type: ignore[arg-type]


def on_before_process_restart(func: F) -> F:
    return _get_bot().on_before_process_restart(func)  # type: ignore[arg-type]


def on_after_shutdown(func: F) -> F:
    return _get_bot().on_after_shutdown(func)  # type: ignore[arg-type]


def on_after_restart(func: F) -> F:
    return _get_bot().on_after_restart(func)  # type: ignore[arg-type]
