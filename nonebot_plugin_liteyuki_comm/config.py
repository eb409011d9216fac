from __future__ import annotations

from pydantic import BaseModel


class Config(BaseModel):
    """Settings, read from NoneBot's config (``.env``) with the ``liteyuki_comm_`` prefix."""

    liteyuki_comm_detach_blocking_hooks: bool = True
    """Let a sync startup hook that blocks in ``Channel.receive()`` go on in the background,
    so later startup hooks (and NoneBot's "startup completed") are not held back."""

    liteyuki_comm_log_language: str = "zh-CN"
    """Language of liteyuki log level names when no Liteyuki host configured it (zh-CN, en-US)."""

    liteyuki_comm_status_command: str = "liteyuki status"
    """The superusers' command that shows ``liteyuki.status()`` (with NoneBot's command
    start: ``/liteyuki status``); an empty string switches it off."""
