"""Demo command: `/count` adds one to a counter kept in the host's shared memory."""

from nonebot import on_command, require

require("nonebot_plugin_liteyuki_comm")

from nonebot_plugin_liteyuki_comm import SharedMemory  # noqa: E402

count = on_command("count")


@count.handle()
async def _(memory: SharedMemory) -> None:
    value = await memory.async_incr("demo:count")
    await count.finish(f"count: {value}")
