"""NoneBot plugin: liteyuki channels and shared memory inside a NoneBot process.

Under a Liteyuki host (``python bot.py``) it talks to the host; alone (``nb run``,
nonebug) the process is its own in-memory host.
"""

from __future__ import annotations

from nonebot import get_driver, get_plugin_config, on_command
from nonebot.permission import SUPERUSER
from nonebot.plugin import PluginMetadata

from liteyuki import async_status, log

from ._bridge import Bridge
from .config import Config
from .deps import ActiveChannel, PassiveChannel, SharedMemory, channel

__all__ = ["ActiveChannel", "Config", "PassiveChannel", "SharedMemory", "bridge", "channel"]

__plugin_meta__ = PluginMetadata(
    name="轻雪进程通信 Liteyuki Comm",
    description="Go-like channels and a host-owned shared memory between NoneBot and the Liteyuki host",
    usage=(
        'require("nonebot_plugin_liteyuki_comm") first, then\n'
        "from liteyuki.comm import active_channel, passive_channel\n"
        "from liteyuki.comm.storage import shared_memory\n"
        "in matchers: SharedMemory / ActiveChannel dependencies, await shared_memory.async_get(...)"
    ),
    type="library",
    homepage="https://github.com/LiteyukiStudio/nonebot-plugin-liteyuki-comm",
    config=Config,
    supported_adapters=None,
)

plugin_config = get_plugin_config(Config)
driver = get_driver()
bridge = Bridge()
if not log.installed():
    # Now, not at startup: what other plugins log through liteyuki.log while they are
    # imported (errors too) used to reach only NoneBot's handler, which drops it.
    log.install(language=plugin_config.liteyuki_comm_log_language)


@driver.on_startup
async def _start_liteyuki_comm() -> None:
    bridge.start(
        getattr(driver, "_lifespan", None),
        plugin_config.liteyuki_comm_detach_blocking_hooks,
        plugin_config.liteyuki_comm_log_language,
    )


@driver.on_shutdown
async def _stop_liteyuki_comm() -> None:
    await bridge.finish()
    bridge.stop()


if plugin_config.liteyuki_comm_status_command.strip():
    status_command = on_command(plugin_config.liteyuki_comm_status_command.strip(), permission=SUPERUSER, block=True)

    @status_command.handle()
    async def _show_status() -> None:
        snapshot = await async_status()
        await status_command.finish(snapshot.format())
