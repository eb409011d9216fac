"""The NoneBot plugin under nonebug: metadata, lifespan bridge, matchers, standalone mode."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import pytest
from nonebug import App
from pydantic import BaseModel


def make_event(text: str) -> Any:
    from nonebot.adapters.console import Message, MessageEvent
    from nonechat.model import Channel as ChatChannel
    from nonechat.model import User

    return MessageEvent(
        time=datetime.now(),
        self_id="robot",
        message_id="1",
        message=Message(text),
        user=User(id="user"),
        channel=ChatChannel(id="general", name="General"),
        to_me=True,
    )


def test_metadata_passes_the_store_checks():
    import nonebot_plugin_liteyuki_comm as plugin

    meta = plugin.__plugin_meta__
    assert meta.type == "library"
    assert 0 < len(meta.name) <= 50
    assert urlparse(meta.homepage or "").scheme in ("http", "https")
    assert isinstance(meta.config, type) and issubclass(meta.config, BaseModel)
    assert meta.supported_adapters is None
    assert "require" in meta.usage
    fields = set(plugin.Config.model_fields)
    assert fields and all(name.startswith("liteyuki_comm_") for name in fields)


def test_standalone_mode_is_its_own_in_memory_host():
    from liteyuki.comm.lowlevel import current
    from liteyuki.comm.storage import shared_memory

    runtime = current()
    assert runtime.role == "standalone"
    shared_memory.set("standalone", {"x": 1})
    assert shared_memory.get("standalone") == {"x": 1}
    assert shared_memory.incr("standalone:n") == 1


async def test_startup_hook_bound_dispatch_to_nonebot_loop():
    from liteyuki.comm import passive_channel
    from liteyuki.comm._dispatch import dispatcher

    assert dispatcher.loop is asyncio.get_running_loop()
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @passive_channel.on_receive(filter_func=lambda d: isinstance(d, str) and d.startswith("plugin"))
    async def on_message(data: Any) -> None:
        if not got.done():
            got.set_result((data, asyncio.get_running_loop() is dispatcher.loop))

    passive_channel.send("plugin test message")  # standalone: delivered within the process
    assert await asyncio.wait_for(got, 5) == ("plugin test message", True)


async def test_matcher_uses_shared_memory_and_a_channel(app: App):
    from nonebot.adapters.console import Bot
    from nonechat.model import Robot

    from liteyuki.comm import active_channel
    from tests.nonebot_plugin.plugins.demo_matchers import count

    for expected in (1, 2):
        async with app.test_matcher(count) as ctx:
            # The console Bot takes a Robot where nonebug passes self_id.
            bot = ctx.create_bot(base=Bot, self_id=Robot("robot"))  # type: ignore[arg-type]
            event = make_event("/count")
            ctx.receive_event(bot, event)
            ctx.should_call_send(event, f"count: {expected}", result=None)
            ctx.should_finished(count)
        assert await active_channel.async_receive(timeout=5) == {"count": expected}


async def test_shutdown_releases_a_blocked_receive_and_startup_runs_twice_safely():
    import nonebot_plugin_liteyuki_comm as plugin
    from liteyuki.comm import Channel, ChannelClosedError
    from liteyuki.comm._dispatch import dispatcher

    chan = Channel("release-me")
    outcome: list[str] = []
    blocked = threading.Event()

    def wait_forever() -> None:
        from liteyuki.comm._channel import _park

        _park.notify = blocked.set
        try:
            chan.receive()
        except ChannelClosedError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=wait_forever)
    worker.start()
    assert blocked.wait(5)
    loop = asyncio.get_running_loop()
    await plugin._stop_liteyuki_comm()
    await plugin._stop_liteyuki_comm()  # harmless twice
    worker.join(5)
    assert outcome == ["channel 'release-me' was released for shutdown"]
    assert dispatcher.loop is None
    await plugin._start_liteyuki_comm()
    await plugin._start_liteyuki_comm()  # harmless twice
    assert dispatcher.loop is loop


async def test_a_blocking_sync_startup_hook_is_detached_not_awaited_forever():
    from liteyuki.comm import Channel
    from nonebot_plugin_liteyuki_comm._bridge import detachable

    chan = Channel("detach-test")
    received: list[Any] = []
    arrived = threading.Event()

    def documented_style_hook() -> None:
        while True:
            received.append(chan.receive())
            arrived.set()

    await asyncio.wait_for(detachable(documented_style_hook)(), 5)  # returns once it blocks
    chan.send("still served in the background")
    assert await asyncio.to_thread(arrived.wait, 5)
    assert received == ["still served in the background"]
    chan._release()


async def test_ordinary_sync_hooks_keep_nonebot_semantics():
    from nonebot_plugin_liteyuki_comm._bridge import detachable

    ran: list[str] = []
    await detachable(lambda: ran.append("done"))()
    assert ran == ["done"]

    def broken() -> None:
        raise ValueError("hook failed on purpose")

    with pytest.raises(ValueError, match=r"^hook failed on purpose$"):
        await detachable(broken)()


async def test_a_detached_sync_hook_has_the_context_and_the_anyio_token_of_nonebots_run_sync():
    """The hook ran in a bare thread: a ContextVar set by an earlier async hook read unset, and
    anyio.from_thread.run raised NoEventLoopError, where NoneBot's own run_sync has both."""
    import contextvars

    import anyio.from_thread

    from nonebot_plugin_liteyuki_comm._bridge import detachable

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="<unset>")
    var.set("set by an earlier hook")
    seen: list[str] = []

    async def on_the_loop() -> str:
        return "value from the loop"

    def hook() -> None:
        seen.append(var.get())
        seen.append(anyio.from_thread.run(on_the_loop))

    await asyncio.wait_for(detachable(hook)(), 10)
    assert seen == ["set by an earlier hook", "value from the loop"]


async def test_status_command_answers_superusers_only(app: App):
    import nonebot_plugin_liteyuki_comm as plugin
    from liteyuki.testing import console_bot, message_event

    async with app.test_matcher(plugin.status_command) as ctx:
        bot = console_bot(ctx)
        event = message_event("/liteyuki status", user_id="admin")
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, _StatusText(), result=None)
        ctx.should_finished(plugin.status_command)

    async with app.test_matcher(plugin.status_command) as ctx:
        bot = console_bot(ctx)
        event = message_event("/liteyuki status", user_id="someone")
        ctx.receive_event(bot, event)
        ctx.should_not_pass_permission(plugin.status_command)


class _StatusText:
    """Equal to any status text of a standalone process (nonebug compares with ==)."""

    def __eq__(self, other: object) -> bool:
        text = str(other)
        return text.startswith("liteyuki status (standalone, host pid ") and "store:" in text


def test_standalone_mode_says_so_once_in_the_log():
    from nonebot_plugin_liteyuki_comm import _bridge

    assert _bridge._announced.is_set()


async def test_isolation_a_message_sent_and_never_received():
    from liteyuki.comm import Channel

    Channel("isolation-test").send("left over by this test")  # nobody receives it in this test


async def test_isolation_the_next_test_does_not_get_it():
    """liteyuki.testing dropped only the store between tests: a message one test sent and
    never received reached the next test's receive (a stale {"count": n} in the README's
    example, when a test failed before its receive)."""
    from liteyuki.comm import Channel, CommTimeoutError

    with pytest.raises(CommTimeoutError):
        await Channel("isolation-test").async_receive(timeout=0.2)
