"""Child processes: the manager the host uses, and the NoneBot entry point."""

from __future__ import annotations

from ._child import ChildSpec as ChildSpec
from ._child import request_stop as request_stop
from ._manager import ProcessManager as ProcessManager
from ._nonebot import console_is_interactive as console_is_interactive
from ._nonebot import run_nonebot as run_nonebot

__all__ = ["ChildSpec", "ProcessManager", "console_is_interactive", "request_stop", "run_nonebot"]
