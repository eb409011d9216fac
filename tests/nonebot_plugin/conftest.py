"""nonebug set-up for the plugin tests (run in their own pytest process, see test_nonebot_plugin.py).

The shipped testing kit does the NoneBot set-up (``-p liteyuki.testing`` on the
command line: a non-root conftest may not name pytest plugins); this adds DEBUG
logs and the test plugin, loaded after ours and before startup.
"""

from __future__ import annotations

import nonebot
import pytest
from nonebug import NONEBOT_INIT_KWARGS


def pytest_configure(config: pytest.Config) -> None:
    config.stash[NONEBOT_INIT_KWARGS] = {
        **config.stash.get(NONEBOT_INIT_KWARGS, {}),
        "log_level": "DEBUG",
        "superusers": {"admin"},
    }


@pytest.fixture(scope="session", autouse=True)
async def after_nonebot_init(after_nonebot_init: None) -> None:
    nonebot.load_plugin("tests.nonebot_plugin.plugins.demo_matchers")
