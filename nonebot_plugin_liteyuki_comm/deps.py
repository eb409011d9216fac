"""Dependency-injection helpers for matchers: the store and channels, never blocking the loop.

from nonebot_plugin_liteyuki_comm import SharedMemory, ActiveChannel

@matcher.handle()
async def _(memory: SharedMemory, channel: ActiveChannel):
    count = await memory.async_incr("counter")
    channel.send({"count": count})  # never blocks the loop (raises if the buffer is full)
"""

from __future__ import annotations

from typing import Annotated, Any

from nonebot.params import Depends

from liteyuki.comm import Channel, get_channel
from liteyuki.comm.lowlevel import current, local_end
from liteyuki.comm.storage import KeyValueStore, shared_memory

__all__ = ["ActiveChannel", "PassiveChannel", "SharedMemory", "channel"]


def _shared_memory() -> KeyValueStore:
    return shared_memory


def _own(which: int) -> Channel[Any]:
    own = current().own_channels
    if own is None:
        raise RuntimeError("this process has no active/passive channel of its own (it is the host)")
    return local_end(own[which], keep=True)


def _active() -> Channel[Any]:
    return _own(0)


def _passive() -> Channel[Any]:
    return _own(1)


def channel(name: str) -> Any:
    """``Depends`` on this process's end of channel ``name``: ``chan: Channel = channel("x")``."""

    def dependency() -> Channel[Any]:
        return get_channel(name)

    return Depends(dependency)


SharedMemory = Annotated[KeyValueStore, Depends(_shared_memory)]
ActiveChannel = Annotated[Channel[Any], Depends(_active)]
PassiveChannel = Annotated[Channel[Any], Depends(_passive)]
