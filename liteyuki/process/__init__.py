"""Child processes: the manager the host uses, and the NoneBot entry point.

Names are loaded on first access (PEP 562): a child's bootstrap imports
``liteyuki.process._child`` through this package and must not load the host's
process manager or NoneBot's entry point with it.
"""

from __future__ import annotations

from .._lazy import lazy_names

TYPE_CHECKING = False
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these
    from ._child import ChildSpec as ChildSpec
    from ._child import request_stop as request_stop
    from ._manager import ProcessManager as ProcessManager
    from ._nonebot import console_is_interactive as console_is_interactive
    from ._nonebot import run_nonebot as run_nonebot

__all__ = ["ChildSpec", "ProcessManager", "console_is_interactive", "request_stop", "run_nonebot"]

_LAZY = {
    "ChildSpec": "._child",
    "request_stop": "._child",
    "ProcessManager": "._manager",
    "console_is_interactive": "._nonebot",
    "run_nonebot": "._nonebot",
}


__getattr__, __dir__ = lazy_names(globals(), _LAZY)
