"""A NoneBot plugin for row 7c: our NoneBot child says "up" on its active channel once started.

Loaded by name from the temporary pyproject the benchmark gives ``run_nonebot``
(a spawn target's module cannot be a NoneBot plugin, so this is its own module).
"""

from __future__ import annotations

from nonebot import get_driver

from liteyuki.comm import active_channel


@get_driver().on_startup
async def _say_up() -> None:
    await active_channel.async_send("up", timeout=30.0)
