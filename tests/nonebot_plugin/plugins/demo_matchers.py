"""A test plugin: matchers that use shared memory and a channel through the plugin's helpers."""

from __future__ import annotations

from nonebot import on_command, require

require("nonebot_plugin_liteyuki_comm")

from nonebot_plugin_liteyuki_comm import ActiveChannel, SharedMemory  # noqa: E402

count = on_command("count")


@count.handle()
async def _(memory: SharedMemory, channel: ActiveChannel) -> None:
    value = await memory.async_incr("test:count")
    channel.send({"count": value})
    await count.finish(f"count: {value}")
