"""Child processes: the manager the host uses, and the NoneBot entry point."""

from __future__ import annotations

from ._child import ChildSpec as ChildSpec
from ._child import request_stop as request_stop
from ._manager import ProcessManager as ProcessManager

__all__ = ["ChildSpec", "ProcessManager", "request_stop"]
