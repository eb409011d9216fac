"""Channels between the host and its child processes.

``active_channel`` / ``passive_channel`` are this child's two channels
(``{name}-active`` / ``{name}-passive``), live before any user code runs; in
the host they are ``None``.
"""

from __future__ import annotations

from . import _default  # noqa: F401  (registers how a process gets its runtime)
from ._channel import Channel as Channel
from ._channel import local_end
from ._context import current
from ._errors import BrokenPeerError as BrokenPeerError
from ._errors import ChannelClosedError as ChannelClosedError
from ._errors import ChannelFullError as ChannelFullError
from ._errors import ChannelNotFoundError as ChannelNotFoundError
from ._errors import ChannelTypeError as ChannelTypeError
from ._errors import CommError as CommError
from ._errors import CommTimeoutError as CommTimeoutError
from ._errors import MessageTooLargeError as MessageTooLargeError
from ._errors import ProtocolError as ProtocolError
from ._errors import ReceiveModeError as ReceiveModeError
from ._errors import RemoteError as RemoteError
from ._errors import SerializationError as SerializationError
from ._errors import StorageUnavailableError as StorageUnavailableError
from ._registry import get_channel as get_channel
from ._registry import get_channels as get_channels
from ._registry import set_channel as set_channel
from ._registry import set_channels as set_channels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "BrokenPeerError",
    "Channel",
    "ChannelClosedError",
    "ChannelFullError",
    "ChannelNotFoundError",
    "ChannelTypeError",
    "CommError",
    "CommTimeoutError",
    "MessageTooLargeError",
    "ProtocolError",
    "ReceiveModeError",
    "RemoteError",
    "SerializationError",
    "StorageUnavailableError",
    "active_channel",
    "get_channel",
    "get_channels",
    "passive_channel",
    "set_channel",
    "set_channels",
]


def __getattr__(name: str) -> Any:
    # Resolved on access, so `from liteyuki.comm import active_channel` gets the
    # live singleton the child bootstrap installed (or a standalone one).
    if name in ("active_channel", "passive_channel"):
        own = current().own_channels  # None in the host: it has no channels of its own
        return None if own is None else local_end(own[0] if name == "active_channel" else own[1], keep=True)
    raise AttributeError(f"module 'liteyuki.comm' has no attribute {name!r}")
