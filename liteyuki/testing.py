"""`liteyuki.testing`: a pytest plugin for nonebug tests of NoneBot plugins that use liteyuki-comm.

In your ``conftest.py``::

    pytest_plugins = ["liteyuki.testing"]

and list the plugins under test in ``[tool.pytest.ini_options] nonebot_plugins``
(README: "Testing your plugin"). It takes care of what such a test otherwise
has to know:

- NoneBot starts on the ``~none`` driver with the console adapter headless
  (values you put in nonebug's ``NONEBOT_INIT_KWARGS`` stash win);
- this plugin is loaded first and your plugins after it, before NoneBot's
  startup hooks run, so channel callbacks and startup hooks work;
- ``console_bot(ctx)`` and ``message_event(text)`` build the console adapter's bot
  and message event for ``app.test_matcher``;
- the process is standalone (no host): ``shared_memory`` is an in-process store,
  emptied after every test, and channels deliver within the process; a message a
  test sent and nobody received is dropped after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from nonebug import NONEBOT_INIT_KWARGS

__all__ = ["console_bot", "message_event"]

PLUGIN = "nonebot_plugin_liteyuki_comm"
_SELF_ID = "liteyuki-test-bot"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "nonebot_plugins",
        "NoneBot plugins (module names) loaded after nonebot_plugin_liteyuki_comm, before startup",
        type="linelist",
        default=[],
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    defaults = {"driver": "~none", "console_headless_mode": True}
    config.stash[NONEBOT_INIT_KWARGS] = {**defaults, **config.stash.get(NONEBOT_INIT_KWARGS, {})}


@pytest.fixture(scope="session", autouse=True)
async def after_nonebot_init(after_nonebot_init: None, pytestconfig: pytest.Config) -> None:
    """nonebug's hook between ``nonebot.init`` and the startup hooks: adapter and plugins."""
    import nonebot
    from nonebot.adapters.console import Adapter

    driver = nonebot.get_driver()
    if Adapter.get_name() not in nonebot.get_adapters():
        driver.register_adapter(Adapter)
    nonebot.load_plugin(PLUGIN)
    for name in pytestconfig.getini("nonebot_plugins"):
        if nonebot.load_plugin(name) is None:
            raise pytest.UsageError(f"nonebot_plugins: plugin {name!r} could not be loaded (see the log above)")


@pytest.fixture(autouse=True)
async def _liteyuki_fresh_store() -> AsyncIterator[None]:
    """Each test starts with an empty shared memory (the standalone store of this process) and
    no channel message left over from the test before (one a test sent and never received)."""
    yield
    from liteyuki.comm.lowlevel import current
    from liteyuki.comm.storage import shared_memory

    await shared_memory.async_clear()
    runtime = current()
    if getattr(runtime, "standalone", False):
        runtime.discard_queued()


def console_bot(ctx: Any) -> Any:
    """The console adapter's ``Bot`` for ``app.test_matcher(...) as ctx``."""
    from nonebot.adapters.console import Bot
    from nonechat.model import Robot

    return ctx.create_bot(base=Bot, self_id=Robot(_SELF_ID))  # the console Bot takes a Robot, not a str


def message_event(text: str, user_id: str = "user", *, to_me: bool = True) -> Any:
    """A console ``MessageEvent`` saying ``text`` (a command too: ``message_event("/count")``)."""
    from nonebot.adapters.console import Message, MessageEvent
    from nonechat.model import Channel, User

    return MessageEvent(
        time=datetime.now(),
        self_id=_SELF_ID,
        message_id="1",
        message=Message(text),
        user=User(id=user_id),
        channel=Channel(id="general", name="General"),
        to_me=to_me,
    )
