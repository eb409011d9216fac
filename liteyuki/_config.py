"""The process's configuration: LiteyukiBot(**config) in the host, a copy in every child."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULTS", "get_config", "set_config"]

DEFAULTS: dict[str, Any] = {
    "log_level": "INFO",
    "language": "zh-CN",
    "send_timeout": 10.0,  # s a full buffer may hold a sender (never on an event loop)
    "call_timeout": 10.0,  # s a child waits for the host to answer a storage call
    "max_message_size": 64 * 1024 * 1024,
    "outbox_limit": 64 * 1024 * 1024,  # bytes queued per child before senders wait
    "pending_limit": 100_000,  # messages per channel waiting for a first receiver
    "stop_grace": 5.0,  # s a child gets to stop before SIGTERM, then as long again before SIGKILL
    "start_timeout": 60.0,  # s a child gets to connect after spawn
    "restart_backoff": 0.5,  # first restart delay; doubles per quick crash, up to restart_backoff_max
    "restart_backoff_max": 30.0,
    "pyproject": "pyproject.toml",  # where [tool.liteyuki] lists host plugins; None to skip
    "reload": False,  # development mode: restart what changed (README: "Development mode")
}

_config: dict[str, Any] = dict(DEFAULTS)


def set_config(config: dict[str, Any]) -> dict[str, Any]:
    """Replace this process's configuration with DEFAULTS updated by ``config``."""
    global _config
    _config = {**DEFAULTS, **config}
    return _config


def get_config(key: str, default: Any = None) -> Any:
    """A configuration value of this process (the host's, copied into every child)."""
    return _config.get(key, default)
