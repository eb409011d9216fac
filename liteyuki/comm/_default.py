"""Which runtime a process gets when nobody installed one.

A child of a liteyuki host that imports user code before its bootstrap
connected gets its (not yet connected) child runtime; any other process
(plain ``nb run``, nonebug tests, scripts) becomes a standalone hub: its own
in-memory host, where channels deliver within the process.

The runtime modules are imported by the factory, not here: a child never
loads the hub (routing, the store), a host or standalone process never loads
the child's client.
"""

from __future__ import annotations

import os

from ._channel import local_end_names
from ._context import set_default_factory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._hub import Hub

__all__ = ["CHILD_ENV", "CHILD_PID_ENV", "new_hub"]

# Set by the host in a child's environment: the child's name, and the host's pid
# (so a grandchild that inherits the variables does not take itself for the child).
CHILD_ENV = "LITEYUKI_CHILD_NAME"
CHILD_PID_ENV = "LITEYUKI_HOST_PID"


def new_hub(config: dict[str, Any] | None = None, *, standalone: bool = False, name: str = "main") -> Hub:
    """A hub that also knows this process's channel ends (for ``get_channel`` from children)."""
    from ._hub import Hub

    return Hub(config, standalone=standalone, name=name, local_names=local_end_names)


def _default_runtime() -> Any:
    child = os.environ.get(CHILD_ENV)
    if child and os.environ.get(CHILD_PID_ENV) == str(os.getppid()):
        from ._client import ChildRuntime

        return ChildRuntime(child)
    return new_hub(standalone=True, name=os.environ.get("LITEYUKI_PROCESS_NAME", "nonebot"))


set_default_factory(_default_runtime)
