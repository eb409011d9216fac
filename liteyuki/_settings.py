"""This process's settings as plain values: what every process reads, pydantic-free.

The host validates its configuration once (``_config.HostConfig``, pydantic)
and hands each child a plain copy of the validated values; a child only stores
and reads that copy, so it never imports pydantic (~20 ms and several MB a
plain child does not need). ``DEFAULTS`` must equal ``HostConfig().model_dump()``
(``tests/test_config.py`` checks).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


__all__ = ["DEFAULTS", "ConfigError", "UnknownSettingError", "get_config", "set_config"]


class ConfigError(ValueError):
    """A setting has a bad value; the message names the key, where it came from and the rule."""


class UnknownSettingError(ConfigError, TypeError):
    """A setting that does not exist; the message names the nearest valid key."""


DEFAULTS: dict[str, Any] = {
    "log_level": "INFO",
    "language": "zh-CN",
    "send_timeout": 10.0,
    "call_timeout": 10.0,
    "max_message_size": 64 * 1024 * 1024,
    "outbox_limit": 64 * 1024 * 1024,
    "pending_limit": 100_000,
    "stop_grace": 5.0,
    "start_timeout": 60.0,
    "restart_backoff": 0.5,
    "restart_backoff_max": 30.0,
    "pyproject": "pyproject.toml",
    "plugins": [],
    "plugin_dirs": [],
    "reload": False,
    "storage": None,
    "storage_namespace": "liteyuki",
    "cluster_claim_idle": 30.0,
}

_config: dict[str, Any] = {**DEFAULTS, "plugins": [], "plugin_dirs": []}


def set_config(values: dict[str, Any]) -> dict[str, Any]:
    """Make ``values`` (validated already: the host's, or the copy a child got) this process's."""
    global _config
    _config = {**DEFAULTS, **values}
    return _config


def get_config(key: str, default: Any = None) -> Any:
    """A configuration value of this process (the host's, copied into every child)."""
    return _config.get(key, default)
