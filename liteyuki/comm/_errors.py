"""Errors raised by channels, shared memory and the transport.

::

    CommError
     ├── ChannelClosedError        you (or shutdown) closed this end; iteration ends on it
     ├── BrokenPeerError           the other process is gone; the cause is chained
     ├── ReceiveModeError          passive and active receive mixed on one end
     ├── ChannelNotFoundError      (also LookupError) no channel has that name
     ├── ChannelFullError          a bounded buffer is full and the wait ran out
     ├── CommTimeoutError          (also TimeoutError) a receive or request ran out of time
     ├── ChannelTypeError          (also TypeError) a typed channel refused a value
     ├── SerializationError        (also TypeError) a value does not pickle
     ├── MessageTooLargeError      (also ValueError) above the configured maximum size
     ├── ProtocolError             garbage on the wire; the connection is dropped
     ├── RemoteError               a host-side error whose own type could not travel (or a refusal by Redis)
     └── StorageUnavailableError   (also ConnectionError) the Redis storage cannot be reached right now

Errors raised by the host while serving a child's storage call (``KeyError``,
``TypeError`` ...) are not wrapped: they arrive in the child with their own type.
"""

from __future__ import annotations

__all__ = [
    "BrokenPeerError",
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
]


class CommError(Exception):
    """Base of every error raised by ``liteyuki.comm``."""


class ChannelClosedError(CommError):
    """This end of the channel is closed (or was released at shutdown)."""


class BrokenPeerError(CommError):
    """The process on the other side of the connection is gone."""


class ReceiveModeError(CommError):
    """Passive (``on_receive``) and active (``receive``) mode were mixed on one end."""


class ChannelNotFoundError(CommError, LookupError):
    """No channel is registered under that name."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class ChannelFullError(CommError):
    """A bounded buffer stayed full for longer than the caller allowed."""


class CommTimeoutError(CommError, TimeoutError):
    """A receive or a request to the host did not finish in time."""


class ChannelTypeError(CommError, TypeError):
    """A typed channel refused a value at ``send``."""


class SerializationError(CommError, TypeError):
    """A value cannot be pickled (or the receiver cannot unpickle it)."""


class MessageTooLargeError(CommError, ValueError):
    """A message is larger than the configured maximum message size."""


class ProtocolError(CommError):
    """The byte stream from a peer is not a valid frame sequence."""


class RemoteError(CommError):
    """An error raised in the host whose own type could not be sent back."""


class StorageUnavailableError(CommError, ConnectionError):
    """The Redis server behind ``storage="redis://..."`` did not answer (down, unreachable, timed out).

    The call may or may not have been applied when the connection broke after
    sending it; it is never retried behind the caller's back.
    """
