"""get_channel / set_channel / get_channels: the same calls in every process."""

from __future__ import annotations

from ._channel import Channel, keep_end, local_end, local_ends
from ._context import current
from ._errors import ChannelNotFoundError
from ._validate import check_name, type_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["get_channel", "get_channels", "set_channel", "set_channels"]


def get_channel(name: str) -> Channel[Any]:
    """This process's end of channel ``name``; ``ChannelNotFoundError`` if no process registered it."""
    name = check_name(name, "name")  # [#11]
    ends = local_ends()
    if name in ends:
        return ends[name]
    runtime = current()
    if runtime.channel_exists(name):
        return local_end(name)
    known = ", ".join(repr(n) for n in runtime.channel_names()[:20]) or "none"
    raise ChannelNotFoundError(f"no channel named {name!r} (known channels: {known})")


def set_channel(name: str, channel: Channel[Any]) -> None:
    """Register ``channel`` under ``name`` so every process can ``get_channel`` it."""
    name = check_name(name, "name")
    if not isinstance(channel, Channel):
        raise TypeError(f"channel must be a Channel, got {type_name(channel)}")
    if channel.name != name:
        raise ValueError(f"channel {channel.name!r} cannot be registered under another name {name!r}")
    current().register_channel(name)
    keep_end(channel)


def set_channels(channels: dict[str, Channel[Any]]) -> None:
    """``set_channel`` for each item (all are checked before any is registered)."""
    if not isinstance(channels, dict):
        raise TypeError(f"channels must be a dict of name -> Channel, got {type_name(channels)}")
    for name, channel in channels.items():
        check_name(name, "name")
        if not isinstance(channel, Channel) or channel.name != name:
            raise ValueError(f"set_channels needs name -> Channel of that name, got {name!r} -> {type_name(channel)}")
    for name, channel in channels.items():
        set_channel(name, channel)


def get_channels() -> dict[str, Channel[Any]]:
    """Every channel name known to the host, as this process's ends."""
    names = set(current().channel_names()) | set(local_ends())
    return {name: local_end(name) for name in sorted(names)}
