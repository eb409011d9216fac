"""A host run as its own program by the tests: prints its children's pids, then serves."""

from __future__ import annotations

import sys

from liteyuki import LiteyukiBot, get_bot
from liteyuki.comm import get_channel
from tests import targets

if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    traffic = len(sys.argv) > 2 and sys.argv[2] == "traffic"
    bot = LiteyukiBot(pyproject=None, stop_grace=3.0)
    names = [f"child{i}" for i in range(count)]
    for name in names:
        bot.process_manager.add_target(name, targets.agent if not traffic else targets.chatter)

    @bot.on_after_start
    async def announce() -> None:
        pids = [get_bot().process_manager.pid(n) for n in names]
        print("PIDS", *pids, flush=True)

    @bot.on_after_shutdown
    def bye() -> None:
        print("SHUTDOWN HOOK RAN", flush=True)

    if traffic:

        @bot.on_after_start
        async def pump() -> None:
            import asyncio

            while True:
                for name in names:
                    for _ in range(200):
                        try:
                            get_channel(f"{name}-passive").send("x" * 100, timeout=0)
                        except Exception:
                            break
                await asyncio.sleep(0)

    bot.run()
