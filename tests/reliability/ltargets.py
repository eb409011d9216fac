"""Spawn targets for the limits, lifecycle and hostile-argument tests.

``agent`` answers ``(command, args, kwargs)`` on its passive channel with the result (or
the exception raised) on its active channel.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import uuid
from typing import Any

from liteyuki.comm import Channel, active_channel, get_channel, passive_channel
from liteyuki.comm._context import current
from liteyuki.comm._ops import Set
from liteyuki.comm.storage import shared_memory


class Sized:
    """Stands for a bytes value whose pickle is ``n`` bytes, built in the child (it may be
    too large to travel inside a command)."""

    def __init__(self, n: int) -> None:
        self.n = n


def value_of_pickled_size(n: int) -> bytes:
    """A bytes value whose pickle (the protocol the library uses) is exactly ``n`` bytes."""
    for k in range(max(0, n - 32), n + 1):
        value = b"x" * k
        if len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) == n:
            return value
    raise AssertionError(f"no bytes value pickles to {n} bytes")


def _expand(value: Any) -> Any:
    return value_of_pickled_size(value.n) if isinstance(value, Sized) else value


def _recv(name: str, timeout: float) -> Any:
    return get_channel(name).receive(timeout)


def _store(method: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(shared_memory, method)(*args, **kwargs)


def _send(name: str, value: Any, **kwargs: Any) -> str:
    get_channel(name).send(value, **kwargs)
    return "sent"


def _raw_set(key: Any, size: int) -> str:
    # Around the facade: what a child that skips the checks would send the host.
    current().execute(Set(key, b"x" * size, None))
    return "stored"


def _ttl_stream(seconds: float, ttl: float) -> int:
    """Set unique keys with a short ttl for ``seconds``; return how many."""
    prefix = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        for _ in range(100):
            shared_memory.set(f"{prefix}-{count}", count, ttl=ttl)
            count += 1
    return count


def _channel(name: str, *args: Any, **kwargs: Any) -> str:
    Channel(name, *args, **kwargs)
    return "created"


def _typed(hint: str, name: str) -> str:
    Channel[{"int": int, "str": str}[hint]](name)  # type: ignore[misc]
    return "created"


COMMANDS: dict[str, Any] = {
    "store": _store,
    "send": _send,
    "raw_set": _raw_set,
    "ttl_stream": _ttl_stream,
    "channel": _channel,
    "typed": _typed,
    "get_channel": lambda name: get_channel(name).name,
    "pid": os.getpid,
    "recv": _recv,
    "new_bot": lambda: __import__("liteyuki").LiteyukiBot(pyproject=None),
}


def _answer(cmd: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
    op, args, kwargs = cmd
    try:
        result = COMMANDS[op](*map(_expand, args), **kwargs)
    except Exception as exc:
        result = exc
    active_channel.send(result)


def agent() -> None:
    passive_channel.on_receive()(_answer)
    threading.Event().wait()


def ask(name: str, op: str, *args: Any, wait: float = 30, **kwargs: Any) -> Any:
    """Run ``op`` in child ``name``; its result, or the exception it raised (``kwargs`` go to ``op``)."""
    get_channel(f"{name}-passive").send((op, args, kwargs))
    return get_channel(f"{name}-active").receive(timeout=wait)
