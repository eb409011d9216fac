"""The one way to hand work to an event loop from another thread."""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:  # only for annotations: a process without a loop never imports asyncio
    import asyncio
    from typing import Any

__all__ = ["call_in_loop", "settle"]


def call_in_loop(loop: asyncio.AbstractEventLoop, func: Callable[..., Any], *args: Any) -> bool:
    """Schedule ``func(*args)`` on ``loop``; False when the loop is closed (the work is not done)."""
    try:
        loop.call_soon_threadsafe(func, *args)
    except RuntimeError:  # "Event loop is closed"
        return False
    return True


def settle(fut: asyncio.Future[Any], value: Any = None) -> None:
    """Set ``fut``'s result unless it is done (for ``call_in_loop`` / ``call_later``)."""
    if not fut.done():
        fut.set_result(value)
