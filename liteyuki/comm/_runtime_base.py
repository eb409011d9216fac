"""What every runtime (host hub, child client) shares: settings and the registry calls."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ._wire import DEFAULT_MAX_MESSAGE_SIZE, loads

TYPE_CHECKING = False
if TYPE_CHECKING:  # the registry calls below load _ops when they run: a child that only sends never does
    import asyncio
    from typing import Any

    from ._ops import Operation

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_WINDOW",
    "RuntimeBase",
    "on_event_loop",
    "running_loop",
]

DEFAULT_SEND_TIMEOUT = 10.0
DEFAULT_CALL_TIMEOUT = 10.0
DEFAULT_WINDOW = 100_000  # messages per channel and sender that may wait in the host (pending_limit)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, if any (no asyncio imported yet: no loop runs)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio._get_running_loop() if asyncio is not None else None


def on_event_loop() -> bool:
    """Is this thread running an event loop?"""
    return running_loop() is not None


class RuntimeBase:
    """Settings every runtime reads from the configuration, and the registry calls."""

    role = ""
    process_name = ""
    max_message_size = DEFAULT_MAX_MESSAGE_SIZE
    send_timeout = DEFAULT_SEND_TIMEOUT
    call_timeout = DEFAULT_CALL_TIMEOUT
    window = DEFAULT_WINDOW
    own_channels: tuple[str, str] | None = None  # this process's active/passive channel names
    # Storage hands publishes for this process's subscribers to this callable.
    publish_sink: Callable[[str, bytes], None] | None = None
    # storage="redis://...": this process's own Redis store and pub/sub (see _backends.py);
    # None: the host's memory store (a child reaches it over its link).
    store_backend: Any = None
    pubsub_backend: Any = None

    def configure(self, config: dict[str, Any]) -> None:
        self.max_message_size = int(config.get("max_message_size", self.max_message_size))
        self.send_timeout = float(config.get("send_timeout", self.send_timeout))
        self.call_timeout = float(config.get("call_timeout", self.call_timeout))
        self.window = int(config.get("pending_limit", self.window))
        from ._backends import configure_backends

        configure_backends(self, config)

    def deliver_publish(self, topic: str, payload: bytes) -> None:
        """Run this process's subscribers of ``topic`` (a pub/sub backend's listener calls it)."""
        sink = self.publish_sink
        if sink is not None:
            sink(topic, payload)

    def publish(self, topic: str, payload: bytes) -> None:
        raise NotImplementedError

    async def async_publish(self, topic: str, payload: bytes) -> None:
        backend = self.pubsub_backend
        if backend is not None:
            await backend.async_publish(topic, payload)
        else:
            self.publish(topic, payload)

    def execute(self, op: Operation, timeout: float | None = None) -> bytes | None:
        raise NotImplementedError

    def channel_exists(self, name: str) -> bool:
        from ._ops import ChannelExists

        raw = self.execute(ChannelExists(name))
        return bool(raw and loads(raw))

    def register_channel(self, name: str) -> None:
        from ._ops import RegisterChannel

        self.execute(RegisterChannel(name))

    def channel_names(self) -> list[str]:
        from ._ops import ChannelNames

        raw = self.execute(ChannelNames())
        return loads(raw) if raw else []

    def wait_written(self, timeout: float) -> None:
        """Wait until what this process sent so far is on its link (``close()`` of an end that
        only sent). The host's ends hand messages over in memory: nothing to wait for."""
