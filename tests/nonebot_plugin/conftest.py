"""nonebug set-up for the plugin tests (run in their own pytest process, see test_nonebot_plugin.py)."""

from __future__ import annotations

import nonebot
import pytest
from nonebug import NONEBOT_INIT_KWARGS


def pytest_configure(config: pytest.Config) -> None:
    config.stash[NONEBOT_INIT_KWARGS] = {"driver": "~none", "console_headless_mode": True, "log_level": "DEBUG"}


@pytest.fixture(scope="session", autouse=True)
async def after_nonebot_init(after_nonebot_init: None) -> None:
    # Loaded here, before nonebug starts the lifespan, so the plugin's startup hook runs.
    from nonebot.adapters.console import Adapter

    nonebot.get_driver().register_adapter(Adapter)
    nonebot.load_plugin("nonebot_plugin_liteyuki_comm")
    nonebot.load_plugin("tests.nonebot_plugin.plugins.demo_matchers")
