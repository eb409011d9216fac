"""A host run as its own program by the reliability tests: ``python -m tests.reliability.rhost MODE [N]``.

It prints ``PIDS <pid>...`` once its children run; children print ``STATE <what> <pid>``
markers on the same stdout. Modes: ``hostdeath`` (an idle, a busy, a backpressured, a deaf
and a stubborn child, for a kill -9 of this host) and ``traffic N`` (N children under heavy
load both ways, for Ctrl+C).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from liteyuki import LiteyukiBot, get_bot
from liteyuki.comm import Channel, ChannelFullError, get_channel
from liteyuki.comm.storage import shared_memory
from tests.reliability import rtargets


def main(mode: str, count: int) -> None:
    config: dict[str, Any] = {"pyproject": None, "stop_grace": 3.0, "log_level": "DEBUG"}
    if mode == "hostdeath":
        children: dict[str, Any] = {
            "idle": rtargets.idle,
            "busy": rtargets.busy,
            "backpressured": rtargets.backpressured,
            "deaf": rtargets.deaf,
            "stubborn": rtargets.stubborn,
        }
        config.update(outbox_limit=256 * 1024, send_timeout=0.2)
    else:
        children = {f"t{i}": rtargets.traffic for i in range(count)}
    bot = LiteyukiBot(**config)
    for name, target in children.items():
        bot.process_manager.add_target(name, target)

    @bot.on_after_start
    async def announce() -> None:
        pids = [get_bot().process_manager.pid(name) for name in children]
        rtargets.say("PIDS", *pids)

    @bot.on_after_shutdown
    def bye() -> None:
        rtargets.say("SHUTDOWN HOOK RAN")

    if mode == "hostdeath":
        Channel("backpressured-active", buffer_size=100)  # a host end nobody reads

        @bot.on_after_start
        async def deafen() -> None:
            deaf = get_channel("deaf-passive")
            while True:
                try:
                    deaf.send(b"z" * 1000)  # on the loop: never waits, full is an error at once
                except ChannelFullError:
                    rtargets.say("STATE deaf-full")
                    return
                await asyncio.sleep(0)
    else:
        received = [0]

        def count(message: object) -> None:
            received[0] += 1
            if received[0] == 20_000:
                rtargets.say("STATE loaded")  # the children's traffic is flowing

        for name in children:
            get_channel(f"{name}-active").on_receive()(count)
        shared_memory.on_subscriber_receive("rel-topic")(lambda data: None)

        @bot.on_after_start
        async def pump() -> None:
            while True:
                for name in children:
                    for _ in range(100):
                        try:
                            get_channel(f"{name}-passive").send(b"x" * 200)
                        except ChannelFullError:
                            break
                shared_memory.publish("rel-topic", "host")
                await asyncio.sleep(0)

    bot.run()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
