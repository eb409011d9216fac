"""What process am I in: the one leaf module every other part of ``liteyuki.comm`` may import.

It holds this process's runtime (the host's hub, a child's client, or a
standalone hub) and imports nothing of ours, so there is no import circle: the
modules that build runtimes register a factory here, and channels and storage
ask ``current()`` without knowing which kind they get.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["current", "install", "installed", "set_default_factory"]

_current: Any = None
_lock = threading.Lock()
_factory: Callable[[], Any] | None = None


def current() -> Any:
    """This process's runtime; made by the registered default factory on first use."""
    runtime = _current
    if runtime is not None:
        return runtime
    with _lock:
        if _current is None:
            if _factory is None:
                raise RuntimeError("liteyuki.comm is not initialised (import liteyuki.comm first)")
            install(_factory())
        return _current


def installed() -> Any:
    """The runtime if one is installed, else None (never creates one)."""
    return _current


def install(runtime: Any) -> None:
    """Make ``runtime`` this process's runtime (None: back to the lazy default)."""
    global _current
    _current = runtime


def set_default_factory(factory: Callable[[], Any]) -> None:
    global _factory
    _factory = factory
