"""The surface of ``liteyuki.comm`` for code that extends it.

The host (``LiteyukiBot``), the process manager, the child bootstrap and the
NoneBot plugin use these names, and only these, the way ``trio.lowlevel``
serves code built on trio. User code should not need them; they may change
between minor versions.
"""

from __future__ import annotations

from collections.abc import Callable

from ._channel import _park, forget_local_ends, local_end, local_ends
from ._client import ChildRuntime
from ._context import current, install, installed
from ._default import CHILD_ENV, CHILD_PID_ENV, new_hub
from ._dispatch import dispatcher
from ._hub import Hub
from ._link import Writer, new_socketpair
from ._loopcall import call_in_loop
from ._runtime_base import RuntimeBase
from ._validate import check_timeout

__all__ = [
    "CHILD_ENV",
    "CHILD_PID_ENV",
    "ChildRuntime",
    "Hub",
    "RuntimeBase",
    "Writer",
    "call_in_loop",
    "check_timeout",
    "close_runtime",
    "current",
    "dispatcher",
    "install",
    "installed",
    "local_end",
    "new_hub",
    "new_socketpair",
    "release_receivers",
    "set_park_hook",
]


def release_receivers() -> None:
    """Wake every thread blocked in ``receive()`` on this process's ends with ``ChannelClosedError``
    (shutdown); the ends stay usable."""
    for chan in local_ends().values():
        chan._release()


def set_park_hook(hook: Callable[[], None] | None) -> None:
    """Call ``hook()`` (in the calling thread) whenever a ``receive()`` of this thread is about to block."""
    if hook is None:
        _park.__dict__.pop("notify", None)
    else:
        _park.notify = hook


def close_runtime(runtime: RuntimeBase) -> None:
    """The host is done: drop every child link and this process's channel ends (their
    receivers wake), and forget ``runtime`` if it is the installed one."""
    runtime.close()  # type: ignore[attr-defined]
    forget_local_ends()
    if installed() is runtime:
        install(None)
